//! The mesh DHT on loopback: six nodes over TCP, records validated on PUT and GET; a
//! store's per-source shares between real swarms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, GetRecordOk, InboundRequest, PeerRecord, QueryResult, Quorum, Record};
use libp2p::swarm::{ConnectionId, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;
use mesh_advert::kad::{DhtEntry, accept_put, config, record_for, record_key, validate_record};
use mesh_advert::own::advert_for;
use mesh_advert::{RecordBook, RecordLimits, Source};
use mesh_core::artifact::Artifact;
use mesh_core::{MeshError, NodeAdvertisement, NodeKeypair, Timestamp};

type Kad = kad::Behaviour<MemoryStore>;

struct Net {
    swarms: Vec<Swarm<Kad>>,
    keys: Vec<NodeKeypair>,
    /// Inbound PUTs refused by validation, per node.
    refused: Vec<usize>,
}

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
        .with_behaviour(|_| {
            let mut cfg = config();
            cfg.set_query_timeout(Duration::from_secs(10));
            Kad::with_config(peer, MemoryStore::new(peer), cfg)
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    s.behaviour_mut().set_mode(Some(kad::Mode::Server));
    s
}

impl Net {
    async fn new(n: usize) -> Net {
        let keys: Vec<NodeKeypair> = (0..n).map(|_| NodeKeypair::generate()).collect();
        let mut swarms: Vec<Swarm<Kad>> = keys.iter().map(build).collect();
        let mut addrs = Vec::new();
        for s in &mut swarms {
            s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .unwrap();
            let addr = s
                .wait(|e| match e {
                    SwarmEvent::NewListenAddr { address, .. } => Some(address),
                    _ => None,
                })
                .await;
            addrs.push(addr);
        }
        // Everyone knows node 0 (the seed), and the seed knows everyone (in the composed
        // node identify feeds these addresses); then everyone bootstraps through it.
        let ids: Vec<PeerId> = swarms.iter().map(|s| *s.local_peer_id()).collect();
        let seed: (PeerId, Multiaddr) = (ids[0], addrs[0].clone());
        for s in swarms.iter_mut().skip(1) {
            s.behaviour_mut().add_address(&seed.0, seed.1.clone());
        }
        for (id, addr) in ids.iter().zip(&addrs).skip(1) {
            swarms[0].behaviour_mut().add_address(id, addr.clone());
        }
        let mut net = Net {
            swarms,
            keys,
            refused: vec![0; n],
        };
        for i in 1..n {
            net.swarms[i].behaviour_mut().bootstrap().unwrap();
            net.run_until(|j, e| {
                j == i && matches!(e, kad::Event::OutboundQueryProgressed { result: QueryResult::Bootstrap(_), step, .. } if step.last)
            })
            .await;
        }
        net
    }

    /// Drives every swarm, validating inbound PUTs, until `done` says so (20 s at most).
    async fn run_until(
        &mut self,
        mut done: impl FnMut(usize, &kad::Event) -> bool,
    ) -> (usize, kad::Event) {
        let now = Timestamp::now();
        let swarms = &mut self.swarms;
        let refused = &mut self.refused;
        let fut = futures::future::poll_fn(|cx| {
            for (i, s) in swarms.iter_mut().enumerate() {
                while let Poll::Ready(Some(ev)) = s.poll_next_unpin(cx) {
                    let SwarmEvent::Behaviour(e) = ev else {
                        continue;
                    };
                    if let kad::Event::InboundRequest {
                        request:
                            InboundRequest::PutRecord {
                                record: Some(record),
                                ..
                            },
                    } = &e
                        && accept_put(s.behaviour_mut().store_mut(), record.clone(), &now).is_err()
                    {
                        refused[i] += 1;
                    }
                    if done(i, &e) {
                        return Poll::Ready((i, e));
                    }
                }
            }
            Poll::Pending
        });
        match tokio::time::timeout(Duration::from_secs(20), fut).await {
            Ok(r) => r,
            Err(_) => panic!("DHT did not settle within 20 s"),
        }
    }

    async fn put(&mut self, from: usize, record: Record) {
        let id = self.swarms[from]
            .behaviour_mut()
            .put_record(record, Quorum::N(NonZeroUsize::new(3).unwrap()))
            .unwrap();
        let (_, e) = self
            .run_until(|i, e| {
                i == from && matches!(e, kad::Event::OutboundQueryProgressed { id: q, result: QueryResult::PutRecord(_), .. } if *q == id)
            })
            .await;
        assert!(
            matches!(
                e,
                kad::Event::OutboundQueryProgressed {
                    result: QueryResult::PutRecord(Ok(_)),
                    ..
                }
            ),
            "put failed: {e:?}"
        );
        self.settle().await;
    }

    /// Keeps every swarm running for a moment so receivers handle what was sent.
    async fn settle(&mut self) {
        let _ =
            tokio::time::timeout(Duration::from_millis(500), self.run_until(|_, _| false)).await;
    }

    /// GET from `at`; returns the validated advertisements found and how many answers
    /// failed validation.
    async fn get(&mut self, at: usize, node: &NodeKeypair) -> (Vec<DhtEntry>, usize) {
        let id = self.swarms[at]
            .behaviour_mut()
            .get_record(record_key(&node.node_id()));
        let mut valid = Vec::new();
        let mut invalid = 0;
        loop {
            let (_, e) = self
                .run_until(|i, e| i == at && matches!(e, kad::Event::OutboundQueryProgressed { id: q, .. } if *q == id))
                .await;
            let kad::Event::OutboundQueryProgressed {
                result: QueryResult::GetRecord(r),
                step,
                ..
            } = e
            else {
                continue;
            };
            if let Ok(GetRecordOk::FoundRecord(PeerRecord { record, .. })) = r {
                match validate_record(&record, &Timestamp::now()) {
                    Ok(ad) => valid.push(ad),
                    Err(_) => invalid += 1,
                }
            }
            if step.last {
                return (valid, invalid);
            }
        }
    }

    /// The sequence number each node's store holds for `node` (None if nothing).
    fn held(&mut self, node: &NodeKeypair) -> Vec<Option<u64>> {
        let key = record_key(&node.node_id());
        self.swarms
            .iter_mut()
            .map(|s| {
                s.behaviour_mut().store_mut().get(&key).map(|r| {
                    validate_record(&r, &Timestamp::now())
                        .map(|a| a.sequence_no())
                        .unwrap_or(u64::MAX)
                })
            })
            .collect()
    }
}

fn advert(key: &NodeKeypair, seq: u64) -> NodeAdvertisement {
    advert_for(
        key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        seq,
        &Timestamp::now(),
        600,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_is_found_elsewhere_and_bad_records_are_stored_nowhere() {
    let mut net = Net::new(6).await;
    let owner = net.keys[1].clone();

    // A valid put by node 1 is found by node 5.
    net.put(1, record_for(&advert(&owner, 10), &Timestamp::now()))
        .await;
    let (found, invalid) = net.get(5, &owner).await;
    assert!(!found.is_empty(), "lookup found nothing");
    assert!(
        found
            .iter()
            .all(|a| a.node_id() == owner.node_id() && a.sequence_no() == 10)
    );
    assert_eq!(invalid, 0);
    let holders = net.held(&owner).iter().filter(|h| **h == Some(10)).count();
    assert!(holders >= 3, "replicated to {holders} nodes");

    // Node 2 tries a forged value (another key signed it), a tampered one, and a stale
    // one (sequence 9) under node 1's key. PUT is acknowledged by kad, but validation
    // keeps every store at sequence 10.
    let attacker = net.keys[2].clone();
    let mut forged = advert(&owner, 11).into_map();
    let input = advert(&owner, 11).signing_input();
    forged.insert(
        "signature".into(),
        mesh_core::artifact::signature_value(&attacker.sign(&input)),
    );
    let forged = NodeAdvertisement::from_map(forged).unwrap();
    let mut tampered = record_for(&advert(&owner, 12), &Timestamp::now());
    let n = tampered.value.len();
    tampered.value[n / 2] ^= 0x01;
    let stale = record_for(&advert(&owner, 9), &Timestamp::now());
    let refused_before: usize = net.refused.iter().sum();
    for bad in [record_for(&forged, &Timestamp::now()), tampered, stale] {
        let peers: Vec<PeerId> = net
            .swarms
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, s)| *s.local_peer_id())
            .collect();
        // put_record_to: the attacker does not even keep a local copy.
        let id = net.swarms[2]
            .behaviour_mut()
            .put_record_to(bad, peers.into_iter(), Quorum::One);
        net.run_until(|i, e| {
            i == 2 && matches!(e, kad::Event::OutboundQueryProgressed { id: q, .. } if *q == id)
        })
        .await;
    }
    net.settle().await;
    let refused_after: usize = net.refused.iter().sum();
    assert!(
        refused_after >= refused_before + 3 * 4,
        "refusals: {refused_before} -> {refused_after}"
    );
    let held = net.held(&owner);
    assert!(
        held.iter().all(|h| h.is_none() || *h == Some(10)),
        "a bad record got stored: {held:?}"
    );

    // A newer valid put replaces it everywhere it lands.
    net.put(1, record_for(&advert(&owner, 13), &Timestamp::now()))
        .await;
    let (found, _) = net.get(4, &owner).await;
    assert!(found.iter().any(|a| a.sequence_no() == 13));
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

/// Per-source shares of a record store between real swarms: PUTs count under the
/// network they come from, whatever the peer id.
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
    let record = || record_for(&advert(&NodeKeypair::generate(), 1), &Timestamp::now());
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
