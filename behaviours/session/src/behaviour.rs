//! The `/mesh/session/1.0.0` behaviour: the glue between the swarm and the parts that
//! do the work — the handshake machine ([`crate::handshake`]), the peer governor
//! (driven from `driver.rs`) and keepalive ([`crate::keepalive`]), fed by the
//! behaviour's own libp2p ping.
//!
//! Two libp2p behaviours run inside, as `inner`: request-response on
//! `/mesh/session/1.0.0` for the hello and ack, and libp2p ping on `/ipfs/ping/1.0.0`
//! (libp2p's own, so it answers and pings every peer, libmesh or not, as libp2p ping
//! does). Every ping result drives keepalive and is passed on as [`Event::Pinged`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::ListenAddresses;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandlerSelect, ConnectionId, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{ping, swarm::dial_opts};
use mesh_core::{MeshError, NodeId, NodeKeypair, Timestamp, TraceEventType, TraceSink};

use crate::config::{Clock, Config};
use crate::driver::{Driver, Step};
use crate::event::{Event, Session};
use crate::governor::Governor;
use crate::handshake::{Handshakes, Output};
use crate::keepalive::{self, Change, Keepalive};
use crate::protocol::{Codec, Frame, Inbound, PROTOCOL};
use crate::transport::TransportProfile;

/// The most units of work one call of [`Behaviour::poll`] does before it hands back to
/// the swarm: a unit is an event of the inner behaviours handled (a hello or ack
/// verified, a ping result) or a job done ahead (a hello built, a Diffie-Hellman term,
/// a responder's derivation), each up to a few hundred microseconds of signature
/// checks and X25519. When many connections arrive at once the queue of such work can
/// be long; without a cap one `poll` would run all of it while the swarm's other
/// behaviours and connections (and other tasks on the executor thread) wait. At the cap
/// the behaviour wakes its own task and returns `Pending`, so the swarm polls everything
/// else and comes back. 16 units keep a `poll` to a few milliseconds.
pub(crate) const MAX_WORK_PER_POLL: usize = 16;

/// `/mesh/session/1.0.0` streams open at once on one connection, both ways (beyond,
/// request-response drops a new inbound stream at once). A handshake is one hello per
/// connection at a time; a hello is read whole (up to 65 KiB) before it is checked, and
/// libp2p's default of 100 streams let one connection make the node hold 6.5 MiB of
/// half-sent hellos for the 30 s request timeout.
pub const MAX_STREAMS: usize = 8;

/// The behaviours inside: the handshake's request-response and libp2p ping.
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Inner {
    session: request_response::Behaviour<Codec>,
    ping: ping::Behaviour,
}

/// The behaviour.
pub struct Behaviour {
    inner: Inner,
    handshakes: Handshakes,
    driver: Driver,
    keepalive: Keepalive<PeerId>,
    node: NodeId,
    trace: Arc<dyn TraceSink>,
    clock: Clock,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    /// Connections to close once the coded refusal to this request has been sent.
    close_after: HashMap<request_response::InboundRequestId, PeerId>,
    /// The transport of each connection.
    links: HashMap<ConnectionId, TransportProfile>,
    /// Our listen addresses: loopback peers count as one network once one is beyond
    /// loopback (`room::network_of`).
    listening: ListenAddresses,
}

impl Behaviour {
    /// A behaviour for the node `key` (the swarm must use the same key).
    pub fn new(key: NodeKeypair, config: Config) -> Self {
        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(MAX_STREAMS);
        let now = (config.clock)();
        Behaviour {
            inner: Inner {
                session: request_response::Behaviour::with_codec(
                    Codec(config.read_budget.clone()),
                    [(PROTOCOL, ProtocolSupport::Full)],
                    rr,
                ),
                ping: ping::Behaviour::new(config.ping.clone()),
            },
            node: key.node_id(),
            handshakes: Handshakes::new(key, &config, &now),
            driver: Driver::new(config.governor, config.tick_interval),
            keepalive: Keepalive::new(config.keepalive_failures),
            trace: config.trace,
            clock: config.clock,
            events: VecDeque::new(),
            close_after: HashMap::new(),
            links: HashMap::new(),
            listening: ListenAddresses::default(),
        }
    }

    /// The established session with `peer`.
    pub fn session(&self, peer: &PeerId) -> Option<&Session> {
        self.handshakes.session(peer)
    }

    /// The capabilities `node` proved, if a session with it is established.
    pub fn capabilities_of(&self, node: &NodeId) -> Option<&[String]> {
        self.handshakes.capabilities_of(node)
    }

    /// Makes `node` a peer the governor keeps connected (dialed at `addrs`, at most 16
    /// kept, redialed with backoff after every disconnect, never evicted from the
    /// governor's table). Besides these, the governor redials only peers that held a
    /// session, and forgets those after `GovernorConfig::forget_after` vain redials.
    pub fn add_peer(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        self.driver.add_peer(node, addrs);
    }

