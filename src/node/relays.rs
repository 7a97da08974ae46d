//! Relays, the client side, as a component.
//!
//! Every configured relay is a candidate ([`super::relay_select`]). The node asks each
//! for admission (`/mesh/relay-admission/1.0.0`, renewed before expiry), measures its
//! RTT by ping, and holds reservations on the best `max_relays`: it listens on
//! `…/p2p-circuit` through them, and those addresses go into its advertisement as
//! `relay` endpoints. A relay that denies us, fails, or whose reservation ends rests
//! for a while and another takes its slot. A relay without the admission protocol (a
//! plain libp2p relay) is used without a grant. While AutoNAT has confirmed one of our
//! own addresses as reachable, no reservations are held.
//!
//! | state | events in | actions out |
//! |---|---|---|
//! | candidates and their scores, reservations (listeners), grants we hold | admission answers, pings, listeners started/closed, ticks | `AskRelay`, `ForgetRelay`, `ListenVia`, `StopListening`, `Trace` |
//!
//! The server side (grants, revocation) is `mesh_admission::server::Behaviour`'s own;
//! [`grant_infos`] only formats its grants for `meshd relay grants`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_admission::{Purpose, client};
use mesh_core::{NodeId, Timestamp, TraceEvent, TraceEventType};

use super::action::Action;
use super::addrs::without_peer;
use super::api::GrantInfo;
use super::relay_select::RelaySelect;

/// Rest of a relay whose reservation ended.
const RETRY: Duration = Duration::from_secs(3);
/// Rest of a relay that denied us or could not be reached.
const DENIED_REST: Duration = Duration::from_secs(30);
/// How long relay admission waits for our first advertisement.
const ADVERT_WAIT: Duration = Duration::from_secs(5);
/// How long the first choice waits for every relay's admission answer.
const PROBE: Duration = Duration::from_secs(3);

type Actions = Vec<Action>;

/// The relays this node uses.
#[derive(Debug)]
pub(crate) struct Relays {
    node_id: NodeId,
    started: Instant,
    select: RelaySelect,
    listening: HashMap<ListenerId, PeerId>,
    /// Live grants we hold: (relay, purpose) → expiry.
    grants: HashMap<(PeerId, Purpose), Timestamp>,
}

impl Relays {
    /// `keep` reservations at most, among `relays` (address with `/p2p/`, tier).
    pub(crate) fn new(
        node_id: NodeId,
        keep: usize,
        relays: impl IntoIterator<Item = (Multiaddr, u32)>,
        now: Instant,
    ) -> Self {
        let mut select = RelaySelect::new(keep, PROBE, now);
        for (addr, tier) in relays {
            if let Some(peer) = relay_peer(&addr) {
                select.add(peer, addr, tier);
            }
        }
        Relays {
            node_id,
            started: now,
            select,
            listening: HashMap::new(),
            grants: HashMap::new(),
        }
    }

    /// Whether we hold a grant at `relay` that covers circuits to `target`.
    pub(crate) fn may_open_circuit(&self, relay: &PeerId, target: NodeId, now: &Timestamp) -> bool {
        [
            Purpose::Reservation,
            Purpose::Circuit { target: None },
            Purpose::Circuit {
                target: Some(target),
            },
        ]
        .iter()
        .any(|p| self.grants.get(&(*relay, *p)).is_some_and(|t| t > now))
    }

    /// Asks new and rested candidates, fills free reservation slots; releases every
    /// reservation while the node is `reachable` directly. `advertised`: the node has
    /// its first advertisement (requests carry it, for advertisement-based policies).
    pub(crate) fn tick(&mut self, reachable: bool, advertised: bool, now: Instant) -> Actions {
        let mut out = Vec::new();
        if reachable {
            let held: Vec<PeerId> = self.select.held().to_vec();
            for peer in held {
                tracing::info!(relay = %peer, "reachable directly; releasing the reservation");
                out.extend(self.release(&peer));
                self.select.failed(&peer, now, DENIED_REST);
            }
            return out;
        }
        // Wait a little for the first advertisement.
        if !advertised && now < self.started + ADVERT_WAIT {
            return out;
        }
        for (relay, addr) in self.select.to_ask(now) {
            out.push(Action::AskRelay {
                relay,
                purpose: Purpose::Reservation,
                addrs: vec![without_peer(&addr)],
                keep: true,
            });
        }
        for peer in self.select.choose(now) {
            let Some(c) = self.select.get(&peer) else {
                continue;
            };
            tracing::info!(relay = %peer, score = c.score(), "reserving on relay");
            out.push(Action::ListenVia {
                relay: peer,
                addr: c.addr.clone().with(Protocol::P2pCircuit),
            });
        }
        out
    }

