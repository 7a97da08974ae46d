//! libp2p's DCUtR with the node's scope on the addresses it dials.
//!
//! In a DCUtR exchange the other side names the addresses it wants to be dialed at
//! (its `CONNECT` message, up to about 400 in 4 KiB), and `libp2p-dcutr` dials all of
//! them, up to three times per relayed connection: anyone who reaches the node through a
//! relay could make it connect to hosts of its choosing, the node's own loopback and LAN
//! included, many packets for one message. The node's own signaled candidates have been
//! scoped from the start (`router::policy`); this wrapper applies the same rule to
//! DCUtR's dials ([`CandidatePolicy::in_scope`], with the connections the node has to
//! that peer, the relayed one among them, as the path; at most
//! [`mesh_core::families::MAX_CANDIDATES`] addresses).
//!
//! `libp2p-dcutr` keeps its handler's events private, so the addresses are checked
//! where the swarm asks every behaviour about a dial
//! ([`NetworkBehaviour::handle_pending_outbound_connection`]): a DCUtR dial whose
//! addresses are all in scope (the usual case: public addresses) goes on untouched; one
//! with addresses out of scope or too many is refused, and the wrapper dials the
//! in-scope ones itself, in the same role. DCUtR counts that refusal as a failed attempt
//! (in its metrics and events), while the direct connection comes from the new dial.
//!
//! It also counts them. `libp2p-dcutr` caps its attempts at three per relayed
//! connection only where the node accepted that connection; on a relayed connection
//! the node dialed, every `CONNECT` the other side sends is a dial, as often as it
//! sends them: one peer reached through its own relay (a presence or a DHT answer names
//! such a circuit) had the node dial 16 addresses of its choosing per round trip, for
//! good. A DCUtR dial now takes a token of the peer's ([`PER_PEER`]) and of the node's
//! ([`OVERALL`]); beyond, it is refused without a dial (a dial with no address in scope
//! spends nothing). Where the node accepted the relayed connection, a refusal counts as
//! one of `libp2p-dcutr`'s three attempts, so a node whose budget is spent (64 dials,
//! then two a second: some 20 peers each reaching it through a relay at once) leaves
//! further relayed connections relayed until it refills.
//!
//! And each address dialed takes a token of its destination ([`PER_TARGET`]: an IPv4
//! address, an IPv6 /64), as the responder's signaled punches do: peer ids cost
//! nothing, and some 20 fresh keys reaching the node through a relay, each naming 16
//! addresses on one host, had it dial that host 320 times at once. Addresses past
//! their destination's budget are left out of the dial (all of them: the dial is
//! refused).

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};

use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, dcutr};

use mesh_core::{RateLimit, RateLimiter, take_all};

use super::destination_budget::DestinationBudget;
use super::router::policy::CandidatePolicy;

/// DCUtR dials remembered between DCUtR's `Dial` and the swarm's question about it.
const MAX_ASKED: usize = 64;

/// DCUtR dials per peer: three (one relayed connection's attempts), then one every
/// three minutes.
pub const PER_PEER: RateLimit = RateLimit {
    burst: 3,
    per_second: 1.0 / 180.0,
};

/// DCUtR dials of the node: 64 at once, then two a second.
pub const OVERALL: RateLimit = RateLimit {
    burst: 64,
    per_second: 2.0,
};

/// Addresses dialed by DCUtR per destination (an IPv4 address, an IPv6 /64): one
/// `CONNECT`'s worth ([`mesh_core::families::MAX_CANDIDATES`]) at once, then as many a
/// minute.
pub const PER_TARGET: RateLimit = RateLimit {
    burst: 16,
    per_second: 16.0 / 60.0,
};

/// Peers (and destinations) whose DCUtR dials are counted (the least recently used
/// forgotten first).
const PEERS_COUNTED: usize = 4096;

/// What the node does with a DCUtR dial to `addrs`, given the remote addresses of its
/// connections to that peer (`path`) and its own addresses (`own`). Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every address in scope, not too many: the dial goes on.
    Allow,
    /// Refused; the node dials these (in scope, at most `max`) instead, if any.
    Replace(Vec<Multiaddr>),
}

/// The [`Verdict`] on a dial to `addrs` under `policy`, at most `max` addresses.
pub fn verdict(
    policy: &CandidatePolicy,
    addrs: &[Multiaddr],
    path: &[Multiaddr],
    own: &[Multiaddr],
    max: usize,
) -> Verdict {
    let kept = policy.filter(addrs.to_vec(), path, own, max);
    if kept.len() == addrs.len() {
        Verdict::Allow
    } else {
        Verdict::Replace(kept)
    }
}

