//! The admission check the relay's rate limiters run, and the grant table it shares
//! with [`super::Behaviour`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId, relay};
use mesh_core::{ErrorCode, GrantLimits, MeshError, NodeId, RateLimiter, Timestamp};

use super::Requested;
use crate::Clock;
use crate::grants::{Grant, Grants};
use crate::implicit::Implicit;
use crate::policy::Purpose;
use mesh_core::IpKey;

/// Refusals and implicit admissions queued for events, at most.
const QUEUED: usize = 1024;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) grants: Grants,
    /// Admission requests and implicit admissions per IP key.
    pub(super) requests: RateLimiter<IpKey>,
    /// Admission requests over connections without an IP (relayed, in-memory), per
    /// peer, under the same limit.
    pub(super) requests_by_peer: RateLimiter<PeerId>,
    pub(super) refused: VecDeque<(PeerId, Requested, MeshError)>,
    /// Implicit grants made, for events and traces.
    pub(super) admitted: VecDeque<(PeerId, Requested, Grant)>,
    pub(super) waker: Option<Waker>,
}

impl Shared {
    /// Counts an admission request from `peer` against its IP key's limit, or against
    /// the peer's own when the connection has no IP (a relayed one: its source is known
    /// only by its peer id).
    pub(super) fn check_request(
        &mut self,
        ip: Option<IpKey>,
        peer: &PeerId,
        now: &Timestamp,
    ) -> Result<(), MeshError> {
        let (retry, from) = match ip {
            Some(key) => match self.requests.check(&key, now) {
                Ok(()) => return Ok(()),
                Err(retry) => (retry, key.to_string()),
            },
            None => match self.requests_by_peer.check(peer, now) {
                Ok(()) => return Ok(()),
                Err(retry) => (retry, format!("peer {peer}")),
            },
        };
        Err(MeshError::new(
            ErrorCode::TransportRejected,
            format!("too many admission requests from {from}; retry after {retry} s"),
        ))
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Makes an implicit grant for `node` (peer `peer`) for `what` and records it, asked
    /// from `ip` (`None`: a renewal, no new table entry). The policy's denial, the IP
    /// key's request limit or the table's room may refuse.
    pub(super) fn admit_implicitly(
        &mut self,
        implicit: &Implicit,
        peer: PeerId,
        node: NodeId,
        what: Requested,
        ip: Option<IpKey>,
        now: &Timestamp,
    ) -> Result<(), MeshError> {
        if let Some(key) = ip {
            self.requests.check(&key, now).map_err(|retry| {
                MeshError::new(
                    ErrorCode::TransportRejected,
                    format!("too many admissions from {key}; retry after {retry} s"),
                )
            })?;
        }
        let grant = implicit.decide(node, purpose_of(what), now)?;
        self.grants.admit(grant.clone(), ip, now)?;
        if self.admitted.len() < QUEUED {
            self.admitted.push_back((peer, what, grant));
        }
        self.wake();
        Ok(())
    }
}

/// The grant table as the relay's rate limiters and the behaviour share it.
#[derive(Clone)]
pub(super) struct Handle {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) clock: Clock,
    /// Implicit grants for peers without one (`None`: turned off).
    pub(super) implicit: Option<Arc<Implicit>>,
}

impl Handle {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limiter body: is `peer` allowed `what` now? Refusals are queued for events.
    /// `rest` runs the relay's other limiters once admission allows; a circuit request
    /// that all of them allow counts against the node's quota from then on.
    ///
    /// A peer without a live grant of the kind needed (and not blocked) is admitted
    /// implicitly when [`Handle::implicit`] is set and the policy allows
    /// ([`crate::implicit`]); the policy's denial is the refusal otherwise.
    fn allows(
        &self,
        peer: PeerId,
        addr: &Multiaddr,
        what: Requested,
        rest: impl FnOnce() -> bool,
    ) -> bool {
        let now = (self.clock)();
        let mut s = self.lock();
        let node = NodeId::from_peer_id(&peer).map_err(MeshError::from);
        let check = |s: &Shared, node: &NodeId| match what {
            Requested::Reservation => s.grants.check_reservation(node, &now),
            Requested::Circuit => s.grants.check_circuit(node, &now),
        };
        let verdict = match &node {
            Ok(node) => match (check(&s, node), &self.implicit) {
                (Err(_), Some(implicit))
                    if s.grants.blocked_until(node, &now).is_none()
                        && !s.grants.holds(node, purpose_of(what), &now) =>
                {
                    let ip = IpKey::of_multiaddr(addr);
                    s.admit_implicitly(implicit, peer, *node, what, ip, &now)
                        .and_then(|()| check(&s, node))
                }
                (verdict, _) => verdict,
            },
            Err(e) => Err(e.clone()),
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
                if s.refused.len() < QUEUED {
                    s.refused.push_back((peer, what, e));
                }
                s.wake();
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
            Box::new(move |peer: PeerId, addr: &Multiaddr, _| {
                r.allows(peer, addr, Requested::Reservation, || true)
            }),
        );
        let mut rest = std::mem::take(&mut base.circuit_src_rate_limiters);
        base.circuit_src_rate_limiters =
            vec![Box::new(move |peer: PeerId, addr: &Multiaddr, now| {
                c.allows(peer, addr, Requested::Circuit, || {
                    rest.iter_mut().all(|l| l.try_next(peer, addr, now))
                })
            })];
        base.max_circuit_bytes = caps.circuit_bytes;
        base.max_circuit_duration = Duration::from_secs(caps.circuit_secs);
        base
    }
}

/// The purpose an implicit grant for `what` has.
pub(super) fn purpose_of(what: Requested) -> Purpose {
    match what {
        Requested::Reservation => Purpose::Reservation,
        Requested::Circuit => Purpose::Circuit { target: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::RateLimit;

    fn shared() -> Shared {
        Shared {
            grants: Grants::new(8),
            requests: RateLimiter::new(RateLimit::per_minute(4, 1), 16),
            requests_by_peer: RateLimiter::new(RateLimit::per_minute(4, 1), 16),
            refused: VecDeque::new(),
            admitted: VecDeque::new(),
            waker: None,
        }
    }

    /// A relayed connection has no IP key: its requests count against its peer id, so
    /// a client that reaches the relay through another relay is limited too.
    #[test]
    fn requests_without_an_ip_are_limited_per_peer() {
        let mut s = shared();
        let now = Timestamp::parse("2026-12-04T12:00:00Z").unwrap();
        let (a, b) = (PeerId::random(), PeerId::random());
        for _ in 0..4 {
            s.check_request(None, &a, &now).unwrap();
        }
        let e = s.check_request(None, &a, &now).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        assert!(e.detail.contains(&format!("from peer {a}")), "{e}");
        // Another peer has its own budget; an IP key its own as well.
        s.check_request(None, &b, &now).unwrap();
        let ip = IpKey::of("127.0.0.1".parse().unwrap());
        for _ in 0..4 {
            s.check_request(Some(ip), &a, &now).unwrap();
        }
        let e = s.check_request(Some(ip), &a, &now).unwrap_err();
        assert!(e.detail.contains("from 127.0.0.1"), "{e}");
        // And it refills.
        s.check_request(None, &a, &now.plus_secs(60)).unwrap();
    }
}
