//! `meshd identity init|show|export|import` and the identity part of `meshd run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use mesh_core::identity::{parse_secret_hex, read_secret_for_import, secret_from_text};
use mesh_core::{Artifact, IdentityStore, NodeIdentity, Timestamp, TraceEvent, TraceEventType};
use serde_json::Value;

use super::{Ctx, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Create the identity if there is none; print the node-identity.v1 record.
    Init,
    /// Print the node-identity.v1 record with the libp2p peer id.
    Show,
    /// Print the node-identity.v1 record exactly as stored (or write it to --out).
    Export {
        /// Write the record to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make an existing Ed25519 secret the node's key.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secret").required(true).args(["secret_key_hex", "secret_key_file"])))]
pub(crate) struct ImportArgs {
    /// The 32-byte secret as 64 hex characters (other local users can read a
    /// command's arguments while it runs, and shells keep them in their history:
    /// prefer `--secret-key-file -` with the secret piped in).
    #[arg(long)]
    secret_key_hex: Option<String>,
    /// A file with the hex secret or a node-signing-key.v1 JSON file; `-` reads it
    /// from standard input.
    #[arg(long)]
    secret_key_file: Option<PathBuf>,
    /// Replace an existing, different identity (its files are kept as backups).
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(ctx: &Ctx, cmd: IdentityCommand) -> anyhow::Result<ExitCode> {
    let store = IdentityStore::new(&ctx.data_dir);
    match cmd {
        IdentityCommand::Init => {
            let id = store.load_or_generate(&Timestamp::now())?;
            trace_loaded(ctx, &id);
            print_json(&id.record.to_json());
        }
        IdentityCommand::Show => {
            let id = load_existing(&store)?;
            trace_loaded(ctx, &id);
            print_json(&show_json(&id));
        }
        IdentityCommand::Export { out } => {
            let record = store.export()?;
            let json = record.to_json();
            match out {
                Some(path) => {
                    let mut text = serde_json::to_string_pretty(&json)?;
                    text.push('\n');
                    std::fs::write(&path, text)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                }
                None => print_json(&json),
            }
        }
        IdentityCommand::Import(args) => {
            let secret = match (&args.secret_key_hex, &args.secret_key_file) {
                (Some(hex), _) => parse_secret_hex(hex.trim())
                    .map_err(|r| mesh_core::MeshError::invalid(format!("--secret-key-hex: {r}")))?,
                (None, Some(path)) if path.as_os_str() == "-" => secret_from_stdin()?,
                (None, Some(path)) => read_secret_for_import(path)?,
                (None, None) => anyhow::bail!("give --secret-key-hex or --secret-key-file"),
            };
            let id = store.import(&secret, &Timestamp::now(), args.force)?;
            trace_loaded(ctx, &id);
            print_json(&id.record.to_json());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The secret piped to `identity import --secret-key-file -` (at most 64 KiB read).
fn secret_from_stdin() -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
    use std::io::Read as _;
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read the secret from standard input: {e}"))?;
    Ok(secret_from_text(std::path::Path::new("<stdin>"), &text)?)
}

fn load_existing(store: &IdentityStore) -> anyhow::Result<NodeIdentity> {
    store.load()?.ok_or_else(|| {
        anyhow::anyhow!(
            "no identity in {}; run `meshd identity init`",
            store.record_path().display()
        )
    })
}

fn show_json(id: &NodeIdentity) -> Value {
    let mut json = id.record.to_json();
    if let Value::Object(m) = &mut json {
        m.insert(
            "libp2p/peer-id".into(),
            id.keypair
                .to_libp2p()
                .public()
                .to_peer_id()
                .to_string()
                .into(),
        );
    }
    json
}

pub(crate) fn trace_loaded(ctx: &Ctx, id: &NodeIdentity) {
    let kind = if id.generated {
        TraceEventType::IdentityGenerated
    } else {
        TraceEventType::IdentityLoaded
    };
    ctx.trace.emit(&TraceEvent::new(
        kind,
        id.record.node_id(),
        Timestamp::now(),
    ));
}