/// `dcutr::Behaviour` whose dials stay in the node's scope.
pub struct Dcutr {
    inner: dcutr::Behaviour,
    policy: CandidatePolicy,
    max: usize,
    /// Dials DCUtR asked for, oldest first.
    asked: VecDeque<ConnectionId>,
    /// Every connection's peer and remote address.
    remotes: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    /// Dials of the in-scope addresses, to hand to the swarm.
    replacements: VecDeque<DialOpts>,
    per_peer: RateLimiter<PeerId>,
    overall: RateLimiter<()>,
    targets: DestinationBudget,
    /// The start of the budget's clock.
    start: std::time::Instant,
}

impl Dcutr {
    /// Wraps `inner`, dialing at most `max` addresses within `policy`'s scope.
    pub fn new(inner: dcutr::Behaviour, policy: CandidatePolicy, max: usize) -> Self {
        Dcutr {
            inner,
            policy,
            max,
            asked: VecDeque::new(),
            remotes: HashMap::new(),
            listen: Vec::new(),
            external: Vec::new(),
            replacements: VecDeque::new(),
            per_peer: RateLimiter::new(PER_PEER, PEERS_COUNTED),
            overall: RateLimiter::new(OVERALL, 1),
            targets: DestinationBudget::new(PER_TARGET, PEERS_COUNTED),
            start: std::time::Instant::now(),
        }
    }

    /// The wrapped behaviour, for tests that read its tables.
    #[doc(hidden)]
    pub fn inner(&self) -> &dcutr::Behaviour {
        &self.inner
    }

    /// Whether one more DCUtR dial to `peer` is within the budget (taking its tokens).
    fn within_budget(&mut self, peer: PeerId) -> bool {
        let ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        take_all(
            ms,
            &mut [
                &mut self.per_peer.charge(&peer),
                &mut self.overall.charge(&()),
            ],
        )
        .is_ok()
    }

