//! Relays, the client side, as a component.
//!
//! Every configured relay is a candidate ([`super::relay_select`]). The node asks each
//! for admission (`/mesh/relay-admission/1.0.0`, renewed before expiry), measures its
//! RTT by ping, and holds reservations on the best `max_relays`: it listens on
//! `…/p2p-circuit` through them, and those addresses go into its advertisement as
//! `relay` endpoints. A relay that denies us, fails, or whose reservation ends rests
//! for a while and another takes its slot: 3 s after a reservation ended, and after a
//! denial, a failed request or a loss an exponential back-off with jitter
//! ([`mesh_admission::Backoff`]: 10 s doubling to 10 min, scaled by `[0.5, 1.0)`). A
//! relay without the admission protocol (a plain libp2p relay) is used without a grant.
//! While AutoNAT has confirmed one of our own addresses as reachable, no reservations
//! are held.
//!
//! Liveness: a held relay must show a sign of life (an answered ping, which the session
//! behaviour sends every 15 s, or a grant) at least every `relay_liveness_secs`
//! (default 25); otherwise it is lost ([`mesh_admission::Liveness`]): its connections
//! are closed (a hung relay's TCP connection would otherwise linger for ~15 minutes),
//! its reservation ends and another relay takes the slot.
//!
//! The relay drops a grant nobody used within 2 minutes, so a relay chosen long after
//! its grant arrived is asked again before the reservation ([`FRESH_GRANT`]).
//!
//! | state | events in | actions out |
//! |---|---|---|
//! | candidates and their scores, reservations (listeners), grants we hold, liveness and back-off of held relays | admission answers, pings, listeners started/closed, ticks | `AskRelay`, `ForgetRelay`, `ListenVia`, `StopListening`, `Disconnect`, `Trace` |
//!
//! The server side (grants, revocation) is `mesh_admission::server::Behaviour`'s own;
//! [`grant_infos`] only formats its grants for `meshd relay grants`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_admission::{Backoff, Liveness, Purpose, client};
use mesh_core::{NodeId, Timestamp, TraceEvent, TraceEventType};

use super::action::Action;
use super::addrs::without_peer;
use super::api::GrantInfo;
use super::relay_select::RelaySelect;

/// Rest of a relay whose reservation ended.
const RETRY: Duration = Duration::from_secs(3);
/// Rest of a relay after its first denial, failure or loss (doubling with each
/// further one in a row, up to [`MAX_REST`]).
const DENIED_REST: Duration = Duration::from_secs(10);
/// The longest rest.
const MAX_REST: Duration = Duration::from_secs(600);
/// A reservation grant older than this is renewed before reserving with it (the relay
/// drops grants unused for 2 minutes).
pub(crate) const FRESH_GRANT: Duration = Duration::from_secs(60);
/// Silence after which a held relay is lost, by default.
pub(crate) const DEFAULT_LIVENESS: Duration = Duration::from_secs(25);
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
    /// When each relay's reservation grant last arrived.
    granted_at: HashMap<PeerId, Instant>,
    /// Signs of life of the relays we listen through.
    liveness: Liveness<PeerId>,
    /// Failures in a row per relay.
    backoffs: HashMap<PeerId, Backoff>,
    /// Relays that do not answer libp2p ping: their liveness cannot be watched.
    unpingable: HashSet<PeerId>,
}

