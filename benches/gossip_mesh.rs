//! Gossipsub at scale: N in-process nodes (default 100) on loopback TCP, each running
//! the node's own gossipsub (`libmesh::node::build::gossipsub`: strict validation with
//! the application's verdict, IDONTWANT above 1000 bytes, IHAVE to `gossip_lazy` peers,
//! peer scoring), all subscribed to one topic.
//!
//! 1. Node i dials up to three random earlier nodes (a connected random graph, mean
//!    degree about 6, gossipsub's mesh degree); every node subscribes; the bench waits
//!    until every node has a mesh peer, then three heartbeats.
//! 2. `--messages` (1,000) messages of `--size` bytes (256), each from a random node,
//!    one every `--interval-ms` (10). Every receiver accepts each message (the node's
//!    validation verdict) and records the delay since publication.
//! 3. Delivered % (of messages × (N-1) receivers), delivery latency p50/p99/max over
//!    every delivery, and the time until the last receiver got a message (p50/p99).
//!
//! `cargo bench --bench gossip_mesh` (about a minute after the build). Flags after `--`:
//! `--nodes N` (100), `--messages M` (1000), `--size B` (256), `--interval-ms I` (10),
//! `--seed S` (1), `--limit SECS` (bound on every wait, 60).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod scale;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::build::gossipsub as node_gossipsub;
use libmesh::node::config::Limits;
use libmesh::node::gossip_filter::Gossipsub;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use mesh_core::NodeKeypair;
use scale::{Rng, ms, percentile};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const TOPIC: &str = "libmesh-bench";

/// What every receiver records: per message, how many received it, the delay of each
/// delivery and of the last one.
struct Deliveries {
    t0: Instant,
    count: Vec<u32>,
    latencies: Vec<Duration>,
    last: Vec<Duration>,
    malformed: usize,
}

type Shared = Arc<Mutex<Deliveries>>;

enum Cmd {
    Publish(Vec<u8>, oneshot::Sender<bool>),
    MeshPeers(oneshot::Sender<usize>),
}

struct Member {
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

fn build_swarm(key: &NodeKeypair, max_transmit: usize) -> Swarm<Gossipsub> {
    SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| node_gossipsub(k.clone(), max_transmit).expect("node gossipsub"))
        .expect("behaviour")
        // The node's default idle timeout.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

async fn listen(swarm: &mut Swarm<Gossipsub>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Payload: message number (u32), publication time in ns since `t0` (u64), padding.
fn payload(seq: u32, t0: Instant, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(12));
    p.extend_from_slice(&seq.to_be_bytes());
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    p.extend_from_slice(&ns.to_be_bytes());
    p.resize(size.max(12), 0xa5);
    p
}

fn record(shared: &Shared, data: &[u8]) {
    let mut d = shared.lock().expect("lock");
    let (Some(seq), Some(ns)) = (data.get(0..4), data.get(4..12)) else {
        d.malformed += 1;
        return;
    };
    let seq = u32::from_be_bytes(seq.try_into().unwrap_or_default()) as usize;
    let sent = Duration::from_nanos(u64::from_be_bytes(ns.try_into().unwrap_or_default()));
    let delay = d.t0.elapsed().saturating_sub(sent);
    if seq >= d.count.len() {
        d.malformed += 1;
        return;
    }
    d.count[seq] += 1;
    d.latencies.push(delay);
    d.last[seq] = d.last[seq].max(delay);
}

async fn run(mut swarm: Swarm<Gossipsub>, shared: Shared, mut rx: mpsc::Receiver<Cmd>) {
    let topic = IdentTopic::new(TOPIC);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Publish(data, tx)) => {
                    let r = swarm.behaviour_mut().publish(topic.clone(), data);
                    let _ = tx.send(r.is_ok());
                }
                Some(Cmd::MeshPeers(tx)) => {
                    let _ = tx.send(swarm.behaviour().mesh_peers(&topic.hash()).count());
                }
            },
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                }) = event
                {
                    // The node's verdict on a valid message: accept (and forward).
                    swarm.behaviour_mut().report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Accept,
                    );
                    record(&shared, &message.data);
                }
            }
        }
    }
}

async fn mesh_peers(members: &[Member]) -> Vec<usize> {
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let (tx, rx) = oneshot::channel();
        let _ = m.tx.send(Cmd::MeshPeers(tx)).await;
        out.push(rx.await.unwrap_or(0));
    }
    out
}

fn main() {
    let nodes = scale::flag("--nodes").unwrap_or(100).clamp(3, 1000) as usize;
    scale::raise_nofile(1024 + nodes as u64 * 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(nodes));
}

