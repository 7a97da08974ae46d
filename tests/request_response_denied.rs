//! A connection that a behaviour consulted after request-response denies leaves nothing
//! behind in request-response (the patched copy, `vendor/libp2p-request-response`,
//! `PATCHED.md`): upstream kept the denied connection in its table of connected peers,
//! so the peer counted as connected and a request to it went to a connection that did
//! not exist and never failed. Matters to an application that composes libmesh's
//! behaviours (all built on request-response) ahead of its own connection policy. Real
//! swarms over loopback TCP, with the node's `/mesh/swarm-table/1.0.0` codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, Config, OutboundFailure, ProtocolSupport};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, Swarm};
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange::{Codec, PROTOCOL, TableRequest};
use mesh_testkit::{Net, net_swarm};

const WAIT: Duration = Duration::from_secs(30);

type Table = request_response::Behaviour<Codec>;

fn table() -> Table {
    Table::with_codec(
        Codec::default(),
        [(PROTOCOL, ProtocolSupport::Full)],
        Config::default(),
    )
}

/// An application's connection policy: refuses every inbound connection once it is
/// established (after the behaviours before it made their handlers).
#[derive(Debug, thiserror::Error)]
#[error("refused by the application's policy")]
struct Refused;

struct RefuseInbound;

impl NetworkBehaviour for RefuseInbound {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Err(ConnectionDenied::new(Refused))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[derive(NetworkBehaviour)]
struct Composed {
    table: Table,
    policy: RefuseInbound,
}

#[tokio::test]
async fn a_connection_denied_after_request_response_is_not_kept_as_connected() {
    let key = Keypair::generate_ed25519();
    let mut node = net_swarm(
        &key,
        Net::Tcp,
        Duration::from_secs(300),
        Composed {
            table: table(),
            policy: RefuseInbound,
        },
    );
    node.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = node.select_next_some().await {
            break address;
        }
    };

    let mut peer: Swarm<Table> = net_swarm(
        &Keypair::generate_ed25519(),
        Net::Tcp,
        Duration::from_secs(300),
        table(),
    );
    let peer_id = *peer.local_peer_id();
    peer.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            peer.select_next_some().await;
        }
    });

    // The policy refuses the peer's connection.
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::IncomingConnectionError {
                peer_id: Some(p), ..
            } = node.select_next_some().await
                && p == peer_id
            {
                return;
            }
        }
    })
    .await
    .expect("the connection is refused");
    assert!(
        !node.behaviour().table.is_connected(&peer_id),
        "request-response counts a refused connection as connected"
    );

    // A request to the peer fails (no connection, no address to dial) rather than
    // waiting on a connection that does not exist.
    let id = node.behaviour_mut().table.send_request(
        &peer_id,
        Ok(TableRequest::first(DiscoveryKey::from_name("denied"))),
    );
    let failure = tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::Behaviour(ComposedEvent::Table(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) = node.select_next_some().await
                && request_id == id
            {
                return error;
            }
        }
    })
    .await
    .expect("the request to a peer not connected fails");
    assert!(
        matches!(failure, OutboundFailure::DialFailure),
        "{failure:?}"
    );
}
