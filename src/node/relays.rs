//! Reservations on the configured relays: the node listens on `…/p2p-circuit` through
//! each, and listens again (after a pause) whenever a reservation's listener closes,
//! e.g. because the relay went away or the first dial raced another one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;

use super::Node;

/// The pause before a closed reservation is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(3);

/// Reservation listeners and the ones waiting to be retried.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    listening: HashMap<ListenerId, Multiaddr>,
    retry: Vec<(Instant, Multiaddr)>,
}

impl Node {
    /// Listens through `relay` (an address ending in `/p2p/<relay>`).
    pub(super) fn reserve(&mut self, relay: Multiaddr) {
        let addr = relay.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(addr.clone()) {
            Ok(id) => {
                self.relays.listening.insert(id, relay);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot reserve on relay");
                self.relays.retry.push((Instant::now() + RETRY, relay));
            }
        }
    }

    /// A listener closed: if it was a reservation, try again after [`RETRY`].
    pub(super) fn relay_listener_closed(&mut self, id: ListenerId, reason: &str) {
        if let Some(relay) = self.relays.listening.remove(&id) {
            tracing::info!(%relay, reason, "relay reservation ended; retrying");
            self.relays.retry.push((Instant::now() + RETRY, relay));
        }
    }

    /// Retries the reservations whose pause is over.
    pub(super) fn relays_tick(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) =
            self.relays.retry.drain(..).partition(|(at, _)| *at <= now);
        self.relays.retry = wait;
        for (_, relay) in due {
            self.reserve(relay);
        }
    }
}
