//! Standard libp2p relay clients at a libmesh relay: swarms with only libp2p's relay
//! client, identify and ping (no `/mesh/relay-admission/1.0.0`), against
//! `mesh_admission::server::Behaviour` on loopback TCP.
//!
//! Where the policy can decide from the peer id alone (`Open`, `Allowlist`, an
//! advertisement the relay already has), a reservation or circuit from a peer without a
//! grant is admitted under an implicit grant with the policy's limits; where it needs a
//! signed request (`Federation`), the relay refuses with the policy's coded denial.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, ping, relay, tcp, yamux};
use mesh_admission::{AdvertSource, Allowlist, Federation, Open, RequireAdvertisement, server};
use mesh_core::{
    ErrorCode, MemoryTrace, MeshError, NodeAdvertisement, NodeId, NodeKeypair, Timestamp,
    TraceEventType,
};
use support::{Node, Relay, WAIT, base_relay_config, relay_admission, reserve_at};

/// A standard libp2p client: relay client, identify, ping. Nothing of libmesh.
#[derive(NetworkBehaviour)]
struct Plain {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn plain(name: &str) -> Node<Plain> {
    let key = NodeKeypair::generate();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k, relay| Plain {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                k.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(60)))
        .build();
    Node::spawn(name, key, swarm, |_, _| {})
}

fn node_of(n: &Node<Plain>) -> NodeId {
    n.key.node_id()
}

fn with_policy(
    policy: Arc<dyn mesh_admission::AdmissionPolicy>,
    trace: &Arc<MemoryTrace>,
) -> server::Config {
    server::Config {
        policy,
        trace: trace.clone(),
        ..server::Config::default()
    }
}

/// The relay's `Refused` for `peer`'s `what`.
async fn refused(relay: &mut Relay, peer: PeerId, what: server::Requested) -> MeshError {
    relay
        .node
        .wait("server Event::Refused", |e| match relay_admission(e)? {
            server::Event::Refused {
                peer: p,
                what: w,
                error,
            } if *p == peer && *w == what => Some(error.clone()),
            _ => None,
        })
        .await
}

/// The relay's `Admitted` (implicit grant) for `peer`.
async fn admitted(relay: &mut Relay, peer: PeerId) -> mesh_admission::Grant {
    relay
        .node
        .wait("server Event::Admitted", |e| match relay_admission(e)? {
            server::Event::Admitted { peer: p, grant, .. } if *p == peer => Some(grant.clone()),
            _ => None,
        })
        .await
}

/// Dials `dst` through `relay` only; the new connection's id and remote address.
async fn dial_circuit(
    node: &mut Node<Plain>,
    relay: &Relay,
    dst: PeerId,
) -> Result<(libp2p::swarm::ConnectionId, Multiaddr), String> {
    let opts = DialOpts::peer_id(dst)
        .addresses(vec![relay.circuit_to(dst)])
        .condition(PeerCondition::Always)
        .build();
    let id = opts.connection_id();
    node.run(move |s| s.dial(opts))
        .await
        .map_err(|e| e.to_string())?;
    node.wait("circuit dial outcome", |e| match e {
        SwarmEvent::ConnectionEstablished {
            connection_id,
            endpoint,
            ..
        } if *connection_id == id => Some(Ok((id, endpoint.get_remote_address().clone()))),
        SwarmEvent::OutgoingConnectionError {
            connection_id,
            error,
            ..
        } if *connection_id == id => Some(Err(support::chain(error))),
        _ => None,
    })
    .await
}

fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn implicit_admissions(trace: &MemoryTrace, node: &NodeId, purpose: &str) -> usize {
    let about = node.to_string();
    trace
        .events()
        .iter()
        .filter(|e| {
            e.event_type == TraceEventType::RelayAdmitted
                && e.peer.as_deref() == Some(about.as_str())
                && e.detail
                    .as_ref()
                    .is_some_and(|d| d["reason"] == "implicit" && d["purpose"] == purpose)
        })
        .count()
}

