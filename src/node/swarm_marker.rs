//! Signal markers to a discovery-key swarm: a participant-signed
//! `signal-marker-envelope.v1` whose signed `swarm/key` (64 hex digits) binds it to the
//! swarm instead of a `recipient/node-id`, published on the swarm's gossipsub topic (so
//! every member gets it, through the mesh gossipsub already keeps for presences, and no
//! one outside the swarm does).
//!
//! A member takes one only if, in this order: its author is within its rate (100, then
//! 600 a minute, as point-to-point markers), the peer that handed it over within its
//! network's share and all markers within the node's: for an author without a presence
//! in a swarm of ours [`PER_FORWARDER`] and [`TOTAL`], for a member
//! [`MEMBER_PER_FORWARDER`] and [`MEMBER_TOTAL`]; it is a valid, verifying envelope not
//! from the future; it names this swarm and no recipient; its signer is the gossipsub
//! message's author; and the marker guard of point-to-point markers (without its
//! recipient rule, holding [`GUARD_CAPACITY`]) finds it recent and not taken before.
//!
//! Authors cost nothing (gossipsub's `source` is any key), so the author's rate alone
//! let one connection hand over markers without end, each verified, delivered and
//! forwarded to the swarm; and 16,384 of them within the guard's window filled the
//! guard, which then dropped entries still in their window: a marker dropped so could
//! be delivered again. A presence costs nothing either (one signed `join` per fresh
//! key), so members need the same bounds: 200 fresh keys each with a presence and 100
//! markers handed over through one connection were all taken (only the authors' rates
//! applied) and overflowed the guard. The two classes have budgets of their own, so a
//! flood of strangers' markers (which every node forwards) cannot crowd members' out,
//! and together they admit fewer in a window than the guard holds (2 × (1,000 + 40 a
//! second × (300 + 30 s of clock skew)) = 28,400 < 32,768), so the guard never has to
//! drop a live entry.

use libp2p::{PeerId, gossipsub};
use mesh_advert::Source;
use mesh_core::cbor;
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, NodeKeypair, RateLimit, RateLimiter,
    SignalMarkerEnvelope, Timestamp, take_all,
};
use mesh_session::marker::guard::{Guard, GuardConfig};
use mesh_signal::group::DiscoveryKey;
use serde_json::{Map, Value, json};

/// The field that binds an envelope to a swarm.
pub(crate) const SWARM_FIELD: &str = "swarm/key";

/// Authors (and forwarding networks) whose rate is tracked at once (the least recently
/// seen go first).
const RATE_KEYS: usize = 4096;

/// Markers of non-members taken from what one network's peers hand over (a
/// forwarder's [`Source`]): 200 at once, then 10 a second.
pub(crate) const PER_FORWARDER: RateLimit = RateLimit {
    burst: 200,
    per_second: 10.0,
};

/// Markers of non-members taken in all: 1,000 at once, then 40 a second.
pub(crate) const TOTAL: RateLimit = RateLimit {
    burst: 1000,
    per_second: 40.0,
};

/// Markers of members taken from what one network's peers hand over: 250 at once, then
/// 10 a second (a swarm's markers reach a member through a handful of mesh peers; one
/// connection's fresh member keys get a quarter of [`MEMBER_TOTAL`] at once).
pub(crate) const MEMBER_PER_FORWARDER: RateLimit = RateLimit {
    burst: 250,
    per_second: 10.0,
};

/// Markers of members taken in all: 1,000 at once, then 40 a second.
pub(crate) const MEMBER_TOTAL: RateLimit = RateLimit {
    burst: 1000,
    per_second: 40.0,
};

/// Markers the guard remembers (about 4 MB when full): more than [`TOTAL`] and
/// [`MEMBER_TOTAL`] admit within its window.
pub(crate) const GUARD_CAPACITY: usize = 32_768;

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
    forwarders: RateLimiter<Source>,
    total: RateLimiter<()>,
    member_forwarders: RateLimiter<Source>,
    member_total: RateLimiter<()>,
}

impl SwarmMarkers {
    pub(crate) fn new() -> Self {
        SwarmMarkers {
            guard: Guard::new(GuardConfig {
                require_recipient: false,
                capacity: GUARD_CAPACITY,
                ..GuardConfig::default()
            }),
            rate: RateLimiter::new(RateLimit::per_minute(100, 600), RATE_KEYS),
            forwarders: RateLimiter::new(PER_FORWARDER, RATE_KEYS),
            total: RateLimiter::new(TOTAL, 1),
            member_forwarders: RateLimiter::new(MEMBER_PER_FORWARDER, RATE_KEYS),
            member_total: RateLimiter::new(MEMBER_TOTAL, 1),
        }
    }

