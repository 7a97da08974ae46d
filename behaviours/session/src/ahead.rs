//! Crypto work done ahead of time, so that it is off a handshake's critical path: the
//! hello to a peer being dialed (built while the connection is set up), the
//! Diffie-Hellman term that needs only this side's ephemeral key and the peer's identity
//! (by the dialer once its hello is on its way, by the listener as soon as the
//! connection is up), and a spare ephemeral key for the next handshake.
//!
//! This is the queue and the results; [`crate::handshake::Handshakes::work`] runs one
//! job at a time, when the behaviour has nothing more urgent to do.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use mesh_core::{NodeId, PeerHandshake, Timestamp};

use crate::secret::{EphemeralKey, IdentityTerm};
use crate::transport::TransportProfile;

/// Hellos built ahead are used only this fresh (their `ts` must be within the
/// receiver's ±30 s).
pub(crate) const PREBUILT_FRESH_SECS: i64 = 5;
/// At most this many hellos wait for their connections.
pub(crate) const PREBUILT_MAX: usize = 64;

/// One piece of work put off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// A hello for a peer being dialed (over the transport guessed from the addresses),
    /// built while the connection is set up.
    Hello(PeerId, TransportProfile),
    /// The dialer's identity term for the hello it sent to this peer.
    InitiatorTerm(PeerId),
    /// The listener's ephemeral key and identity term for a new inbound connection.
    ResponderTerm(PeerId),
}

/// A hello built for a peer while the connection to it is being set up.
pub(crate) struct Prebuilt {
    pub(crate) hello: Box<PeerHandshake>,
    /// Its wire form, with the capability advertisement.
    pub(crate) bytes: Vec<u8>,
    /// The `transport/profile` it carries.
    pub(crate) transport: TransportProfile,
    pub(crate) eph: EphemeralKey,
    /// `eph` × the peer's identity.
    pub(crate) term: IdentityTerm,
    pub(crate) built: Timestamp,
}

/// The jobs and what they produced.
pub(crate) struct Ahead {
    jobs: VecDeque<Job>,
    /// Hellos built for peers being dialed.
    prebuilt: HashMap<PeerId, Prebuilt>,
    /// Listener side: the ephemeral key and identity term ready for a peer's hello.
    prepared: HashMap<PeerId, (EphemeralKey, IdentityTerm)>,
    /// An ephemeral key generated ahead for the next handshake.
    spare: Option<EphemeralKey>,
}

impl Ahead {
    /// Empty, with a spare key.
    pub(crate) fn new() -> Self {
        Ahead {
            jobs: VecDeque::new(),
            prebuilt: HashMap::new(),
            prepared: HashMap::new(),
            spare: Some(EphemeralKey::generate()),
        }
    }

    /// A fresh ephemeral key: the one generated ahead, or a new one.
    pub(crate) fn ephemeral(&mut self) -> EphemeralKey {
        self.spare.take().unwrap_or_else(EphemeralKey::generate)
    }

    /// Generates the spare key if there is none; `false` when there was one.
    /// Whether the spare key is missing (so [`Ahead::refill_spare`] has work).
    pub(crate) fn wants_spare(&self) -> bool {
        self.spare.is_none()
    }

    pub(crate) fn refill_spare(&mut self) -> bool {
        if self.spare.is_some() {
            return false;
        }
        self.spare = Some(EphemeralKey::generate());
        true
    }

    /// Whether a hello for `peer` may be built ahead (none is, and there is room).
    pub(crate) fn may_prebuild(&self, peer: &PeerId) -> bool {
        !self.prebuilt.contains_key(peer) && self.prebuilt.len() < PREBUILT_MAX
    }

    /// `peer` is being dialed: queue its hello, if there is room.
    pub(crate) fn dialing(&mut self, peer: PeerId, transport: TransportProfile) {
        if self.may_prebuild(&peer) {
            self.jobs.push_back(Job::Hello(peer, transport));
        }
    }

    /// Keeps a hello built ahead.
    pub(crate) fn store_prebuilt(&mut self, peer: PeerId, p: Prebuilt) {
        if self.may_prebuild(&peer) {
            self.prebuilt.insert(peer, p);
        }
    }

    /// The hello built for `peer`, if it is still fresh.
    pub(crate) fn take_prebuilt(&mut self, peer: &PeerId, now: &Timestamp) -> Option<Prebuilt> {
        self.prebuilt
            .remove(peer)
            .filter(|p| now.secs_since(&p.built) < PREBUILT_FRESH_SECS)
    }

    /// Drops the hellos that are no longer fresh.
    pub(crate) fn expire(&mut self, now: &Timestamp) {
        self.prebuilt
            .retain(|_, p| now.secs_since(&p.built) < PREBUILT_FRESH_SECS);
    }