    /// Takes `node` as a past peer, dialed at `addrs` (at most 16 kept): a peer of an
    /// earlier run, say. Unlike a named one it is dialed only while sessions are wanted,
    /// forgotten after `GovernorConfig::forget_after` vain redials, and its hello gets
    /// only the room others' get (see [`crate::room`]).
    pub fn add_past_peer(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        self.driver.add_past_peer(node, addrs);
    }

    /// The governor.
    pub fn governor(&self) -> &Governor {
        &self.driver.governor
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Carries out what the handshake machine asked for.
    fn flush(&mut self) {
        while let Some(o) = self.handshakes.next_output() {
            match o {
                Output::Send { peer, bytes } => {
                    self.inner.session.send_request(&peer, Frame::Out(bytes));
                }
                Output::Close(peer) => self.close(peer),
                Output::Event(e) => self.events.push_back(ToSwarm::GenerateEvent(e)),
            }
        }
    }

    fn close(&mut self, peer: PeerId) {
        self.events.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::All,
        });
    }

    fn run_governor(&mut self) {
        let now = self.now();
        for step in self.driver.run(&mut self.handshakes, &now) {
            match step {
                Step::Dial(peer) => {
                    let opts = dial_opts::DialOpts::peer_id(peer)
                        .condition(dial_opts::PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    self.events.push_back(ToSwarm::Dial { opts });
                }
                Step::Close(peer) => self.close(peer),
            }
        }
        self.flush();
    }

    /// One ping result: keepalive first, then the result itself for the application.
    fn on_ping(&mut self, e: ping::Event) {
        let peer = e.peer;
        let change = keepalive::on_ping(
            &mut self.keepalive,
            &mut self.driver.governor,
            peer,
            e.result.is_ok(),
        );
        self.events.push_back(ToSwarm::GenerateEvent(Event::Pinged {
            peer,
            connection: e.connection,
            result: e.result,
        }));
        let (kind, event) = match change {
            None => return,
            Some(Change::Lost) => (TraceEventType::KeepaliveLost, Event::KeepaliveLost { peer }),
            Some(Change::Restored) => (
                TraceEventType::KeepaliveRestored,
                Event::KeepaliveRestored { peer },
            ),
        };
        let now = self.now();
        crate::event::trace(&*self.trace, kind, self.node, &peer, None, &now);
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn on_session(&mut self, event: request_response::Event<Frame, Frame>) {
        let now = self.now();
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
            } => {
                let request: Inbound = match request {
                    Frame::In(m) => m,
                    Frame::Out(_) => Err(MeshError::invalid("not a request message")),
                };
                let transport = self.transport(&connection_id);
                let gov = &mut self.driver.governor;
                let reply = self
                    .handshakes
                    .on_request(peer, transport, request, gov, &now);
                if reply.close_after {
                    self.close_after.insert(request_id, peer);
                }
                let _ = self
                    .inner
                    .session
                    .send_response(channel, Frame::Out(reply.bytes));
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                let response: Inbound = match response {
                    Frame::In(m) => m,
                    Frame::Out(_) => Err(MeshError::invalid("a hello is not a response")),
                };
                let gov = &mut self.driver.governor;
                self.handshakes.on_response(peer, response, gov, &now);
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "session request failed");
                let gov = &mut self.driver.governor;
                self.handshakes.on_request_failed(&peer, gov, &now);
            }
            request_response::Event::ResponseSent { request_id, .. }
            | request_response::Event::InboundFailure { request_id, .. } => {
                if let Some(peer) = self.close_after.remove(&request_id) {
                    self.close(peer);
                }
            }
        }
        self.flush();
    }

    /// The transport of a connection (`tcp` for one not seen established).
    fn transport(&self, connection: &ConnectionId) -> TransportProfile {
        self.links
            .get(connection)
            .copied()
            .unwrap_or(TransportProfile::Tcp)
    }

    /// One unit of put-off work; `false` when there was none.
    fn work(&mut self) -> bool {
        let now = self.now();
        let done = self.handshakes.work(&mut self.driver.governor, &now);
        self.flush();
        done
    }
}

