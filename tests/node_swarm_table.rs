//! The member table in one exchange (`/mesh/swarm-table/1.0.0`) between in-process
//! nodes on loopback: a newcomer to a settled swarm learns every member from the table
//! one member hands it (the members leave its `join` unanswered, and nobody
//! re-announces within the test: the TTL is 10 minutes); a peer that hands over a
//! forged presence gets it refused with `E_SIG_INVALID`, and the valid ones are kept; a
//! peer that answers an empty table does not hide the swarm from the newcomer, and one
//! that leaves members out of a table of some size hides them only until the
//! newcomer's next check of its table against another subscriber's; a `leave` the
//! newcomer missed comes with a check's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::config::SwarmSettings;
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, NodeHandle, SeedPeer, Target};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, gossipsub};
use mesh_core::{
    Artifact, MemoryTrace, NodeId, NodeKeypair, SwarmPresence, Timestamp, TraceEventType,
};
use mesh_signal::group::exchange::{self, Answer};
use mesh_signal::group::{DiscoveryKey, SETTLED_SECS};
use mesh_testkit::node::{TestNode, start_node};

/// Long enough that no re-announce happens during a test.
const TTL: i64 = 600;

struct Member {
    handle: NodeHandle,
    node: NodeId,
    addr: Multiaddr,
    trace: Arc<MemoryTrace>,
    _t: TestNode,
}

async fn start(seeds: Vec<SeedPeer>) -> Member {
    start_checking(seeds, SwarmSettings::default().check_secs).await
}

/// [`start`] with member-table checks every `check_secs` (a quarter either way).
async fn start_checking(seeds: Vec<SeedPeer>, check_secs: u64) -> Member {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        seeds,
        swarm: SwarmSettings {
            ttl_secs: TTL,
            check_secs,
            ..SwarmSettings::default()
        },
        ..NodeConfig::default()
    };
    let trace = Arc::new(MemoryTrace::new(65_536));
    let t = start_node(
        NodeKeypair::generate(),
        config,
        trace.clone(),
        Duration::from_secs(30),
    )
    .await;
    Member {
        handle: t.handle.clone(),
        node: t.node,
        addr: t.addr.clone(),
        trace,
        _t: t,
    }
}

fn seed(m: &Member) -> SeedPeer {
    SeedPeer {
        node_id: m.node,
        addr: m.addr.clone(),
        label: None,
    }
}

async fn members_of(h: &NodeHandle, key: DiscoveryKey) -> HashSet<NodeId> {
    h.swarm_members(key)
        .await
        .unwrap()
        .into_iter()
        .map(|m| NodeId::parse(&m.node).unwrap())
        .collect()
}