    /// The dial of `peer` failed: its hello is not wanted.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId) {
        self.prebuilt.remove(peer);
    }

    /// Queues the dialer's identity term for the hello just sent to `peer`.
    pub(crate) fn initiator_term(&mut self, peer: PeerId) {
        self.jobs.push_back(Job::InitiatorTerm(peer));
    }

    /// Queues the listener's key and term for `peer`, which just connected.
    pub(crate) fn responder_term(&mut self, peer: PeerId) {
        self.jobs.push_back(Job::ResponderTerm(peer));
    }

    /// Whether the listener's key and term for `peer` are ready.
    pub(crate) fn is_prepared(&self, peer: &PeerId) -> bool {
        self.prepared.contains_key(peer)
    }

    /// Keeps the listener's key and term for `peer`.
    pub(crate) fn store_prepared(&mut self, peer: PeerId, eph: EphemeralKey, term: IdentityTerm) {
        self.prepared.insert(peer, (eph, term));
    }

    /// The listener's key and term for `peer`, if they were computed for `node`.
    pub(crate) fn take_prepared(
        &mut self,
        peer: &PeerId,
        node: &NodeId,
    ) -> Option<(EphemeralKey, IdentityTerm)> {
        self.prepared
            .remove(peer)
            .filter(|(_, term)| term.is_for(node))
    }

    /// The last connection to `peer` closed: its terms are not wanted (a hello for a dial
    /// under way still is: the dial may bring a new connection).
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.prepared.remove(peer);
        self.jobs.retain(|j| match j {
            Job::InitiatorTerm(p) | Job::ResponderTerm(p) => p != peer,
            Job::Hello(..) => true,
        });
    }

    /// The next job.
    pub(crate) fn next_job(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    /// Jobs waiting.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.jobs.len()
    }

    /// Hellos built ahead and waiting.
    #[cfg(test)]
    pub(crate) fn prebuilt(&self) -> usize {
        self.prebuilt.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::artifacts::{HandshakeParams, build_hello};
    use mesh_core::NodeKeypair;

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-03-23T18:10:00Z")
            .unwrap()
            .plus_secs(s)
    }

    fn prebuilt(to: NodeId, at: &Timestamp) -> Prebuilt {
        let eph = EphemeralKey::generate();
        let p = HandshakeParams {
            offered: &[],
            transport: "tcp",
            intent: "peer-connect",
        };
        let hello = build_hello(&NodeKeypair::generate(), &eph, to, &p, at).unwrap();
        Prebuilt {
            hello: Box::new(hello),
            bytes: Vec::new(),
            transport: TransportProfile::Tcp,
            term: IdentityTerm::compute(&eph, to),
            eph,
            built: at.clone(),
        }
    }

    #[test]
    fn a_hello_built_ahead_is_used_only_while_fresh() {
        let to = NodeKeypair::generate();
        let peer = to.node_id().to_peer_id().unwrap();
        let mut a = Ahead::new();
        a.store_prebuilt(peer, prebuilt(to.node_id(), &t(0)));
        assert!(
            a.take_prebuilt(&peer, &t(PREBUILT_FRESH_SECS - 1))
                .is_some()
        );
        a.store_prebuilt(peer, prebuilt(to.node_id(), &t(0)));
        assert!(
            a.take_prebuilt(&peer, &t(PREBUILT_FRESH_SECS)).is_none(),
            "stale: its ts could be refused by the receiver"
        );
        a.store_prebuilt(peer, prebuilt(to.node_id(), &t(0)));
        a.expire(&t(PREBUILT_FRESH_SECS));
        assert_eq!(a.prebuilt(), 0);
    }

    #[test]
    fn hellos_built_ahead_are_capped() {
        let mut a = Ahead::new();
        for _ in 0..PREBUILT_MAX + 5 {
            let to = NodeKeypair::generate().node_id();
            a.dialing(to.to_peer_id().unwrap(), TransportProfile::Tcp);
            a.store_prebuilt(to.to_peer_id().unwrap(), prebuilt(to, &t(0)));
        }
        assert_eq!(a.prebuilt(), PREBUILT_MAX);
        assert_eq!(a.queued(), PREBUILT_MAX, "no job queued without room");
    }

    #[test]
    fn a_closed_connection_drops_its_terms_but_not_a_dial_hello() {
        let mut a = Ahead::new();
        let (p, q) = (PeerId::random(), PeerId::random());
        a.responder_term(p);
        a.initiator_term(p);
        a.dialing(p, TransportProfile::Quic);
        a.responder_term(q);
        let key = NodeKeypair::generate().node_id();
        let eph = EphemeralKey::generate();
        a.store_prepared(
            p,
            EphemeralKey::generate(),
            IdentityTerm::compute(&eph, key),
        );
        a.disconnected(&p);
        assert!(!a.is_prepared(&p));
        assert_eq!(a.next_job(), Some(Job::Hello(p, TransportProfile::Quic)));
        assert_eq!(a.next_job(), Some(Job::ResponderTerm(q)));
        assert_eq!(a.next_job(), None);
    }

    #[test]
    fn prepared_terms_are_for_one_node_only() {
        let mut a = Ahead::new();
        let (n, other) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let peer = PeerId::random();
        let eph = EphemeralKey::generate();
        let term = IdentityTerm::compute(&eph, n);
        a.store_prepared(peer, eph, term);
        assert!(a.take_prepared(&peer, &other).is_none());
        let eph = EphemeralKey::generate();
        let term = IdentityTerm::compute(&eph, n);
        a.store_prepared(peer, eph, term);
        assert!(a.take_prepared(&peer, &n).is_some());
        // The spare key is used once, then made again.
        let _ = a.ephemeral();
        assert!(a.refill_spare());
        assert!(!a.refill_spare());
    }
}
