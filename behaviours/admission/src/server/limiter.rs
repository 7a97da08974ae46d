//! The admission check the relay's rate limiters run, and the grant table it shares
//! with [`super::Behaviour`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId, relay};
use mesh_core::{GrantLimits, MeshError, NodeId};

use super::Requested;
use crate::Clock;
use crate::grants::Grants;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) grants: Grants,
    pub(super) refused: VecDeque<(PeerId, Requested, MeshError)>,
    pub(super) waker: Option<Waker>,
}

/// The grant table as the relay's rate limiters and the behaviour share it.
#[derive(Clone)]
pub(super) struct Handle {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) clock: Clock,
}

impl Handle {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limiter body: is `peer` allowed `what` now? Refusals are queued for events.
    /// `rest` runs the relay's other limiters once admission allows; a circuit request
    /// that all of them allow counts against the node's quota from then on.
    fn allows(&self, peer: PeerId, what: Requested, rest: impl FnOnce() -> bool) -> bool {
        let now = (self.clock)();
        let mut s = self.lock();
        let node = NodeId::from_peer_id(&peer).map_err(MeshError::from);
        let verdict = match (&node, what) {
            (Ok(node), Requested::Reservation) => s.grants.check_reservation(node, &now),
            (Ok(node), Requested::Circuit) => s.grants.check_circuit(node, &now),
            (Err(e), _) => Err(e.clone()),
        };
        match (verdict, node) {
            (Ok(()), Ok(node)) => {
                let allowed = rest();
                match what {
                    Requested::Circuit if allowed => s.grants.circuit_allowed(node, &now),
                    Requested::Reservation if allowed => s.grants.reservation_allowed(&node, &now),
                    _ => {}
                }
                allowed
            }
            (Err(e), _) | (_, Err(e)) => {
                if s.refused.len() < 1024 {
                    s.refused.push_back((peer, what, e));
                }
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
                false
            }
        }
    }

    /// `base` with the admission check first among its rate limiters and its circuit
    /// caps set to `caps`.
    ///
    /// `base`'s circuit limiters run inside the admission limiter (after it, only for
    /// admitted peers), so that a request counts against the node's circuit quota exactly
    /// when the relay's whole limiter chain allows it.
    pub(super) fn enforcing(&self, caps: GrantLimits, mut base: relay::Config) -> relay::Config {
        let r = self.clone();
        let c = self.clone();
        base.reservation_rate_limiters.insert(
            0,
            Box::new(move |peer: PeerId, _: &Multiaddr, _| {
                r.allows(peer, Requested::Reservation, || true)
            }),
        );
        let mut rest = std::mem::take(&mut base.circuit_src_rate_limiters);
        base.circuit_src_rate_limiters =
            vec![Box::new(move |peer: PeerId, addr: &Multiaddr, now| {
                c.allows(peer, Requested::Circuit, || {
                    rest.iter_mut().all(|l| l.try_next(peer, addr, now))
                })
            })];
        base.max_circuit_bytes = caps.circuit_bytes;
        base.max_circuit_duration = Duration::from_secs(caps.circuit_secs);
        base
    }
}
