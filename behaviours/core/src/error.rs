//! The eleven frozen boundary error codes and the one error type every crate uses.

use std::fmt;

/// One of the eleven frozen boundary codes. Every rejection on the wire, over HTTP and in
/// the CLI carries one of them; the set and the spelling never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// No usable transport reached the peer.
    TransportUnavailable,
    /// The transport reached the peer but it (or a relay) refused.
    TransportRejected,
    /// An advertisement's `expires-at` is in the past.
    AdvExpired,
    /// An advertisement's `sequence/no` does not supersede the current one.
    AdvStaleSeq,
    /// A signature does not verify.
    SigInvalid,
    /// The signer is not the one the artifact or the connection names.
    SigUnknownSigner,
    /// A handshake looks replayed (seen nonce, timestamp outside the skew window).
    HsReplay,
    /// An ack refers to a handshake this side does not know.
    HsUnknownRef,
    /// A schema or protocol version this side does not speak.
    ProtoVersion,
    /// The input breaks the contract (schema, encoding, size, field rules).
    ProtoInvalid,
    /// A required capability is missing.
    ProtoCapMissing,
}

impl ErrorCode {
    /// All eleven codes, in their frozen order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::TransportUnavailable,
        ErrorCode::TransportRejected,
        ErrorCode::AdvExpired,
        ErrorCode::AdvStaleSeq,
        ErrorCode::SigInvalid,
        ErrorCode::SigUnknownSigner,
        ErrorCode::HsReplay,
        ErrorCode::HsUnknownRef,
        ErrorCode::ProtoVersion,
        ErrorCode::ProtoInvalid,
        ErrorCode::ProtoCapMissing,
    ];

    /// The wire spelling, e.g. `E_SIG_INVALID`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TransportUnavailable => "E_TRANSPORT_UNAVAILABLE",
            ErrorCode::TransportRejected => "E_TRANSPORT_REJECTED",
            ErrorCode::AdvExpired => "E_ADV_EXPIRED",
            ErrorCode::AdvStaleSeq => "E_ADV_STALE_SEQ",
            ErrorCode::SigInvalid => "E_SIG_INVALID",
            ErrorCode::SigUnknownSigner => "E_SIG_UNKNOWN_SIGNER",
            ErrorCode::HsReplay => "E_HS_REPLAY",
            ErrorCode::HsUnknownRef => "E_HS_UNKNOWN_REF",
            ErrorCode::ProtoVersion => "E_PROTO_VERSION",
            ErrorCode::ProtoInvalid => "E_PROTO_INVALID",
            ErrorCode::ProtoCapMissing => "E_PROTO_CAP_MISSING",
        }
    }

    /// The error class, e.g. `signature/invalid`.
    pub const fn class(self) -> &'static str {
        match self {
            ErrorCode::TransportUnavailable => "transport/unavailable",
            ErrorCode::TransportRejected => "transport/rejected",
            ErrorCode::AdvExpired => "advertisement/expired",
            ErrorCode::AdvStaleSeq => "advertisement/stale-sequence",
            ErrorCode::SigInvalid => "signature/invalid",
            ErrorCode::SigUnknownSigner => "signature/unknown-signer",
            ErrorCode::HsReplay => "handshake/replay-suspected",
            ErrorCode::HsUnknownRef => "handshake/unknown-ref",
            ErrorCode::ProtoVersion => "protocol/version-mismatch",
            ErrorCode::ProtoInvalid => "protocol/invalid-contract",
            ErrorCode::ProtoCapMissing => "protocol/capability-missing",
        }
    }

    /// Parses the wire spelling back; unknown strings give `None`.
    pub fn from_code_str(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: a frozen code plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct MeshError {
    /// The frozen boundary code.
    pub code: ErrorCode,
    /// What exactly was wrong, for people and logs.
    pub detail: String,
}

impl MeshError {
    /// A rejection with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        MeshError {
            code,
            detail: detail.into(),
        }
    }

    /// Shorthand for `E_PROTO_INVALID`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        MeshError::new(ErrorCode::ProtoInvalid, detail)
    }

    /// The same error with `context` put in front of its detail.
    pub fn context(self, context: impl fmt::Display) -> Self {
        MeshError {
            code: self.code,
            detail: format!("{context}: {}", self.detail),
        }
    }

    /// The JSON form used in HTTP bodies and CLI output:
    /// `{"error/code", "error/class", "detail"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error/code": self.code.as_str(),
            "error/class": self.code.class(),
            "detail": self.detail,
        })
    }
}

/// Result with a [`MeshError`].
pub type MeshResult<T> = Result<T, MeshError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_classes_are_the_frozen_ones() {
        let pairs: Vec<(&str, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.class()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("E_TRANSPORT_UNAVAILABLE", "transport/unavailable"),
                ("E_TRANSPORT_REJECTED", "transport/rejected"),
                ("E_ADV_EXPIRED", "advertisement/expired"),
                ("E_ADV_STALE_SEQ", "advertisement/stale-sequence"),
                ("E_SIG_INVALID", "signature/invalid"),
                ("E_SIG_UNKNOWN_SIGNER", "signature/unknown-signer"),
                ("E_HS_REPLAY", "handshake/replay-suspected"),
                ("E_HS_UNKNOWN_REF", "handshake/unknown-ref"),
                ("E_PROTO_VERSION", "protocol/version-mismatch"),
                ("E_PROTO_INVALID", "protocol/invalid-contract"),
                ("E_PROTO_CAP_MISSING", "protocol/capability-missing"),
            ]
        );
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code_str(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::from_code_str("E_NOPE"), None);
    }

    #[test]
    fn json_form_carries_code_and_class() {
        let e = MeshError::new(ErrorCode::SigInvalid, "bad").context("advert");
        let j = e.to_json();
        assert_eq!(j["error/code"], "E_SIG_INVALID");
        assert_eq!(j["error/class"], "signature/invalid");
        assert_eq!(j["detail"], "advert: bad");
    }
}
