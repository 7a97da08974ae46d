//! Relays in the node, both sides.
//!
//! Client: every configured relay is a candidate ([`super::relay_select`]). The node
//! asks each for admission (`/mesh/relay-admission/1.0.0`, renewed before expiry),
//! measures its RTT by ping, and holds reservations on the best `max_relays`: it
//! listens on `…/p2p-circuit` through them, and those addresses go into its
//! advertisement as `relay` endpoints. A relay that denies us, fails, or whose
//! reservation ends rests for a while and another takes its slot. A relay without the
//! admission protocol (a plain libp2p relay) is used without a grant. While AutoNAT
//! has confirmed one of our own addresses as reachable, no reservations are held.
//!
//! Server: `relay grants` and `relay revoke` over the control API, and relay events
//! fed to the admission behaviour.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay};
use mesh_admission::{Purpose, client};
use mesh_core::{MeshError, NodeId, Timestamp, TraceEvent, TraceEventType};
use serde::Serialize;

use super::Node;
use super::handle::{Command, NodeHandle, Reply};
use super::relay_select::RelaySelect;

/// Rest of a relay whose reservation ended.
pub(super) const RETRY: Duration = Duration::from_secs(3);
/// Rest of a relay that denied us or could not be reached.
const DENIED_REST: Duration = Duration::from_secs(30);
/// How long relay admission waits for our first advertisement.
const ADVERT_WAIT: Duration = Duration::from_secs(5);
/// How long the first choice waits for every relay's admission answer.
const PROBE: Duration = Duration::from_secs(3);

/// Relay state of the node.
#[derive(Debug)]
pub(crate) struct Relays {
    select: RelaySelect,
    listening: HashMap<ListenerId, PeerId>,
    /// Live grants we hold: (relay, purpose) → expiry.
    grants: HashMap<(PeerId, Purpose), Timestamp>,
}

impl Relays {
    pub(super) fn new(keep: usize, now: Instant) -> Self {
        Relays {
            select: RelaySelect::new(keep, PROBE, now),
            listening: HashMap::new(),
            grants: HashMap::new(),
        }
    }

    /// Whether we hold a grant at `relay` that covers circuits to `target`.
    pub(super) fn may_open_circuit(&self, relay: &PeerId, target: NodeId) -> bool {
        let now = Timestamp::now();
        [
            Purpose::Reservation,
            Purpose::Circuit { target: None },
            Purpose::Circuit {
                target: Some(target),
            },
        ]
        .iter()
        .any(|p| self.grants.get(&(*relay, *p)).is_some_and(|t| t > &now))
    }
}

/// Relay-server commands.
#[derive(Debug)]
pub(crate) enum RelayCommand {
    Grants { reply: Reply<Vec<GrantInfo>> },
    Revoke { node: NodeId, reply: Reply<bool> },
}

/// A live grant as `meshd relay grants` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantInfo {
    /// The admitted node.
    pub node: String,
    /// `ticket/id`.
    pub ticket: String,
    /// `reservation` or `circuit`.
    pub purpose: String,
    /// When it lapses.
    pub expires_at: String,
    /// Circuits open now from this node.
    pub open_circuits: usize,
    /// Circuits allowed at once.
    pub circuits: u32,
    /// Bytes per circuit.
    pub circuit_bytes: u64,
    /// Seconds per circuit.
    pub circuit_secs: u64,
}

impl NodeHandle {
    /// The relay's live admission grants (`E_PROTO_INVALID` when not a relay).
    pub async fn relay_grants(&self) -> Result<Vec<GrantInfo>, MeshError> {
        self.ask(|reply| Command::Relay(RelayCommand::Grants { reply }))
            .await
    }

    /// Revokes `node`'s grants at this relay, blocks it for a while and closes its
    /// connections. Whether it held a grant.
    pub async fn relay_revoke(&self, node: NodeId) -> Result<bool, MeshError> {
        self.ask(|reply| Command::Relay(RelayCommand::Revoke { node, reply }))
            .await
    }
}

fn not_a_relay() -> MeshError {
    MeshError::invalid("this node is not a relay server (run with --relay-server)")
}

