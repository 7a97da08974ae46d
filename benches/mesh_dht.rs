//! The mesh DHT at scale: N in-process nodes (default 300) on loopback TCP (or the
//! memory transport, `--memory`), each
//! running the node's own mesh-DHT Kademlia (`libmesh::node::build::mesh_kad`:
//! `/mesh/kad/1.0.0`, filtered inserts, server mode) beside identify, with the node's
//! record handling (`accept_put` on every inbound PUT, `validate_record` on every GET
//! result, the own advertisement put with `Quorum::One`).
//!
//! 1. The nodes start one after the other, the way a network grows: each listens on
//!    `127.0.0.1:0`, knows the addresses of up to three earlier nodes (its seeds) and
//!    bootstraps (as the node does at start); at most `--wave` (8) bootstraps run at
//!    once. With `--rebootstrap` every node then bootstraps once more (the node's
//!    periodic bootstrap, every 5 minutes, done at once here).
//! 2. Every node puts its signed advertisement record (`/mesh/adv/<node-id>`).
//! 3. `--lookups` (1,000) lookups, one at a time: a random node looks up the node id of
//!    another random node the way `meshd` finds a node on the mesh DHT (get the record,
//!    stop at the first record that verifies and names that node). Found %, time per
//!    lookup and Kademlia requests per lookup (p50/p99).
//! 4. A third of the nodes are stopped abruptly (their tasks aborted: sockets close,
//!    no goodbye), and step 3 is repeated among the survivors.
//!
//! Connections: the swarm's idle-connection timeout is `--idle` seconds (15; the node's
//! default is 60): all N nodes share this process's file descriptors, and a DHT of N
//! nodes whose every node keeps every connection for a minute would hold N²/2 sockets.
//!
//! `cargo bench --bench mesh_dht` (a few minutes after the build). Flags after `--`:
//! `--nodes N` (300), `--lookups L` (1000), `--stop-percent P` (33), `--wave W` (8),
//! `--idle SECS` (15), `--seed S` (1), `--limit SECS` (bound on each lookup, 30),
//! `--rebootstrap`, `--memory` (libp2p's memory transport with the same noise and yamux
//! upgrades instead of loopback TCP: at 300 nodes the DHT's connections need more file
//! descriptors than a hard limit of 20,000 allows). `MESH_DHTBENCH_DEBUG=1` prints each bootstrap's statistics.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod scale;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::KadMode;
use libmesh::node::build::{IDENTIFY_PROTOCOL, mesh_kad, speaks};
use libp2p::core::transport::{MemoryTransport, Transport};
use libp2p::core::upgrade;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetRecordOk, QueryId, QueryResult};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, identify, noise, tcp, yamux};
use mesh_core::{NodeAdvertisement, NodeId, NodeKeypair, Timestamp};
use scale::{Rng, ms, percentile};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(NetworkBehaviour)]
struct DhtNode {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// What one lookup gave.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    found: bool,
    /// Kademlia requests sent until the record was found (or the query ended).
    requests: u32,
    elapsed: Duration,
}

/// Routing-table entries and connected peers of a node.
#[derive(Debug, Clone, Copy)]
struct Census {
    table: usize,
    connected: usize,
    records: usize,
}

enum Cmd {
    Bootstrap(oneshot::Sender<bool>),
    Put(oneshot::Sender<bool>),
    Lookup(NodeId, oneshot::Sender<Outcome>),
    Census(oneshot::Sender<Census>),
}