    /// Checks an envelope that arrived on the topic of `swarm`, authored (gossipsub's
    /// signed `source`) by `author` (`member`: with a presence in a swarm of ours) and
    /// handed over by a peer of `forwarder`, for this node `me`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &mut self,
        me: &NodeId,
        swarm: &DiscoveryKey,
        author: Option<PeerId>,
        member: bool,
        forwarder: &Source,
        data: &[u8],
        now: &Timestamp,
    ) -> MeshResult<SignalMarkerEnvelope> {
        let Some(author) = author else {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "swarm marker without a signed gossipsub author",
            ));
        };
        let ms = now.instant().timestamp_millis();
        // Members and strangers each have budgets of their own.
        let (forwarders, total) = if member {
            (&mut self.member_forwarders, &mut self.member_total)
        } else {
            (&mut self.forwarders, &mut self.total)
        };
        let charges = take_all(
            ms,
            &mut [
                &mut self.rate.charge(&author),
                &mut forwarders.charge(forwarder),
                &mut total.charge(&()),
            ],
        );
        if let Err(retry) = charges {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "too many swarm markers (from {author}, through its forwarder, or in all); retry after {retry} s"
                ),
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

    fn via() -> Source {
        forwarder(1)
    }

    fn forwarder(n: u32) -> Source {
        Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::from(
            0xcb00_0000 + n,
        )))
    }

    /// A fresh author's marker to `swarm`: its author and bytes.
    fn marker_of(
        key: &NodeKeypair,
        swarm: &DiscoveryKey,
        now: &Timestamp,
    ) -> (Option<PeerId>, Vec<u8>) {
        let env = envelope(key, swarm, "msg:flood", "x", now).unwrap();
        (key.node_id().to_peer_id().ok(), env.to_cbor())
    }

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
        let got = m
            .receive(&me, &swarm, author, false, &via(), &bytes, &now)
            .unwrap();
        assert_eq!(got.marker_ref(), "hello");
        let again = m
            .receive(&me, &swarm, author, false, &via(), &bytes, &now)
            .unwrap_err();
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
            .receive(&me, &swarm, author, false, &via(), &env.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
        assert_eq!(acceptance(&e), gossipsub::MessageAcceptance::Reject);
        let env = envelope(&key, &swarm, "msg:3", "x", &now).unwrap();
        let stranger = Some(PeerId::random());
        let e = m
            .receive(&me, &swarm, stranger, false, &via(), &env.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SigUnknownSigner);
        let old = envelope(&key, &swarm, "msg:4", "x", &now.plus_secs(-3600)).unwrap();
        let e = m
            .receive(&me, &swarm, author, false, &via(), &old.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::HsReplay);
        // A point-to-point envelope (with a recipient, no swarm) is not a swarm marker.
        let p2p = mesh_session::marker::envelope(&key, me, "msg:5", "x", &now).unwrap();
        let e = m
            .receive(&me, &swarm, author, false, &via(), &p2p.to_cbor(), &now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
        // Tampered bytes do not verify.
        let mut bytes = envelope(&key, &swarm, "msg:6", "x", &now)
            .unwrap()
            .to_cbor();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        assert!(
            m.receive(&me, &swarm, author, false, &via(), &bytes, &now)
                .is_err()
        );
        assert!(!is_marker(b"not cbor"));
    }

    #[test]
    fn one_forwarders_network_gets_its_share_of_markers_and_no_more() {
        let (_, swarm, me, now) = setup();
        let mut m = SwarmMarkers::new();
        let taken = (0..PER_FORWARDER.burst + 50)
            .filter(|_| {
                let (author, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
                m.receive(&me, &swarm, author, false, &via(), &bytes, &now)
                    .is_ok()
            })
            .count();
        assert_eq!(taken, PER_FORWARDER.burst as usize);
        let (author, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
        let e = m
            .receive(&me, &swarm, author, false, &via(), &bytes, &now)
            .unwrap_err();
        assert_eq!(acceptance(&e), gossipsub::MessageAcceptance::Ignore);
        // Another network's forwarder still hands markers over.
        assert!(
            m.receive(&me, &swarm, author, false, &forwarder(2), &bytes, &now)
                .is_ok()
        );
    }

    #[test]
    fn a_flood_of_fresh_authors_cannot_push_a_marker_out_of_the_guard() {
        let (_, swarm, me, now) = setup();
        // The guard, when full, drops an entry of the highest sender among equals: an
        // honest author with a high id, flooders with lower ones (a key is cheap to grind).
        let honest = (0..64)
            .map(|_| NodeKeypair::generate())
            .max_by_key(|k| k.participant_id())
            .unwrap();
        let mut m = SwarmMarkers::new();
        let env = envelope(&honest, &swarm, "msg:honest", "x", &now).unwrap();
        let author = honest.node_id().to_peer_id().ok();
        m.receive(&me, &swarm, author, false, &via(), &env.to_cbor(), &now)
            .unwrap();
        // As many markers as the guard holds, from fresh authors through as many
        // networks, all within the guard's window.
        let capacity = GUARD_CAPACITY as u32;
        let mut flooders = std::iter::repeat_with(NodeKeypair::generate)
            .filter(|k| k.participant_id() < honest.participant_id());
        for n in 0..capacity {
            let key = flooders.next().unwrap();
            let (a, bytes) = marker_of(&key, &swarm, &now);
            let _ = m.receive(&me, &swarm, a, false, &forwarder(100 + n), &bytes, &now);
        }
        // A second on (the node's rate has tokens again), the honest marker comes round
        // again: still known.
        let later = now.plus_secs(1);
        let e = m
            .receive(
                &me,
                &swarm,
                author,
                false,
                &forwarder(7),
                &env.to_cbor(),
                &later,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::HsReplay, "{e}");
    }

    #[test]
    fn the_node_takes_fewer_markers_in_a_window_than_the_guard_holds() {
        let g = GuardConfig::default();
        let window = (g.max_age_secs + mesh_core::CLOCK_SKEW_SECS) as f64;
        let most = [TOTAL, MEMBER_TOTAL]
            .iter()
            .map(|r| f64::from(r.burst) + r.per_second * window)
            .sum::<f64>();
        assert!(
            most < GUARD_CAPACITY as f64,
            "{most} in a window of {} s",
            g.max_age_secs
        );
    }

    #[test]
    fn fresh_member_keys_get_one_forwarders_share_and_the_nodes_and_no_more() {
        let (_, swarm, me, now) = setup();
        let mut m = SwarmMarkers::new();
        // One connection hands over markers of fresh keys that each have a presence:
        // its network's share of members' markers, no more (all were taken before).
        let taken = (0..MEMBER_PER_FORWARDER.burst + 50)
            .filter(|_| {
                let (author, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
                m.receive(&me, &swarm, author, true, &via(), &bytes, &now)
                    .is_ok()
            })
            .count();
        assert_eq!(taken, MEMBER_PER_FORWARDER.burst as usize);
        // Through many networks: the node's share of members' markers, no more.
        let taken = (0..MEMBER_TOTAL.burst * 2)
            .filter(|n| {
                let (author, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
                m.receive(
                    &me,
                    &swarm,
                    author,
                    true,
                    &forwarder(5000 + n),
                    &bytes,
                    &now,
                )
                .is_ok()
            })
            .count();
        assert_eq!(
            taken,
            (MEMBER_TOTAL.burst - MEMBER_PER_FORWARDER.burst) as usize
        );
        // Strangers' markers have their own budget: still taken.
        let (a, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
        assert!(
            m.receive(&me, &swarm, a, false, &forwarder(9), &bytes, &now)
                .is_ok()
        );
    }

    #[test]
    fn strangers_flooding_do_not_crowd_out_members_markers() {
        let (_, swarm, me, now) = setup();
        let mut m = SwarmMarkers::new();
        // Strangers' markers through many networks spend the node's budget for them.
        for n in 0..(TOTAL.burst + 100) {
            let (a, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
            let _ = m.receive(&me, &swarm, a, false, &forwarder(1000 + n), &bytes, &now);
        }
        let (a, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
        assert!(
            m.receive(&me, &swarm, a, false, &forwarder(7), &bytes, &now)
                .is_err()
        );
        // A member's marker, handed over by a forwarder whose share strangers spent too,
        // is taken.
        let (a, bytes) = marker_of(&NodeKeypair::generate(), &swarm, &now);
        assert!(
            m.receive(&me, &swarm, a, true, &forwarder(1000), &bytes, &now)
                .is_ok()
        );
    }
}
