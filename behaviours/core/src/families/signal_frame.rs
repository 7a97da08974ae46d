//! `signal-frame.v1` (libmesh): one signed signaling frame between two nodes, possibly
//! relayed by signaling hosts. The signature covers everything but `hops`, which each
//! host increments, so a host can neither forge nor alter a frame.

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// The frame kinds.
pub const FRAME_KINDS: &[&str] = &[
    "connect_request",
    "connect_accept",
    "connect_reject",
    "candidate",
    "setup_payload",
];
/// Most hops a frame may travel through signaling hosts.
pub const MAX_HOPS: u64 = 2;
/// Longest lifetime a frame may claim, seconds.
pub const MAX_FRAME_TTL_SECS: i64 = 120;
/// Most candidate addresses in one frame.
pub const MAX_CANDIDATES: usize = 16;
/// Largest `setup_payload` data, bytes of base64 text.
pub const MAX_SETUP_B64: usize = 22 * 1024;
/// Longest `correlation/id`.
pub const MAX_CORRELATION: usize = 128;
/// Longest `frame/id`, bytes (receivers remember frame ids to refuse duplicates).
pub const MAX_FRAME_ID: usize = 128;
/// Most values in a frame's wire form (see [`SignalFrame`]'s `Artifact::MAX_ITEMS`);
/// beyond, `E_PROTO_INVALID`.
pub const MAX_FRAME_ITEMS: usize = 256;

/// A structurally valid `signal-frame.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalFrame {
    doc: Map<String, Value>,
    from: NodeId,
    to: NodeId,
    created_at: Timestamp,
    expires_at: Timestamp,
}

impl SignalFrame {
    /// `from`, the signer.
    pub fn from(&self) -> NodeId {
        self.from
    }