/// Waits (bounded) until `h`'s table of `key` holds `want`; returns what it holds.
async fn wait_table(
    h: &NodeHandle,
    key: DiscoveryKey,
    want: &HashSet<NodeId>,
    limit: Duration,
) -> HashSet<NodeId> {
    let start = Instant::now();
    loop {
        let got = members_of(h, key).await;
        if &got == want || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The members `trace` saw arrive in `key`, with how (`gossip` or `table`).
fn arrivals(trace: &MemoryTrace, key: DiscoveryKey) -> Vec<(String, String)> {
    trace
        .events()
        .into_iter()
        .filter(|e| e.event_type == TraceEventType::SwarmJoined)
        .filter_map(|e| {
            let d = e.detail?;
            if d["swarm"] != key.to_hex().as_str() {
                return None;
            }
            Some((
                d["member"].as_str()?.to_owned(),
                d["via"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_the_whole_table_from_one_member() {
    let key = DiscoveryKey::from_name("table in one exchange");
    let mut nodes = vec![start(vec![]).await];
    for i in 1..8 {
        let s = seed(&nodes[(i - 1) / 2]);
        nodes.push(start(vec![s]).await);
    }
    for m in &nodes {
        m.handle.join_swarm(key).await.unwrap();
    }
    let all: HashSet<NodeId> = nodes.iter().map(|m| m.node).collect();
    for m in &nodes {
        let mut want = all.clone();
        want.remove(&m.node);
        let got = wait_table(&m.handle, key, &want, Duration::from_secs(60)).await;
        assert_eq!(got, want, "the eight members see each other");
    }
    // Settled: the members no longer answer joins that fetch the table.
    tokio::time::sleep(Duration::from_secs(SETTLED_SECS as u64 + 1)).await;

    // A newcomer seeded to one member only.
    let newcomer = start(vec![seed(&nodes[7])]).await;
    newcomer
        .handle
        .dial(Target::Addr(nodes[7].addr.clone().with(
            libp2p::multiaddr::Protocol::P2p(nodes[7].node.to_peer_id().unwrap()),
        )))
        .await
        .unwrap();
    newcomer.handle.join_swarm(key).await.unwrap();
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(30)).await;
    assert_eq!(got, all, "the newcomer sees every member");
    // Every member came through the table, none through an answer on the topic.
    let seen = arrivals(&newcomer.trace, key);
    assert_eq!(seen.len(), all.len(), "{seen:?}");
    assert!(seen.iter().all(|(_, via)| via == "table"), "{seen:?}");
    // And every member sees the newcomer's join, as before.
    for m in &nodes {
        let mut want = all.clone();
        want.remove(&m.node);
        want.insert(newcomer.node);
        let got = wait_table(&m.handle, key, &want, Duration::from_secs(30)).await;
        assert_eq!(got, want);
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Hostile {
    gossipsub: gossipsub::Behaviour,
    table: request_response::Behaviour<exchange::Codec>,
}

/// Mallory: a raw libp2p peer subscribed to `key`'s topic that serves
/// `/mesh/swarm-table/1.0.0`; its peer id, its listen address, its swarm.
async fn mallory(key: &DiscoveryKey) -> (libp2p::PeerId, Multiaddr, libp2p::Swarm<Hostile>) {
    mallory_as(NodeKeypair::generate(), key).await
}

/// [`mallory`] under a given key.
async fn mallory_as(
    mallory_key: NodeKeypair,
    key: &DiscoveryKey,
) -> (libp2p::PeerId, Multiaddr, libp2p::Swarm<Hostile>) {
    let mut gs = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(mallory_key.to_libp2p()),
        gossipsub::Config::default(),
    )
    .unwrap();
    gs.subscribe(&gossipsub::IdentTopic::new(key.topic()))
        .unwrap();
    let table = request_response::Behaviour::with_codec(
        exchange::Codec,
        [(exchange::PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default(),
    );
    let mut swarm = mesh_testkit::swarm_with(
        &mallory_key,
        Hostile {
            gossipsub: gs,
            table,
        },
    );
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (mallory_key.node_id().to_peer_id().unwrap(), addr, swarm)
}

/// `n` dials member `m`.
async fn meet(n: &Member, m: &Member) {
    let peer = m.node.to_peer_id().unwrap();
    let addr = m.addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer));
    n.handle.dial(Target::Addr(addr)).await.unwrap();
}

/// `newcomer` dials `peer` at `addr`, then joins `key`: `peer` is the first subscriber
/// it meets, the one it asks for the table.
async fn join_through(newcomer: &Member, peer: libp2p::PeerId, addr: Multiaddr, key: DiscoveryKey) {
    newcomer
        .handle
        .dial(Target::Addr(
            addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
        ))
        .await
        .unwrap();
    newcomer.handle.join_swarm(key).await.unwrap();
}

/// Mallory answers every table request with `entries` (any order) as one page.
fn serve_always(
    mut mallory: libp2p::Swarm<Hostile>,
    entries: &[(NodeId, Vec<u8>)],
) -> tokio::task::JoinHandle<()> {
    let mut entries = entries.to_vec();
    entries.sort_by_key(|(n, _)| *n);
    let page = exchange::page_of(entries.iter().map(|(n, b)| (*n, b.as_slice())), None);
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(HostileEvent::Table(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = mallory.select_next_some().await
            {
                let _ = mallory
                    .behaviour_mut()
                    .table
                    .send_response(channel, Answer::Page(page.clone()));
            }
        }
    })
}

/// Members M and X of `key`, each in the other's table, settled: their own joins went
/// out `SETTLED_SECS` ago, so they leave a newcomer's join that fetches the table
/// unanswered.
async fn settled_pair(key: DiscoveryKey) -> (Member, Member) {
    let m = start(vec![]).await;
    let x = start(vec![seed(&m)]).await;
    for n in [&m, &x] {
        n.handle.join_swarm(key).await.unwrap();
    }
    let want: HashSet<NodeId> = [m.node].into();
    assert_eq!(
        wait_table(&x.handle, key, &want, Duration::from_secs(30)).await,
        want
    );
    tokio::time::sleep(Duration::from_secs(SETTLED_SECS as u64 + 1)).await;
    (m, x)
}

fn signed_presence(key: &NodeKeypair, swarm: &DiscoveryKey, now: &Timestamp) -> Vec<u8> {
    signed_as(key, swarm, now, "announce", 5)
}

/// A presence of `key`'s, `presence` (`announce`, `leave`) with `seq`, valid 120 s.
fn signed_as(
    key: &NodeKeypair,
    swarm: &DiscoveryKey,
    now: &Timestamp,
    presence: &str,
    seq: u64,
) -> Vec<u8> {
    let serde_json::Value::Object(doc) = serde_json::json!({
        "schema/v": 1, "message/kind": "swarm-presence.v1", "swarm/key": swarm.to_hex(),
        "node/id": key.node_id().to_string(), "presence": presence, "sequence/no": seq,
        "addrs": ["/ip4/127.0.0.1/tcp/9"], "created-at": now.as_str(),
        "expires-at": now.plus_secs(120).as_str(),
    }) else {
        unreachable!()
    };
    SwarmPresence::sign(doc, key).unwrap().to_cbor()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_presence_in_a_table_is_refused_and_the_valid_ones_are_kept() {
    let key = DiscoveryKey::from_name("hostile table");
    let newcomer = start(vec![]).await;
    // Mallory: subscribed to the swarm's topic, and serving a table of three signed
    // presences and one whose address was changed after signing.
    let (mallory_peer, addr, mallory) = mallory(&key).await;
    let now = Timestamp::now();
    let honest: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    let forger = NodeKeypair::generate();
    let mut entries: Vec<(NodeId, Vec<u8>)> = honest
        .iter()
        .map(|k| (k.node_id(), signed_presence(k, &key, &now)))
        .collect();
    let forged = {
        let mut doc = SwarmPresence::from_cbor(&signed_presence(&forger, &key, &now))
            .unwrap()
            .into_map();
        doc.insert(
            "addrs".into(),
            serde_json::json!(["/ip4/127.0.0.1/tcp/6666"]),
        );
        mesh_core::cbor::encode(&serde_json::Value::Object(doc))
    };
    entries.push((forger.node_id(), forged));
    let serve = serve_always(mallory, &entries);
    join_through(&newcomer, mallory_peer, addr, key).await;
    let want: HashSet<NodeId> = honest.iter().map(NodeKeypair::node_id).collect();
    let got = wait_table(&newcomer.handle, key, &want, Duration::from_secs(30)).await;
    assert_eq!(got, want, "the three valid presences are taken");
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let hit = newcomer.trace.events().into_iter().find(|e| {
                e.event_type == TraceEventType::ErrorOccurred
                    && e.peer.as_deref() == Some(mallory_peer.to_string().as_str())
                    && e.detail
                        .as_ref()
                        .is_some_and(|d| d["error/code"] == "E_SIG_INVALID")
            });
            if let Some(e) = hit {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the forged presence is refused with E_SIG_INVALID, naming mallory");
    let _ = refused;
    assert!(
        !members_of(&newcomer.handle, key)
            .await
            .contains(&forger.node_id()),
        "the forged presence is not taken"
    );
    serve.abort();
}

/// A peer that answers the table request with an empty table (audit finding 6) does not
/// hide the swarm: the newcomer, connected meanwhile to a member subscribed to the
/// topic, finds that member missing from the table and asks it. Before, the newcomer
/// took the empty table as the swarm and saw the members only at their refreshes (the
/// TTL here is 10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_does_not_hide_the_swarm() {
    let key = DiscoveryKey::from_name("hidden swarm");
    let (m, x) = settled_pair(key).await;
    // M and X leave a join that fetches the table unanswered (gossipsub's IHAVE hands
    // them the newcomer's join once it meets M).
    let newcomer = start(vec![]).await;
    // Mallory holds the newcomer's request until the test says, then answers an
    // empty table.
    let (mallory_peer, addr, mut mallory) = mallory(&key).await;
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, mut release_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        let mut asked_tx = Some(asked_tx);
        let mut held = Vec::new();
        loop {
            tokio::select! {
                e = mallory.select_next_some() => {
                    if let SwarmEvent::Behaviour(HostileEvent::Table(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    })) = e
                    {
                        held.push(channel);
                        if let Some(tx) = asked_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                _ = &mut release_rx, if !release_rx.is_terminated() => {
                    let empty = exchange::page_of(std::iter::empty(), None);
                    for channel in held.drain(..) {
                        let _ = mallory.behaviour_mut().table.send_response(channel, Answer::Page(empty.clone()));
                    }
                }
            }
        }
    });
    join_through(&newcomer, mallory_peer, addr, key).await;
    tokio::time::timeout(Duration::from_secs(10), asked_rx)
        .await
        .expect("the newcomer asks mallory, the only subscriber")
        .unwrap();
    // Meanwhile the newcomer meets member M (subscribed to the topic).
    meet(&newcomer, &m).await;
    // Gossipsub's subscriptions go out with the connection; the request times out
    // after 10 s, so the empty answer comes well before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    release_tx.send(()).unwrap();
    let all: HashSet<NodeId> = [m.node, x.node].into();
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(15)).await;
    assert_eq!(got, all, "the members, from M's table");
    let seen = arrivals(&newcomer.trace, key);
    assert!(seen.iter().all(|(_, via)| via == "table"), "{seen:?}");
    serve.abort();
}

/// A table server that leaves members out of a table of some size (three members of
/// its own making, signed) is not caught by the newcomer's fetch, which takes a table
/// that size as it is; the newcomer's next check of its table against a random
/// subscriber's, a member's here, brings the members left out. Before the checks, the
/// newcomer saw them only at their refreshes (the TTL here is 10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_left_out_of_a_table_come_with_the_next_check() {
    let key = DiscoveryKey::from_name("partial table");
    let (m, x) = settled_pair(key).await;
    // M and X leave the newcomer's join unanswered.
    let newcomer = start_checking(vec![], 2).await;
    // Mallory answers every table request with three members of its own.
    let (mallory_peer, addr, mallory) = mallory(&key).await;
    let now = Timestamp::now();
    let fakes: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    let entries: Vec<(NodeId, Vec<u8>)> = fakes
        .iter()
        .map(|k| (k.node_id(), signed_presence(k, &key, &now)))
        .collect();
    let serve = serve_always(mallory, &entries);
    join_through(&newcomer, mallory_peer, addr, key).await;
    let fake: HashSet<NodeId> = fakes.iter().map(NodeKeypair::node_id).collect();
    assert_eq!(
        wait_table(&newcomer.handle, key, &fake, Duration::from_secs(15)).await,
        fake,
        "mallory's table is taken as it is"
    );
    // The newcomer meets member M; its checks ask M or mallory at random, every
    // 1.5-2.5 s.
    meet(&newcomer, &m).await;
    let mut all = fake.clone();
    all.extend([m.node, x.node]);
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(40)).await;
    assert_eq!(got, all, "M and X, from a check of M's table");
    let checked: HashSet<String> = arrivals(&newcomer.trace, key)
        .into_iter()
        .filter(|(_, via)| via == "check")
        .map(|(n, _)| n)
        .collect();
    let left_out: HashSet<String> = [m.node.to_string(), x.node.to_string()].into();
    assert_eq!(checked, left_out);
    // `meshd status` counts them too.
    let came = newcomer.handle.status().await.unwrap().swarm_arrivals;
    assert_eq!((came.table, came.check), (3, 2), "{came:?}");
    serve.abort();
}

/// Drives `mallory` until `done` (asked every 100 ms) holds; false after `limit`.
async fn drive_until<F, Fut>(
    mallory: &mut libp2p::Swarm<Hostile>,
    limit: Duration,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        let _ = tokio::time::timeout(Duration::from_millis(100), mallory.select_next_some()).await;
        if done().await {
            return true;
        }
    }
    false
}

/// A member that missed a `leave` (the newcomer holds Z from a table; Z's leave went
/// out on the topic before it came) drops the member with its next check: M's answer
/// carries the leaves it remembers of members whose last presence may still be held.
/// Before, the newcomer held Z until Z's presence expired (120 s here), and its checks
/// cost a full table each meanwhile, as the members' digests differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_a_member_missed_comes_with_the_next_check() {
    let key = DiscoveryKey::from_name("missed leave");
    let (m, x) = settled_pair(key).await;
    // Z, a raw libp2p peer, announces itself on the topic through M, then leaves.
    let z = NodeKeypair::generate();
    let (z_peer, z_addr, mut zs) = mallory_as(z.clone(), &key).await;
    let m_peer = m.node.to_peer_id().unwrap();
    zs.dial(
        m.addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(m_peer)),
    )
    .unwrap();
    let topic = gossipsub::IdentTopic::new(key.topic());
    let start = Instant::now();
    let hash = topic.hash();
    while !zs
        .behaviour()
        .gossipsub
        .all_peers()
        .any(|(p, topics)| *p == m_peer && topics.contains(&&hash))
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "M's subscription seen"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), zs.select_next_some()).await;
    }
    let now = Timestamp::now();
    let announce = signed_as(&z, &key, &now, "announce", 5);
    zs.behaviour_mut()
        .gossipsub
        .publish(topic.clone(), announce.clone())
        .unwrap();
    let with_z: HashSet<NodeId> = [x.node, z.node_id()].into();
    let mh = m.handle.clone();
    assert!(
        drive_until(&mut zs, Duration::from_secs(15), || {
            let mh = mh.clone();
            let want = with_z.clone();
            async move { members_of(&mh, key).await == want }
        })
        .await,
        "M takes Z's announce"
    );
    zs.behaviour_mut()
        .gossipsub
        .publish(topic, signed_as(&z, &key, &now, "leave", 6))
        .unwrap();
    let without_z: HashSet<NodeId> = [x.node].into();
    assert!(
        drive_until(&mut zs, Duration::from_secs(15), || {
            let mh = mh.clone();
            let want = without_z.clone();
            async move { members_of(&mh, key).await == want }
        })
        .await,
        "M takes Z's leave"
    );
    // Z now serves its announce as its table; the leave has left every gossipsub
    // message cache (5 heartbeats) before the newcomer comes.
    let serve = serve_always(zs, &[(z.node_id(), announce)]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let newcomer = start_checking(vec![], 2).await;
    join_through(&newcomer, z_peer, z_addr, key).await;
    let only_z: HashSet<NodeId> = [z.node_id()].into();
    assert_eq!(
        wait_table(&newcomer.handle, key, &only_z, Duration::from_secs(15)).await,
        only_z,
        "Z's table is taken as it is"
    );
    // The newcomer meets M; its checks ask M or Z at random, every 1.5-2.5 s.
    meet(&newcomer, &m).await;
    let real: HashSet<NodeId> = [m.node, x.node].into();
    let got = wait_table(&newcomer.handle, key, &real, Duration::from_secs(40)).await;
    assert_eq!(
        got, real,
        "Z gone with M's check answer, M and X come with it"
    );
    let left: Vec<(String, String)> = newcomer
        .trace
        .events()
        .into_iter()
        .filter(|e| e.event_type == TraceEventType::SwarmLeft)
        .filter_map(|e| {
            let d = e.detail?;
            Some((
                d["member"].as_str()?.to_owned(),
                d["reason"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(left, vec![(z.node_id().to_string(), "leave".to_owned())]);
    serve.abort();
}

/// The pages a member serves to one network: fresh keys get no fresh budget beyond the
/// network's (each key's own burst is 8 pages of up to 256 KiB; one host holds up to 64
/// connections). Twelve raw peers from 127.0.0.1 ask eight times each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_of_one_network_share_its_table_pages() {
    use mesh_testkit::Net;
    use mesh_testkit::hostile::HostilePeer;
    let key = DiscoveryKey::from_name("pages per network");
    let member = start(vec![]).await;
    member.handle.join_swarm(key).await.unwrap();
    let p2p = member.addr.clone().with(libp2p::multiaddr::Protocol::P2p(
        member.node.to_peer_id().unwrap(),
    ));
    let request = exchange::TableRequest::first(key).to_cbor();
    let wait = Duration::from_secs(30);
    let started = Instant::now();
    let mut pages = 0;
    let mut refused = 0;
    for i in 0..12 {
        let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = hostile.connect(p2p.clone(), wait).await.unwrap();
        for _ in 0..8 {
            let answer = hostile
                .send(peer, "/mesh/swarm-table/1.0.0", &request, wait)
                .await
                .unwrap();
            match exchange::decode_answer(&answer) {
                Ok(_) => pages += 1,
                // Until our own table is in, the first asker may hear "not ready".
                Err(e) if i == 0 && pages == 0 && e.to_string().contains("not ready") => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => refused += 1,
            }
        }
    }
    let secs = started.elapsed().as_secs() as usize;
    // The network's burst of 64, and what it earned back meanwhile (4 a second).
    assert!(pages >= 8, "{pages} pages served");
    assert!(
        pages <= 64 + 4 * (secs + 1),
        "{pages} pages served to one network in {secs} s ({refused} refused)"
    );
}