struct Member {
    node_id: NodeId,
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

struct Args {
    nodes: usize,
    lookups: usize,
    stop_percent: usize,
    wave: usize,
    idle: Duration,
    seed: u64,
    limit: Duration,
    rebootstrap: bool,
    /// libp2p's in-process memory transport instead of loopback TCP.
    memory: bool,
}

fn args() -> Args {
    let f = scale::flag;
    Args {
        nodes: f("--nodes").unwrap_or(300).clamp(8, 2000) as usize,
        lookups: f("--lookups").unwrap_or(1000).clamp(1, 100_000) as usize,
        stop_percent: f("--stop-percent").unwrap_or(33).min(90) as usize,
        wave: f("--wave").unwrap_or(8).clamp(1, 256) as usize,
        idle: Duration::from_secs(f("--idle").unwrap_or(15).clamp(1, 600)),
        seed: f("--seed").unwrap_or(1),
        limit: Duration::from_secs(f("--limit").unwrap_or(30).clamp(1, 600)),
        rebootstrap: std::env::args().any(|a| a == "--rebootstrap"),
        memory: std::env::args().any(|a| a == "--memory"),
    }
}

fn build_swarm(key: &NodeKeypair, idle: Duration, memory: bool) -> Swarm<DhtNode> {
    let lp_key = key.to_libp2p();
    let behaviour = |k: &libp2p::identity::Keypair| DhtNode {
        identify: identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.into(),
            k.public(),
        )),
        kad: mesh_kad(k.public().to_peer_id(), KadMode::Server),
    };
    let builder = SwarmBuilder::with_existing_identity(lp_key.clone()).with_tokio();
    if memory {
        // The same upgrades as the TCP case (noise, yamux) over libp2p's in-process
        // transport: no file descriptor per connection end.
        let transport = MemoryTransport::default()
            .upgrade(upgrade::Version::V1)
            .authenticate(noise::Config::new(&lp_key).expect("noise"))
            .multiplex(yamux::Config::default())
            .boxed();
        builder
            .with_other_transport(|_| transport)
            .expect("memory transport")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build()
    } else {
        builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build()
    }
}

/// Starts listening on loopback: the address.
async fn listen(swarm: &mut Swarm<DhtNode>, memory: bool) -> Multiaddr {
    let on = if memory {
        "/memory/0"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    swarm.listen_on(on.parse().unwrap()).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// A node's event loop: commands from the bench, and the node's DHT handling.
async fn run(mut swarm: Swarm<DhtNode>, advert: NodeAdvertisement, mut rx: mpsc::Receiver<Cmd>) {
    let mut waits: HashMap<QueryId, oneshot::Sender<bool>> = HashMap::new();
    let mut lookups: HashMap<QueryId, (NodeId, Instant, oneshot::Sender<Outcome>)> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let kad = &mut swarm.behaviour_mut().kad;
                match cmd {
                    None => break,
                    Some(Cmd::Bootstrap(tx)) => match kad.bootstrap() {
                        Ok(q) => { waits.insert(q, tx); }
                        Err(_) => { let _ = tx.send(false); }
                    },
                    Some(Cmd::Put(tx)) => {
                        let record = mesh_advert::kad::record_for(&advert, &Timestamp::now());
                        match kad.put_record(record, kad::Quorum::One) {
                            Ok(q) => { waits.insert(q, tx); }
                            Err(_) => { let _ = tx.send(false); }
                        }
                    }
                    Some(Cmd::Lookup(node, tx)) => {
                        let q = kad.get_record(mesh_advert::kad::record_key(&node));
                        lookups.insert(q, (node, Instant::now(), tx));
                    }
                    Some(Cmd::Census(tx)) => {
                        let table = kad.kbuckets().map(|b| b.num_entries()).sum();
                        let records = kad.store_mut().records().count();
                        let connected = swarm.network_info().num_peers();
                        let _ = tx.send(Census { table, connected, records });
                    }
                }
            }
            event = swarm.select_next_some() => {
                on_event(&mut swarm, event, &mut waits, &mut lookups);
            }
        }
    }
}

