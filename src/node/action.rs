//! What a component asks the node loop to do.
//!
//! Every component of the node (routes and signaling, discovery-key groups, relays,
//! connection hygiene, the node's own advertisement) is pure logic over its own state:
//! it reads the swarm through [`super::view::View`], takes `now`, and returns
//! [`Action`]s, which [`super::Node`] carries out on the swarm. Where carrying one out
//! can fail at once (a dial refused by the swarm, a frame no peer can take, a
//! listener that cannot start), the loop tells the component that asked, through the
//! method named on the variant. This is the only pattern: no component touches the
//! swarm, so each is unit-tested by feeding events and reading actions.

use std::net::{IpAddr, SocketAddr};

use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{NodeAdvertisement, NodeId, SignalFrame, TraceEvent};
use mesh_signal::group::DiscoveryKey;

use super::api::{HandleError, Reply, Route};
use super::event::NodeEvent;
use super::waiting::After;

/// One thing for the loop to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Dial. A dial the swarm refuses is reported to the router
    /// (`Router::dial_failed`) and to the waiting room, like a failed connection.
    Dial(DialOpts),
    /// Close one connection.
    Close(ConnectionId),
    /// Close every connection to a peer (a relay that stopped answering).
    Disconnect(PeerId),
    /// Send a signaling frame (through `via` when the target is not a session peer); a
    /// frame that cannot go out is reported to `Router::frame_refused`.
    SendFrame {
        /// The signed frame.
        frame: Box<SignalFrame>,
        /// The signaling host, if not direct.
        via: Option<PeerId>,
    },
    /// Mark a signaling correlation done in the signal behaviour.
    CorrelationDone {
        /// The other node.
        node: NodeId,
        /// The correlation id.
        correlation: String,
    },
    /// Look `node` up, then continue with `after`.
    Lookup {
        /// Who.
        node: NodeId,
        /// What then.
        after: After,
    },
    /// A connection to `peer` is up: finish `after` (send a marker, answer a dial).
    Continue {
        /// The peer.
        peer: PeerId,
        /// What waited.
        after: After,
    },
    /// Answer a `connect` (after the trace and event that go with it).
    AnswerRoute {
        /// Who asked.
        reply: Reply<Route>,
        /// The route, or why there is none.
        result: Result<Route, HandleError>,
    },
    /// Fail what waited for a connection.
    Fail {
        /// What waited.
        after: After,
        /// Why.
        error: HandleError,
    },
    /// Ask `relay` for an admission grant (`keep`: renew it until released); a request
    /// that cannot be sent is reported to `Relays::ask_failed` or
    /// `Router::grant_answered`.
    AskRelay {
        /// The relay.
        relay: PeerId,
        /// Reservation, or a circuit to a target.
        purpose: mesh_admission::Purpose,
        /// Where to reach it.
        addrs: Vec<Multiaddr>,
        /// Renew the grant until released.
        keep: bool,
    },
    /// Stop renewing grants at `relay`.
    ForgetRelay(PeerId),
    /// Listen through `relay` at `addr` (a reservation); reported back to
    /// `Relays::listening` / `Relays::listen_failed`.
    ListenVia {
        /// The relay.
        relay: PeerId,
        /// `…/p2p/<relay>/p2p-circuit`.
        addr: Multiaddr,
    },
    /// Stop a listener.
    StopListening(libp2p::core::transport::ListenerId),
    /// Publish a signed presence on group `key`'s topic; reported back to
    /// `Groups::presence_sent` when gossipsub took it.
    PublishPresence {
        /// The group.
        key: DiscoveryKey,
        /// `announce`, `join`, `leave`…
        presence: &'static str,
        /// The CBOR of the signed presence.
        data: Vec<u8>,
    },
    /// Ask `peer` for a page of a group's member table (`/mesh/swarm-table/1.0.0`);
    /// the request id goes to `Groups::table_asked`, the answer to
    /// `Groups::table_answer` or `Groups::table_failed`.
    AskTable {
        /// A member.
        peer: PeerId,
        /// The group and the page.
        request: mesh_signal::group::exchange::TableRequest,
    },
    /// Ask the mesh DHT for the providers of group `key` (its members).
    FindGroupProviders(DiscoveryKey),
    /// Present this advertisement to relays (the admission client's), or none after a
    /// withdrawal.
    PresentAdvert(Option<Box<NodeAdvertisement>>),
    /// Put our record (advertisement or withdrawal) into the mesh DHT; whether the put
    /// started goes to `OwnRecord::put_started`.
    PutOwnRecord(libp2p::kad::Record),
    /// Push our advertisement to a session peer over `/mesh/advert`.
    PushAdvert {
        /// The peer.
        peer: PeerId,
        /// Our advertisement.
        advert: Box<NodeAdvertisement>,
    },
    /// Send our withdrawal to a session peer over `/mesh/advert`.
    PushWithdrawal {
        /// The peer.
        peer: PeerId,
        /// Our signed withdrawal.
        withdrawal: Box<mesh_advert::NodeWithdrawal>,
    },
    /// Birthday probing, C's side: bind the probe socket of attempt `job` (a port of
    /// `toward`'s family); the port, or why not, goes to `Router::birthday_bound`.
    ProbeBind {
        /// The attempt.
        job: u64,
        /// The other side's IP.
        toward: IpAddr,
    },
    /// C's side: `count` probes from `job`'s socket to random ports of `ip`, then the
    /// wait for the confirmation (the result comes back as a probe event; a spray that
    /// cannot start goes to `Router::birthday_failed`).
    ProbeSpray {
        /// The attempt.
        job: u64,
        /// The other side's IP.
        ip: IpAddr,
        /// The attempt's token.
        token: [u8; 8],
        /// Probes.
        count: u16,
    },
    /// S's side: `count` sockets with one probe each to `target`, then the wait for a
    /// hit (results as probe events; failures to `Router::birthday_failed`).
    ProbeSockets {
        /// The attempt.
        job: u64,
        /// C's public probe address.
        target: SocketAddr,
        /// The attempt's token.
        token: [u8; 8],
        /// Sockets.
        count: u16,
    },
    /// Register probe port `local` for a connection with `remote` in the probe
    /// transport's table, and listen on it.
    ProbeListen {
        /// Our probe port (unspecified address).
        local: SocketAddr,
        /// The other side's address through both NATs.
        remote: SocketAddr,
    },
    /// Birthday attempt `job` ended: close its probe socket if one is still held.
    ProbeEnd(u64),
    /// Hand an event to the application.
    Emit(NodeEvent),
    /// Write a trace event.
    Trace(Box<TraceEvent>),
}

impl Action {
    /// A trace event.
    pub(crate) fn trace(event: TraceEvent) -> Self {
        Action::Trace(Box::new(event))
    }
}
