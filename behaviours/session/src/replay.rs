//! The replay guard of the hello/ack handshake: pure logic, `now` passed in.
//!
//! - A handshake whose `ts` is more than `skew` away from now is `E_HS_REPLAY`.
//! - A nonce (or `handshake/id`) seen from the same sender within `nonce_memory` is
//!   `E_HS_REPLAY`; nonces are forgotten after that (by then the skew check refuses
//!   the artifact anyway, since `nonce_memory` > 2 x `skew`).
//! - An ack must answer a hello this side sent, to that ack's sender, no longer than
//!   `pending_timeout` ago; otherwise `E_HS_UNKNOWN_REF`.
//! - A `protocol/version` other than ours is `E_PROTO_VERSION`.
//!
//! Memory is bounded: at most `max_nonces_per_peer` per sender and `max_peers` senders
//! (the oldest are dropped first), and at most `max_pending` hellos in flight.

use std::collections::{HashMap, VecDeque};

use mesh_core::{
    ErrorCode, HandshakeMode, MeshError, MeshResult, NodeId, PeerHandshake, Timestamp,
};

/// Replay-guard settings (the Orbiplex MVP values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Allowed clock skew, seconds.
    pub skew_secs: i64,
    /// How long nonces are remembered, seconds.
    pub nonce_memory_secs: i64,
    /// How long a sent hello waits for its ack, seconds.
    pub pending_timeout_secs: i64,
    /// Nonces remembered per sender.
    pub max_nonces_per_peer: usize,
    /// Senders remembered.
    pub max_peers: usize,
    /// Hellos in flight.
    pub max_pending: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            skew_secs: mesh_core::CLOCK_SKEW_SECS,
            nonce_memory_secs: 120,
            pending_timeout_secs: 30,
            max_nonces_per_peer: 256,
            max_peers: 4096,
            max_pending: 1024,
        }
    }
}

/// A hello this side sent and still waits an ack for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingHello {
    /// Its `handshake/id`.
    pub handshake_id: String,
    /// The node it was sent to.
    pub to: NodeId,
    /// When it was sent.
    pub sent_at: Timestamp,
}

/// The guard.
#[derive(Debug)]
pub struct ReplayGuard {
    config: ReplayConfig,
    protocol_version: String,
    seen: HashMap<NodeId, VecDeque<(String, Timestamp)>>,
    pending: HashMap<String, PendingHello>,
}

fn replay(detail: String) -> MeshError {
    MeshError::new(ErrorCode::HsReplay, detail)
}

