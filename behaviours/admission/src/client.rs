//! The client's side: ask a relay for admission before reserving or opening circuits,
//! keep the grant renewed before it lapses, and report denials.
//!
//! `keep(relay, purpose)` asks now and again when two thirds of the time the grant has
//! left have passed (measured on the local clock to the millisecond: grant times are
//! whole seconds, so a grant of `ttl` seconds may arrive with little more than `ttl - 1`
//! left); a failed or denied request for a kept grant is retried with exponential
//! back-off and jitter ([`crate::Backoff`]: [`Config::retry`] after the first failure,
//! doubling up to [`Config::retry_max`], each wait scaled by a random factor in
//! `[0.5, 1.0)`), so a dead relay is not asked every few seconds forever. A relay
//! that does not speak `/mesh/relay-admission/1.0.0` (a plain
//! libp2p relay) is reported as [`Event::Unsupported`]: the application then reserves
//! without a grant, as on any relay.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{
    Artifact, ErrorCode, MeshError, NodeAdvertisement, NodeId, NodeKeypair, RelayAdmissionGrant,
};

use crate::Clock;
use crate::codec::{Codec, PROTOCOL};
use crate::policy::Purpose;

/// Client settings.
#[derive(Clone)]
pub struct Config {
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Pause before asking again after the first failure or denial of a kept grant (it
    /// doubles with each further failure in a row, up to [`Config::retry_max`]).
    pub retry: Duration,
    /// The longest pause between attempts.
    pub retry_max: Duration,
    /// The wall clock requests are dated and grants checked by.
    pub clock: Clock,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(10),
            retry: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
            clock: crate::system_clock(),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("retry_max", &self.retry_max)
            .finish_non_exhaustive()
    }
}

/// What the client side tells the application.
#[derive(Debug, Clone)]
pub enum Event {
    /// The relay admitted us (verified grant).
    Granted {
        /// The relay.
        relay: PeerId,
        /// The grant.
        grant: Box<RelayAdmissionGrant>,
        /// Whether it renews an earlier grant.
        renewed: bool,
    },
    /// The relay refused, or answered with a grant that does not hold.
    Denied {
        /// The relay.
        relay: PeerId,
        /// What was asked for.
        purpose: Purpose,
        /// Why, with its code.
        error: MeshError,
    },
    /// The relay does not speak the admission protocol.
    Unsupported {
        /// The relay.
        relay: PeerId,
    },
    /// No answer (dial failure, timeout, closed connection).
    Failed {
        /// The relay.
        relay: PeerId,
        /// What was asked for.
        purpose: Purpose,
        /// Why (`E_TRANSPORT_UNAVAILABLE`).
        error: MeshError,
    },
}

#[derive(Debug)]
struct Pending {
    relay: PeerId,
    purpose: Purpose,
    nonce: String,
    renewal: bool,
}

#[derive(Debug)]
struct Kept {
    grant: Option<RelayAdmissionGrant>,
    /// When to ask again (`None` while a request is in flight).
    next: Option<Instant>,
    /// Failures in a row and the pause they call for.
    backoff: crate::Backoff,
}

/// The behaviour.
pub struct Behaviour {
    inner: request_response::Behaviour<Codec>,
    key: NodeKeypair,
    config: Config,
    advertisement: Option<NodeAdvertisement>,
    endorsements: Vec<crate::FederationEndorsement>,
    pending: HashMap<OutboundRequestId, Pending>,
    kept: HashMap<(PeerId, Purpose), Kept>,
    events: VecDeque<Event>,
    tick: futures_timer::Delay,
}

const TICK: Duration = Duration::from_millis(500);
/// The soonest a kept grant is renewed after it arrives.
const MIN_RENEW: Duration = Duration::from_millis(200);

/// When to renew `grant`, which arrived just now: after two thirds of the time it has
/// left by the local clock.
fn renew_after(grant: &RelayAdmissionGrant) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let left_ms = grant
        .expires_at()
        .instant()
        .timestamp_millis()
        .saturating_sub(now_ms);
    Duration::from_millis(u64::try_from(left_ms.max(0) / 3 * 2).unwrap_or(0)).max(MIN_RENEW)
}

impl Behaviour {
    /// The client side for the node whose identity is `key`.
    pub fn new(key: NodeKeypair, config: Config) -> Self {
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec(config.read_budget.clone()),
                [(PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(config.timeout),
            ),
            key,
            config,
            advertisement: None,
            endorsements: Vec::new(),
            pending: HashMap::new(),
            kept: HashMap::new(),
            events: VecDeque::new(),
            tick: futures_timer::Delay::new(TICK),
        }
    }