    fn path(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.remotes
            .values()
            .filter(|(p, _)| *p == peer)
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn own(&self) -> Vec<Multiaddr> {
        self.listen.iter().chain(&self.external).cloned().collect()
    }

    fn track(&mut self, event: &FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = match e.endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    // A relayed connection accepted here names only the peer as its
                    // remote (`/p2p/…`); the relay's address is in the local one.
                    ConnectedPoint::Listener { local_addr, .. }
                        if local_addr.iter().any(|p| p == Protocol::P2pCircuit) =>
                    {
                        local_addr.clone()
                    }
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                self.remotes.insert(e.connection_id, (e.peer_id, remote));
            }
            FromSwarm::ConnectionClosed(e) => {
                self.remotes.remove(&e.connection_id);
            }
            FromSwarm::NewListenAddr(e) if !self.listen.contains(e.addr) => {
                self.listen.push(e.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(e) => self.listen.retain(|a| a != e.addr),
            FromSwarm::ExternalAddrConfirmed(e) if !self.external.contains(e.addr) => {
                self.external.push(e.addr.clone());
            }
            FromSwarm::ExternalAddrExpired(e) => self.external.retain(|a| a != e.addr),
            _ => {}
        }
    }
}

/// Why a DCUtR dial was refused.
#[derive(Debug, thiserror::Error)]
#[error("DCUtR dial with addresses out of the node's scope or too many ({0} asked)")]
pub struct OutOfScope(usize);

/// Why a DCUtR dial was refused: the peer's or the node's budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("DCUtR dial refused: too many hole punches with this peer or in all")]
pub struct OverBudget;

impl NetworkBehaviour for Dcutr {
    type ConnectionHandler = THandler<dcutr::Behaviour>;
    type ToSwarm = dcutr::Event;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(i) = self.asked.iter().position(|c| *c == connection_id) {
            self.asked.remove(i);
            if let Some(peer) = maybe_peer {
                let path = self.path(peer);
                let own = self.own();
                let kept = match verdict(&self.policy, addresses, &path, &own, self.max) {
                    Verdict::Allow => addresses.to_vec(),
                    Verdict::Replace(kept) => kept,
                };
                // Only a dial that goes out spends the budget.
                if !kept.is_empty() && !self.within_budget(peer) {
                    tracing::debug!(%peer, "DCUtR dial refused: over the budget");
                    return Err(ConnectionDenied::new(OverBudget));
                }
                let scoped = kept.len();
                let kept = self.targets.admit(kept, std::time::Instant::now());
                if scoped > 0 && kept.is_empty() {
                    tracing::debug!(%peer, "DCUtR dial refused: its destinations' budget is spent");
                    return Err(ConnectionDenied::new(OverBudget));
                }
                if kept.len() != addresses.len() {
                    tracing::debug!(%peer, asked = addresses.len(), kept = kept.len(), "DCUtR dial scoped");
                    if !kept.is_empty() {
                        let mut opts = DialOpts::peer_id(peer)
                            .addresses(kept)
                            .condition(PeerCondition::Always);
                        if effective_role == Endpoint::Listener {
                            opts = opts.override_role();
                        }
                        self.replacements.push_back(opts.build());
                    }
                    return Err(ConnectionDenied::new(OutOfScope(addresses.len())));
                }
            }
        }
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.track(&event);
        self.inner.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(opts) = self.replacements.pop_front() {
            return Poll::Ready(ToSwarm::Dial { opts });
        }
        let polled = self.inner.poll(cx);
        if let Poll::Ready(ToSwarm::Dial { opts }) = &polled {
            if self.asked.len() >= MAX_ASKED {
                self.asked.pop_front();
            }
            self.asked.push_back(opts.connection_id());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::router::policy::SignalSettings;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn policy() -> CandidatePolicy {
        CandidatePolicy::new(SignalSettings::default())
    }

    #[test]
    fn public_addresses_go_on_untouched() {
        let addrs = [
            ma("/ip4/198.51.100.7/udp/4001/quic-v1"),
            ma("/ip4/198.51.100.7/tcp/4001"),
        ];
        let path = [ma("/ip4/203.0.113.1/tcp/4001/p2p-circuit")];
        assert_eq!(verdict(&policy(), &addrs, &path, &[], 16), Verdict::Allow);
    }

    #[test]
    fn loopback_and_foreign_lan_addresses_are_taken_out() {
        let addrs = [
            ma("/ip4/127.0.0.1/tcp/22"),
            ma("/ip4/10.0.0.5/udp/53/quic-v1"),
            ma("/ip4/198.51.100.7/udp/4001/quic-v1"),
            ma("/ip4/192.168.1.20/tcp/4001"),
        ];
        let path = [ma("/ip4/203.0.113.1/tcp/4001/p2p-circuit")];
        let own = [ma("/ip4/192.168.1.5/tcp/4001")];
        assert_eq!(
            verdict(&policy(), &addrs, &path, &own, 16),
            Verdict::Replace(vec![
                ma("/ip4/198.51.100.7/udp/4001/quic-v1"),
                ma("/ip4/192.168.1.20/tcp/4001"),
            ])
        );
        // Only out-of-scope ones: refused, nothing dialed.
        assert_eq!(
            verdict(&policy(), &addrs[..2], &path, &[], 16),
            Verdict::Replace(vec![])
        );
    }

    #[test]
    fn at_most_max_addresses() {
        let addrs: Vec<Multiaddr> = (0..40)
            .map(|i| ma(&format!("/ip4/198.51.100.{i}/tcp/4001")))
            .collect();
        let Verdict::Replace(kept) = verdict(&policy(), &addrs, &[], &[], 16) else {
            panic!("40 addresses allowed")
        };
        assert_eq!(kept, addrs[..16]);
    }

    #[test]
    fn loopback_only_when_the_peer_is_reached_over_loopback() {
        let addrs = [ma("/ip4/127.0.0.1/tcp/4001")];
        let relayed_over_loopback = [ma("/ip4/127.0.0.1/tcp/5000/p2p-circuit")];
        assert_eq!(
            verdict(&policy(), &addrs, &relayed_over_loopback, &[], 16),
            Verdict::Allow
        );
        // A node with an address beyond loopback: a relay on its host forwards for
        // peers anywhere, so a circuit through it says nothing of the peer's loopback.
        let own = [
            ma("/ip4/198.51.100.1/tcp/4001"),
            ma("/ip4/127.0.0.1/tcp/4001"),
        ];
        let ssrf = [ma("/ip4/127.0.0.1/tcp/8500/ws")];
        assert_eq!(
            verdict(&policy(), &ssrf, &relayed_over_loopback, &own, 16),
            Verdict::Replace(vec![])
        );
        // A direct loopback connection is a process of this host.
        let direct = [ma("/ip4/127.0.0.1/tcp/50123")];
        assert_eq!(verdict(&policy(), &ssrf, &direct, &own, 16), Verdict::Allow);
    }
}
