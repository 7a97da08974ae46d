//! One budget per destination for every address the node's behaviours add to a dial.
//!
//! A dial by peer id asks every behaviour for addresses
//! ([`NetworkBehaviour::handle_pending_outbound_connection`]) and the swarm tries them
//! all: identify's listen addresses of the peer (16, any public IP: see
//! [`super::identify_observed`]), each request-response behaviour's cache (10 more per
//! peer, fed by identify and the DHTs), each DHT's routing table (within
//! [`super::kad_scope`]). Those are addresses a peer chose: one connection and one
//! identify message naming a third party's host on 16 ports got that host about 26
//! connection attempts from the node whenever anything dialed that peer id, and fresh
//! peer ids cost nothing. [`DialBudget`] wraps the node's behaviour and screens what
//! the behaviours return, all of it at once: one copy of each address (with or without
//! its `/p2p` suffix), at most [`MAX_ADDED`] per dial, and each address with an IP
//! takes a token of its destination (an IPv4 address, an IPv6 /64) from one node-wide
//! destination budget ([`PER_DESTINATION`]), whichever peer or behaviour named it.
//!
//! Left as they come: the addresses the dial brings itself (its maker chose them and
//! budgets them where it can: an explicit dial, a seed, a route, a punch, the feed's
//! and the providers' dials) and copies of them, relay circuits through a relay the
//! node has a direct connection to (the circuit is asked for on that connection: no new
//! connection to the relay's host; a relay reached only through another relay does not
//! count, as the relay client would dial the host the circuit names), and addresses without an IP (names pass the
//! behaviours' scopes only when the operator gave them or the node is on loopback
//! alone). Loopback destinations are free: the scopes let them in only for a node on
//! loopback alone (several nodes on one host).
//!
//! The swarm asks the behaviours on every dial by peer id but uses their addresses only
//! when the dial says so (`extend_addresses_through_behaviour`; a dial that brings no
//! addresses always does), and libp2p does not let a behaviour see which: a dial that
//! brings addresses and does not take the behaviours' still spends their tokens (at
//! the dialed peer's own hosts, mostly). The counted refusals include such addresses.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use mesh_core::RateLimit;

use super::addrs::without_peer;
use super::destination_budget::DestinationBudget;
use super::ip_scope::ip_of;

/// Tokens per destination for the addresses behaviours add to dials: 32, then 32 a
/// minute (as each DHT's own dials, [`super::kad_scope::PER_DESTINATION`]).
pub const PER_DESTINATION: RateLimit = RateLimit {
    burst: 32,
    per_second: 32.0 / 60.0,
};

/// Destinations followed at once (the least recently used forgotten first).
const DESTINATIONS: usize = 4096;

/// Addresses the behaviours may add to one dial (identify's 16 and each DHT's 8 fit).
pub const MAX_ADDED: usize = 32;

/// `B` with the addresses its parts add to dials screened (see the module's
/// documentation); everything else passes through unchanged, and it dereferences to
/// `B`.
#[derive(Debug)]
pub struct DialBudget<B> {
    inner: B,
    destinations: DestinationBudget,
    /// The peers the node has direct (not relayed) connections to, and how many
    /// (relays, for circuits).
    connected: HashMap<PeerId, usize>,
    /// Addresses left out since the start, for `/metrics`.
    refused: u64,
}

impl<B> DialBudget<B> {
    /// `inner` with the node's budget ([`PER_DESTINATION`], loopback free).
    pub fn new(inner: B) -> Self {
        DialBudget {
            inner,
            destinations: DestinationBudget::new(PER_DESTINATION, DESTINATIONS).loopback_free(),
            connected: HashMap::new(),
            refused: 0,
        }
    }

    /// The same with `limit` per destination (`loopback_free`: whether loopback takes
    /// none); for tests, which run on loopback.
    pub fn with_destinations(mut self, limit: RateLimit, loopback_free: bool) -> Self {
        let budget = DestinationBudget::new(limit, DESTINATIONS);
        self.destinations = if loopback_free {
            budget.loopback_free()
        } else {
            budget
        };
        self
    }

    /// Addresses the behaviours named that no dial took (over budget, over
    /// [`MAX_ADDED`]); copies not counted.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts the node's direct connections by peer.
    fn track(&mut self, event: &FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) if !e.endpoint.is_relayed() => {
                *self.connected.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(e) if !e.endpoint.is_relayed() => {
                if let Some(n) = self.connected.get_mut(&e.peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.connected.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    /// Of `added` (what the behaviours returned for a dial that brings `given`), the
    /// addresses the dial takes at `now`. Pure but for the budget.
    fn screen(
        &mut self,
        given: &[Multiaddr],
        added: Vec<Multiaddr>,
        now: Instant,
    ) -> Vec<Multiaddr> {
        let mut seen: HashSet<Multiaddr> = given.iter().map(without_peer).collect();
        let mut kept = Vec::new();
        for addr in added {
            let bare = without_peer(&addr);
            if !seen.insert(bare.clone()) {
                continue;
            }
            let through = relay_of(&bare);
            let take = kept.len() < MAX_ADDED
                && match ip_of(&bare) {
                    None => true,
                    Some(_) if through.is_some_and(|r| self.connected.contains_key(&r)) => true,
                    Some(ip) => self.destinations.admit_ip(ip, now),
                };
            if take {
                kept.push(bare);
            } else {
                self.refused += 1;
            }
        }
        kept
    }
}

/// The relay of circuit address `addr` (`…/p2p/RELAY/p2p-circuit`).
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

impl<B> Deref for DialBudget<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> DerefMut for DialBudget<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for DialBudget<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let added = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        Ok(self.screen(addresses, added, Instant::now()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.track(&event);
        self.inner.on_swarm_event(event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests;