fn on_event(
    swarm: &mut Swarm<DhtNode>,
    event: SwarmEvent<DhtNodeEvent>,
    waits: &mut HashMap<QueryId, oneshot::Sender<bool>>,
    lookups: &mut HashMap<QueryId, (NodeId, Instant, oneshot::Sender<Outcome>)>,
) {
    let kad = &mut swarm.behaviour_mut().kad;
    match event {
        // As the node's `dht::learn_from_identify`: a peer that serves the mesh DHT
        // goes into the routing table with its listen addresses.
        SwarmEvent::Behaviour(DhtNodeEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            if speaks(&info.protocols, &mesh_advert::kad::KAD_PROTOCOL) {
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
            } else {
                kad.remove_peer(&peer_id);
            }
        }
        SwarmEvent::Behaviour(DhtNodeEvent::Kad(kad::Event::InboundRequest {
            request:
                kad::InboundRequest::PutRecord {
                    record: Some(record),
                    ..
                },
        })) => {
            let _ = mesh_advert::kad::accept_put(kad.store_mut(), record, &Timestamp::now());
        }
        SwarmEvent::Behaviour(DhtNodeEvent::Kad(kad::Event::OutboundQueryProgressed {
            id,
            result,
            stats,
            step,
        })) => match result {
            QueryResult::Bootstrap(r) => {
                if step.last
                    && let Some(tx) = waits.remove(&id)
                {
                    if std::env::var_os("MESH_DHTBENCH_DEBUG").is_some() {
                        eprintln!(
                            "bootstrap {:?}: {} requests, {} ok, {} failed, {} steps",
                            stats.duration(),
                            stats.num_requests(),
                            stats.num_successes(),
                            stats.num_failures(),
                            step.count
                        );
                    }
                    let _ = tx.send(r.is_ok());
                }
            }
            QueryResult::PutRecord(r) => {
                if let Some(tx) = waits.remove(&id) {
                    let _ = tx.send(r.is_ok());
                }
            }
            QueryResult::GetRecord(r) => {
                let Some((node, _, _)) = lookups.get(&id) else {
                    return;
                };
                // As the node's `on_mesh_query`: the first record that verifies and
                // names the node sought ends the lookup.
                let valid = match r {
                    Ok(GetRecordOk::FoundRecord(found)) => {
                        mesh_advert::kad::validate_record(&found.record, &Timestamp::now())
                            .is_ok_and(|entry| entry.node_id() == *node)
                    }
                    _ => false,
                };
                if valid || step.last {
                    if valid && let Some(mut q) = kad.query_mut(&id) {
                        q.finish();
                    }
                    if let Some((_, since, tx)) = lookups.remove(&id) {
                        let _ = tx.send(Outcome {
                            found: valid,
                            requests: stats.num_requests(),
                            elapsed: since.elapsed(),
                        });
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Sends a command to each of `targets`, at most `wave` at once; how many answered
/// `true`.
async fn in_waves(
    members: &[Member],
    targets: &[usize],
    wave: usize,
    make: fn(oneshot::Sender<bool>) -> Cmd,
) -> usize {
    let mut ok = 0;
    let start = Instant::now();
    for (n, chunk) in targets.chunks(wave).enumerate() {
        if n % 4 == 0 {
            eprint!(
                "\r  {} of {} sent, {ok} ok, {:.1} s   ",
                n * wave,
                targets.len(),
                start.elapsed().as_secs_f64()
            );
        }
        let mut replies = Vec::new();
        for &i in chunk {
            let (tx, rx) = oneshot::channel();
            if members[i].tx.send(make(tx)).await.is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(120), rx).await {
                ok += 1;
            }
        }
    }
    eprintln!();
    ok
}

async fn census(members: &[Member], alive: &[usize]) -> String {
    let mut table = Vec::new();
    let mut connected = Vec::new();
    let mut records = Vec::new();
    for &i in alive {
        let (tx, rx) = oneshot::channel();
        if members[i].tx.send(Cmd::Census(tx)).await.is_err() {
            continue;
        }
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(10), rx).await {
            table.push(c.table);
            connected.push(c.connected);
            records.push(c.records);
        }
    }
    let show = |v: &mut Vec<usize>| {
        v.sort_unstable();
        format!(
            "{}/{}/{}",
            v.first().copied().unwrap_or(0),
            percentile(v, 50.0).unwrap_or(0),
            v.last().copied().unwrap_or(0)
        )
    };
    format!(
        "routing table min/median/max {}, connected peers {}, records held {}, total connections {}",
        show(&mut table),
        show(&mut connected),
        show(&mut records),
        connected.iter().sum::<usize>() / 2
    )
}

/// `count` lookups among `alive`, one at a time: (found, outcomes).
async fn lookups(
    members: &[Member],
    alive: &[usize],
    count: usize,
    limit: Duration,
    rng: &mut Rng,
) -> (usize, Vec<Outcome>) {
    let mut outcomes = Vec::with_capacity(count);
    let mut found = 0;
    for _ in 0..count {
        let pair = rng.sample(alive.len(), 2);
        let (from, to) = (alive[pair[0]], alive[pair[1]]);
        let (tx, rx) = oneshot::channel();
        let start = Instant::now();
        members[from]
            .tx
            .send(Cmd::Lookup(members[to].node_id, tx))
            .await
            .expect("node running");
        let outcome = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(o)) => o,
            _ => Outcome {
                found: false,
                requests: 0,
                elapsed: start.elapsed(),
            },
        };
        if outcome.found {
            found += 1;
        }
        outcomes.push(outcome);
    }
    (found, outcomes)
}

fn report(label: &str, found: usize, outcomes: &[Outcome]) {
    let n = outcomes.len();
    let mut times: Vec<Duration> = outcomes.iter().map(|o| o.elapsed).collect();
    times.sort_unstable();
    let mut requests: Vec<u32> = outcomes
        .iter()
        .filter(|o| o.found)
        .map(|o| o.requests)
        .collect();
    requests.sort_unstable();
    let p = |v: &[Duration], q| percentile(v, q).map(ms).unwrap_or_default();
    let r = |q| percentile(&requests, q).unwrap_or(0);
    let mean = requests.iter().map(|&x| f64::from(x)).sum::<f64>() / requests.len().max(1) as f64;
    println!(
        "{label}: found {found}/{n} ({:.1}%), time per lookup p50 {} ms p99 {} ms max {} ms, \
         Kademlia requests per lookup p50 {} p99 {} mean {mean:.1}",
        100.0 * found as f64 / n.max(1) as f64,
        p(&times, 50.0),
        p(&times, 99.0),
        times.last().map(|d| ms(*d)).unwrap_or_default(),
        r(50.0),
        r(99.0),
    );
}

/// The address a node's advertisement names: its listen address, or for a memory
/// listener (which an advertisement cannot carry) a loopback TCP address with the
/// same port number, so the record keeps the size and the checks of the TCP case.
/// Lookups only fetch and verify records; nothing dials these addresses.
fn advertised(addr: &Multiaddr) -> Multiaddr {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Memory(port)) => Multiaddr::empty()
            .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
            .with(Protocol::Tcp(u16::try_from(port % 65_536).unwrap_or(1))),
        _ => addr.clone(),
    }
}

