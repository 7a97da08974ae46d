//! The external address candidates identify makes of what peers claim to observe reach
//! the swarm (and so AutoNAT's table, which never forgets one) only through the node's
//! gate: a peer that claims a new observed address on every connection gets its
//! group's few through, then none; repeats still go through. Real swarms over
//! loopback TCP, the peer's identify answering with forged observed addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, select};
use libmesh::node::autonat_gate::PER_GROUP;
use libmesh::node::identify_observed::Identify;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use libp2p_swarm_test::SwarmExt;

const PROTOCOL_VERSION: &str = "/libmesh/test/1.0.0";

/// identify that tells every peer it observes it at `claim`, whatever the connection.
struct Forger {
    inner: identify::Behaviour,
    claim: Multiaddr,
}

impl NetworkBehaviour for Forger {
    type ConnectionHandler = THandler<identify::Behaviour>;
    type ToSwarm = identify::Event;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, &self.claim)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, &self.claim, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<identify::Event, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

fn identify_of(key: &libp2p::identity::Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new(PROTOCOL_VERSION.into(), key.public()))
}

/// Connects `hostile` (claiming `claim`) to `node` at `addr`, waits until the node has
/// the peer's identify answer and what it made of it, then disconnects. Returns the
/// candidates the node's swarm saw.
async fn one_connection(
    node: &mut Swarm<Identify>,
    hostile: &mut Swarm<Forger>,
    addr: &Multiaddr,
    claim: Multiaddr,
) -> Vec<Multiaddr> {
    hostile.behaviour_mut().claim = claim;
    hostile.dial(addr.clone()).unwrap();
    let node_id = *node.local_peer_id();
    let mut candidates = Vec::new();
    let mut identified = false;
    let run = async {
        loop {
            match select(node.next_swarm_event(), hostile.next_swarm_event()).await {
                Either::Left((SwarmEvent::Behaviour(identify::Event::Received { .. }), _)) => {
                    identified = true;
                }
                Either::Left((SwarmEvent::NewExternalAddrCandidate { address }, _)) => {
                    candidates.push(address);
                }
                Either::Left((SwarmEvent::ConnectionClosed { .. }, _)) => return,
                _ => {}
            }
            // identify queues its candidates right behind the answer: once the node's
            // swarm has nothing more to report, close.
            if identified && hostile.is_connected(&node_id) {
                let _ = hostile.disconnect_peer_id(node_id);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("identify over one connection within 10 s");
    assert!(identified);
    candidates
}

#[tokio::test]
async fn a_peer_claiming_a_new_address_on_every_connection_gets_only_its_share_through() {
    let mut node = Swarm::new_ephemeral_tokio(|k| {
        Identify::new(identify::Config::new(PROTOCOL_VERSION.into(), k.public()))
    });
    let (_, tcp) = node.listen().await;
    let mut hostile = Swarm::new_ephemeral_tokio(|k| Forger {
        inner: identify_of(&k),
        claim: Multiaddr::empty(),
    });
    let port = tcp
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();

    // Twelve connections from 127.0.0.1, each claiming another loopback address: all
    // plausible (a loopback observer sees a loopback address, over TCP we listen on).
    let mut passed = Vec::new();
    for i in 1..=12u8 {
        let claim: Multiaddr = format!("/ip4/127.0.0.{}/tcp/4001", i + 1).parse().unwrap();
        passed.extend(one_connection(&mut node, &mut hostile, &tcp, claim).await);
    }
    let burst = PER_GROUP.burst as usize;
    assert_eq!(
        passed.len(),
        burst,
        "candidates that reached the swarm: {passed:?}"
    );
    // identify made each claim a candidate at our listen port; the first ones went on.
    for (i, addr) in passed.iter().enumerate() {
        let expected: Multiaddr = format!("/ip4/127.0.0.{}/tcp/{port}", i + 2)
            .parse()
            .unwrap();
        assert_eq!(addr, &expected);
    }
    let gate = node.behaviour().candidate_gate();
    assert_eq!((gate.passed(), gate.refused()), (burst, 12 - burst));

    // A claim the node already passed on goes through again (it adds to its score).
    let again = one_connection(&mut node, &mut hostile, &tcp, passed[0].clone()).await;
    assert_eq!(again, vec![passed[0].clone()]);
    // A claim of a global address from a loopback observer never does.
    let global: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
    let none = one_connection(&mut node, &mut hostile, &tcp, global).await;
    assert!(none.is_empty(), "{none:?}");
}
