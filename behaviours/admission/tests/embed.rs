//! An embedder's relay: a plain derived behaviour with `mesh_admission::server::Behaviour`
//! as its only field, built from mesh-admission alone (no relay built by hand, no events
//! fed back, no other calls). It refuses the reservation of a plain relay v2 client that
//! holds no grant and is not on its allowlist, and admits a client that asked for a
//! grant first. Real swarms on
//! loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, noise, relay, tcp, yamux};
use mesh_admission::{Allowlist, Purpose, client, server};
use mesh_core::{ErrorCode, NodeKeypair};
use support::{Node, client_with, reserve_at};

/// The embedder's whole relay behaviour.
#[derive(NetworkBehaviour)]
struct EmbeddedRelay {
    relay: server::Behaviour,
}

/// A standard libp2p relay client, without the admission protocol.
#[derive(NetworkBehaviour)]
struct PlainClient {
    relay: relay::client::Behaviour,
}

fn relay_swarm(key: &NodeKeypair, config: server::Config) -> libp2p::Swarm<EmbeddedRelay> {
    libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| EmbeddedRelay {
            relay: server::Behaviour::new(key.clone(), config),
        })
        .unwrap()
        .build()
}

fn plain_client(key: &NodeKeypair) -> libp2p::Swarm<PlainClient> {
    libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| PlainClient { relay })
        .unwrap()
        .build()
}

fn relay_event(e: &SwarmEvent<EmbeddedRelayEvent>) -> Option<&server::Event> {
    match e {
        SwarmEvent::Behaviour(EmbeddedRelayEvent::Relay(e)) => Some(e),
        _ => None,
    }
}

#[tokio::test]
async fn a_relay_from_mesh_admission_alone_refuses_the_unadmitted_and_admits_the_allowed() {
    let (rk, allowed, stranger) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let config = server::Config {
        policy: Arc::new(Allowlist {
            nodes: [allowed.node_id()].into(),
            limits: server::DEFAULT_CAPS,
        }),
        max_reservations: 10,
        ..server::Config::default()
    };
    let mut relay = Node::spawn("relay", rk.clone(), relay_swarm(&rk, config), |_, _| {});
    relay
        .run(|s| {
            s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .unwrap()
        })
        .await;
    let addr = relay
        .wait("listen address", |e| match e {
            SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
            _ => None,
        })
        .await;
    // A relay v2 server accepts reservations only once it has an external address.
    let ext = addr.clone();
    relay.run(move |s| s.add_external_address(ext)).await;
    let relay_peer = relay.peer;
    let circuit: Multiaddr = addr
        .clone()
        .with(Protocol::P2p(relay_peer))
        .with(Protocol::P2pCircuit);

    // A plain relay client without a grant: the relay itself refuses its reservation.
    let mut plain = Node::spawn(
        "plain",
        stranger.clone(),
        plain_client(&stranger),
        |_, _| {},
    );
    let reason = reserve_at(&mut plain, circuit.clone()).await.unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let sp = plain.peer;
    let code = relay
        .wait("Event::Refused reservation", |e| match relay_event(e)? {
            server::Event::Refused { peer, what, error } if *peer == sp => {
                Some((*what, error.code))
            }
            _ => None,
        })
        .await;
    assert_eq!(
        code,
        (server::Requested::Reservation, ErrorCode::TransportRejected)
    );
    relay
        .wait("relay ReservationReqDenied", |e| match relay_event(e)? {
            server::Event::Relay(relay::Event::ReservationReqDenied { src_peer_id, .. })
                if *src_peer_id == sp =>
            {
                Some(())
            }
            _ => None,
        })
        .await;

    // An allowlisted client asks for a grant first, then reserves.
    let mut admitted = client_with("allowed", allowed.clone(), client::Config::default());
    let ap = admitted.peer;
    let a = addr.clone();
    admitted
        .run(move |s| {
            s.behaviour_mut()
                .admission
                .request(relay_peer, Purpose::Reservation, vec![a])
                .unwrap()
        })
        .await;
    let grant = admitted.answer(relay_peer).await.unwrap();
    assert_eq!(grant.node_id(), allowed.node_id());
    relay
        .wait("Event::Granted", |e| match relay_event(e)? {
            server::Event::Granted { peer, .. } if *peer == ap => Some(()),
            _ => None,
        })
        .await;
    let listen = reserve_at(&mut admitted, circuit).await.unwrap();
    assert!(
        listen.iter().any(|p| matches!(p, Protocol::P2pCircuit)),
        "{listen}"
    );
    relay
        .wait("relay ReservationReqAccepted", |e| match relay_event(e)? {
            server::Event::Relay(relay::Event::ReservationReqAccepted { src_peer_id, .. })
                if *src_peer_id == ap =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    // The relay's own accounting saw it, with no help from the embedder.
    let served = relay.run(|s| s.behaviour().relay.served_peers()).await;
    assert!(served.contains(&ap) && !served.contains(&sp), "{served:?}");
    assert_eq!(
        relay.run(|s| s.behaviour().relay.load_permille()).await,
        100
    );
}

/// The relay reads time only through `Config::clock`: moving that clock past a grant's
/// expiry makes the relay refuse the next reservation, with no waiting.
#[tokio::test]
async fn grant_expiry_follows_the_injected_clock() {
    use std::sync::atomic::{AtomicI64, Ordering};

    let (rk, ck) = (NodeKeypair::generate(), NodeKeypair::generate());
    let ahead = Arc::new(AtomicI64::new(0));
    let offset = ahead.clone();
    let config = server::Config {
        grant_ttl: std::time::Duration::from_secs(60),
        // Requested grants only: under the default open policy an implicit grant would
        // readmit the client after its grant lapsed.
        implicit_grants: false,
        clock: Arc::new(move || {
            mesh_core::Timestamp::now().plus_secs(offset.load(Ordering::Relaxed))
        }),
        ..server::Config::default()
    };
    let mut relay = Node::spawn("relay", rk.clone(), relay_swarm(&rk, config), |_, _| {});
    relay
        .run(|s| {
            s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .unwrap()
        })
        .await;
    let addr = relay
        .wait("listen address", |e| match e {
            SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
            _ => None,
        })
        .await;
    let ext = addr.clone();
    relay.run(move |s| s.add_external_address(ext)).await;
    let relay_peer = relay.peer;
    let circuit = addr
        .clone()
        .with(Protocol::P2p(relay_peer))
        .with(Protocol::P2pCircuit);

    let mut c = client_with("c", ck, client::Config::default());
    let a = addr.clone();
    c.run(move |s| {
        s.behaviour_mut()
            .admission
            .request(relay_peer, Purpose::Reservation, vec![a])
            .unwrap()
    })
    .await;
    c.answer(relay_peer).await.unwrap();
    reserve_at(&mut c, circuit.clone()).await.unwrap();

    // 61 s later by the relay's clock: the grant has lapsed.
    ahead.store(61, Ordering::Relaxed);
    assert!(relay.run(|s| s.behaviour().relay.grants()).await.is_empty());
    let reason = reserve_at(&mut c, circuit).await.unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let cp = c.peer;
    let error = relay
        .wait("Event::Refused reservation", |e| match relay_event(e)? {
            server::Event::Refused {
                peer,
                what: server::Requested::Reservation,
                error,
            } if *peer == cp => Some(error.clone()),
            _ => None,
        })
        .await;
    // ("reservation grant expired", or "no reservation grant" once the relay's
    // once-a-second sweep has dropped the lapsed grant.)
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");
}