fn relay_peer(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl Node {
    pub(super) fn on_relay_command(&mut self, command: RelayCommand) {
        match command {
            RelayCommand::Grants { reply } => {
                let r = match self.swarm.behaviour().admission.as_ref() {
                    Some(a) => Ok(a
                        .grants()
                        .into_iter()
                        .map(|g| GrantInfo {
                            node: g.node.to_string(),
                            open_circuits: a.open_circuits(&g.node),
                            ticket: g.ticket,
                            purpose: g.purpose.as_str().to_owned(),
                            expires_at: g.expires_at.as_str().to_owned(),
                            circuits: g.limits.circuits,
                            circuit_bytes: g.limits.circuit_bytes,
                            circuit_secs: g.limits.circuit_secs,
                        })
                        .collect()),
                    None => Err(not_a_relay()),
                };
                let _ = reply.send(r);
            }
            RelayCommand::Revoke { node, reply } => {
                let r = match self.swarm.behaviour_mut().admission.as_mut() {
                    Some(a) => Ok(a.revoke(node)),
                    None => Err(not_a_relay()),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// Adds the configured relays as candidates.
    pub(super) fn relays_start(&mut self) {
        for addr in self.config.relays.clone() {
            let Some(peer) = relay_peer(&addr) else {
                continue;
            };
            let tier = self
                .config
                .relay_tiers
                .get(&peer.to_string())
                .copied()
                .unwrap_or(0);
            self.relays.select.add(peer, addr, tier);
        }
        self.relays_tick();
    }

    /// Whether AutoNAT confirmed one of our own (non-circuit) addresses.
    fn publicly_reachable(&self) -> bool {
        self.config.autonat
            && self
                .nat
                .iter()
                .any(|(a, ok)| *ok && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
    }

    /// Asks new and rested candidates, fills free reservation slots.
    pub(super) fn relays_tick(&mut self) {
        let now = Instant::now();
        if self.publicly_reachable() {
            let held: Vec<PeerId> = self.relays.select.held().to_vec();
            for peer in held {
                tracing::info!(relay = %peer, "reachable directly; releasing the reservation");
                self.release(&peer);
                self.relays.select.failed(&peer, now, DENIED_REST);
            }
            return;
        }
        // Requests carry our advertisement (for advertisement-based policies): wait
        // a little for the first one.
        if self.own.current().is_none() && now < self.started + ADVERT_WAIT {
            return;
        }
        for (peer, addr) in self.relays.select.to_ask(now) {
            let dial = vec![super::routing::without_peer(&addr)];
            let r =
                self.swarm
                    .behaviour_mut()
                    .admission_client
                    .keep(peer, Purpose::Reservation, dial);
            if let Err(e) = r {
                tracing::warn!(relay = %peer, error = %e, "cannot ask relay for admission");
                self.relays.select.failed(&peer, now, DENIED_REST);
            }
        }
        for peer in self.relays.select.choose(now) {
            self.reserve(peer);
        }
    }

    /// Listens through `relay`.
    fn reserve(&mut self, peer: PeerId) {
        let Some(c) = self.relays.select.get(&peer) else {
            return;
        };
        let addr = c.addr.clone().with(Protocol::P2pCircuit);
        tracing::info!(relay = %peer, score = c.score(), "reserving on relay");
        match self.swarm.listen_on(addr.clone()) {
            Ok(id) => {
                self.relays.listening.insert(id, peer);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot reserve on relay");
                self.relays.select.failed(&peer, Instant::now(), RETRY);
            }
        }
    }

    /// Stops listening through `peer` and renewing its grant.
    fn release(&mut self, peer: &PeerId) {
        let ids: Vec<ListenerId> = self
            .relays
            .listening
            .iter()
            .filter(|(_, p)| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.relays.listening.remove(&id);
            self.swarm.remove_listener(id);
        }
        self.swarm.behaviour_mut().admission_client.forget(peer);
        self.relays.grants.retain(|(r, _), _| r != peer);
    }

    /// A listener closed: if it was a reservation, the relay rests and another may
    /// take its slot.
    pub(super) fn relay_listener_closed(&mut self, id: ListenerId, reason: &str) {
        if let Some(peer) = self.relays.listening.remove(&id) {
            tracing::info!(relay = %peer, reason, "relay reservation ended");
            self.relays.select.failed(&peer, Instant::now(), RETRY);
            self.addrs_dirty = true;
        }
    }

    /// A ping answered: a relay candidate's RTT.
    pub(super) fn relay_rtt(&mut self, peer: &PeerId, rtt: Duration) {
        self.relays.select.rtt(peer, rtt);
    }

    /// Logs the relay server's events (its admission side counted them already).
    pub(super) fn on_relay_server(&self, e: &relay::Event) {
        tracing::debug!(?e, "relay server");
    }

    /// The admission client's answers.
    pub(super) fn on_admission_client(&mut self, e: client::Event) {
        let now = Instant::now();
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
                self.relays
                    .grants
                    .insert((relay, purpose), grant.expires_at().clone());
                if purpose == Purpose::Reservation {
                    self.relays.select.admitted(&relay, grant.load_permille());
                }
                self.route_grant_answered(relay);
            }
            client::Event::Unsupported { relay } => {
                tracing::debug!(%relay, "relay has no admission protocol; using it without");
                self.relays.select.admitted(&relay, 0);
                self.route_grant_answered(relay);
            }
            client::Event::Denied { relay, error } => {
                tracing::warn!(%relay, %error, "relay denied admission");
                self.emit_trace(
                    TraceEvent::new(TraceEventType::RelayDenied, self.node_id, Timestamp::now())
                        .with_peer(relay)
                        .with_detail(serde_json::json!({
                            "code": error.code.as_str(),
                            "detail": error.detail,
                        })),
                );
                if self.relays.select.is_candidate(&relay) {
                    self.release(&relay);
                    self.relays.select.failed(&relay, now, DENIED_REST);
                }
                self.route_grant_answered(relay);
            }
            client::Event::Failed { relay, error } => {
                tracing::info!(%relay, %error, "relay admission request failed");
                if self.relays.select.is_candidate(&relay)
                    && !self.relays.select.held().contains(&relay)
                {
                    self.relays.select.failed(&relay, now, DENIED_REST);
                }
                self.route_grant_answered(relay);
            }
        }
    }
}
