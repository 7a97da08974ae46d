//! The `/mesh/advert/1.0.0` network behaviour.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::request_response::{self, Message, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::ListenAddresses;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm,
};
use mesh_core::artifact::Artifact;
use mesh_core::{
    ErrorCode, MeshError, NodeAdvertisement, NodeId, RateLimit, RateLimiter, Timestamp,
};

use crate::protocol::{
    Codec, InboundRequest, InboundResponse, PROTOCOL, Request, Response, Status,
};
use crate::shares::Source;
use crate::store::{AdvertStore, InsertOutcome, StoreError, StoredAdvert};
use crate::withdrawal::NodeWithdrawal;

/// The clock the behaviour reads (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Configuration.
#[derive(Clone)]
pub struct Config {
    /// How long to wait for a response.
    pub request_timeout: Duration,
    /// Concurrent streams per connection.
    pub max_concurrent_streams: usize,
    /// Forward newly accepted advertisements and withdrawals to other connected peers.
    pub forward: bool,
    /// Most peers a single accepted change is forwarded to.
    pub max_forward_peers: usize,
    /// Accepted changes forwarded per source (the network a change came from, see
    /// [`Source`]); beyond it a change is stored and answered but not forwarded.
    pub forward_per_source: RateLimit,
    /// Accepted changes forwarded in all: each goes to up to `max_forward_peers`
    /// peers, whose own per-peer limits count our requests together.
    pub forward_total: RateLimit,
    /// Keep advertisements fetched by our own lookups in the store (under the share of
    /// the peer that answered).
    pub cache_fetched: bool,
    /// Inbound requests allowed per peer.
    pub per_peer: RateLimit,
    /// Inbound requests allowed per network (the IPv4 address or IPv6 /64 the peer's
    /// connection comes from, its peer id without an IP; all of loopback one network
    /// only at a node listening beyond it), whatever its peer ids: one host holds many
    /// connections under fresh keys, each with its own `per_peer`.
    pub per_network: RateLimit,
    /// The clock.
    pub clock: Clock,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 32,
            forward: true,
            max_forward_peers: 8,
            forward_per_source: RateLimit::per_minute(16, 60),
            forward_total: RateLimit::per_minute(64, 300),
            cache_fetched: true,
            per_peer: RateLimit::per_minute(60, 600),
            per_network: RateLimit::per_minute(600, 3000),
            clock: Arc::new(Timestamp::now),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("forward", &self.forward)
            .field("max_forward_peers", &self.max_forward_peers)
            .field("forward_per_source", &self.forward_per_source)
            .field("forward_total", &self.forward_total)
            .field("cache_fetched", &self.cache_fetched)
            .field("per_peer", &self.per_peer)
            .field("per_network", &self.per_network)
            .finish_non_exhaustive()
    }
}

/// What one of our requests got back.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The peer stored our advertisement.
    Stored,
    /// The peer replaced an older one with ours.
    Replaced,
    /// The peer applied our withdrawal.
    Withdrawn,
    /// The advertisement asked for, verified.
    Found(Box<NodeAdvertisement>),
    /// Refresh: the peer has nothing newer.
    Unchanged,
    /// The peer has no current advertisement of that node.
    NotFound,
}

/// Events for the application.
#[derive(Debug)]
pub enum Event {
    /// An advertisement sent by `peer` was verified and stored.
    Stored {
        /// Who sent it (not necessarily its node).
        peer: PeerId,
        /// The advertised node.
        node: NodeId,
        /// Its sequence number.
        sequence_no: u64,
        /// The sequence number it replaced.
        replaced: Option<u64>,
    },
    /// A withdrawal sent by `peer` was verified and applied.
    Withdrawn {
        /// Who sent it.
        peer: PeerId,
        /// The withdrawn node.
        node: NodeId,
        /// The withdrawal's sequence number.
        sequence_no: u64,
        /// The verified withdrawal (to pass on, e.g. into a DHT).
        withdrawal: Box<NodeWithdrawal>,
    },
    /// Something `peer` sent was refused; it was answered with this code.
    Rejected {
        /// Who sent it.
        peer: PeerId,
        /// Why.
        error: MeshError,
    },
    /// The answer to one of our requests (`Err` when the peer refused it or answered
    /// with something that does not verify).
    Response {
        /// The peer asked.
        peer: PeerId,
        /// The request's correlation id.
        correlation: String,
        /// The outcome.
        result: Result<Answer, MeshError>,
    },
    /// One of our requests got no answer (dial failure, timeout, closed connection…).
    OutboundFailure {
        /// The peer asked.
        peer: PeerId,
        /// The request's correlation id.
        correlation: String,
        /// What went wrong.
        error: String,
    },
}

