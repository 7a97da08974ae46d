//! The fields a birthday stage adds to the `candidate` frames of a `connect`
//! correlation (`/mesh/signal/1.0.0`, `signal-frame.v1`), as pure encode and decode.
//!
//! Compatibility: `signal-frame.v1`'s validator checks only `addrs` in a `candidate`
//! payload (1 to 16 multiaddrs) and lets other keys through, and the routing policy
//! reads only `addrs` from it, so a node that does not know these fields verifies the
//! frame, dials its `addrs` as before and ignores the rest (both tested below and in
//! `router::tests`). Every frame carrying these fields keeps a non-empty `addrs`.
//!
//! - `birthday/mapping` (every candidate frame of a node that can probe): its
//!   [`Mapping`]. Absent means an old node or one that cannot probe: [`Mapping::Unknown`],
//!   so [`super::part`] gives no part and nothing is probed.
//! - `birthday/token` (16 hex digits) with `birthday/probe` (`ip:port`): the
//!   port-preserving side's offer ([`Step::Offer`]), the probe token and the public
//!   address of its probe socket, which the other side's sockets send to.
//! - `birthday/token` with `birthday/ready: true`: the symmetric side has sent its
//!   probes ([`Step::Ready`]); the other side starts its own.
//! - `birthday/token` with `birthday/ask: true`: the symmetric side started the
//!   correlation and asks the other side for its offer ([`Step::Ask`]), with the token
//!   the offer must carry.

use std::net::SocketAddr;

use mesh_core::{MeshError, MeshResult};
use serde_json::{Map, Value, json};

use super::Mapping;

/// The key of the node's mapping.
pub const MAPPING: &str = "birthday/mapping";
/// The key of the attempt's token.
pub const TOKEN: &str = "birthday/token";
/// The key of the port-preserving side's public probe address.
pub const PROBE: &str = "birthday/probe";
/// The key of the symmetric side's "probes sent".
pub const READY: &str = "birthday/ready";
/// The key of the symmetric side's request for an offer.
pub const ASK: &str = "birthday/ask";

/// Longest `birthday/probe` value (`[v6 address]:port` fits in 47 bytes).
const MAX_PROBE_LEN: usize = 64;

/// Writes our mapping into a candidate payload.
pub fn put_mapping(payload: &mut Map<String, Value>, mapping: Mapping) {
    payload.insert(MAPPING.into(), json!(mapping.as_str()));
}

/// The other side's mapping from its candidate payload; absent or unknown values are
/// [`Mapping::Unknown`] (an old node never probes).
pub fn mapping_of(payload: &Map<String, Value>) -> Mapping {
    payload
        .get(MAPPING)
        .and_then(Value::as_str)
        .map_or(Mapping::Unknown, Mapping::parse)
}

/// One step of an attempt carried in a candidate frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// From the port-preserving side: the token and its public probe address.
    Offer {
        /// The attempt's token (every probe carries it).
        token: [u8; 8],
        /// Where the symmetric side's probe sockets send.
        probe: SocketAddr,
    },
    /// From the symmetric side: its probes are out.
    Ready {
        /// The token of the offer it answers.
        token: [u8; 8],
    },
    /// From the symmetric side when it started the correlation: asks for an offer.
    Ask {
        /// The token the offer must carry.
        token: [u8; 8],
    },
}

impl Step {
    /// The attempt's token.
    pub fn token(&self) -> [u8; 8] {
        match *self {
            Step::Offer { token, .. } | Step::Ready { token } | Step::Ask { token } => token,
        }
    }

    /// Writes the step into a candidate payload (next to its `addrs`).
    pub fn put(&self, payload: &mut Map<String, Value>) {
        payload.insert(TOKEN.into(), json!(hex::encode(self.token())));
        match *self {
            Step::Offer { probe, .. } => {
                payload.insert(PROBE.into(), json!(probe.to_string()));
            }
            Step::Ready { .. } => {
                payload.insert(READY.into(), json!(true));
            }
            Step::Ask { .. } => {
                payload.insert(ASK.into(), json!(true));
            }
        }
    }

    /// The step a candidate payload carries: `Ok(None)` without a token (an ordinary
    /// candidate frame), `E_PROTO_INVALID` for a malformed one (a token that is not 16
    /// hex digits, a probe address that is not `ip:port` or longer than 64 bytes, a
    /// `ready` that is not `true`, both or neither of `probe` and `ready`).
    pub fn read(payload: &Map<String, Value>) -> MeshResult<Option<Step>> {
        let Some(token) = payload.get(TOKEN) else {
            return Ok(None);
        };
        let token = token
            .as_str()
            .filter(|t| t.len() == 16)
            .and_then(|t| hex::decode(t).ok())
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| bad(TOKEN, "must be 16 hex digits"))?;
        match (payload.get(PROBE), payload.get(READY), payload.get(ASK)) {
            (Some(probe), None, None) => {
                let probe = probe
                    .as_str()
                    .filter(|p| p.len() <= MAX_PROBE_LEN)
                    .and_then(|p| p.parse::<SocketAddr>().ok())
                    .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
                    .ok_or_else(|| bad(PROBE, "must be ip:port"))?;
                Ok(Some(Step::Offer { token, probe }))
            }
            (None, Some(Value::Bool(true)), None) => Ok(Some(Step::Ready { token })),
            (None, None, Some(Value::Bool(true))) => Ok(Some(Step::Ask { token })),
            (None, Some(_), None) => Err(bad(READY, "must be true")),
            (None, None, Some(_)) => Err(bad(ASK, "must be true")),
            _ => Err(bad(
                TOKEN,
                &format!("needs exactly one of {PROBE}, {READY}, {ASK}"),
            )),
        }
    }
}

