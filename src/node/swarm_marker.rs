//! Signal markers to a discovery-key swarm: a participant-signed
//! `signal-marker-envelope.v1` whose signed `swarm/key` (64 hex digits) binds it to the
//! swarm instead of a `recipient/node-id`, published on the swarm's gossipsub topic (so
//! every member gets it, through the mesh gossipsub already keeps for presences, and no
//! one outside the swarm does).
//!
//! A member takes one only if, in this order: its author is within its rate (100, then
//! 600 a minute, as point-to-point markers); it is a valid, verifying envelope not from
//! the future; it names this swarm and no recipient; its signer is the gossipsub
//! message's author; and the marker guard of point-to-point markers (without its
//! recipient rule) finds it recent and not taken before.

use libp2p::{PeerId, gossipsub};
use mesh_core::cbor;
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, NodeKeypair, RateLimit, RateLimiter,
    SignalMarkerEnvelope, Timestamp,
};
use mesh_session::marker::guard::{Guard, GuardConfig};
use mesh_signal::group::DiscoveryKey;
use serde_json::{Map, Value, json};

/// The field that binds an envelope to a swarm.
pub(crate) const SWARM_FIELD: &str = "swarm/key";

/// Authors whose rate is tracked at once (the least recently seen go first).
const RATE_KEYS: usize = 4096;

/// The envelope for `text` from the participant of `key` to swarm `swarm`.
pub(crate) fn envelope(
    key: &NodeKeypair,
    swarm: &DiscoveryKey,
    message_id: &str,
    text: &str,
    now: &Timestamp,
) -> MeshResult<SignalMarkerEnvelope> {
    let doc = json!({
        "schema/v": 1,
        "message/id": message_id,
        "protocol/version": mesh_core::PROTOCOL_VERSION,
        "message/kind": "signal-marker-envelope.v1",
        "sender/participant-id": key.participant_id().to_string(),
        "created-at": now.as_str(),
        "marker/ref": text,
        SWARM_FIELD: swarm.to_hex(),
    });
    let Value::Object(map) = doc else {
        return Err(MeshError::invalid("envelope is not an object"));
    };
    SignalMarkerEnvelope::sign(map, key)
}

/// Whether a message on a swarm topic is a signal-marker envelope (else it is taken
/// for a presence). Undecodable bytes are not.
pub(crate) fn is_marker(data: &[u8]) -> bool {
    match cbor::decode(data) {
        Ok(Value::Object(m)) => is_marker_map(&m),
        _ => false,
    }
}

fn is_marker_map(m: &Map<String, Value>) -> bool {
    m.get("message/kind").and_then(Value::as_str) == Some("signal-marker-envelope.v1")
}

/// The receiving side: rate per author and the duplicate and age guard.
#[derive(Debug)]
pub(crate) struct SwarmMarkers {
    guard: Guard,
    rate: RateLimiter<PeerId>,
}

impl SwarmMarkers {
    pub(crate) fn new() -> Self {
        SwarmMarkers {
            guard: Guard::new(GuardConfig {
                require_recipient: false,
                ..GuardConfig::default()
            }),
            rate: RateLimiter::new(RateLimit::per_minute(100, 600), RATE_KEYS),
        }
    }

    /// Checks an envelope that arrived on the topic of `swarm`, authored (gossipsub's
    /// signed `source`) by `author`, for this node `me`.
    pub(crate) fn receive(
        &mut self,
        me: &NodeId,
        swarm: &DiscoveryKey,
        author: Option<PeerId>,
        data: &[u8],
        now: &Timestamp,
    ) -> MeshResult<SignalMarkerEnvelope> {
        let Some(author) = author else {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "swarm marker without a signed gossipsub author",
            ));
        };
        if let Err(retry) = self.rate.check(&author, now) {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many swarm markers from {author}; retry after {retry} s"),
            ));
        }
        let env = SignalMarkerEnvelope::verify_cbor(data, now)?;
        let named = env.as_map().get(SWARM_FIELD).and_then(Value::as_str);
        if named != Some(swarm.to_hex().as_str()) {
            return Err(MeshError::invalid(
                "signal-marker-envelope.v1: swarm/key is not this swarm's",
            ));
        }
        if env.recipient().is_some() {
            return Err(MeshError::invalid(
                "signal-marker-envelope.v1: a swarm marker names no recipient/node-id",
            ));
        }
        if env.sender().to_peer_id().ok() != Some(author) {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "signal-marker-envelope.v1: the signer is not the message's author",
            ));
        }
        self.guard.admit(me, &env, now)?;
        Ok(env)
    }
}

/// How gossipsub hears of a marker we refuse: a duplicate, an old one or one over the
/// author's rate is ignored (not forwarded, nobody penalised: it may have waited in a
/// queue, or come round again); anything else (bad form, signature, swarm, author) is
/// rejected, which penalises the peer that propagated it.
pub(crate) fn acceptance(e: &MeshError) -> gossipsub::MessageAcceptance {
    match e.code {
        ErrorCode::HsReplay | ErrorCode::TransportRejected => gossipsub::MessageAcceptance::Ignore,
        _ => gossipsub::MessageAcceptance::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (NodeKeypair, DiscoveryKey, NodeId, Timestamp) {
        let key = NodeKeypair::generate();
        let swarm = DiscoveryKey::from_name("party");
        let me = NodeKeypair::generate().node_id();
        (key, swarm, me, Timestamp::now())
    }

    #[test]
    fn a_members_marker_is_taken_once() {
        let (key, swarm, me, now) = setup();
        let env = envelope(&key, &swarm, "msg:1", "hello", &now).unwrap();
        let bytes = env.to_cbor();
        assert!(is_marker(&bytes));
        let author = key.node_id().to_peer_id().ok();
        let mut m = SwarmMarkers::new();
        let got = m.receive(&me, &swarm, author, &bytes, &now).unwrap();
        assert_eq!(got.marker_ref(), "hello");
        let again = m.receive(&me, &swarm, author, &bytes, &now).unwrap_err();
        assert_eq!(again.code, ErrorCode::HsReplay);
        assert_eq!(acceptance(&again), gossipsub::MessageAcceptance::Ignore);
    }

    #[test]
    fn wrong_swarm_author_or_age_is_refused() {
        let (key, swarm, me, now) = setup();
        let author = key.node_id().to_peer_id().ok();
        let mut m = SwarmMarkers::new();
        let other = DiscoveryKey::from_name("another party");
        let env = envelope(&key, &other, "msg:2", "x", &now).unwrap();
        let e = m
            .receive(&me, &swarm, author, &env.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
        assert_eq!(acceptance(&e), gossipsub::MessageAcceptance::Reject);
        let env = envelope(&key, &swarm, "msg:3", "x", &now).unwrap();
        let stranger = Some(PeerId::random());
        let e = m
            .receive(&me, &swarm, stranger, &env.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SigUnknownSigner);
        let old = envelope(&key, &swarm, "msg:4", "x", &now.plus_secs(-3600)).unwrap();
        let e = m
            .receive(&me, &swarm, author, &old.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::HsReplay);
        // A point-to-point envelope (with a recipient, no swarm) is not a swarm marker.
        let p2p = mesh_session::marker::envelope(&key, me, "msg:5", "x", &now).unwrap();
        let e = m
            .receive(&me, &swarm, author, &p2p.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
        // Tampered bytes do not verify.
        let mut bytes = envelope(&key, &swarm, "msg:6", "x", &now)
            .unwrap()
            .to_cbor();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        assert!(m.receive(&me, &swarm, author, &bytes, &now).is_err());
        assert!(!is_marker(b"not cbor"));
    }
}