#[derive(Debug)]
struct Pending {
    correlation: String,
    /// For lookups and refreshes: the node asked for (the answer must be about it).
    node: Option<NodeId>,
    /// Forwarded on our own initiative: the application is not told.
    forwarded: bool,
}

/// The behaviour: answers `/mesh/advert/1.0.0` requests from its store and sends ours.
pub struct Behaviour<S: AdvertStore> {
    inner: request_response::Behaviour<Codec>,
    store: S,
    config: Config,
    pending: HashMap<OutboundRequestId, Pending>,
    connected: HashSet<PeerId>,
    /// Remote address of each connection, to count what a peer stores under its
    /// network ([`Source`]).
    remotes: HashMap<ConnectionId, Multiaddr>,
    per_peer: RateLimiter<PeerId>,
    per_network: RateLimiter<Source>,
    /// Our listen addresses: loopback peers count as one network for `per_network`
    /// only once one is beyond loopback ([`mesh_core::ipkey::beyond_loopback`]).
    listening: ListenAddresses,
    forward_by_source: RateLimiter<Source>,
    forward_total: RateLimiter<()>,
    events: VecDeque<Event>,
    next_correlation: u64,
}

/// A `found` answer with a stored advertisement, decoded from its wire form. A store
/// entry always decodes (it was decoded when stored); if one ever does not, the asker is
/// told `not-found` (and the fault is logged) rather than handed bytes we cannot read.
fn found(correlation: &str, stored: &StoredAdvert) -> Response {
    match stored.decoded() {
        Some(advert) => Response::found(correlation, advert),
        None => Response::status(correlation, Status::NotFound),
    }
}