    /// `to`, the recipient.
    pub fn to(&self) -> NodeId {
        self.to
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        self.doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `correlation/id`.
    pub fn correlation(&self) -> &str {
        self.doc
            .get("correlation/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `frame/id` (duplicate suppression).
    pub fn frame_id(&self) -> &str {
        self.doc
            .get("frame/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `hops` (unsigned; 0 when sent directly).
    pub fn hops(&self) -> u64 {
        self.doc.get("hops").and_then(Value::as_u64).unwrap_or(0)
    }

    /// A copy one hop further (for a signaling host); `E_TRANSPORT_REJECTED` past
    /// [`MAX_HOPS`].
    pub fn forwarded(&self) -> MeshResult<SignalFrame> {
        let hops = self.hops() + 1;
        if hops > MAX_HOPS {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("signal-frame.v1: hop limit {MAX_HOPS} reached"),
            ));
        }
        let mut f = self.clone();
        f.doc.insert("hops".into(), hops.into());
        Ok(f)
    }

    /// `created-at`.
    pub fn created_at(&self) -> &Timestamp {
        &self.created_at
    }

    /// `expires-at`.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }

    /// `payload`.
    pub fn payload(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.doc.get("payload") {
            Some(Value::Object(m)) => m,
            _ => EMPTY.get_or_init(Map::new),
        }
    }
}

/// Whether `doc` (as a top-level map: itself, and each key and value) holds at most
/// `max` values; stops counting past it.
fn within_values(doc: &Map<String, Value>, max: usize) -> bool {
    fn take(left: &mut usize) -> bool {
        let ok = *left > 0;
        *left = left.saturating_sub(1);
        ok
    }
    fn map(m: &Map<String, Value>, left: &mut usize) -> bool {
        take(left) && m.values().all(|v| take(left) && value(v, left))
    }
    fn value(v: &Value, left: &mut usize) -> bool {
        match v {
            Value::Array(a) => take(left) && a.iter().all(|x| value(x, left)),
            Value::Object(m) => map(m, left),
            _ => take(left),
        }
    }
    let mut left = max;
    map(doc, &mut left)
}

fn check_payload(f: &Fields<'_>, kind: &str) -> MeshResult<()> {
    let p = f.object("payload")?;
    match kind {
        "connect_request" => {
            p.opt_str("purpose")?;
        }
        "connect_accept" => {}
        "connect_reject" => {
            let code = p.str("reason/code")?;
            if ErrorCode::from_code_str(code).is_none() {
                return Err(p.err("reason/code", "is not a frozen error code"));
            }
            p.opt_str("reason")?;
        }
        "candidate" => {
            let addrs = p.array("addrs", 1)?;
            if addrs.len() > MAX_CANDIDATES {
                return Err(p.err("addrs", &format!("at most {MAX_CANDIDATES} addresses")));
            }
            for (i, a) in addrs.iter().enumerate() {
                let ok = a
                    .as_str()
                    .is_some_and(|s| s.parse::<multiaddr::Multiaddr>().is_ok());
                if !ok {
                    return Err(p.err(&format!("addrs[{i}]"), "must be a multiaddr"));
                }
            }
        }
        "setup_payload" => {
            let data = p.str("data/b64")?;
            if data.len() > MAX_SETUP_B64 {
                return Err(p.err_code(
                    ErrorCode::ProtoInvalid,
                    "data/b64",
                    &format!("larger than {MAX_SETUP_B64} bytes"),
                ));
            }
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(data)
                .is_err()
            {
                return Err(p.err("data/b64", "is not base64"));
            }
            p.opt_str("content-type")?;
        }
        _ => return Err(f.err("kind", "unknown")),
    }
    Ok(())
}

impl Artifact for SignalFrame {
    const FAMILY: &'static str = "signal-frame.v1";
    /// Hosts increment `hops`; it stays outside the signed payload.
    const UNSIGNED_FIELDS: &'static [&'static str] = &["signature", "hops"];
    /// A frame's values are few (about 20, and 16 candidate addresses), but anyone can
    /// sign frames under fresh keys, and a 64 KiB frame of `null`s in an unknown field
    /// or in the payload (which the application is handed as it came) decoded to 2 MiB:
    /// the event queue's 1,024 frames to 2 GiB.
    const MAX_ITEMS: usize = MAX_FRAME_ITEMS;

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        // The wire cap, for frames built from JSON or signed here too, with room for the
        // `hops` a host adds (two values) kept in a frame without them: no frame is made
        // that a host would refuse once it counted a hop.
        let max = if doc.contains_key("hops") {
            MAX_FRAME_ITEMS
        } else {
            MAX_FRAME_ITEMS - 2
        };
        if !within_values(&doc, max) {
            return Err(MeshError::invalid(format!(
                "{}: the frame holds more than {max} values",
                Self::FAMILY
            )));
        }
        f.schema_v()?;
        f.constant("message/kind", Self::FAMILY)?;
        if f.str("frame/id")?.len() > MAX_FRAME_ID {
            return Err(f.err("frame/id", &format!("longer than {MAX_FRAME_ID} bytes")));
        }
        let kind = f.one_of("kind", FRAME_KINDS)?;
        let from = f.node_id("from")?;
        let to = f.node_id("to")?;
        if from == to {
            return Err(f.err("to", "must differ from `from`"));
        }
        let corr = f.str("correlation/id")?;
        if corr.is_empty() || corr.len() > MAX_CORRELATION {
            return Err(f.err(
                "correlation/id",
                &format!("needs 1..={MAX_CORRELATION} bytes"),
            ));
        }
        let created_at = f.timestamp("created-at")?;
        let expires_at = f.timestamp("expires-at")?;
        let ttl = expires_at.secs_since(&created_at);
        if !(1..=MAX_FRAME_TTL_SECS).contains(&ttl) {
            return Err(f.err(
                "expires-at",
                &format!("must be 1..={MAX_FRAME_TTL_SECS} s after created-at"),
            ));
        }
        if f.has("hops") {
            let hops = f.u64("hops")?;
            if hops > MAX_HOPS {
                return Err(f.err_code(
                    ErrorCode::TransportRejected,
                    "hops",
                    &format!("more than {MAX_HOPS}"),
                ));
            }
        }
        check_payload(&f, kind)?;
        f.signature_shape(true)?;
        Ok(SignalFrame {
            doc,
            from,
            to,
            created_at,
            expires_at,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.from.fingerprint())
    }

    /// `created-at` not ahead of `now` by more than 30 s, and not expired; both are
    /// `E_PROTO_INVALID` (`E_ADV_EXPIRED` is for advertisements).
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "created-at", &self.created_at, now)?;
        if &self.expires_at <= now {
            return Err(MeshError::invalid(format!(
                "signal-frame.v1: expired at {}",
                self.expires_at.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypair::NodeKeypair;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-21T12:00:00Z").unwrap()
    }

    fn frame(key: &NodeKeypair, to: NodeId, kind: &str, payload: Value) -> MeshResult<SignalFrame> {
        let t = now();
        let Value::Object(doc) = json!({
            "schema/v": 1,
            "message/kind": "signal-frame.v1",
            "frame/id": "sf:0001",
            "kind": kind,
            "from": key.node_id().to_string(),
            "to": to.to_string(),
            "correlation/id": "corr-1",
            "created-at": t.as_str(),
            "expires-at": t.plus_secs(60).as_str(),
            "payload": payload,
        }) else {
            unreachable!()
        };
        SignalFrame::sign(doc, key)
    }

    #[test]
    fn every_kind_signs_and_verifies_from_cbor_and_json() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let cases = [
            ("connect_request", json!({"purpose": "webrtc"})),
            ("connect_accept", json!({})),
            (
                "connect_reject",
                json!({"reason/code": "E_TRANSPORT_REJECTED", "reason": "busy"}),
            ),
            (
                "candidate",
                json!({"addrs": ["/ip4/192.0.2.1/udp/4001/quic-v1"]}),
            ),
            (
                "setup_payload",
                json!({"data/b64": "aGVsbG8=", "content-type": "application/sdp"}),
            ),
        ];
        for (kind, payload) in cases {
            let f = frame(&a, b.node_id(), kind, payload).unwrap();
            assert_eq!(f.kind(), kind);
            assert_eq!(f.from(), a.node_id());
            assert_eq!(f.to(), b.node_id());
            let back = SignalFrame::verify_cbor(&f.to_cbor(), &now()).unwrap();
            assert_eq!(back.correlation(), "corr-1");
            SignalFrame::verify_json(f.to_json(), &now()).unwrap();
        }
    }

    #[test]
    fn hosts_may_count_hops_but_not_change_content() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let f = frame(
            &a,
            b.node_id(),
            "candidate",
            json!({"addrs": ["/ip4/192.0.2.1/tcp/1"]}),
        )
        .unwrap();
        let one = f.forwarded().unwrap();
        let two = one.forwarded().unwrap();
        assert_eq!(two.hops(), 2);
        SignalFrame::verify_cbor(&two.to_cbor(), &now()).unwrap();
        assert_eq!(
            two.forwarded().unwrap_err().code,
            ErrorCode::TransportRejected
        );

        // A host that rewrites the candidates breaks the signature.
        let mut doc = f.to_json();
        doc["payload"]["addrs"] = json!(["/ip4/203.0.113.66/tcp/1"]);
        let err = SignalFrame::verify_json(doc, &now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::SigInvalid);
        // So does one that re-addresses the frame.
        let mut doc = f.to_json();
        doc["to"] = json!(NodeKeypair::generate().node_id().to_string());
        assert_eq!(
            SignalFrame::verify_json(doc, &now()).unwrap_err().code,
            ErrorCode::SigInvalid
        );
        // A hop count beyond the limit is refused before the signature is checked.
        let mut doc = f.to_json();
        doc["hops"] = json!(3);
        assert_eq!(
            SignalFrame::verify_json(doc, &now()).unwrap_err().code,
            ErrorCode::TransportRejected
        );
    }

    #[test]
    fn bad_frames_are_refused_with_codes() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let to = b.node_id();
        let bad = [
            ("connect_reject", json!({"reason/code": "E_NOPE"})),
            ("candidate", json!({"addrs": []})),
            ("candidate", json!({"addrs": ["not an address"]})),
            ("setup_payload", json!({"data/b64": "%%%"})),
            (
                "setup_payload",
                json!({"data/b64": "A".repeat(MAX_SETUP_B64 + 4)}),
            ),
            ("gossip", json!({})),
        ];
        for (kind, payload) in bad {
            let e = frame(&a, to, kind, payload).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{kind}: {e}");
        }
        let many: Vec<String> = (0..=MAX_CANDIDATES)
            .map(|i| format!("/ip4/192.0.2.1/tcp/{i}"))
            .collect();
        assert!(frame(&a, to, "candidate", json!({"addrs": many})).is_err());
        assert!(frame(&a, a.node_id(), "connect_accept", json!({})).is_err());
        // Expired and future frames.
        let f = frame(&a, to, "connect_accept", json!({})).unwrap();
        let late = now().plus_secs(61);
        assert_eq!(
            SignalFrame::verify_cbor(&f.to_cbor(), &late)
                .unwrap_err()
                .code,
            ErrorCode::ProtoInvalid
        );
        let early = now().plus_secs(-31);
        assert!(SignalFrame::verify_cbor(&f.to_cbor(), &early).is_err());
    }

    /// A frame padded with `null`s (in the payload, which the application is handed, or
    /// in a field of its own) is refused on the wire before it is decoded whole, and
    /// cannot be signed here either (with room left for a host's `hops`); a frame of
    /// every field and 16 candidates is far inside the cap.
    #[test]
    fn a_frame_of_many_values_is_refused_on_the_wire() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let to = b.node_id();
        let pad = |n: usize| json!({"purpose": "x", "pad": vec![Value::Null; n]});
        let e = frame(&a, to, "connect_request", pad(MAX_FRAME_ITEMS)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        // The wire form of such a frame (its signature does not matter: it is refused
        // while it is decoded).
        let mut doc = frame(&a, to, "connect_request", json!({"purpose": "x"}))
            .unwrap()
            .to_json();
        for (field, n) in [("payload", MAX_FRAME_ITEMS), ("x-pad", 60_000)] {
            let mut d = doc.clone();
            if field == "payload" {
                d["payload"] = pad(n);
            } else {
                d["x-pad"] = json!(vec![Value::Null; n]);
            }
            let wire = crate::cbor::encode(&d);
            let e = SignalFrame::from_cbor(&wire).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
            assert!(e.to_string().contains("more values than the cap"), "{e}");
            let e = SignalFrame::verify_cbor(&wire, &now()).unwrap_err();
            assert!(e.to_string().contains("more values than the cap"), "{e}");
        }
        // The largest frame that can be signed still passes a host's `hops`.
        let mut left = frame(&a, to, "connect_request", pad(0)).unwrap().to_json();
        let base = {
            let wire = crate::cbor::encode(&left);
            let (m, _) = crate::cbor::decode_top_map(&wire, Default::default()).unwrap();
            let mut n = 0usize;
            fn count(v: &Value, n: &mut usize) {
                *n += 1;
                match v {
                    Value::Array(a) => a.iter().for_each(|x| count(x, n)),
                    Value::Object(m) => m.values().for_each(|x| {
                        *n += 1;
                        count(x, n)
                    }),
                    _ => {}
                }
            }
            count(&Value::Object(m), &mut n);
            n
        };
        let room = MAX_FRAME_ITEMS - 2 - base;
        left["payload"] = pad(room);
        let Value::Object(mut m) = left else {
            unreachable!()
        };
        m.remove("signature");
        let largest = SignalFrame::sign(m, &a).unwrap();
        let hopped = largest.forwarded().unwrap();
        assert!(SignalFrame::from_cbor(&hopped.to_cbor()).is_ok());
        doc["payload"] = pad(room + 1);
        let Value::Object(mut m) = doc else {
            unreachable!()
        };
        m.remove("signature");
        assert!(SignalFrame::sign(m, &a).is_err());

        let all: Vec<String> = (0..MAX_CANDIDATES)
            .map(|i| format!("/ip4/192.0.2.1/tcp/{i}"))
            .collect();
        let full = frame(&a, to, "candidate", json!({"addrs": all})).unwrap();
        let back = SignalFrame::from_cbor(&full.to_cbor()).unwrap();
        assert_eq!(
            back.payload()["addrs"].as_array().unwrap().len(),
            MAX_CANDIDATES
        );
        // A setup payload of the largest size: one string, one value (a browser's SDP;
        // the first cut counted a text's bytes as values and refused it).
        let setup = json!({"data/b64": "A".repeat(MAX_SETUP_B64), "content-type": "sdp"});
        let full = frame(&a, to, "setup_payload", setup).unwrap();
        assert!(SignalFrame::from_cbor(&full.to_cbor()).is_ok());
    }

    #[test]
    fn a_frame_id_longer_than_the_cap_is_refused() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let with_id = |id: String| {
            let mut doc = frame(&a, b.node_id(), "connect_accept", json!({}))
                .unwrap()
                .to_json();
            doc["frame/id"] = json!(id);
            let Value::Object(m) = doc else {
                unreachable!()
            };
            let mut m = m;
            m.remove("signature");
            SignalFrame::sign(m, &a)
        };
        assert!(with_id("f".repeat(MAX_FRAME_ID)).is_ok());
        let e = with_id("f".repeat(MAX_FRAME_ID + 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        assert!(e.to_string().contains("frame/id"), "{e}");
    }
}
