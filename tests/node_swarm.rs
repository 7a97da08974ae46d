//! Discovery-key swarms between in-process nodes: twenty members joined through
//! different seeds see each other; a leave and a clean stop are seen by everyone at
//! once; a killed member expires everywhere within one TTL; a newcomer that knows only
//! one node outside the swarm finds it through provider records. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::config::SwarmSettings;
use libmesh::node::{
    Bootstrap, BootstrapName, KadMode, NodeConfig, NodeEvent, NodeHandle, SeedPeer,
};
use libp2p::Multiaddr;
use mesh_core::{NoTrace, NodeId, NodeKeypair};
use mesh_signal::group::DiscoveryKey;
use mesh_testkit::node::{TestNode, start_node};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TTL: i64 = 6;

struct Member {
    handle: NodeHandle,
    node: NodeId,
    addr: Multiaddr,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Swarm events of every node, tagged with the node's index.
type Events = mpsc::Receiver<(usize, NodeEvent)>;

async fn start(i: usize, seeds: Vec<SeedPeer>, tx: mpsc::Sender<(usize, NodeEvent)>) -> Member {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        seeds,
        swarm: SwarmSettings {
            ttl_secs: TTL,
            ..SwarmSettings::default()
        },
        ..NodeConfig::default()
    };
    let TestNode {
        handle,
        mut events,
        node,
        addr,
        task,
        dir,
        ..
    } = start_node(
        NodeKeypair::generate(),
        config,
        Arc::new(NoTrace),
        Duration::from_secs(10),
    )
    .await;
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let swarm_event = matches!(
                e,
                NodeEvent::SwarmMemberJoined { .. } | NodeEvent::SwarmMemberLeft { .. }
            );
            if swarm_event && tx.send((i, e)).await.is_err() {
                break;
            }
        }
    });
    Member {
        handle,
        node,
        addr,
        task,
        _dir: dir,
    }
}

fn seed(m: &Member) -> SeedPeer {
    SeedPeer {
        node_id: m.node,
        addr: m.addr.clone(),
        label: None,
    }
}

