//! The `signature` object: `{"alg": "ed25519", "value": base64url without padding}`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::{MeshError, MeshResult};

/// Encodes 64 signature bytes as the artifact's `signature` object.
pub fn signature_value(sig: &[u8; 64]) -> Value {
    serde_json::json!({"alg": "ed25519", "value": URL_SAFE_NO_PAD.encode(sig)})
}

/// Reads the Ed25519 signature of an artifact. A missing object, another algorithm, or a
/// value that is not canonical unpadded base64url of exactly 64 bytes (the
/// `base64url:...` placeholders of the fixtures, say) is `E_PROTO_INVALID`.
pub fn read_signature(doc: &Map<String, Value>) -> MeshResult<ed25519_dalek::Signature> {
    let sig = doc
        .get("signature")
        .and_then(Value::as_object)
        .ok_or_else(|| MeshError::invalid("`signature` object is missing"))?;
    match sig.get("alg").and_then(Value::as_str) {
        Some("ed25519") => {}
        Some(other) => {
            return Err(MeshError::invalid(format!(
                "signature algorithm `{other}` is not supported (only ed25519)"
            )));
        }
        None => return Err(MeshError::invalid("`signature.alg` is missing")),
    }
    let value = sig
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| MeshError::invalid("`signature.value` is missing"))?;
    decode_signature(value)
}

/// Decodes unpadded canonical base64url of exactly 64 bytes.
pub fn decode_signature(value: &str) -> MeshResult<ed25519_dalek::Signature> {
    let not_a_signature = || {
        MeshError::invalid(format!(
            "`signature.value` is not unpadded base64url of 64 bytes (placeholder?): `{}`",
            value.chars().take(100).collect::<String>()
        ))
    };
    if value.len() != 86 {
        return Err(not_a_signature());
    }
    let mut bytes = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
        Ok(64) => Ok(ed25519_dalek::Signature::from_bytes(&bytes)),
        _ => Err(not_a_signature()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn placeholders_and_non_canonical_text_are_invalid() {
        let good = "GGxfc1fHLYqoUhSygpyHSl_yKuilR2YsCx1peziDLhGLXfO2YQz9IXGU4VMDWnh-Zwltk0D-JXnO1IeF1GZMAQ";
        assert!(decode_signature(good).is_ok());
        // Last char carries 2 unused bits: "Q" -> "R" changes only those bits.
        let mut non_canonical = good.to_string();
        non_canonical.pop();
        non_canonical.push('R');
        for bad in [
            "base64url:peer-handshake-signature",
            &format!("{good}=="),
            &non_canonical,
            &good.replace('_', "/"),
            "",
        ] {
            assert_eq!(
                decode_signature(bad).unwrap_err().code,
                ErrorCode::ProtoInvalid,
                "{bad}"
            );
        }
    }
}