async fn bench(nodes: usize) {
    let f = scale::flag;
    let messages = f("--messages").unwrap_or(1000).clamp(1, 1_000_000) as usize;
    let size = f("--size").unwrap_or(256).clamp(12, 60_000) as usize;
    let interval = Duration::from_millis(f("--interval-ms").unwrap_or(10).min(10_000));
    let limit = Duration::from_secs(f("--limit").unwrap_or(60).clamp(5, 600));
    let mut rng = Rng::new(f("--seed").unwrap_or(1));
    println!(
        "gossipsub: {nodes} nodes on loopback TCP, {messages} messages of {size} bytes, one \
         every {interval:?}, load average before: {}",
        scale::load_average().unwrap_or_default()
    );
    let t0 = Instant::now();
    let cpu0 = scale::cpu_time();
    let shared: Shared = Arc::new(Mutex::new(Deliveries {
        t0,
        count: vec![0; messages],
        latencies: Vec::with_capacity(messages * nodes),
        last: vec![Duration::ZERO; messages],
        malformed: 0,
    }));
    let max_transmit = Limits::default().max_gossip_bytes;
    let topic = IdentTopic::new(TOPIC);
    let mut members = Vec::with_capacity(nodes);
    let mut addrs: Vec<Multiaddr> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let key = NodeKeypair::generate();
        let mut swarm = build_swarm(&key, max_transmit);
        swarm.behaviour_mut().subscribe(&topic).expect("subscribe");
        let addr = listen(&mut swarm).await;
        for j in rng.sample(i, 3) {
            swarm.dial(addrs[j].clone()).expect("dial");
        }
        addrs.push(addr);
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(swarm, shared.clone(), rx));
        members.push(Member { tx, task });
    }
    let start = Instant::now();
    loop {
        let peers = mesh_peers(&members).await;
        let lonely = peers.iter().filter(|&&p| p == 0).count();
        if lonely == 0 || start.elapsed() > limit {
            let mut sorted = peers.clone();
            sorted.sort_unstable();
            println!(
                "mesh formed in {:.1} s: mesh peers min/median/max {}/{}/{}, {lonely} nodes without",
                start.elapsed().as_secs_f64(),
                sorted[0],
                percentile(&sorted, 50.0).unwrap_or(0),
                sorted[sorted.len() - 1],
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Three heartbeats (1 s each) for the meshes to fill up to their degree.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut publisher = vec![0usize; messages];
    let mut published = 0;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publishing = Instant::now();
    for (seq, from) in publisher.iter_mut().enumerate() {
        tick.tick().await;
        *from = rng.below(nodes);
        let (tx, rx) = oneshot::channel();
        let data = payload(u32::try_from(seq).unwrap_or(u32::MAX), t0, size);
        let _ = members[*from].tx.send(Cmd::Publish(data, tx)).await;
        if rx.await.unwrap_or(false) {
            published += 1;
        }
    }
    let publish_secs = publishing.elapsed().as_secs_f64();
    let expected = (messages * (nodes - 1)) as u64;
    let wait = Instant::now();
    loop {
        let got: u64 = shared
            .lock()
            .expect("lock")
            .count
            .iter()
            .map(|&c| u64::from(c))
            .sum();
        if got >= expected || wait.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = shared.lock().expect("lock");
    let delivered: u64 = d
        .count
        .iter()
        .map(|&c| u64::from(c).min(nodes as u64 - 1))
        .sum();
    let complete = d.count.iter().filter(|&&c| c as usize >= nodes - 1).count();
    let mut lat = d.latencies.clone();
    lat.sort_unstable();
    let mut last: Vec<Duration> = d
        .last
        .iter()
        .zip(&d.count)
        .filter(|(_, c)| **c as usize >= nodes - 1)
        .map(|(l, _)| *l)
        .collect();
    last.sort_unstable();
    let p = |v: &[Duration], q| percentile(v, q).map(ms).unwrap_or_default();
    let pct = 100.0 * delivered as f64 / expected.max(1) as f64;
    println!(
        "published {published}/{messages} in {publish_secs:.1} s; delivered {delivered}/{expected} \
         ({pct:.2}%), {complete}/{messages} messages reached all {} others; malformed {}",
        nodes - 1,
        d.malformed
    );
    println!(
        "delivery latency p50 {} ms p99 {} ms max {} ms; until the last receiver p50 {} ms p99 {} ms",
        p(&lat, 50.0),
        p(&lat, 99.0),
        lat.last().map(|x| ms(*x)).unwrap_or_default(),
        p(&last, 50.0),
        p(&last, 99.0),
    );
    let cpu = match (cpu0, scale::cpu_time()) {
        (Some(a), Some(b)) => format!("{:.1} s", (b - a).as_secs_f64()),
        _ => "?".into(),
    };
    println!(
        "goal: 100% delivered {}; wall {:.1} s, CPU {cpu}, RSS {:.0} MiB, load average after: {}",
        if delivered == expected {
            "met"
        } else {
            "MISSED"
        },
        t0.elapsed().as_secs_f64(),
        scale::rss_mib().unwrap_or(0.0),
        scale::load_average().unwrap_or_default()
    );
    drop(d);
    for m in &members {
        m.task.abort();
    }
}