#[tokio::test]
async fn an_open_relay_serves_plain_clients_reservation_circuit_and_ping() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let config = with_policy(
        Arc::new(Open {
            limits: server::DEFAULT_CAPS,
        }),
        &trace,
    );
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    let (mut a, mut b) = (plain("a"), plain("b"));

    // A reserves without asking for a grant: the relay admits it implicitly.
    let listen = reserve_at(&mut a, relay.circuit_listen_addr())
        .await
        .unwrap();
    assert!(is_circuit(&listen), "{listen}");
    let grant = admitted(&mut relay, a.peer).await;
    assert_eq!(grant.node, node_of(&a));
    assert_eq!(grant.purpose, mesh_admission::Purpose::Reservation);
    assert_eq!(grant.limits, server::DEFAULT_CAPS);
    assert!(grant.implicit);
    assert_eq!(implicit_admissions(&trace, &node_of(&a), "reservation"), 1);

    // B, another plain client, reaches A through the relay and pings it there.
    let (conn, remote) = dial_circuit(&mut b, &relay, a.peer).await.unwrap();
    assert!(is_circuit(&remote), "{remote}");
    let ap = a.peer;
    let rtt = b
        .wait("a ping over the circuit", |e| match e {
            SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            })) if *peer == ap && *connection == conn => Some(*rtt),
            _ => None,
        })
        .await;
    assert!(rtt < WAIT, "{rtt:?}");
    let grant = admitted(&mut relay, b.peer).await;
    assert_eq!(
        grant.purpose,
        mesh_admission::Purpose::Circuit { target: None }
    );
    assert_eq!(implicit_admissions(&trace, &node_of(&b), "circuit"), 1);
    // Both are in the grant table like any admitted node, the circuit counted.
    let nodes: Vec<NodeId> = relay
        .node
        .run(|s| s.behaviour().admission.grants())
        .await
        .iter()
        .map(|g| g.node)
        .collect();
    assert!(
        nodes.contains(&node_of(&a)) && nodes.contains(&node_of(&b)),
        "{nodes:?}"
    );
    let bn = node_of(&b);
    assert_eq!(
        relay
            .node
            .run(move |s| s.behaviour().admission.open_circuits(&bn))
            .await,
        1
    );
}

#[tokio::test]
async fn an_allowlist_relay_admits_listed_plain_clients_and_refuses_others() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let (mut listed, mut stranger) = (plain("listed"), plain("stranger"));
    let config = with_policy(
        Arc::new(Allowlist {
            nodes: [node_of(&listed)].into(),
            limits: server::DEFAULT_CAPS,
        }),
        &trace,
    );
    let mut relay = Relay::start("relay", config, base_relay_config()).await;

    let reason = reserve_at(&mut stranger, relay.circuit_listen_addr())
        .await
        .unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let error = refused(&mut relay, stranger.peer, server::Requested::Reservation).await;
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");
    assert!(error.detail.contains("allowlist"), "{error}");
    assert_eq!(
        implicit_admissions(&trace, &node_of(&stranger), "reservation"),
        0
    );

    let listen = reserve_at(&mut listed, relay.circuit_listen_addr())
        .await
        .unwrap();
    assert!(is_circuit(&listen), "{listen}");
    assert!(admitted(&mut relay, listed.peer).await.implicit);
}

#[tokio::test]
async fn a_federation_relay_refuses_plain_clients_with_the_coded_denial() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let mut client = plain("client");
    let config = with_policy(
        Arc::new(Federation {
            ids: ["fed:a".to_owned()].into(),
            endorsers: [NodeKeypair::generate().node_id()].into(),
            limits: server::DEFAULT_CAPS,
        }),
        &trace,
    );
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    let reason = reserve_at(&mut client, relay.circuit_listen_addr())
        .await
        .unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let error = refused(&mut relay, client.peer, server::Requested::Reservation).await;
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");
    assert!(
        error.detail.contains("federation endorsement"),
        "the policy's own denial: {error}"
    );
    // Traced as a denial with the code.
    let about = node_of(&client).to_string();
    assert!(trace.events().iter().any(|e| {
        e.event_type == TraceEventType::RelayDenied
            && e.peer.as_deref() == Some(about.as_str())
            && e.detail
                .as_ref()
                .is_some_and(|d| d["code"] == ErrorCode::TransportRejected.as_str())
    }));
}

/// Advertisements the relay "has" (its store), by node id.
#[derive(Default)]
struct Store(Mutex<HashMap<NodeId, NodeAdvertisement>>);

impl AdvertSource for Store {
    fn current(&self, node: &NodeId, now: &Timestamp) -> Option<NodeAdvertisement> {
        let m = self.0.lock().unwrap();
        m.get(node).filter(|a| a.expires_at() > now).cloned()
    }
}

#[tokio::test]
async fn an_advert_relay_admits_plain_clients_whose_advertisement_it_has() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let store = Arc::new(Store::default());
    let (mut known, mut unknown) = (plain("known"), plain("unknown"));
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let advert =
        mesh_advert::own::advert_for(&known.key, &[addr], 1, &Timestamp::now(), 600).unwrap();
    store.0.lock().unwrap().insert(node_of(&known), advert);
    let config = server::Config {
        adverts: store,
        ..with_policy(
            Arc::new(RequireAdvertisement {
                limits: server::DEFAULT_CAPS,
            }),
            &trace,
        )
    };
    let mut relay = Relay::start("relay", config, base_relay_config()).await;

    let reason = reserve_at(&mut unknown, relay.circuit_listen_addr())
        .await
        .unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let error = refused(&mut relay, unknown.peer, server::Requested::Reservation).await;
    assert!(error.detail.contains("advertisement"), "{error}");

    reserve_at(&mut known, relay.circuit_listen_addr())
        .await
        .unwrap();
    let grant = admitted(&mut relay, known.peer).await;
    // The implicit grant lasts no longer than the advertisement that admitted it.
    assert!(
        grant.expires_at <= Timestamp::now().plus_secs(600),
        "{grant:?}"
    );
}