    /// Our own advertisement, carried in requests (for advertisement-based policies).
    pub fn set_advertisement(&mut self, advertisement: Option<NodeAdvertisement>) {
        self.advertisement = advertisement;
    }

    /// Our federation endorsements, carried in requests (for the `federation` policy;
    /// at most [`crate::endorsement::MAX_ENDORSEMENTS`]).
    pub fn set_endorsements(&mut self, endorsements: Vec<crate::FederationEndorsement>) {
        self.endorsements = endorsements;
    }

    /// Asks `relay` once (dialing `addrs` if not connected).
    pub fn request(
        &mut self,
        relay: PeerId,
        purpose: Purpose,
        addrs: Vec<Multiaddr>,
    ) -> Result<OutboundRequestId, MeshError> {
        self.send(relay, purpose, addrs, false)
    }

    /// Asks `relay` now and keeps the grant renewed until [`Behaviour::forget`].
    pub fn keep(
        &mut self,
        relay: PeerId,
        purpose: Purpose,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), MeshError> {
        let renewal = self
            .kept
            .get(&(relay, purpose))
            .is_some_and(|k| k.grant.is_some());
        let (retry, retry_max) = (self.config.retry, self.config.retry_max);
        self.kept
            .entry((relay, purpose))
            .or_insert_with(|| Kept {
                grant: None,
                next: None,
                backoff: crate::Backoff::new(retry, retry_max),
            })
            .next = None;
        self.send(relay, purpose, addrs, renewal).map(|_| ())
    }

    /// Stops renewing grants at `relay`.
    pub fn forget(&mut self, relay: &PeerId) {
        self.kept.retain(|(r, _), _| r != relay);
    }

    /// The live grant from `relay` for `purpose`, if any.
    pub fn grant(&self, relay: &PeerId, purpose: Purpose) -> Option<&RelayAdmissionGrant> {
        let now = (self.config.clock)();
        self.kept
            .get(&(*relay, purpose))
            .and_then(|k| k.grant.as_ref())
            .filter(|g| g.expires_at() > &now)
    }

    fn send(
        &mut self,
        relay: PeerId,
        purpose: Purpose,
        addrs: Vec<Multiaddr>,
        renewal: bool,
    ) -> Result<OutboundRequestId, MeshError> {
        let relay_id = NodeId::from_peer_id(&relay).map_err(MeshError::from)?;
        let request = crate::request::request_with(
            &self.key,
            relay_id,
            purpose,
            self.advertisement.as_ref(),
            &self.endorsements,
            &(self.config.clock)(),
        )?;
        let nonce = request.nonce().to_owned();
        let id = self
            .inner
            .send_request_with_addresses(&relay, Ok(request.to_cbor()), addrs);
        self.pending.insert(
            id,
            Pending {
                relay,
                purpose,
                nonce,
                renewal,
            },
        );
        Ok(id)
    }