impl Relays {
    /// `keep` reservations at most, among `relays` (address with `/p2p/`, tier); a held
    /// relay silent for longer than `liveness` is lost.
    pub(crate) fn new(
        node_id: NodeId,
        keep: usize,
        relays: impl IntoIterator<Item = (Multiaddr, u32)>,
        liveness: Duration,
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
            granted_at: HashMap::new(),
            liveness: Liveness::new(liveness),
            backoffs: HashMap::new(),
            unpingable: HashSet::new(),
        }
    }

    /// `peer` does not speak libp2p ping: if it is a relay, its liveness is not watched
    /// (it would look silent forever), and its reservation lasts until it ends.
    pub(crate) fn unpingable(&mut self, peer: &PeerId) {
        if self.select.is_candidate(peer) && self.unpingable.insert(*peer) {
            tracing::info!(relay = %peer, "relay does not answer ping; its liveness is not watched");
            self.liveness.unwatch(peer);
        }
    }

    /// `relay` failed (denied, unreachable, lost): it rests for its back-off.
    fn rest(&mut self, relay: &PeerId, now: Instant) {
        let b = self
            .backoffs
            .entry(*relay)
            .or_insert_with(|| Backoff::new(DENIED_REST, MAX_REST));
        let until = b.failed(now, &mut rand_core::OsRng);
        self.select
            .failed(relay, now, until.saturating_duration_since(now));
    }

    /// Held relays silent for too long: released, disconnected, resting.
    fn drop_lost(&mut self, now: Instant, out: &mut Actions) {
        for peer in self.liveness.lost(now) {
            if !self.select.held().contains(&peer) {
                continue;
            }
            tracing::warn!(relay = %peer, silence = ?self.liveness.silence(), "relay lost: no sign of life; taking another");
            out.push(Action::trace(
                TraceEvent::new(TraceEventType::RelayDenied, self.node_id, Timestamp::now())
                    .with_peer(peer)
                    .with_detail(serde_json::json!({
                        "lost": true,
                        "silence-secs": self.liveness.silence().as_secs(),
                    })),
            ));
            out.extend(self.release(&peer));
            out.push(Action::Disconnect(peer));
            self.rest(&peer, now);
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
        self.drop_lost(now, &mut out);
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
            // A grant that may have lapsed unused at the relay is renewed first; the
            // relay is chosen again when the fresh one arrives.
            let stale = self
                .granted_at
                .get(&peer)
                .is_some_and(|at| now.saturating_duration_since(*at) > FRESH_GRANT);
            if stale {
                self.granted_at.remove(&peer);
                self.select.refresh(&peer);
                continue;
            }
            let Some(c) = self.select.get(&peer) else {
                continue;
            };
            if !self.unpingable.contains(&peer) {
                self.liveness.watch(peer, now);
            }
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
        self.rest(relay, now);
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
        self.granted_at.remove(peer);
        self.liveness.unwatch(peer);
        out
    }

    /// A listener closed: if it was a reservation, the relay rests and another may
    /// take its slot. `true` when it was one (our addresses changed).
    pub(crate) fn listener_closed(&mut self, id: ListenerId, reason: &str, now: Instant) -> bool {
        match self.listening.remove(&id) {
            Some(peer) => {
                tracing::info!(relay = %peer, reason, "relay reservation ended");
                self.select.failed(&peer, now, RETRY);
                self.liveness.unwatch(&peer);
                true
            }
            None => false,
        }
    }

    /// A ping answered at `now`: a relay candidate's RTT, and a sign of life.
    pub(crate) fn rtt(&mut self, peer: &PeerId, rtt: Duration, now: Instant) {
        self.select.rtt(peer, rtt);
        self.liveness.alive(peer, now);
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
                hold_grant(
                    &mut self.grants,
                    (relay, purpose),
                    grant.issued_at(),
                    grant.expires_at(),
                );
                self.liveness.alive(&relay, now);
                if let Some(b) = self.backoffs.get_mut(&relay) {
                    b.succeeded();
                }
                if purpose == Purpose::Reservation {
                    self.granted_at.insert(relay, now);
                    self.select.admitted(&relay, grant.load_permille());
                }
            }
            client::Event::Unsupported { relay } => {
                tracing::debug!(%relay, "relay has no admission protocol; using it without");
                self.select.admitted(&relay, 0);
            }
            client::Event::Denied {
                relay,
                purpose,
                error,
            } => {
                tracing::warn!(%relay, %error, "relay denied admission");
                out.push(Action::trace(
                    TraceEvent::new(TraceEventType::RelayDenied, self.node_id, Timestamp::now())
                        .with_peer(relay)
                        .with_detail(serde_json::json!({
                            "code": error.code.as_str(),
                            "detail": error.detail,
                        })),
                ));
                // A circuit refused (to one target, say) says nothing of our
                // reservation there.
                if purpose == Purpose::Reservation && self.select.is_candidate(&relay) {
                    out.extend(self.release(&relay));
                    self.rest(&relay, now);
                }
            }
            client::Event::Failed {
                relay,
                purpose,
                error,
            } => {
                tracing::info!(%relay, %error, "relay admission request failed");
                if purpose == Purpose::Reservation
                    && self.select.is_candidate(&relay)
                    && !self.select.held().contains(&relay)
                {
                    self.rest(&relay, now);
                }
            }
        }
        out
    }
}

/// Whether AutoNAT confirmed one of our own (non-circuit) addresses.
pub(crate) fn publicly_reachable(nat: &super::nat_verdicts::NatVerdicts) -> bool {
    nat.iter()
        .any(|(a, ok)| ok && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
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

/// Grants the node holds at once, at most. Every `/connect` or `/dial` whose relay stage
/// asks a relay named in a target's advertisement adds one (for an hour); past this
/// many the one that lapses first goes.
pub(crate) const MAX_HELD_GRANTS: usize = 256;

/// Records a grant we were given: forgets the ones that lapsed by its `issued_at` (the
/// relay's clock, which the grant's validation holds to at most 30 s ahead of ours, so a
/// relay cannot make us forget others' live grants early), then, at
/// [`MAX_HELD_GRANTS`], the one that lapses first.
fn hold_grant(
    grants: &mut HashMap<(PeerId, Purpose), Timestamp>,
    key: (PeerId, Purpose),
    issued_at: &Timestamp,
    expires_at: &Timestamp,
) {
    grants.retain(|_, until| &*until > issued_at);
    if grants.len() >= MAX_HELD_GRANTS && !grants.contains_key(&key) {
        let first = grants.iter().min_by(|a, b| a.1.cmp(b.1)).map(|(k, _)| *k);
        if let Some(k) = first {
            grants.remove(&k);
        }
    }
    grants.insert(key, expires_at.clone());
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
            implicit: g.implicit,
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
mod tests;