/// Waits until every listed node's member table holds exactly `want` (bounded).
async fn wait_members(
    members: &[&Member],
    key: DiscoveryKey,
    want: &HashSet<NodeId>,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for m in members {
            let got: HashSet<NodeId> = m
                .handle
                .swarm_members(key)
                .await
                .unwrap()
                .into_iter()
                .map(|x| NodeId::parse(&x.node).unwrap())
                .collect();
            let mut expect = want.clone();
            expect.remove(&m.node);
            if got != expect {
                missing.push((
                    m.node,
                    expect.difference(&got).count(),
                    got.difference(&expect).count(),
                ));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "member tables incomplete after {limit:?}: (node, missing, extra) {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Collects `Left` events for `who` until every node in `watchers` saw one (bounded);
/// returns when each saw it and with which reason.
async fn wait_left(
    events: &mut Events,
    watchers: &HashSet<usize>,
    who: NodeId,
    limit: Duration,
) -> HashMap<usize, (Instant, &'static str)> {
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < watchers.len() {
        let next = tokio::time::timeout_at(deadline, events.recv()).await;
        let Ok(Some((i, e))) = next else {
            panic!(
                "only {} of {} nodes saw {who} leave within {limit:?}",
                seen.len(),
                watchers.len()
            );
        };
        if let NodeEvent::SwarmMemberLeft { node, reason, .. } = e
            && node == who
            && watchers.contains(&i)
        {
            seen.entry(i).or_insert((Instant::now(), reason));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_members_leave_expire_and_a_newcomer_finds_the_swarm() {
    if let Ok(f) = std::env::var("MESH_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let (tx, mut events) = mpsc::channel(100_000);
    // Four seeds in a chain, sixteen nodes spread over them.
    let mut nodes: Vec<Member> = Vec::new();
    nodes.push(start(0, vec![], tx.clone()).await);
    for i in 1..4 {
        let s = seed(&nodes[i - 1]);
        nodes.push(start(i, vec![s], tx.clone()).await);
    }
    for i in 4..20 {
        let s = seed(&nodes[i % 4]);
        nodes.push(start(i, vec![s], tx.clone()).await);
    }
    let key = DiscoveryKey::from_name("libmesh test swarm");
    for m in &nodes {
        assert!(m.handle.join_swarm(key).await.unwrap());
    }
    assert!(
        !nodes[0].handle.join_swarm(key).await.unwrap(),
        "joined twice"
    );
    let mut all: HashSet<NodeId> = nodes.iter().map(|m| m.node).collect();
    let refs: Vec<&Member> = nodes.iter().collect();
    wait_members(&refs, key, &all, Duration::from_secs(60)).await;
    // Every member saw 19 arrivals. A node's table can hold a member before the event
    // has passed the forwarding task, so the events get a moment (bounded) to arrive.
    let mut joined: HashMap<usize, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while joined.len() < 20 || joined.values().any(|n| *n < 19) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some((i, NodeEvent::SwarmMemberJoined { .. }))) => {
                *joined.entry(i).or_default() += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(
        joined.len() == 20 && joined.values().all(|n| *n >= 19),
        "{joined:?}"
    );
    // What else came so far belongs to the forming swarm, not to the leave below.
    while events.try_recv().is_ok() {}

    // An explicit leave is seen by all within moments (well before any expiry).
    let leaver = nodes[19].node;
    let t = Instant::now();
    assert!(nodes[19].handle.leave_swarm(key).await.unwrap());
    let watchers: HashSet<usize> = (0..19).collect();
    let seen = wait_left(
        &mut events,
        &watchers,
        leaver,
        Duration::from_secs(TTL as u64 / 2),
    )
    .await;
    assert!(seen.values().all(|(_, r)| *r == "leave"), "{seen:?}");
    let slowest = seen
        .values()
        .map(|(at, _)| at.duration_since(t))
        .max()
        .unwrap();
    eprintln!("leave seen by all 19 within {slowest:?}");
    all.remove(&leaver);
    assert!(
        nodes[19].handle.swarm_members(key).await.is_err(),
        "not in the swarm any more"
    );

    // A clean stop announces the departure too.
    let stopper = nodes[18].node;
    nodes[18].handle.shutdown().await;
    let watchers: HashSet<usize> = (0..18).collect();
    let seen = wait_left(
        &mut events,
        &watchers,
        stopper,
        Duration::from_secs(TTL as u64 / 2),
    )
    .await;
    assert!(seen.values().all(|(_, r)| *r == "leave"), "{seen:?}");
    all.remove(&stopper);

    // A killed member says nothing: it expires everywhere within one TTL.
    let killed = nodes[17].node;
    nodes[17].task.abort();
    let t = Instant::now();
    let watchers: HashSet<usize> = (0..17).collect();
    let seen = wait_left(
        &mut events,
        &watchers,
        killed,
        Duration::from_secs(TTL as u64 + 3),
    )
    .await;
    assert!(seen.values().all(|(_, r)| *r == "expired"), "{seen:?}");
    let slowest = seen
        .values()
        .map(|(at, _)| at.duration_since(t))
        .max()
        .unwrap();
    assert!(
        slowest <= Duration::from_secs(TTL as u64 + 2),
        "expired after {slowest:?}"
    );
    all.remove(&killed);

    // A node outside the swarm, and a newcomer that knows only that node.
    let outsider = start(20, vec![seed(&nodes[1])], tx.clone()).await;
    let newcomer = start(21, vec![seed(&outsider)], tx.clone()).await;
    assert!(newcomer.handle.join_swarm(key).await.unwrap());
    all.insert(newcomer.node);
    let mut refs: Vec<&Member> = nodes[..17].iter().collect();
    refs.push(&newcomer);
    wait_members(&refs, key, &all, Duration::from_secs(60)).await;
    assert!(
        outsider.handle.swarm_members(key).await.is_err(),
        "the outsider never joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_see_each_other_and_the_leave() {
    let (tx, mut events) = mpsc::channel(1000);
    let a = start(0, vec![], tx.clone()).await;
    let b = start(1, vec![seed(&a)], tx.clone()).await;
    let key = DiscoveryKey::from_name("pair");
    a.handle.join_swarm(key).await.unwrap();
    b.handle.join_swarm(key).await.unwrap();
    let all: HashSet<NodeId> = [a.node, b.node].into();
    wait_members(&[&a, &b], key, &all, Duration::from_secs(20)).await;
    b.handle.leave_swarm(key).await.unwrap();
    let seen = wait_left(&mut events, &[0].into(), b.node, Duration::from_secs(3)).await;
    assert_eq!(seen[&0].1, "leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_presences_are_refused_with_codes() {
    use mesh_core::{Artifact, MemoryTrace, SwarmPresence, Timestamp, TraceEventType};
    let trace = Arc::new(MemoryTrace::new(4096));
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    let TestNode {
        handle: a,
        node: a_id,
        peer: a_peer,
        addr: a_addr,
        events: _events,
        dir: _dir,
        ..
    } = start_node(
        NodeKeypair::generate(),
        config,
        trace.clone(),
        Duration::from_secs(30),
    )
    .await;
    let (tx, _rx) = mpsc::channel(100);
    let mallory = start(1, vec![], tx).await;
    mallory
        .handle
        .dial(libmesh::node::Target::Addr(
            a_addr.with(libp2p::multiaddr::Protocol::P2p(a_peer)),
        ))
        .await
        .unwrap();
    let key = DiscoveryKey::from_name("guarded");
    a.join_swarm(key).await.unwrap();
    // Mallory only subscribes to the topic (no presence of its own) and publishes:
    // a presence signed by someone else (not the message's author), and garbage.
    mallory.handle.subscribe(key.topic()).await.unwrap();
    let other = NodeKeypair::generate();
    let now = Timestamp::now();
    let serde_json::Value::Object(doc) = serde_json::json!({
        "schema/v": 1, "message/kind": "swarm-presence.v1", "swarm/key": key.to_hex(),
        "node/id": other.node_id().to_string(), "presence": "join", "sequence/no": 1,
        "addrs": [], "created-at": now.as_str(), "expires-at": now.plus_secs(60).as_str(),
    }) else {
        unreachable!()
    };
    let forged = SwarmPresence::sign(doc, &other).unwrap().to_cbor();
    let published = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if mallory
                .handle
                .publish_topic(key.topic(), forged.clone())
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(published.is_ok(), "A never subscribed as seen by mallory");
    mallory
        .handle
        .publish_topic(key.topic(), b"not cbor".to_vec())
        .await
        .unwrap();
    let codes = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let codes: Vec<String> = trace
                .events()
                .into_iter()
                .filter(|e| e.event_type == TraceEventType::ErrorOccurred)
                .filter_map(|e| e.detail?["error/code"].as_str().map(str::to_owned))
                .collect();
            if codes.len() >= 2 {
                return codes;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both refusals traced");
    assert!(
        codes.contains(&"E_SIG_UNKNOWN_SIGNER".to_owned()),
        "{codes:?}"
    );
    assert!(codes.contains(&"E_PROTO_INVALID".to_owned()), "{codes:?}");
    assert!(a.swarm_members(key).await.unwrap().is_empty());
    let _ = a_id;
}

/// A member that publishes presences as fast as it can (here `join` and `leave` in
/// turn, each a new sequence number, so each one a change) has at most its author's
/// rate taken (a burst of 10, then one a second), by A and so by everyone A forwards
/// to: all 60 were checked, taken and forwarded, each a join or leave event at A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_s_presences_are_taken_within_its_rate() {
    use mesh_core::{Artifact, SwarmPresence, Timestamp};
    let config = || NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    let wait = Duration::from_secs(30);
    let mut a = start_node(NodeKeypair::generate(), config(), Arc::new(NoTrace), wait).await;
    let mkey = NodeKeypair::generate();
    let m = start_node(mkey.clone(), config(), Arc::new(NoTrace), wait).await;
    m.handle
        .dial(libmesh::node::Target::Addr(a.p2p_addr()))
        .await
        .unwrap();
    let key = DiscoveryKey::from_name("flooded");
    a.handle.join_swarm(key).await.unwrap();
    m.handle.subscribe(key.topic()).await.unwrap();
    let presence = |seq: u64| {
        let now = Timestamp::now();
        let kind = if seq % 2 == 1 { "join" } else { "leave" };
        let serde_json::Value::Object(doc) = serde_json::json!({
            "schema/v": 1, "message/kind": "swarm-presence.v1", "swarm/key": key.to_hex(),
            "node/id": mkey.node_id().to_string(), "presence": kind, "sequence/no": seq,
            "addrs": [], "created-at": now.as_str(), "expires-at": now.plus_secs(60).as_str(),
        }) else {
            unreachable!()
        };
        SwarmPresence::sign(doc, &mkey).unwrap().to_cbor()
    };
    // The first goes out once M sees A subscribed.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        while m
            .handle
            .publish_topic(key.topic(), presence(1))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(first.is_ok(), "A never subscribed as seen by M");
    for seq in 2..=60 {
        m.handle
            .publish_topic(key.topic(), presence(seq))
            .await
            .unwrap();
    }
    // A's join and leave events about M, until none came for a second (bounded).
    let mut changes = 0;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        match tokio::time::timeout(Duration::from_secs(1), a.events.recv()).await {
            Ok(Some(NodeEvent::SwarmMemberJoined { node, .. }))
            | Ok(Some(NodeEvent::SwarmMemberLeft { node, .. }))
                if node == mkey.node_id() =>
            {
                changes += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(changes >= 1, "A took none of M's presences");
    assert!(
        changes <= 20,
        "A took {changes} of M's 60 presences in a few seconds"
    );
}