    /// Verifies a grant answer against what we asked.
    fn accept(&self, p: &Pending, bytes: &[u8]) -> Result<RelayAdmissionGrant, MeshError> {
        let grant = RelayAdmissionGrant::verify_cbor(bytes, &(self.config.clock)())?;
        let relay = NodeId::from_peer_id(&p.relay).map_err(MeshError::from)?;
        if grant.relay_id() != relay {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                format!("grant signed by {}, not by the relay", grant.relay_id()),
            ));
        }
        if grant.node_id() != self.key.node_id() || grant.request_nonce() != p.nonce {
            return Err(MeshError::new(
                ErrorCode::HsUnknownRef,
                "grant does not answer our request",
            ));
        }
        if grant.purpose() != p.purpose.as_str() {
            return Err(MeshError::invalid("grant is for another purpose"));
        }
        // A circuit grant for one target answers only a request for that target (or for
        // any: `None` asked, any grant is one the relay chose to give).
        if let Purpose::Circuit { target: Some(t) } = p.purpose
            && grant.target().is_some_and(|g| g != t)
        {
            return Err(MeshError::invalid("grant is for another target"));
        }
        Ok(grant)
    }

    fn on_answer(&mut self, id: OutboundRequestId, answer: crate::codec::Answer) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let result = answer.and_then(|b| self.accept(&p, &b));
        let kept = self.kept.get_mut(&(p.relay, p.purpose));
        match result {
            Ok(grant) => {
                if let Some(k) = kept {
                    k.next = Some(Instant::now() + renew_after(&grant));
                    k.grant = Some(grant.clone());
                    k.backoff.succeeded();
                }
                self.events.push_back(Event::Granted {
                    relay: p.relay,
                    grant: Box::new(grant),
                    renewed: p.renewal,
                });
            }
            Err(error) => {
                if let Some(k) = kept {
                    k.next = Some(k.backoff.failed(Instant::now(), &mut rand_core::OsRng));
                }
                self.events.push_back(Event::Denied {
                    relay: p.relay,
                    purpose: p.purpose,
                    error,
                });
            }
        }
    }

    fn on_failure(&mut self, id: OutboundRequestId, error: OutboundFailure) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(k) = self.kept.get_mut(&(p.relay, p.purpose)) {
            k.next = Some(k.backoff.failed(Instant::now(), &mut rand_core::OsRng));
        }
        self.events.push_back(match error {
            e if is_unsupported(&e) => Event::Unsupported { relay: p.relay },
            e => Event::Failed {
                relay: p.relay,
                purpose: p.purpose,
                error: MeshError::new(ErrorCode::TransportUnavailable, e.to_string()),
            },
        });
    }

    /// Until the next renewal falls due, at most [`TICK`].
    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        self.kept
            .values()
            .filter_map(|k| k.next)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .map_or(TICK, |d| d.clamp(Duration::from_millis(10), TICK))
    }

    fn renew_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Purpose)> = self
            .kept
            .iter()
            .filter(|(_, k)| k.next.is_some_and(|t| t <= now))
            .map(|(key, _)| *key)
            .collect();
        for (relay, purpose) in due {
            if let Err(error) = self.keep(relay, purpose, Vec::new()) {
                self.events.push_back(Event::Failed {
                    relay,
                    purpose,
                    error,
                });
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler =
        <request_response::Behaviour<Codec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: libp2p::swarm::ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: libp2p::core::Endpoint,
    ) -> Result<Vec<Multiaddr>, libp2p::swarm::ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(e));
            }
            if self.tick.poll_unpin(cx).is_ready() {
                self.renew_due();
                self.tick.reset(self.next_wake());
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(e)) => match e {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } => {
                        self.on_answer(request_id, response);
                        self.tick.reset(self.next_wake());
                    }
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } => self.on_failure(request_id, error),
                    _ => {}
                },
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether the relay does not speak the admission protocol: the negotiation failed, either
/// before the request was sent (multistream-select `V1`, libp2p's default) or after it was
/// sent optimistically (`V1Lazy`, where the refusal arrives as the first bytes read).
fn is_unsupported(e: &OutboundFailure) -> bool {
    match e {
        OutboundFailure::UnsupportedProtocols => true,
        OutboundFailure::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<libp2p::core::upgrade::NegotiationError>())
            .is_some_and(|n| matches!(n, libp2p::core::upgrade::NegotiationError::Failed)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::{Artifact, RelayAdmissionGrant, Timestamp};
    use serde_json::{Value, json};

    /// A grant from `relay` for `node`'s request `nonce`, a circuit to `target`.
    fn grant(relay: &NodeKeypair, node: NodeId, nonce: &str, target: NodeId) -> Vec<u8> {
        let now = Timestamp::now();
        let Value::Object(doc) = json!({
            "schema/v": 1, "message/kind": "relay-admission-grant.v1",
            "relay/node-id": relay.node_id().to_string(), "node/id": node.to_string(),
            "ticket/id": "rg:1", "request/nonce": nonce, "purpose": "circuit",
            "target/node-id": target.to_string(),
            "limits": {"circuits": 1, "circuit-bytes": 1024, "circuit-secs": 60},
            "relay/load-permille": 0, "issued-at": now.as_str(),
            "expires-at": now.plus_secs(60).as_str(),
        }) else {
            unreachable!()
        };
        RelayAdmissionGrant::sign(doc, relay).unwrap().to_cbor()
    }

    /// A circuit grant answers only a request for its target: a relay's grant to
    /// another node than the one asked for was taken as ours.
    #[test]
    fn a_circuit_grant_for_another_target_is_refused() {
        let (me, relay) = (NodeKeypair::generate(), NodeKeypair::generate());
        let (asked, other) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let b = Behaviour::new(me.clone(), Config::default());
        let p = Pending {
            relay: relay.node_id().to_peer_id().unwrap(),
            purpose: Purpose::Circuit {
                target: Some(asked),
            },
            nonce: "n1".into(),
            renewal: false,
        };
        let e = b
            .accept(&p, &grant(&relay, me.node_id(), "n1", other))
            .unwrap_err();
        assert!(e.detail.contains("another target"), "{e}");
        assert!(
            b.accept(&p, &grant(&relay, me.node_id(), "n1", asked))
                .is_ok()
        );
    }
}