fn main() {
    let a = args();
    let fds = scale::raise_nofile(1024 + a.nodes as u64 * 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(a, fds));
}

async fn bench(a: Args, fds: u64) {
    println!(
        "mesh DHT: {} nodes on {}, {} lookups, {}% stopped, idle timeout {:?}, \
         RLIMIT_NOFILE {fds}, load average before: {}",
        a.nodes,
        if a.memory {
            "the memory transport (noise, yamux)"
        } else {
            "loopback TCP"
        },
        a.lookups,
        a.stop_percent,
        a.idle,
        scale::load_average().unwrap_or_default()
    );
    let mut rng = Rng::new(a.seed);
    let t0 = Instant::now();
    let cpu0 = scale::cpu_time();
    let mut members = Vec::with_capacity(a.nodes);
    let mut addrs: Vec<(PeerId, Multiaddr)> = Vec::with_capacity(a.nodes);
    // Nodes join the way a network grows: each starts with its seeds and bootstraps
    // (as the node does at start); at most `wave` bootstraps run at once.
    let t = Instant::now();
    let mut joining = futures::stream::FuturesUnordered::new();
    let mut boot1 = 0;
    for i in 0..a.nodes {
        while joining.len() >= a.wave {
            if let Some(Ok(Ok(true))) = joining.next().await {
                boot1 += 1;
            }
        }
        let key = NodeKeypair::generate();
        let mut swarm = build_swarm(&key, a.idle, a.memory);
        let addr = listen(&mut swarm, a.memory).await;
        let advert = mesh_advert::own::advert_for(
            &key,
            std::slice::from_ref(&advertised(&addr)),
            1,
            &Timestamp::now(),
            3600,
        )
        .expect("advert");
        if i > 0 {
            for s in rng.sample(i, 3) {
                let (peer, seed) = &addrs[s];
                swarm.behaviour_mut().kad.add_address(peer, seed.clone());
            }
        }
        addrs.push((*swarm.local_peer_id(), addr));
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(swarm, advert, rx));
        let (btx, brx) = oneshot::channel();
        tx.send(Cmd::Bootstrap(btx)).await.expect("node running");
        joining.push(tokio::time::timeout(Duration::from_secs(120), brx));
        members.push(Member {
            node_id: key.node_id(),
            tx,
            task,
        });
        if i % 25 == 0 {
            eprint!(
                "\r  {i} nodes started, {:.1} s   ",
                t.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(r) = joining.next().await {
        if let Ok(Ok(true)) = r {
            boot1 += 1;
        }
    }
    eprintln!();
    let all: Vec<usize> = (0..a.nodes).collect();
    let boot2 = if a.rebootstrap {
        in_waves(&members, &all, a.wave, Cmd::Bootstrap).await
    } else {
        0
    };
    println!(
        "bootstrap: {boot1}/{} ok, then {boot2} more, in {:.1} s",
        a.nodes,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let puts = in_waves(&members, &all, a.wave, Cmd::Put).await;
    println!(
        "advertisement records put: {puts}/{} in {:.1} s; {}",
        a.nodes,
        t.elapsed().as_secs_f64(),
        census(&members, &all).await
    );

    let (found, outcomes) = lookups(&members, &all, a.lookups, a.limit, &mut rng).await;
    report("all up", found, &outcomes);
    let all_up = 100.0 * found as f64 / outcomes.len().max(1) as f64;

    let stop = a.nodes * a.stop_percent / 100;
    let stopped = rng.sample(a.nodes, stop);
    for &i in &stopped {
        members[i].task.abort();
    }
    for &i in &stopped {
        let _ = (&mut members[i].task).await;
    }
    let alive: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !stopped.contains(i))
        .collect();
    println!("stopped {stop} nodes abruptly; {} remain", alive.len());
    let (found, outcomes) = lookups(&members, &alive, a.lookups, a.limit, &mut rng).await;
    report("a third stopped", found, &outcomes);
    let degraded = 100.0 * found as f64 / outcomes.len().max(1) as f64;
    println!("{}", census(&members, &alive).await);

    let cpu = match (cpu0, scale::cpu_time()) {
        (Some(a), Some(b)) => format!("{:.1} s", (b - a).as_secs_f64()),
        _ => "?".into(),
    };
    println!(
        "goals: all up {all_up:.1}% (goal 100%) {}; stopped {degraded:.1}% (goal >= 99%) {}; \
         wall {:.1} s, CPU {cpu}, RSS {:.0} MiB, load average after: {}",
        if all_up >= 100.0 { "met" } else { "MISSED" },
        if degraded >= 99.0 { "met" } else { "MISSED" },
        t0.elapsed().as_secs_f64(),
        scale::rss_mib().unwrap_or(0.0),
        scale::load_average().unwrap_or_default()
    );
    for m in &members {
        m.task.abort();
    }
}