impl NetworkBehaviour for Behaviour {
    // What `#[derive(NetworkBehaviour)]` makes `Inner`'s handler, spelled out (`Inner`
    // itself is private).
    type ConnectionHandler = ConnectionHandlerSelect<
        THandler<request_response::Behaviour<Codec>>,
        THandler<ping::Behaviour>,
    >;
    type ToSwarm = Event;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut extra = self
            .inner
            .handle_pending_outbound_connection(id, peer, addrs, role)?;
        if let Some(p) = peer {
            extra.extend(self.driver.addresses(&p).iter().cloned());
            // The hello to a peer we dial by id is built while the connection is set up,
            // over the transport the first usable address names.
            if role == Endpoint::Dialer {
                let guess = TransportProfile::guess(addrs.iter().chain(&extra));
                self.handshakes.dialing(p, guess);
            }
        }
        Ok(extra)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.listening.on_swarm_event(&event);
        let now = self.now();
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let transport = TransportProfile::of_endpoint(e.endpoint);
                self.links.insert(e.connection_id, transport);
                let count_loopback = mesh_core::ipkey::beyond_loopback(self.listening.iter());
                let net = match e.endpoint {
                    ConnectedPoint::Listener {
                        local_addr,
                        send_back_addr,
                    } => crate::room::network_of(
                        mesh_core::ipkey::counted_remote(send_back_addr, Some(local_addr)),
                        count_loopback,
                    ),
                    ConnectedPoint::Dialer { .. } => None,
                };
                let relayed = e.endpoint.is_relayed();
                let networks = self.handshakes.networks_mut();
                if e.other_established > 0 && !relayed {
                    // A hole punch after a circuit through our reservation: counted by
                    // the direct connection's network, the address we dialed when ours
                    // (DCUtR has the side that accepted the circuit dial).
                    let direct = match e.endpoint {
                        ConnectedPoint::Dialer { address, .. } => {
                            crate::room::network_of(address, count_loopback)
                        }
                        ConnectedPoint::Listener { .. } => net,
                    };
                    networks.direct(e.peer_id, direct);
                }
                if e.other_established == 0 {
                    match net {
                        Some(n) if relayed => networks.inbound_relayed(e.peer_id, n),
                        Some(n) => networks.inbound(e.peer_id, n),
                        None => {}
                    }
                    self.handshakes.connected(
                        e.peer_id,
                        e.endpoint.is_dialer(),
                        transport,
                        &mut self.driver.governor,
                        &now,
                    );
                }
            }
            FromSwarm::DialFailure(e) => {
                if let Some(p) = e.peer_id {
                    self.handshakes.dial_failed(&p);
                    self.driver.dial_failed(&p, &e.error.to_string(), &now);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                self.links.remove(&e.connection_id);
                if e.remaining_established == 0 {
                    self.keepalive.remove(&e.peer_id);
                    let gov = &mut self.driver.governor;
                    self.handshakes.disconnected(&e.peer_id, gov, &now);
                }
            }
            _ => {}
        }
        self.flush();
        self.inner.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if self.driver.poll_due(cx) {
            self.run_governor();
        }
        let mut budget = MAX_WORK_PER_POLL;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            if budget == 0 {
                // More may be ready: come back after the swarm has polled the rest.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            match self.inner.poll(cx) {
                Poll::Pending => {
                    // Everything due has been handed to the swarm (an ack goes out before
                    // its sender derives): now the work that was put off.
                    if self.work() {
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Session(e))) => self.on_session(e),
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Ping(e))) => self.on_ping(e),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Wakes(AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forty dials at once queue forty hellos to build ahead (a signature and an X25519
    /// operation each). One `poll` does at most `MAX_WORK_PER_POLL` units, then wakes
    /// its task and returns, so the swarm's other behaviours are not kept waiting; the
    /// following polls finish the rest.
    #[test]
    fn one_poll_does_a_bounded_amount_of_work_and_wakes_itself() {
        let mut b = Behaviour::new(NodeKeypair::generate(), Config::default());
        let peers: Vec<PeerId> = (0..40)
            .map(|_| NodeKeypair::generate().node_id().to_peer_id().unwrap())
            .collect();
        for (i, p) in peers.iter().enumerate() {
            let addr: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
            let id = ConnectionId::new_unchecked(i);
            b.handle_pending_outbound_connection(id, Some(*p), &[addr], Endpoint::Dialer)
                .unwrap();
        }
        assert_eq!(b.handshakes.ahead().queued(), 40);
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(b.poll(&mut cx).is_pending());
        let done = 40 - b.handshakes.ahead().queued();
        assert!(
            (1..=MAX_WORK_PER_POLL).contains(&done),
            "{done} jobs in one poll"
        );
        assert!(wakes.0.load(Ordering::SeqCst) >= 1, "woke itself to go on");
        let mut polls = 1;
        while b.handshakes.ahead().queued() > 0 {
            let before = wakes.0.load(Ordering::SeqCst);
            assert!(b.poll(&mut cx).is_pending());
            polls += 1;
            if b.handshakes.ahead().queued() > 0 {
                assert!(
                    wakes.0.load(Ordering::SeqCst) > before,
                    "work left without a wake: the swarm would not come back"
                );
            }
        }
        assert!(polls >= 40 / MAX_WORK_PER_POLL, "{polls} polls");
        assert_eq!(b.handshakes.ahead().prebuilt(), 40);
    }
}