#[tokio::test]
async fn implicit_grants_obey_the_per_ip_share_of_the_table() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let config = server::Config {
        max_nodes_per_ip: 1,
        ..with_policy(
            Arc::new(Open {
                limits: server::DEFAULT_CAPS,
            }),
            &trace,
        )
    };
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    let (mut first, mut second) = (plain("first"), plain("second"));
    reserve_at(&mut first, relay.circuit_listen_addr())
        .await
        .unwrap();
    // The first holds a reservation (not idle): no room for a second node from
    // 127.0.0.1.
    let reason = reserve_at(&mut second, relay.circuit_listen_addr())
        .await
        .unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let error = refused(&mut relay, second.peer, server::Requested::Reservation).await;
    assert!(error.detail.contains("already hold grants"), "{error}");
}

#[tokio::test]
async fn implicit_grants_can_be_turned_off() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let config = server::Config {
        implicit_grants: false,
        ..with_policy(
            Arc::new(Open {
                limits: server::DEFAULT_CAPS,
            }),
            &trace,
        )
    };
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    let mut client = plain("client");
    let reason = reserve_at(&mut client, relay.circuit_listen_addr())
        .await
        .unwrap_err();
    assert!(reason.contains("resource limit exceeded"), "{reason}");
    let error = refused(&mut relay, client.peer, server::Requested::Reservation).await;
    assert!(error.detail.contains("no reservation grant"), "{error}");
}

/// The relay's clock, `ahead` seconds past the system clock.
fn clock_ahead(ahead: &Arc<AtomicI64>) -> mesh_admission::Clock {
    let offset = ahead.clone();
    Arc::new(move || Timestamp::now().plus_secs(offset.load(Ordering::Relaxed)))
}

#[tokio::test]
async fn an_implicit_grant_is_renewed_while_the_policy_still_admits_the_client() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let ahead = Arc::new(AtomicI64::new(0));
    let config = server::Config {
        grant_ttl: std::time::Duration::from_secs(60),
        clock: clock_ahead(&ahead),
        ..with_policy(
            Arc::new(Open {
                limits: server::DEFAULT_CAPS,
            }),
            &trace,
        )
    };
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    let mut a = plain("a");
    reserve_at(&mut a, relay.circuit_listen_addr())
        .await
        .unwrap();
    let first = admitted(&mut relay, a.peer).await;
    // Past the grant's lifetime by the relay's clock: renewed, the reservation kept.
    ahead.store(61, Ordering::Relaxed);
    let renewed = admitted(&mut relay, a.peer).await;
    assert!(renewed.expires_at > first.expires_at, "{renewed:?}");
    assert_ne!(renewed.ticket, first.ticket);
    let ap = a.peer;
    assert!(
        relay
            .node
            .run(|s| s.behaviour().admission.served_peers())
            .await
            .contains(&ap)
    );
    assert!(!a.seen(|e| matches!(e, SwarmEvent::ConnectionClosed { .. })));
}

#[tokio::test]
async fn an_implicit_grant_ends_with_the_advertisement_that_admitted_it() {
    let trace = Arc::new(MemoryTrace::new(1024));
    let ahead = Arc::new(AtomicI64::new(0));
    let store = Arc::new(Store::default());
    let mut a = plain("a");
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let advert = mesh_advert::own::advert_for(&a.key, &[addr], 1, &Timestamp::now(), 60).unwrap();
    store.0.lock().unwrap().insert(node_of(&a), advert);
    let config = server::Config {
        adverts: store,
        clock: clock_ahead(&ahead),
        ..with_policy(
            Arc::new(RequireAdvertisement {
                limits: server::DEFAULT_CAPS,
            }),
            &trace,
        )
    };
    let mut relay = Relay::start("relay", config, base_relay_config()).await;
    reserve_at(&mut a, relay.circuit_listen_addr())
        .await
        .unwrap();
    admitted(&mut relay, a.peer).await;
    // The advertisement expired: no renewal, the reservation ends (connections closed).
    ahead.store(61, Ordering::Relaxed);
    let error = refused(&mut relay, a.peer, server::Requested::Reservation).await;
    assert!(error.detail.contains("lapsed"), "{error}");
    let rp = relay.node.peer;
    a.wait("A's connection to the relay closed", |e| match e {
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } if *peer_id == rp => Some(()),
        _ => None,
    })
    .await;
}
