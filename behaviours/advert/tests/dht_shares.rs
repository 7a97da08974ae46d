//! Per-source shares of the mesh DHT's record store between real libp2p swarms: PUTs
//! count under the network they come from, whatever the peer id.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, InboundRequest, Quorum, Record};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, Swarm};
use mesh_advert::kad::{config, record_for};
use mesh_advert::{RecordBook, RecordLimits, Source};
use mesh_core::{MeshError, NodeKeypair, Timestamp};

type Kad = kad::Behaviour<MemoryStore>;

fn build(key: &NodeKeypair) -> Swarm<Kad> {
    let peer = key.to_libp2p().public().to_peer_id();
    let mut s = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Kad::with_config(peer, MemoryStore::new(peer), config()))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    s.behaviour_mut().set_mode(Some(kad::Mode::Server));
    s
}

fn record() -> Record {
    let key = NodeKeypair::generate();
    let now = Timestamp::now();
    let ad = mesh_advert::own::advert_for(
        &key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        1,
        &now,
        600,
    )
    .unwrap();
    record_for(&ad, &now)
}

/// The storing side, as the node runs it: every inbound PUT through the book, under
/// the source of the connection it came on.
struct Server {
    swarm: Swarm<Kad>,
    book: RecordBook,
    remotes: HashMap<ConnectionId, Multiaddr>,
    outcomes: Vec<Result<(), MeshError>>,
}

impl Server {
    fn on(&mut self, e: SwarmEvent<kad::Event>) {
        match e {
            SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            } => {
                self.remotes
                    .insert(connection_id, endpoint.get_remote_address().clone());
            }
            SwarmEvent::Behaviour(kad::Event::InboundRequest {
                request:
                    InboundRequest::PutRecord {
                        source,
                        connection,
                        record: Some(record),
                    },
            }) => {
                let from = Source::of_peer(source, self.remotes.get(&connection));
                let store = self.swarm.behaviour_mut().store_mut();
                let r = self.book.accept(store, record, from, &Timestamp::now());
                self.outcomes.push(r.map(|_| ()));
            }
            _ => {}
        }
    }
}

/// `client` puts `record` at the server; returns once the server handled it.
async fn put(
    server: &mut Server,
    client: &mut Swarm<Kad>,
    record: Record,
) -> Result<(), MeshError> {
    let to = *server.swarm.local_peer_id();
    client.behaviour_mut().put_record_to(
        record,
        [to].into_iter(),
        Quorum::N(NonZeroUsize::new(1).unwrap()),
    );
    let before = server.outcomes.len();
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.outcomes.len() == before {
            tokio::select! {
                e = server.swarm.select_next_some() => server.on(e),
                _ = client.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the server handled the PUT within 10 s");
    server.outcomes.last().cloned().unwrap()
}

#[tokio::test]
async fn dht_puts_count_under_the_network_they_come_from() {
    let mut server = Server {
        swarm: build(&NodeKeypair::generate()),
        book: RecordBook::new(RecordLimits {
            per_source: 2,
            ..RecordLimits::default()
        }),
        remotes: HashMap::new(),
        outcomes: Vec::new(),
    };
    server
        .swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.swarm.select_next_some().await {
            break address;
        }
    };
    let to = *server.swarm.local_peer_id();
    let (mut c1, mut c2) = (
        build(&NodeKeypair::generate()),
        build(&NodeKeypair::generate()),
    );
    for c in [&mut c1, &mut c2] {
        c.behaviour_mut().add_address(&to, addr.clone());
    }
    let (r1, r2) = (record(), record());
    put(&mut server, &mut c1, r1.clone()).await.unwrap();
    put(&mut server, &mut c1, r2.clone()).await.unwrap();
    // A second peer id from the same address shares the first one's share.
    let r3 = record();
    let e = put(&mut server, &mut c2, r3.clone()).await.unwrap_err();
    assert_eq!(e.code, mesh_core::ErrorCode::TransportRejected, "{e}");
    let store = server.swarm.behaviour_mut().store_mut();
    assert!(store.get(&r1.key).is_some() && store.get(&r2.key).is_some());
    assert!(store.get(&r3.key).is_none());
    let loopback = Source::of_ip("127.0.0.1".parse().unwrap());
    assert_eq!(server.book.held_by(&loopback), 2);
}