impl ReplayGuard {
    /// A guard for `protocol_version` (normally [`mesh_core::PROTOCOL_VERSION`]).
    pub fn new(config: ReplayConfig, protocol_version: &str) -> Self {
        ReplayGuard {
            config,
            protocol_version: protocol_version.to_owned(),
            seen: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Whether an incoming hello or ack would pass the guard (version, clock, nonce and
    /// id not seen), remembering nothing: checked before its signatures, so that a
    /// replayed handshake costs no verification.
    pub fn screen(&mut self, hs: &PeerHandshake, now: &Timestamp) -> MeshResult<()> {
        if let Some(v) = hs.protocol_version()
            && v != self.protocol_version
        {
            return Err(MeshError::new(
                ErrorCode::ProtoVersion,
                format!(
                    "protocol/version `{v}`, this node speaks `{}`",
                    self.protocol_version
                ),
            ));
        }
        let skew = hs.ts().secs_since(now);
        if skew.abs() > self.config.skew_secs {
            return Err(replay(format!(
                "ts is {skew} s from now, outside +-{} s",
                self.config.skew_secs
            )));
        }
        let sender = hs.sender();
        self.forget_old(&sender, now);
        if let Some(seen) = self.seen.get(&sender)
            && seen
                .iter()
                .any(|(n, _)| n == hs.nonce() || n == hs.handshake_id())
        {
            return Err(replay(format!(
                "nonce or handshake id from {sender} seen within {} s",
                self.config.nonce_memory_secs
            )));
        }
        Ok(())
    }

    /// Checks an incoming hello or ack (already signature-verified) and remembers its
    /// nonce and id. For an ack, also consumes the pending hello it answers and returns
    /// it.
    pub fn check_incoming(
        &mut self,
        hs: &PeerHandshake,
        now: &Timestamp,
    ) -> MeshResult<Option<PendingHello>> {
        self.screen(hs, now)?;
        let sender = hs.sender();
        let answered = match hs.mode() {
            HandshakeMode::Hello => None,
            HandshakeMode::Ack => Some(self.take_pending(hs, now)?),
        };
        self.remember(sender, hs.nonce(), now);
        self.remember(sender, hs.handshake_id(), now);
        Ok(answered)
    }

    fn take_pending(&mut self, ack: &PeerHandshake, now: &Timestamp) -> MeshResult<PendingHello> {
        let unknown = |why: &str| {
            MeshError::new(
                ErrorCode::HsUnknownRef,
                format!("ack/of-handshake-id: {why}"),
            )
        };
        let of = ack.ack_of().ok_or_else(|| unknown("missing"))?;
        let pending = self
            .pending
            .get(of)
            .ok_or_else(|| unknown("no hello with that id is pending"))?;
        if pending.to != ack.sender() {
            return Err(unknown("the hello was sent to another node"));
        }
        if now.secs_since(&pending.sent_at) > self.config.pending_timeout_secs {
            self.pending.remove(of);
            return Err(unknown("the hello timed out"));
        }
        self.pending
            .remove(of)
            .ok_or_else(|| unknown("no hello with that id is pending"))
    }

    /// Records a hello this side sent to `to`. Refused (`E_PROTO_INVALID`) when too many
    /// are in flight even after dropping timed-out ones.
    pub fn hello_sent(
        &mut self,
        handshake_id: &str,
        to: NodeId,
        now: &Timestamp,
    ) -> MeshResult<()> {
        if self.pending.len() >= self.config.max_pending {
            self.sweep(now);
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(MeshError::invalid("too many handshakes in flight"));
        }
        self.pending.insert(
            handshake_id.to_owned(),
            PendingHello {
                handshake_id: handshake_id.to_owned(),
                to,
                sent_at: now.clone(),
            },
        );
        Ok(())
    }

    /// Hellos whose ack did not come in time; they are dropped (report them as timeouts).
    pub fn sweep(&mut self, now: &Timestamp) -> Vec<PendingHello> {
        let timeout = self.config.pending_timeout_secs;
        let expired: Vec<String> = self
            .pending
            .values()
            .filter(|p| now.secs_since(&p.sent_at) > timeout)
            .map(|p| p.handshake_id.clone())
            .collect();
        let dropped = expired
            .iter()
            .filter_map(|id| self.pending.remove(id))
            .collect();
        let memory = self.config.nonce_memory_secs;
        self.seen.retain(|_, q| {
            while q.front().is_some_and(|(_, t)| now.secs_since(t) > memory) {
                q.pop_front();
            }
            !q.is_empty()
        });
        dropped
    }

    /// Hellos in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn forget_old(&mut self, sender: &NodeId, now: &Timestamp) {
        let memory = self.config.nonce_memory_secs;
        if let Some(q) = self.seen.get_mut(sender) {
            while q.front().is_some_and(|(_, t)| now.secs_since(t) > memory) {
                q.pop_front();
            }
        }
    }

    fn remember(&mut self, sender: NodeId, value: &str, now: &Timestamp) {
        if !self.seen.contains_key(&sender) && self.seen.len() >= self.config.max_peers {
            // Drop the sender whose newest entry is oldest.
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, q)| q.back().map(|(_, t)| t.instant()))
                .map(|(k, _)| *k)
            {
                self.seen.remove(&oldest);
            }
        }
        let q = self.seen.entry(sender).or_default();
        if q.len() >= self.config.max_nonces_per_peer {
            q.pop_front();
        }
        q.push_back((value.to_owned(), now.clone()));
    }
}