impl<S: AdvertStore + Send + 'static> Behaviour<S> {
    /// A behaviour serving `store`.
    pub fn new(store: S, config: Config) -> Self {
        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams);
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec(config.read_budget.clone()),
                [(PROTOCOL, ProtocolSupport::Full)],
                rr,
            ),
            store,
            per_peer: RateLimiter::new(config.per_peer, 4096),
            per_network: RateLimiter::new(config.per_network, 4096),
            listening: ListenAddresses::default(),
            forward_by_source: RateLimiter::new(config.forward_per_source, 4096),
            forward_total: RateLimiter::new(config.forward_total, 1),
            config,
            pending: HashMap::new(),
            connected: HashSet::new(),
            remotes: HashMap::new(),
            events: VecDeque::new(),
            next_correlation: 0,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (e.g. to insert the node's own advertisement).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Asks `peer` to store `advert`; returns the correlation id.
    pub fn publish(&mut self, peer: &PeerId, advert: NodeAdvertisement) -> String {
        self.send(
            peer,
            |correlation| Request::Publish {
                correlation,
                advert: Box::new(advert),
            },
            None,
            false,
        )
    }

    /// Asks `peer` for the advertisement of `node`.
    pub fn lookup(&mut self, peer: &PeerId, node: NodeId) -> String {
        self.send(
            peer,
            |correlation| Request::Lookup { correlation, node },
            Some(node),
            false,
        )
    }

    /// Asks `peer` for the advertisement of `node` if it is newer than `known_sequence`.
    pub fn refresh(&mut self, peer: &PeerId, node: NodeId, known_sequence: u64) -> String {
        self.send(
            peer,
            |correlation| Request::Refresh {
                correlation,
                node,
                known_sequence,
            },
            Some(node),
            false,
        )
    }

    /// Asks `peer` to apply `withdrawal`.
    pub fn withdraw(&mut self, peer: &PeerId, withdrawal: NodeWithdrawal) -> String {
        self.send(
            peer,
            |correlation| Request::Withdraw {
                correlation,
                withdrawal: Box::new(withdrawal),
            },
            None,
            false,
        )
    }

    /// Peers with an open connection.
    pub fn connected_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.connected.iter()
    }

    fn send(
        &mut self,
        peer: &PeerId,
        make: impl FnOnce(String) -> Request,
        node: Option<NodeId>,
        forwarded: bool,
    ) -> String {
        self.next_correlation += 1;
        let correlation = format!("adv-{}", self.next_correlation);
        let id = self.inner.send_request(peer, Ok(make(correlation.clone())));
        self.pending.insert(
            id,
            Pending {
                correlation: correlation.clone(),
                node,
                forwarded,
            },
        );
        correlation
    }

    /// Forwards an accepted change about `about`, received from `from` (counted under
    /// `source`), to other connected peers, within the forward budgets: what one peer
    /// sends costs our neighbours at most `forward_per_source`, whatever identities it
    /// signs changes with.
    fn forward(
        &mut self,
        from: PeerId,
        source: Source,
        about: NodeId,
        now: &Timestamp,
        make: impl Fn(String) -> Request,
    ) {
        if !self.config.forward {
            return;
        }
        if self.forward_by_source.check(&source, now).is_err()
            || self.forward_total.check(&(), now).is_err()
        {
            tracing::debug!(%from, ?source, node = %about, "change not forwarded: over the forward budget");
            return;
        }
        let about_peer = about.to_peer_id().ok();
        let targets: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|p| **p != from && Some(**p) != about_peer)
            .take(self.config.max_forward_peers)
            .copied()
            .collect();
        for peer in targets {
            self.send(&peer, &make, None, true);
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: InboundRequest,
    ) -> Response {
        let now = (self.config.clock)();
        let source = Source::of_peer(peer, self.remotes.get(&connection));
        let network = Source::for_rates(peer, self.remotes.get(&connection), self.listening.iter());
        let limited = mesh_core::take_all(
            now.instant().timestamp_millis(),
            &mut [
                &mut self.per_peer.charge(&peer),
                &mut self.per_network.charge(&network),
            ],
        );
        if let Err(retry) = limited {
            let e = MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many requests; retry after {retry} s"),
            );
            let correlation = request
                .as_ref()
                .map(|r| r.correlation().to_owned())
                .unwrap_or_default();
            return self.reject(peer, &correlation, e);
        }
        let request = match request {
            Ok(r) => r,
            Err(e) => return self.reject(peer, "", e),
        };
        match request {
            Request::Publish {
                correlation,
                advert,
            } => {
                let advert = *advert;
                if let Err(e) = advert
                    .verify_signature()
                    .and_then(|()| advert.validate(&now))
                {
                    return self.reject(peer, &correlation, e);
                }
                let node = advert.node_id();
                let sequence_no = advert.sequence_no();
                let forward_copy = self.config.forward.then(|| advert.clone());
                match self.store.insert_from(advert, source, &now) {
                    Ok(outcome) => {
                        let replaced = match outcome {
                            InsertOutcome::Replaced { previous } => Some(previous),
                            InsertOutcome::Stored => None,
                        };
                        self.events.push_back(Event::Stored {
                            peer,
                            node,
                            sequence_no,
                            replaced,
                        });
                        if let Some(ad) = forward_copy {
                            self.forward(peer, source, node, &now, |correlation| {
                                Request::Publish {
                                    correlation,
                                    advert: Box::new(ad.clone()),
                                }
                            });
                        }
                        let status = if replaced.is_some() {
                            Status::Replaced
                        } else {
                            Status::Stored
                        };
                        Response::status(&correlation, status)
                    }
                    Err(e) => self.reject(peer, &correlation, e.to_mesh_error()),
                }
            }
            Request::Lookup { correlation, node } => match self.store.get(&node, &now) {
                Some(s) => found(&correlation, &s),
                None => Response::status(&correlation, Status::NotFound),
            },
            Request::Refresh {
                correlation,
                node,
                known_sequence,
            } => match self.store.get(&node, &now) {
                Some(s) if s.sequence_no() > known_sequence => found(&correlation, &s),
                Some(_) => Response::status(&correlation, Status::Unchanged),
                None => Response::status(&correlation, Status::NotFound),
            },
            Request::Withdraw {
                correlation,
                withdrawal,
            } => {
                let w = *withdrawal;
                if let Err(e) = w.verify_signature().and_then(|()| w.validate(&now)) {
                    return self.reject(peer, &correlation, e);
                }
                match self.store.withdraw_from(&w, source, &now) {
                    Ok(()) => {
                        let node = w.node_id();
                        self.events.push_back(Event::Withdrawn {
                            peer,
                            node,
                            sequence_no: w.sequence_no(),
                            withdrawal: Box::new(w.clone()),
                        });
                        self.forward(peer, source, node, &now, |correlation| Request::Withdraw {
                            correlation,
                            withdrawal: Box::new(w.clone()),
                        });
                        Response::status(&correlation, Status::Withdrawn)
                    }
                    Err(e) => self.reject(peer, &correlation, e.to_mesh_error()),
                }
            }
        }
    }

    fn reject(&mut self, peer: PeerId, correlation: &str, error: MeshError) -> Response {
        tracing::debug!(%peer, %error, "advert request rejected");
        self.events.push_back(Event::Rejected {
            peer,
            error: error.clone(),
        });
        Response::rejected(correlation, error)
    }

    /// The answer of `peer` (reached through `source`) to one of our requests.
    fn on_response(
        &mut self,
        peer: PeerId,
        source: Source,
        pending: Pending,
        response: InboundResponse,
    ) {
        let now = (self.config.clock)();
        let result = response.and_then(|r| self.check_answer(&pending, r, source, &now));
        if pending.forwarded {
            if let Err(e) = &result {
                tracing::debug!(%peer, error = %e, "forwarded advertisement not accepted");
            }
            return;
        }
        self.events.push_back(Event::Response {
            peer,
            correlation: pending.correlation,
            result,
        });
    }

    fn check_answer(
        &mut self,
        pending: &Pending,
        r: Response,
        source: Source,
        now: &Timestamp,
    ) -> Result<Answer, MeshError> {
        if r.correlation != pending.correlation {
            return Err(MeshError::invalid(
                "response correlation id does not match the request",
            ));
        }
        match r.status {
            Status::Stored => Ok(Answer::Stored),
            Status::Replaced => Ok(Answer::Replaced),
            Status::Withdrawn => Ok(Answer::Withdrawn),
            Status::Unchanged => Ok(Answer::Unchanged),
            Status::NotFound => Ok(Answer::NotFound),
            Status::Rejected => Err(r
                .error
                .unwrap_or_else(|| MeshError::invalid("rejected without a code"))),
            Status::Found => {
                let advert = r
                    .advert
                    .ok_or_else(|| MeshError::invalid("found without an advert"))?;
                // What a peer hands us is verified like anything else from the network.
                advert.verify_signature()?;
                advert.validate(now)?;
                if pending.node.is_some_and(|n| n != advert.node_id()) {
                    return Err(MeshError::new(
                        ErrorCode::SigUnknownSigner,
                        "the returned advertisement is about another node",
                    ));
                }
                // Cached under the answering peer's share, like a publish from it: the
                // peer chose what it answered (and, for the lookup that follows every
                // session, the node it is), so a flood of fresh identities fills its
                // own share, not the store.
                if self.config.cache_fetched {
                    match self.store.insert_from((*advert).clone(), source, now) {
                        Ok(_) | Err(StoreError::Stale { .. }) => {}
                        Err(e) => tracing::debug!(error = %e, "fetched advertisement not cached"),
                    }
                }
                Ok(Answer::Found(advert))
            }
        }
    }

    fn handle(&mut self, event: request_response::Event<InboundRequest, InboundResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => {
                let response = self.on_request(peer, connection_id, request);
                if self.inner.send_response(channel, Ok(response)).is_err() {
                    tracing::debug!(%peer, "advert response channel closed");
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                connection_id,
            } => {
                if let Some(p) = self.pending.remove(&request_id) {
                    let source = Source::of_peer(peer, self.remotes.get(&connection_id));
                    self.on_response(peer, source, p, response);
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(p) = self.pending.remove(&request_id)
                    && !p.forwarded
                {
                    self.events.push_back(Event::OutboundFailure {
                        peer,
                        correlation: p.correlation,
                        error: error.to_string(),
                    });
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "advert inbound failure");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

impl<S: AdvertStore + Send + 'static> NetworkBehaviour for Behaviour<S> {
    type ConnectionHandler =
        <request_response::Behaviour<Codec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.listening.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connected.insert(e.peer_id);
                self.remotes
                    .insert(e.connection_id, e.endpoint.get_remote_address().clone());
            }
            FromSwarm::ConnectionClosed(e) => {
                self.remotes.remove(&e.connection_id);
                if e.remaining_established == 0 {
                    self.connected.remove(&e.peer_id);
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(e));
            }
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::GenerateEvent(e)) => self.handle(e),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
            }
        }
    }
}
