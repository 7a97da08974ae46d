//! Signed artifacts: the `Artifact` trait every family implements, the signing input
//! (`<family>` || 0x00 || deterministic CBOR without the unsigned fields), signing,
//! verification from JSON and from the CBOR wire form, and batch verification.

mod batch;
pub(crate) mod fields;
mod signature;
mod strict;
mod verified;

use serde_json::{Map, Value};

pub use batch::{SignedBytes, verify_all_strict, verify_batch};
pub use fields::TRANSPORTS;
pub use signature::{decode_signature, read_signature, signature_value};
#[cfg(any(test, feature = "verify-counter"))]
pub use strict::equations_on_this_thread;

use crate::cbor::{self, DecodeLimits, MapEntrySpan};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::KeyFingerprint;
use crate::keypair::NodeKeypair;
use crate::time::Timestamp;

/// A family of JSON-shaped artifacts (`node-advertisement.v1`, ...).
///
/// A value of an implementing type always satisfies the family's schema: `from_map` does
/// every structural check (required fields, types, enums, patterns, identifiers, field
/// agreement) and keeps the whole document, unknown fields included, so a parsed artifact
/// re-encodes to the same bytes. `validate(now)` adds the rules that need the clock.
pub trait Artifact: Sized {
    /// The family name, which is also the signing domain.
    const FAMILY: &'static str;
    /// Fields left out of the signing input (always including `signature` for signed
    /// families).
    const UNSIGNED_FIELDS: &'static [&'static str] = &["signature"];
    /// Most values the CBOR wire form may hold ([`cbor::DecodeLimits::max_items`]):
    /// unlimited but for the size cap unless a family sets it.
    const MAX_ITEMS: usize = usize::MAX;

    /// Parses and structurally validates a document.
    fn from_map(doc: Map<String, Value>) -> MeshResult<Self>;

    /// The whole document.
    fn as_map(&self) -> &Map<String, Value>;

    /// The document, by value.
    fn into_map(self) -> Map<String, Value>;

    /// The key that must have signed this artifact, or `None` for unsigned families.
    fn signer(&self) -> Option<KeyFingerprint>;

    /// The rules that depend on the current time (expiry, clock skew).
    fn validate(&self, now: &Timestamp) -> MeshResult<()>;

    /// Parses a JSON value. A value nested deeper than the CBOR decoder takes
    /// ([`cbor::DEFAULT_MAX_DEPTH`]) is refused: its wire form could not be read back.
    fn from_json(value: Value) -> MeshResult<Self> {
        if !cbor::depth_within(&value, cbor::DEFAULT_MAX_DEPTH) {
            return Err(too_deep(Self::FAMILY));
        }
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(MeshError::invalid(format!(
                "{}: expected a JSON object",
                Self::FAMILY
            ))),
        }
    }

    /// Parses JSON text (size-capped).
    fn from_json_str(text: &str) -> MeshResult<Self> {
        if text.len() > crate::MAX_ARTIFACT_BYTES {
            return Err(MeshError::invalid(format!(
                "{}: {} bytes exceed the {} byte cap",
                Self::FAMILY,
                text.len(),
                crate::MAX_ARTIFACT_BYTES
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| MeshError::invalid(format!("{}: malformed JSON: {e}", Self::FAMILY)))?;
        Self::from_json(value)
    }

    /// Parses the CBOR wire form (strictly deterministic, size-capped, at most
    /// [`Artifact::MAX_ITEMS`] values).
    fn from_cbor(bytes: &[u8]) -> MeshResult<Self> {
        let limits = cbor::DecodeLimits {
            max_items: Self::MAX_ITEMS,
            ..cbor::DecodeLimits::default()
        };
        let value = cbor::decode_with(bytes, limits)
            .map_err(|e| MeshError::from(e).context(Self::FAMILY))?;
        Self::from_json(value)
    }

    /// The JSON form.
    fn to_json(&self) -> Value {
        Value::Object(self.as_map().clone())
    }

    /// The CBOR wire form of the whole artifact, signature included.
    fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        cbor::encode_map_into(self.as_map(), |_| true, &mut out);
        out
    }

    /// The bytes that are signed.
    fn signing_input(&self) -> Vec<u8> {
        signing_input(Self::FAMILY, Self::UNSIGNED_FIELDS, self.as_map())
    }

    /// Checks the signature against [`Artifact::signer`] (no time rules).
    fn verify_signature(&self) -> MeshResult<()> {
        verify_with_input(self, &self.signing_input())
    }

    /// Signs `doc` with `key` and returns the artifact. Any `signature` in `doc` is
    /// replaced. The document must name `key` as its signer, otherwise
    /// `E_PROTO_INVALID`.
    fn sign(mut doc: Map<String, Value>, key: &NodeKeypair) -> MeshResult<Self> {
        doc.remove("signature");
        if !doc
            .values()
            .all(|v| cbor::depth_within(v, cbor::DEFAULT_MAX_DEPTH - 1))
        {
            return Err(too_deep(Self::FAMILY));
        }
        let input = signing_input(Self::FAMILY, Self::UNSIGNED_FIELDS, &doc);
        doc.insert("signature".into(), signature_value(&key.sign(&input)));
        let artifact = Self::from_map(doc)?;
        match artifact.signer() {
            Some(signer) if signer == key.fingerprint() => Ok(artifact),
            Some(signer) => Err(MeshError::invalid(format!(
                "{}: the payload names signer {signer}, not this node's key {}",
                Self::FAMILY,
                key.fingerprint()
            ))),
            None => Err(MeshError::invalid(format!(
                "{} is not a signed family",
                Self::FAMILY
            ))),
        }
    }

    /// Parses, verifies the signature and applies the time rules: what a receiver does
    /// with a JSON artifact.
    fn verify_json(value: Value, now: &Timestamp) -> MeshResult<Self> {
        let artifact = Self::from_json(value)?;
        artifact.verify_signature()?;
        artifact.validate(now)?;
        Ok(artifact)
    }

    /// Parses, verifies and validates the CBOR wire form. The signing input is cut from
    /// the received bytes (they are deterministic, so no re-encoding is needed).
    fn verify_cbor(bytes: &[u8], now: &Timestamp) -> MeshResult<Self> {
        let limits = DecodeLimits {
            max_items: Self::MAX_ITEMS,
            ..DecodeLimits::default()
        };
        let (map, spans) = cbor::decode_top_map(bytes, limits)
            .map_err(|e| MeshError::from(e).context(Self::FAMILY))?;
        let artifact = Self::from_map(map)?;
        let input = signing_input_from_wire(Self::FAMILY, Self::UNSIGNED_FIELDS, bytes, &spans);
        verify_with_input(&artifact, &input)?;
        artifact.validate(now)?;
        Ok(artifact)
    }
}

/// The clock rule shared by the families: `at` (the artifact's `field`) may be at most
/// [`crate::CLOCK_SKEW_SECS`] ahead of `now`; later is `E_PROTO_INVALID`.
pub fn not_in_future(family: &str, field: &str, at: &Timestamp, now: &Timestamp) -> MeshResult<()> {
    if at.secs_since(now) > crate::CLOCK_SKEW_SECS {
        return Err(MeshError::invalid(format!(
            "{family}: {field} {at} is in the future (now {now})"
        )));
    }
    Ok(())
}

/// Implements [`Artifact::as_map`] and [`Artifact::into_map`] for a family struct whose
/// document is in a field named `doc`.
#[macro_export]
macro_rules! artifact_doc_accessors {
    () => {
        fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
            &self.doc
        }

        fn into_map(self) -> serde_json::Map<String, serde_json::Value> {
            self.doc
        }
    };
}

