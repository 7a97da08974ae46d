//! Driving the peer governor ([`crate::governor`], pure logic) from the behaviour: its
//! timer, the addresses of the peers it keeps, and what its actions become — a dial of
//! a peer without a connection, a new hello on a connection without a session, a close.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use futures::Future;
use libp2p::PeerId;
use libp2p::core::Multiaddr;
use mesh_core::{NodeId, Timestamp};

use crate::governor::{Action, Governor, GovernorConfig};
use crate::handshake::Handshakes;

/// Addresses kept per named peer.
pub(crate) const MAX_ADDRS: usize = 16;

/// What the swarm must do for the governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Dial the peer (unless connected or being dialed).
    Dial(PeerId),
    /// Close every connection to the peer.
    Close(PeerId),
}

/// The governor, its timer and the addresses of the peers it keeps.
pub(crate) struct Driver {
    pub(crate) governor: Governor,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    tick: futures_timer::Delay,
    interval: Duration,
}

impl Driver {
    /// A governor with `config`, run every `interval` (the first run is due at once).
    pub(crate) fn new(config: GovernorConfig, interval: Duration) -> Self {
        Driver {
            governor: Governor::new(config),
            addresses: HashMap::new(),
            tick: futures_timer::Delay::new(Duration::ZERO),
            interval,
        }
    }

    /// Makes `node` a peer the governor keeps connected, dialed at `addrs` (at most
    /// [`MAX_ADDRS`] per peer, the latest given kept; repeats are not added twice).
    pub(crate) fn add_peer(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        if self.add_addrs(&node, addrs) {
            self.governor.add_known(node);
        }
    }

    /// [`Self::add_peer`] for a past peer ([`Governor::add_past`]).
    pub(crate) fn add_past_peer(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        if self.add_addrs(&node, addrs) {
            self.governor.add_past(node);
        }
    }

    fn add_addrs(&mut self, node: &NodeId, addrs: Vec<Multiaddr>) -> bool {
        if let Ok(peer) = node.to_peer_id() {
            let known = self.addresses.entry(peer).or_default();
            for a in addrs {
                known.retain(|k| *k != a);
                known.push(a);
            }
            let excess = known.len().saturating_sub(MAX_ADDRS);
            known.drain(..excess);
            return true;
        }
        false
    }

    /// The addresses given for `peer`.
    pub(crate) fn addresses(&self, peer: &PeerId) -> &[Multiaddr] {
        self.addresses.get(peer).map_or(&[], Vec::as_slice)
    }

    /// Whether the governor is due; the timer is then rearmed (and registered with
    /// `cx`'s waker).
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> bool {
        if Pin::new(&mut self.tick).poll(cx).is_pending() {
            return false;
        }
        self.tick.reset(self.interval);
        // Poll again so the new deadline is registered with the waker.
        let _ = Pin::new(&mut self.tick).poll(cx);
        true
    }

    /// Runs the governor: dials, unblocks, promotions. A peer it wants that is connected
    /// without a session (one was refused or had no room) gets a new hello on the
    /// connection there is; the other dials and closes are returned for the swarm.
    pub(crate) fn run(&mut self, hs: &mut Handshakes, now: &Timestamp) -> Vec<Step> {
        hs.expire(now);
        let mut steps = Vec::new();
        for action in self.governor.tick(now) {
            match action {
                Action::Dial(node) => {
                    let Ok(peer) = node.to_peer_id() else {
                        continue;
                    };
                    if !hs.is_connected(&peer) {
                        steps.push(Step::Dial(peer));
                    } else if !hs.is_engaged(&peer) && !hs.start(peer, &mut self.governor, now) {
                        self.governor.dial_failed(&node, "no handshake", now);
                    }
                }
                Action::Disconnect(node) => {
                    if let Ok(peer) = node.to_peer_id() {
                        steps.push(Step::Close(peer));
                    }
                }
            }
        }
        steps
    }

    /// A dial of `peer` failed with `error`.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId, error: &str, now: &Timestamp) {
        if let Ok(node) = NodeId::from_peer_id(peer) {
            self.governor.dial_failed(&node, error, now);
        }
    }
}