    /// An admission request (reservation) to `relay` could not be sent.
    pub(crate) fn ask_failed(&mut self, relay: &PeerId, now: Instant) {
        self.select.failed(relay, now, DENIED_REST);
    }

    /// The reservation listener through `relay` started.
    pub(crate) fn listening(&mut self, id: ListenerId, relay: PeerId) {
        self.listening.insert(id, relay);
    }

    /// The reservation listener through `relay` could not start.
    pub(crate) fn listen_failed(&mut self, relay: &PeerId, now: Instant) {
        self.select.failed(relay, now, RETRY);
    }

    /// Stops listening through `peer` and renewing its grant.
    fn release(&mut self, peer: &PeerId) -> Actions {
        let ids: Vec<ListenerId> = self
            .listening
            .iter()
            .filter(|(_, p)| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        let mut out: Actions = ids
            .into_iter()
            .map(|id| {
                self.listening.remove(&id);
                Action::StopListening(id)
            })
            .collect();
        out.push(Action::ForgetRelay(*peer));
        self.grants.retain(|(r, _), _| r != peer);
        out
    }

    /// A listener closed: if it was a reservation, the relay rests and another may
    /// take its slot. `true` when it was one (our addresses changed).
    pub(crate) fn listener_closed(&mut self, id: ListenerId, reason: &str, now: Instant) -> bool {
        match self.listening.remove(&id) {
            Some(peer) => {
                tracing::info!(relay = %peer, reason, "relay reservation ended");
                self.select.failed(&peer, now, RETRY);
                true
            }
            None => false,
        }
    }

    /// A ping answered: a relay candidate's RTT.
    pub(crate) fn rtt(&mut self, peer: &PeerId, rtt: Duration) {
        self.select.rtt(peer, rtt);
    }

    /// The admission client's answers.
    pub(crate) fn on_admission(&mut self, e: client::Event, now: Instant) -> Actions {
        let mut out = Vec::new();
        match e {
            client::Event::Granted {
                relay,
                grant,
                renewed,
            } => {
                tracing::debug!(%relay, ticket = grant.ticket_id(), renewed, "admitted by relay");
                let purpose = match (grant.purpose(), grant.target()) {
                    ("circuit", target) => Purpose::Circuit { target },
                    _ => Purpose::Reservation,
                };
                self.grants
                    .insert((relay, purpose), grant.expires_at().clone());
                if purpose == Purpose::Reservation {
                    self.select.admitted(&relay, grant.load_permille());
                }
            }
            client::Event::Unsupported { relay } => {
                tracing::debug!(%relay, "relay has no admission protocol; using it without");
                self.select.admitted(&relay, 0);
            }
            client::Event::Denied { relay, error } => {
                tracing::warn!(%relay, %error, "relay denied admission");
                out.push(Action::trace(
                    TraceEvent::new(TraceEventType::RelayDenied, self.node_id, Timestamp::now())
                        .with_peer(relay)
                        .with_detail(serde_json::json!({
                            "code": error.code.as_str(),
                            "detail": error.detail,
                        })),
                ));
                if self.select.is_candidate(&relay) {
                    out.extend(self.release(&relay));
                    self.select.failed(&relay, now, DENIED_REST);
                }
            }
            client::Event::Failed { relay, error } => {
                tracing::info!(%relay, %error, "relay admission request failed");
                if self.select.is_candidate(&relay) && !self.select.held().contains(&relay) {
                    self.select.failed(&relay, now, DENIED_REST);
                }
            }
        }
        out
    }
}

/// Whether AutoNAT confirmed one of our own (non-circuit) addresses.
pub(crate) fn publicly_reachable(nat: &HashMap<Multiaddr, bool>) -> bool {
    nat.iter()
        .any(|(a, ok)| *ok && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
}

/// The relay an admission client event is about.
pub(crate) fn event_relay(e: &client::Event) -> PeerId {
    match e {
        client::Event::Granted { relay, .. }
        | client::Event::Unsupported { relay }
        | client::Event::Denied { relay, .. }
        | client::Event::Failed { relay, .. } => *relay,
    }
}

/// The relay server's live grants, as `meshd relay grants` shows them.
pub(crate) fn grant_infos(server: &mesh_admission::server::Behaviour) -> Vec<GrantInfo> {
    server
        .grants()
        .into_iter()
        .map(|g| GrantInfo {
            node: g.node.to_string(),
            open_circuits: server.open_circuits(&g.node),
            ticket: g.ticket,
            purpose: g.purpose.as_str().to_owned(),
            expires_at: g.expires_at.as_str().to_owned(),
            circuits: g.limits.circuits,
            circuit_bytes: g.limits.circuit_bytes,
            circuit_secs: g.limits.circuit_secs,
        })
        .collect()
}

fn relay_peer(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::core::transport::ListenerId;
    use libp2p::{Multiaddr, PeerId};
    use mesh_admission::client;
    use mesh_core::{ErrorCode, MeshError, NodeKeypair, Timestamp};

    use super::{ADVERT_WAIT, PROBE, Relays};
    use crate::node::action::Action;

    fn relay() -> (PeerId, Multiaddr) {
        let p = NodeKeypair::generate().node_id().to_peer_id().unwrap();
        let a = format!("/ip4/192.0.2.1/tcp/4001/p2p/{p}").parse().unwrap();
        (p, a)
    }

    fn listens(actions: &[Action]) -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ListenVia { relay, .. } => Some(*relay),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn relays_are_asked_once_the_advert_exists_and_the_best_is_reserved() {
        let t0 = Instant::now();
        let (r1, a1) = relay();
        let (r2, a2) = relay();
        let me = NodeKeypair::generate().node_id();
        let mut relays = Relays::new(me, 1, [(a1, 0), (a2, 0)], t0);
        // No advertisement yet, and still within the wait for it: nothing.
        assert!(relays.tick(false, false, t0).is_empty());
        let actions = relays.tick(false, true, t0);
        let asked: Vec<(PeerId, bool)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::AskRelay { relay, keep, .. } => Some((*relay, *keep)),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 2);
        assert!(asked.iter().all(|(_, keep)| *keep), "reservations are kept");
        // Without an advertisement the wait ends too.
        let mut late = Relays::new(me, 1, [(relay().1, 0)], t0);
        assert_eq!(late.tick(false, false, t0 + ADVERT_WAIT).len(), 1);
        // Both answer (plain relays); the faster one is reserved on.
        relays.rtt(&r1, Duration::from_millis(80));
        relays.rtt(&r2, Duration::from_millis(20));
        relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
        relays.on_admission(client::Event::Unsupported { relay: r2 }, t0);
        assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r2]);
        // Its reservation ends: it rests, the other takes the slot.
        let id = ListenerId::next();
        relays.listening(id, r2);
        assert!(!relays.listener_closed(ListenerId::next(), "closed", t0 + PROBE));
        assert!(relays.listener_closed(id, "closed", t0 + PROBE));
        assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
    }

    #[test]
    fn a_denial_releases_the_relay_and_is_traced() {
        let t0 = Instant::now();
        let (r1, a1) = relay();
        let me = NodeKeypair::generate().node_id();
        let mut relays = Relays::new(me, 2, [(a1, 0)], t0);
        relays.tick(false, true, t0);
        relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
        assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
        let id = ListenerId::next();
        relays.listening(id, r1);
        let error = MeshError::new(ErrorCode::TransportRejected, "revoked");
        let actions = relays.on_admission(client::Event::Denied { relay: r1, error }, t0 + PROBE);
        assert!(actions.iter().any(|a| matches!(a, Action::Trace(_))));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::StopListening(x) if *x == id))
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::ForgetRelay(x) if *x == r1))
        );
        // It rests: not reserved on again at once.
        assert!(listens(&relays.tick(false, true, t0 + PROBE)).is_empty());
    }

    #[test]
    fn a_directly_reachable_node_holds_no_reservation() {
        let t0 = Instant::now();
        let (r1, a1) = relay();
        let mut relays = Relays::new(NodeKeypair::generate().node_id(), 2, [(a1, 0)], t0);
        relays.tick(false, true, t0);
        relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
        relays.tick(false, true, t0 + PROBE);
        let actions = relays.tick(true, true, t0 + PROBE);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::ForgetRelay(x) if *x == r1))
        );
        assert!(relays.tick(true, true, t0 + PROBE).is_empty());
        // No grant is held, so no circuit may be opened through it.
        let target = NodeKeypair::generate().node_id();
        assert!(!relays.may_open_circuit(&r1, target, &Timestamp::now()));
    }

    #[test]
    fn only_own_non_circuit_addresses_count_as_reachable() {
        let mut nat = std::collections::HashMap::new();
        let (r, _) = relay();
        let circuit: Multiaddr = format!("/ip4/192.0.2.1/tcp/1/p2p/{r}/p2p-circuit")
            .parse()
            .unwrap();
        nat.insert(circuit, true);
        nat.insert("/ip4/192.0.2.9/tcp/1".parse().unwrap(), false);
        assert!(!super::publicly_reachable(&nat));
        nat.insert("/ip4/192.0.2.9/udp/1/quic-v1".parse().unwrap(), true);
        assert!(super::publicly_reachable(&nat));
    }
}
