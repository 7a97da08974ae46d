//! `meshd sign` and `meshd verify`.

use std::process::ExitCode;

use clap::Args;
use mesh_admission::FederationEndorsement;
use mesh_core::{Artifact, Family, IdentityStore, MeshError, Timestamp};
use serde_json::{Map, Value, json};

use super::input::read_payload;
use super::{Ctx, print_json};

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// Artifact family, e.g. node-advertisement.v1 (the .v1 may be left out).
    #[arg(long)]
    kind: String,
    /// The payload (JSON object), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    input: String,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Artifact family, e.g. peer-handshake.v1.
    #[arg(long)]
    kind: String,
    /// Check expiry and clock skew against this time instead of the clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// The artifact (JSON), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    input: String,
}

/// A family `sign` and `verify` handle: mesh-core's, or relay admission's
/// `federation-endorsement.v1` (which lives in mesh-admission).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Core(Family),
    Endorsement,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Core(f) => f.name(),
            Kind::Endorsement => FederationEndorsement::FAMILY,
        }
    }
}

fn family(kind: &str) -> Result<Kind, MeshError> {
    if kind == FederationEndorsement::FAMILY || kind == "federation-endorsement" {
        return Ok(Kind::Endorsement);
    }
    Family::from_name(kind).map(Kind::Core).ok_or_else(|| {
        let mut known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        known.push(FederationEndorsement::FAMILY);
        MeshError::invalid(format!(
            "unknown family `{kind}`; known: {}",
            known.join(", ")
        ))
    })
}

fn parse_object(text: &str) -> Result<Map<String, Value>, MeshError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(MeshError::invalid("the payload must be a JSON object")),
        Err(e) => Err(MeshError::invalid(format!("malformed JSON: {e}"))),
    }
}

/// Signs with the node's key. `key/alg` and `key/public` are filled in when the family
/// has them and the payload leaves them out; node and participant ids are never filled
/// in, and a payload that names another signer is refused (`E_PROTO_INVALID`).
pub(crate) fn sign(ctx: &Ctx, args: SignArgs) -> anyhow::Result<ExitCode> {
    let family = family(&args.kind)?;
    let mut doc = parse_object(&read_payload(&args.input)?)?;
    let store = IdentityStore::new(&ctx.data_dir);
    let id = store.load()?.ok_or_else(|| {
        anyhow::anyhow!(
            "no identity in {}; run `meshd identity init`",
            ctx.data_dir.display()
        )
    })?;
    let signed = match family {
        // An endorsement is signed by its endorser (this node), about another node.
        Kind::Endorsement => {
            doc.entry("endorser/node-id")
                .or_insert_with(|| id.keypair.node_id().to_string().into());
            FederationEndorsement::sign(doc, &id.keypair)?.into_map()
        }
        Kind::Core(family) => {
            if matches!(family, Family::NodeAdvertisement | Family::PeerHandshake) {
                doc.entry("key/alg").or_insert_with(|| "ed25519".into());
                doc.entry("key/public")
                    .or_insert_with(|| id.keypair.fingerprint().to_string().into());
            }
            family.sign(doc, &id.keypair)?
        }
    };
    print_json(&Value::Object(signed));
    Ok(ExitCode::SUCCESS)
}

/// Prints the verdict on stdout; exit 0 when valid, 1 when not.
pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let family = family(&args.kind)?;
    let now = match &args.now {
        Some(t) => Timestamp::parse(t).map_err(|e| e.context("--now"))?,
        None => Timestamp::now(),
    };
    let verdict = read_payload(&args.input)
        .map_err(|e| match e.downcast::<MeshError>() {
            Ok(m) => m,
            Err(other) => MeshError::invalid(format!("{other:#}")),
        })
        .and_then(|text| parse_object(&text))
        .and_then(|doc| match family {
            Kind::Core(f) => f.verify_json(Value::Object(doc), &now),
            Kind::Endorsement => {
                FederationEndorsement::verify_json(Value::Object(doc), &now).map(|e| e.into_map())
            }
        });
    match verdict {
        Ok(doc) => {
            let signers: &[&str] = match family {
                Kind::Endorsement => &["endorser/node-id"],
                Kind::Core(_) => &["node/id", "sender/node-id", "sender/participant-id", "from"],
            };
            let signer = signers.iter().find_map(|k| doc.get(*k).cloned());
            let signed = match family {
                Kind::Core(f) => f.is_signed(),
                Kind::Endorsement => true,
            };
            print_json(&json!({
                "valid": true,
                "family": family.name(),
                "signed": signed,
                "signer": signer,
                "checked-at": now.as_str(),
            }));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let mut out = json!({"valid": false, "family": family.name()});
            if let (Value::Object(o), Value::Object(err)) = (&mut out, e.to_json()) {
                o.extend(err);
            }
            print_json(&out);
            Ok(ExitCode::FAILURE)
        }
    }
}