fn bad(field: &str, what: &str) -> MeshError {
    MeshError::invalid(format!("signal-frame.v1 candidate: {field} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::{Artifact, ErrorCode, NodeKeypair, SignalFrame, Timestamp};

    fn payload(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn steps_and_mappings_round_trip() {
        let token = [1, 2, 3, 4, 5, 6, 7, 0xff];
        let probe: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        for step in [
            Step::Offer { token, probe },
            Step::Ready { token },
            Step::Ask { token },
        ] {
            let mut p = payload(json!({"addrs": ["/ip4/203.0.113.7/udp/4001/quic-v1"]}));
            put_mapping(&mut p, Mapping::Preserving);
            step.put(&mut p);
            assert_eq!(Step::read(&p).unwrap(), Some(step));
            assert_eq!(mapping_of(&p), Mapping::Preserving);
        }
        let mut p = Map::new();
        put_mapping(&mut p, Mapping::Varies);
        assert_eq!(mapping_of(&p), Mapping::Varies);
        let v6 = "[2001:db8::1]:9".parse().unwrap();
        let mut p = Map::new();
        Step::Offer { token, probe: v6 }.put(&mut p);
        assert_eq!(
            Step::read(&p).unwrap(),
            Some(Step::Offer { token, probe: v6 })
        );
    }

    #[test]
    fn an_old_nodes_candidate_payload_has_no_step_and_an_unknown_mapping() {
        let p = payload(json!({"addrs": ["/ip4/203.0.113.7/udp/4001/quic-v1"]}));
        assert_eq!(Step::read(&p).unwrap(), None);
        assert_eq!(mapping_of(&p), Mapping::Unknown);
        let p = payload(json!({"birthday/mapping": 7}));
        assert_eq!(mapping_of(&p), Mapping::Unknown);
        let p = payload(json!({"birthday/mapping": "sideways"}));
        assert_eq!(mapping_of(&p), Mapping::Unknown);
    }

    #[test]
    fn malformed_steps_are_proto_invalid() {
        let t = "0102030405060708";
        let cases = [
            json!({"birthday/token": 5, "birthday/ready": true}),
            json!({"birthday/token": "01020304", "birthday/ready": true}),
            json!({"birthday/token": "zz02030405060708", "birthday/ready": true}),
            json!({"birthday/token": t}),
            json!({"birthday/token": t, "birthday/ready": false}),
            json!({"birthday/token": t, "birthday/ready": "yes"}),
            json!({"birthday/token": t, "birthday/probe": "203.0.113.7:1", "birthday/ready": true}),
            json!({"birthday/token": t, "birthday/probe": "203.0.113.7"}),
            json!({"birthday/token": t, "birthday/probe": "203.0.113.7:0"}),
            json!({"birthday/token": t, "birthday/probe": "0.0.0.0:5"}),
            json!({"birthday/token": t, "birthday/probe": "x".repeat(100)}),
            json!({"birthday/token": t, "birthday/probe": ["203.0.113.7:1"]}),
            json!({"birthday/token": t, "birthday/ask": 1}),
            json!({"birthday/token": t, "birthday/ask": true, "birthday/ready": true}),
        ];
        for c in cases {
            let e = Step::read(&payload(c.clone())).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{c}");
        }
    }

    /// The validator every node runs (old ones too) takes a candidate frame with the
    /// birthday fields, signed and back from the wire.
    #[test]
    fn candidate_frames_with_the_fields_pass_the_frame_validator() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let now = Timestamp::now();
        let mut p = payload(json!({"addrs": ["/ip4/203.0.113.7/udp/4001/quic-v1"]}));
        put_mapping(&mut p, Mapping::Varies);
        Step::Offer {
            token: [9; 8],
            probe: "203.0.113.7:40001".parse().unwrap(),
        }
        .put(&mut p);
        let f =
            mesh_signal::frames::frame(&a, b.node_id(), "candidate", "corr:1", p, &now).unwrap();
        let back = SignalFrame::verify_cbor(&f.to_cbor(), &now).unwrap();
        assert_eq!(
            Step::read(back.payload()).unwrap().map(|s| s.token()),
            Some([9; 8])
        );
        assert_eq!(mapping_of(back.payload()), Mapping::Varies);
    }
}