/// `<family>` || 0x00 || deterministic CBOR of `doc` without `unsigned` fields.
pub fn signing_input(family: &str, unsigned: &[&str], doc: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(family.len() + 1 + 512);
    out.extend_from_slice(family.as_bytes());
    out.push(0);
    cbor::encode_map_into(doc, |k| !unsigned.contains(&k), &mut out);
    out
}

/// The signing input cut from a deterministic wire image whose top-level entries are
/// `spans`.
fn signing_input_from_wire(
    family: &str,
    unsigned: &[&str],
    bytes: &[u8],
    spans: &[MapEntrySpan],
) -> Vec<u8> {
    // A text key's head is 1 byte below 24 bytes of text, 2 below 256, 3 below 65536;
    // the decoder has checked the head, so comparing length and name bytes suffices.
    let is_unsigned = |span: &MapEntrySpan| {
        let key = &bytes[span.key.clone()];
        unsigned.iter().any(|f| {
            let head = match f.len() {
                0..=23 => 1,
                24..=255 => 2,
                _ => 3,
            };
            key.len() == head + f.len() && &key[head..] == f.as_bytes()
        })
    };
    let kept = spans.iter().filter(|s| !is_unsigned(s)).count();
    let mut out = Vec::with_capacity(family.len() + 1 + bytes.len());
    out.extend_from_slice(family.as_bytes());
    out.push(0);
    cbor::write_head(&mut out, 5, kept as u64);
    for span in spans.iter().filter(|s| !is_unsigned(s)) {
        out.extend_from_slice(&bytes[span.entry.clone()]);
    }
    out
}

fn too_deep(family: &str) -> MeshError {
    MeshError::invalid(format!(
        "{family}: nesting deeper than the limit ({})",
        cbor::DEFAULT_MAX_DEPTH
    ))
}

fn verify_with_input<A: Artifact>(artifact: &A, input: &[u8]) -> MeshResult<()> {
    let (key, sig) = prepare(artifact)?;
    strict::verify_strict_fast(&key.key, key.weak, input, &sig).map_err(|_| {
        MeshError::new(
            ErrorCode::SigInvalid,
            format!("{}: signature does not verify", A::FAMILY),
        )
    })
}

/// The verifying key and signature of an artifact, or the error that makes it
/// unverifiable before any curve arithmetic on the message.
pub(crate) fn prepare<A: Artifact>(
    artifact: &A,
) -> MeshResult<(crate::keycache::CachedKey, ed25519_dalek::Signature)> {
    let signer = artifact
        .signer()
        .ok_or_else(|| MeshError::invalid(format!("{} is not a signed family", A::FAMILY)))?;
    let sig = read_signature(artifact.as_map()).map_err(|e| e.context(A::FAMILY))?;
    let key = crate::keycache::lookup(signer.as_bytes()).ok_or_else(|| {
        MeshError::new(
            ErrorCode::SigUnknownSigner,
            format!(
                "{}: signer key {signer} is not a valid Ed25519 point",
                A::FAMILY
            ),
        )
    })?;
    Ok((key, sig))
}
