//! Discovery-key swarm of N in-process members (default 200) on loopback TCP: how long
//! until a join is seen by every member.
//!
//! 1. N `libmesh::node` nodes on one tokio runtime (2 worker threads): a few seeds
//!    connected in a chain, every other node seeded to one of them (round robin).
//! 2. All N join one swarm; convergence = every member table holds the N-1 others
//!    (polled every 250 ms).
//! 3. Rounds: a newcomer seeded to one existing member starts, connects, and joins;
//!    from `join_swarm` returning, the time until each of the N members emitted
//!    `SwarmMemberJoined` for it (median / p90 / p99 / max across members; max = the last
//!    one), and until the newcomer itself saw all N (the announce-back). Then the
//!    newcomer leaves: the time until each member emitted `SwarmMemberLeft` with
//!    reason `leave`. The newcomer stops afterwards, so every round has N members.
//! 4. One original member leaves (a well-connected departure, for comparison).
//!
//! Reported with the process RSS (`VmRSS`), open file descriptors and CPU time.
//!
//! Limits: the seeds run as Kademlia servers with `max_sessions` and `max_established`
//! of 2N + 64 (a seed at the default 32 sessions closes the connection of every later
//! member, its only one); the members run as Kademlia clients with `max_sessions` 256
//! (at the default 32 a member closes every session beyond 32 and Kademlia dials it
//! again: a handshake churn that costs twice the CPU). RLIMIT_NOFILE is raised to
//! 64 per node when the hard limit allows.
//!
//! `cargo bench --bench swarm_join -- --nodes 50` (about two minutes after the build).
//! Flags after `--`: `--nodes N` (or `MESH_SWBENCH_NODES`; default 200, which this
//! 2-core machine cannot carry: see BENCHMARKS.md), `--seeds S` (8), `--rounds R` (5),
//! `--max-sessions M` (members, 256), `--all-servers` (every node a Kademlia server
//! with the default limits), `--join-rate R` (the N joins issued R a second, each on
//! its own task, as independent nodes would; default 0: one after the other, each
//! awaited before the next), `--limit SECS` (bound on every wait, 60), `--settle SECS`
//! (the settled window starts this long after the convergence bound, `3 × --limit`
//! after the joins, whether or not the tables completed sooner; 75), `--steady SECS`
//! (the window of the settled CPU figure, in 5 s slices; 5; 300 spans a presence
//! refresh and a Kademlia bootstrap period), `--census` (start the nodes, print
//! connections and sessions every 5 s for a minute, stop).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libmesh::node::config::{Limits, SwarmSettings};
use libmesh::node::{
    Bootstrap, BootstrapName, KadMode, NodeConfig, NodeEvent, NodeHandle, SeedPeer,
};
use libp2p::Multiaddr;
use mesh_core::{NoTrace, NodeId, NodeKeypair};
use mesh_signal::group::DiscoveryKey;
use mesh_testkit::node::{TestNode, start_node};
use mesh_testkit::try_median;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// jemalloc, as `meshd` runs it (the figures are `meshd`'s); its statistics give the heap
/// the program holds.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The heap the program holds now, in MiB (what RSS holds beyond it is the allocator's:
/// freed pages not yet returned, fragmentation, arenas).
fn heap_mib() -> f64 {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    if epoch::advance().is_err() {
        return f64::NAN;
    }
    stats::allocated::read().map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}

/// jemalloc's own figures, in MiB: pages in active use (allocated plus the free space
/// inside them), its metadata, and what it holds resident (active, metadata and dirty
/// pages not yet returned). RSS beyond `resident` is stacks, the binary and the runtime.
fn allocator_mib() -> String {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return "allocator figures unavailable".into();
    }
    let mib = |r: tikv_jemalloc_ctl::Result<usize>| r.map_or(f64::NAN, |b| b as f64 / 1048576.0);
    format!(
        "jemalloc active {:.0} / metadata {:.0} / resident {:.0} MiB",
        mib(stats::active::read()),
        mib(stats::metadata::read()),
        mib(stats::resident::read())
    )
}

/// File descriptors per node we budget for (listener, store, connections).
const FDS_PER_NODE: u64 = 64;

struct Args {
    nodes: usize,
    seeds: usize,
    rounds: usize,
    max_sessions: usize,
    limit: Duration,
    settle: Duration,
    steady: Duration,
    all_servers: bool,
    /// Joins issued per second without waiting for each to return (0: one after the
    /// other, each awaited).
    join_rate: u64,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let flag = |name: &str| -> Option<u64> {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .and_then(|n| n.parse().ok())
    };
    let env_nodes = std::env::var("MESH_SWBENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok());
    let nodes = flag("--nodes").or(env_nodes).unwrap_or(200).clamp(3, 2000) as usize;
    Args {
        nodes,
        seeds: flag("--seeds").unwrap_or(8).clamp(1, nodes as u64 - 1) as usize,
        rounds: flag("--rounds").unwrap_or(5).clamp(1, 50) as usize,
        max_sessions: flag("--max-sessions").unwrap_or(256).clamp(2, 4096) as usize,
        limit: Duration::from_secs(flag("--limit").unwrap_or(60).clamp(5, 600)),
        settle: Duration::from_secs(flag("--settle").unwrap_or(75).min(3600)),
        steady: Duration::from_secs(flag("--steady").unwrap_or(5).clamp(5, 3600)),
        all_servers: argv.iter().any(|a| a == "--all-servers"),
        join_rate: flag("--join-rate").unwrap_or(0).min(10_000),
    }
}

/// A swarm event of node `i`, stamped when the node's event stream delivered it.
#[derive(Debug)]
enum Seen {
    Joined(NodeId),
    Left(NodeId, &'static str),
}

type Tx = mpsc::UnboundedSender<(usize, Instant, Seen)>;
type Rx = mpsc::UnboundedReceiver<(usize, Instant, Seen)>;

struct Member {
    handle: NodeHandle,
    node: NodeId,
    addr: Multiaddr,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Events of all the nodes, counted: the steady windows print how many came in them
/// (connections opened and members that came and went say whether the swarm churns).
struct Counts {
    connected: AtomicU64,
    joined: AtomicU64,
    left: AtomicU64,
}

static COUNTS: Counts = Counts {
    connected: AtomicU64::new(0),
    joined: AtomicU64::new(0),
    left: AtomicU64::new(0),
};

impl Counts {
    fn get(&self) -> [u64; 3] {
        [&self.connected, &self.joined, &self.left].map(|c| c.load(Ordering::Relaxed))
    }
}

/// CPU and memory over a steady window.
struct Steady {
    /// Mean CPU over the window, in cores.
    cpu: f64,
    /// The lowest and highest 5 s slice.
    slices: (f64, f64),
    rss: f64,
    heap: f64,
    fds: usize,
    threads: usize,
}

fn config(seeds: Vec<SeedPeer>, server: bool, a: &Args) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: if server {
            KadMode::Server
        } else {
            KadMode::Client
        },
        seeds,
        swarm: SwarmSettings::default(),
        // Seeds hold a session with every member (the node default of 32 sessions
        // would make a seed close the connection of every newcomer beyond 32).
        // Every member is on 127.0.0.1, so the per-network shares are the global caps.
        limits: if server && !a.all_servers {
            let all = u32::try_from(2 * a.nodes + 64).unwrap_or(u32::MAX);
            let established = all.max(Limits::default().max_established);
            Limits {
                max_sessions: all as usize,
                max_established: established,
                max_established_incoming_per_ip: established,
                max_pending_incoming_per_ip: Limits::default().max_pending_incoming,
                ..Limits::default()
            }
        } else {
            Limits {
                max_sessions: a.max_sessions,
                max_established_incoming_per_ip: Limits::default().max_established,
                max_pending_incoming_per_ip: Limits::default().max_pending_incoming,
                ..Limits::default()
            }
        },
        ..NodeConfig::default()
    }
}

async fn start(i: usize, seeds: Vec<SeedPeer>, server: bool, a: &Args, tx: Tx) -> Member {
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
        config(seeds, server, a),
        Arc::new(NoTrace),
        Duration::from_secs(30),
    )
    .await;
    // Drain every event (the node drops events beyond its queue), forward the swarm's.
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let at = Instant::now();
            let seen = match e {
                NodeEvent::SwarmMemberJoined { node, .. } => {
                    COUNTS.joined.fetch_add(1, Ordering::Relaxed);
                    Seen::Joined(node)
                }
                NodeEvent::SwarmMemberLeft { node, reason, .. } => {
                    COUNTS.left.fetch_add(1, Ordering::Relaxed);
                    Seen::Left(node, reason)
                }
                NodeEvent::PeerConnected { .. } => {
                    COUNTS.connected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                _ => continue,
            };
            if tx.send((i, at, seen)).is_err() {
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

// ------------------------------------------------------------------- process figures

fn vm_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// User + system CPU time of the process.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// Raises the soft RLIMIT_NOFILE to what `nodes` need (up to the hard limit); returns
/// the soft limit in effect.
fn raise_nofile(nodes: usize) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = 256 + nodes as u64 * FDS_PER_NODE;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) => new,
        Err(e) => {
            eprintln!("cannot raise RLIMIT_NOFILE to {new}: {e}");
            soft
        }
    }
}

/// Connected peers and sessions per node: `median / max` of each.
async fn census(nodes: &[Member]) -> String {
    let (mut peers, mut sessions, mut dht) = (Vec::new(), Vec::new(), Vec::new());
    let mut gossip = Vec::new();
    let mut first = String::new();
    let mut failed = 0;
    let mut send_failed = 0;
    let mut came = libmesh::node::SwarmArrivals::default();
    for (i, m) in nodes.iter().enumerate() {
        let st = m.handle.status().await;
        if i < 10 || i % 50 == 0 {
            match &st {
                Ok(s) => first.push_str(&format!(
                    " {i}:{}/{}/b{}",
                    s.connected_peers, s.mesh.sessions, s.mesh.blocked
                )),
                Err(e) => first.push_str(&format!(" {i}:ERR {e}")),
            }
        }
        failed += usize::from(st.is_err());
        if let Ok(s) = st {
            peers.push(s.connected_peers as f64);
            sessions.push(s.mesh.sessions as f64);
            dht.push(s.dht.mesh_peers as f64);
            gossip.push(s.gossip_mesh_peers as f64);
            send_failed += s.gossip_send_failed;
            came.gossip += s.swarm_arrivals.gossip;
            came.table += s.swarm_arrivals.table;
            came.check += s.swarm_arrivals.check;
        }
    }
    let mm = |v: &mut Vec<f64>| {
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0}/{max:.0}", try_median(v).unwrap_or(0.0))
    };
    let gossip_min = gossip.iter().copied().fold(f64::INFINITY, f64::min);
    let peer_ends: f64 = peers.iter().sum();
    format!(
        "peers {} ({peer_ends:.0} in all) sessions {} mesh-dht {} gossip-mesh {} \
         min {gossip_min:.0} (median/max), \
         {send_failed} gossip sends failed, {failed} status failed; members came by gossip \
         {} / in tables {} / by checks {};{first}",
        mm(&mut peers),
        mm(&mut sessions),
        mm(&mut dht),
        mm(&mut gossip),
        came.gossip,
        came.table,
        came.check
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

// ------------------------------------------------------------------------- measuring

/// The node ids in `m`'s member table of `key` (empty when the node does not answer).
async fn table_of(m: &Member, key: DiscoveryKey) -> HashSet<NodeId> {
    let got = m.handle.swarm_members(key).await.unwrap_or_default();
    got.iter()
        .filter_map(|x| NodeId::parse(&x.node).ok())
        .collect()
}

/// Waits until every member table holds exactly the others of `want` (polled every
/// 250 ms per 50 members, so that the polling, N tables of N members each, stays a small
/// part of the work; bounded); the time it took, or `None` with the number of complete
/// tables.
async fn converge(
    members: &[&Member],
    key: DiscoveryKey,
    want: &HashSet<NodeId>,
    limit: Duration,
) -> Result<Duration, usize> {
    let start = Instant::now();
    loop {
        let mut complete = 0;
        for m in members {
            let got = table_of(m, key).await;
            if got.len() == want.len() - 1 && !got.contains(&m.node) && got.is_subset(want) {
                complete += 1;
            }
        }
        if complete == members.len() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            // Who is missing from the most tables, with its peers and gossip mesh.
            let mut absent: HashMap<NodeId, usize> = HashMap::new();
            for m in members {
                let got = table_of(m, key).await;
                for w in want.iter().filter(|w| **w != m.node && !got.contains(w)) {
                    *absent.entry(*w).or_default() += 1;
                }
            }
            let mut worst: Vec<(usize, NodeId)> = absent.into_iter().map(|(n, c)| (c, n)).collect();
            worst.sort_by(|a, b| b.cmp(a));
            let mut line = format!("{} members missing somewhere;", worst.len());
            for (c, node) in worst.iter().take(8) {
                if let Some((i, m)) = members.iter().enumerate().find(|(_, m)| m.node == *node) {
                    let st = m.handle.status().await;
                    let (p, g) = st.map_or((0, 0), |s| (s.connected_peers, s.gossip_mesh_peers));
                    line.push_str(&format!(
                        " node {i} ({node}) absent from {c} tables ({p} peers, mesh {g});"
                    ));
                }
            }
            eprintln!("{line}");
            return Err(complete);
        }
        let every = 250 * (members.len() as u64 / 50).max(1);
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

/// Collects events until `done` says every watcher saw what it waits for (bounded);
/// returns, per watcher, when it first saw it.
async fn collect(
    rx: &mut Rx,
    watchers: usize,
    limit: Duration,
    mut hit: impl FnMut(usize, &Seen) -> bool,
) -> HashMap<usize, Instant> {
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < watchers {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, at, e))) => {
                if hit(i, &e) {
                    seen.entry(i).or_insert(at);
                }
            }
            _ => break,
        }
    }
    seen
}

/// Latencies of one event across the members, from `t0`.
struct Spread {
    /// Seconds, one per member that saw it.
    times: Vec<f64>,
    /// How many should have.
    of: usize,
}

impl Spread {
    fn new<'a>(t0: Instant, seen: impl Iterator<Item = &'a Instant>, of: usize) -> Self {
        let mut times: Vec<f64> = seen
            .map(|at| at.saturating_duration_since(t0).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        Spread { times, of }
    }

    fn pct(&self, p: f64) -> Option<f64> {
        if self.times.is_empty() {
            return None;
        }
        let i = ((self.times.len() as f64 - 1.0) * p).round() as usize;
        Some(self.times[i])
    }

    fn complete(&self) -> bool {
        self.times.len() == self.of
    }

    /// `median / p90 / p99 / max`, with `(k/of)` when not everyone saw it.
    fn cell(&self) -> String {
        let f = |x: Option<f64>| x.map_or_else(|| "–".into(), ms);
        let mut s = format!(
            "{} / {} / {} / {}",
            f(self.pct(0.5)),
            f(self.pct(0.9)),
            f(self.pct(0.99)),
            f(self.pct(1.0))
        );
        if !self.complete() {
            s.push_str(&format!(" ({}/{} saw it)", self.times.len(), self.of));
        }
        s
    }
}

fn ms(secs: f64) -> String {
    if secs < 10.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else {
        format!("{secs:.1} s")
    }
}

struct Round {
    join: Spread,
    back: Spread,
    leave: Spread,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) does not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Ok(f) = std::env::var("MESH_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let a = args();
    let nofile = raise_nofile(a.nodes + a.rounds);
    let rt = runtime();
    rt.block_on(run(a, nofile));
    // Nodes and their tasks are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
}

async fn run(a: Args, nofile: u64) {
    let n = a.nodes;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (rss0, heap0) = (vm_rss_mib(), heap_mib());
    let cpu0 = cpu_time();

    // ---- start: seeds in a chain, the others spread over them.
    let t = Instant::now();
    let mut nodes: Vec<Member> = Vec::with_capacity(n);
    for i in 0..n {
        let seeds = match i {
            0 => vec![],
            i if i < a.seeds => vec![seed(&nodes[i - 1])],
            i => vec![seed(&nodes[i % a.seeds])],
        };
        let server = i < a.seeds || a.all_servers;
        nodes.push(start(i, seeds, server, &a, tx.clone()).await);
        if (i + 1) % 25 == 0 {
            eprintln!(
                "{} nodes: {} fds, RSS {:.0} MiB, heap {:.0} MiB, {}",
                i + 1,
                open_fds(),
                vm_rss_mib(),
                heap_mib(),
                census(&nodes).await
            );
        }
    }
    let started = t.elapsed();
    if std::env::args().any(|a| a == "--census") {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!(
                "{:.0?}: {} fds, RSS {:.0} MiB, {}",
                t.elapsed(),
                open_fds(),
                vm_rss_mib(),
                census(&nodes).await
            );
        }
        return;
    }
    // Every node connected to its seed (bounded), then a moment for identify and Kademlia.
    let t_conn = Instant::now();
    for m in &nodes[1..] {
        while m.handle.status().await.map_or(0, |s| s.connected_peers) == 0 {
            assert!(
                t_conn.elapsed() < a.limit,
                "a node not connected after {:?}",
                a.limit
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_idle, heap_idle) = (vm_rss_mib(), heap_mib());
    eprintln!(
        "{n} nodes up in {started:.1?}, connected after {:.1?}; RSS {rss_idle:.0} MiB, heap \
         {heap_idle:.0} MiB, {} fds, {} threads, load {}",
        t_conn.elapsed(),
        open_fds(),
        threads(),
        load()
    );

    // ---- everyone joins.
    let key = DiscoveryKey::from_name("libmesh swarm_join bench");
    let cpu_join0 = cpu_time();
    let t = Instant::now();
    if a.join_rate == 0 {
        for m in &nodes {
            assert!(m.handle.join_swarm(key).await.unwrap());
        }
    } else {
        // Each member joins on its own, as independent nodes would: one every
        // 1/rate s, none waiting for the others' answers.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.join_rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut joins = Vec::with_capacity(nodes.len());
        for m in &nodes {
            tick.tick().await;
            let handle = m.handle.clone();
            joins.push(tokio::spawn(async move { handle.join_swarm(key).await }));
        }
        // Bounded: under overload the answers can take long; say how many came back.
        let waiting = Instant::now();
        let mut said = Instant::now();
        loop {
            let back = joins.iter().filter(|j| j.is_finished()).count();
            if back == joins.len() || waiting.elapsed() > a.limit * 3 {
                eprintln!(
                    "{back}/{} joins returned after {:?}",
                    joins.len(),
                    t.elapsed()
                );
                break;
            }
            if said.elapsed() >= Duration::from_secs(30) {
                eprintln!(
                    "{back}/{} joins returned after {:?}",
                    joins.len(),
                    t.elapsed()
                );
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for j in joins.into_iter().filter(|j| j.is_finished()) {
            assert!(j.await.unwrap().unwrap());
        }
    }
    let issued = t.elapsed();
    let all: HashSet<NodeId> = nodes.iter().map(|m| m.node).collect();
    let refs: Vec<&Member> = nodes.iter().collect();
    let converge_from = tokio::time::Instant::now();
    let convergence = converge(&refs, key, &all, a.limit * 3).await;
    let cpu_join = cpu_time() - cpu_join0;
    let mut joined_events = 0usize;
    while let Ok((_, _, e)) = rx.try_recv() {
        joined_events += usize::from(matches!(e, Seen::Joined(_)));
    }
    match convergence {
        Ok(d) => eprintln!(
            "converged {d:.1?} after the first join ({joined_events} Joined events, {:.1} s CPU)",
            cpu_join.as_secs_f64()
        ),
        Err(k) => eprintln!(
            "NOT converged: {k}/{n} tables complete after {:?}",
            a.limit * 3
        ),
    }
    // Steady state: CPU over `--steady` (5 s slices), with nothing happening but timers,
    // keepalives, presence refreshes and Kademlia's periodic bootstraps.
    let steady = |label: String, window: Duration| {
        let nodes = &nodes;
        async move {
            let (c0, t0, n0) = (cpu_time(), Instant::now(), COUNTS.get());
            let sigs0 = libp2p::gossipsub::signatures_checked();
            let mut slices = Vec::new();
            while t0.elapsed() < window {
                let (c, t) = (cpu_time(), Instant::now());
                tokio::time::sleep(Duration::from_secs(5)).await;
                slices.push((cpu_time() - c).as_secs_f64() / t.elapsed().as_secs_f64());
            }
            let cpu = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
            let (lo, hi) = slices
                .iter()
                .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
            let (rss, heap, fds, threads) = (vm_rss_mib(), heap_mib(), open_fds(), threads());
            let series: Vec<String> = slices.iter().map(|x| format!("{:.0}", x * 100.0)).collect();
            let [conns, joined, left] = {
                let n1 = COUNTS.get();
                [0, 1, 2].map(|i| n1[i] - n0[i])
            };
            eprintln!(
                "{label}: {:.0}% of one core over {:.0?} (5 s slices {:.0}%..{:.0}%: {}), RSS \
                 {rss:.0} MiB, heap {:.0} MiB ({}), {fds} fds, load {}; in the window \
                 {conns} connections opened, {joined} members came and {left} went; gossipsub \
                 verified {:.0} signatures a second in full; {}",
                cpu * 100.0,
                t0.elapsed(),
                lo * 100.0,
                hi * 100.0,
                series.join(" "),
                heap,
                allocator_mib(),
                load(),
                (libp2p::gossipsub::signatures_checked() - sigs0) as f64
                    / t0.elapsed().as_secs_f64(),
                census(nodes).await
            );
            Steady {
                cpu,
                slices: (lo, hi),
                rss,
                heap,
                fds,
                threads,
            }
        }
    };
    let mut settled = steady("steady after the joins".into(), Duration::from_secs(5)).await;
    // Let the idle rule close what the start and the joins opened (its grace is the
    // nodes' `idle_timeout_secs`, 60 s), so that the rounds run on the settled mesh. The
    // settled window starts `--settle` after the convergence bound, whether or not the
    // tables completed sooner: a run whose tables completed in 13 s otherwise measured
    // its window almost three minutes earlier in the swarm's life than one whose
    // tables did not, with more of the joins' connections still open.
    if !a.settle.is_zero() {
        tokio::time::sleep_until(converge_from + a.limit * 3 + a.settle).await;
        // A line to start a profiler on (the window's CPU is what item 2 measures).
        eprintln!("settled window begins: {:?}", a.steady);
        settled = steady(format!("settled {:?}", a.settle), a.steady).await;
    }
    let Steady {
        cpu: idle_cpu,
        slices,
        rss: rss_n,
        heap: heap_n,
        fds: fds_n,
        threads: threads_n,
    } = settled;

    // ---- newcomers: join, seen by all; announce-back; leave, seen by all.
    let mut rounds = Vec::new();
    for r in 0..a.rounds {
        // Seeded to one seed (an existing member), a different one every round.
        let via = r % a.seeds;
        let idx = n + r;
        let newcomer = start(idx, vec![seed(&nodes[via])], a.all_servers, &a, tx.clone()).await;
        let t_conn = Instant::now();
        while newcomer
            .handle
            .status()
            .await
            .map_or(0, |s| s.connected_peers)
            == 0
        {
            assert!(t_conn.elapsed() < a.limit, "newcomer not connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
        let who = newcomer.node;

        assert!(newcomer.handle.join_swarm(key).await.unwrap());
        let t0 = Instant::now();
        let mut join_at: HashMap<usize, Instant> = HashMap::new();
        let mut back_at: HashMap<NodeId, Instant> = HashMap::new();
        let deadline = tokio::time::Instant::now() + a.limit;
        while join_at.len() < n || back_at.len() < n {
            let Ok(Some((i, at, e))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            match e {
                Seen::Joined(node) if i < n && node == who => {
                    join_at.entry(i).or_insert(at);
                }
                Seen::Joined(node) if i == idx && all.contains(&node) => {
                    back_at.entry(node).or_insert(at);
                }
                _ => {}
            }
        }
        let join = Spread::new(t0, join_at.values(), n);
        if join_at.len() < n {
            let mut missing = String::new();
            for (i, m) in nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !join_at.contains_key(i))
            {
                if let Ok(st) = m.handle.status().await {
                    missing.push_str(&format!(
                        " {i}:{}/{}",
                        st.connected_peers, st.gossip_mesh_peers
                    ));
                }
            }
            eprintln!("round {r}: did not see the join (node:peers/gossip mesh):{missing}");
        }
        let back = Spread::new(t0, back_at.values(), n);

        // Give the newcomer's mesh a moment (its re-announce is due only near TTL/2).
        tokio::time::sleep(Duration::from_secs(1)).await;
        while rx.try_recv().is_ok() {}
        assert!(newcomer.handle.leave_swarm(key).await.unwrap());
        let t0 = Instant::now();
        let mut other_reason = 0;
        let left = collect(&mut rx, n, a.limit, |i, e| match e {
            Seen::Left(node, reason) if i < n && *node == who => {
                other_reason += usize::from(*reason != "leave");
                *reason == "leave"
            }
            _ => false,
        })
        .await;
        if other_reason > 0 {
            eprintln!("round {r}: {other_reason} members saw the newcomer expire, not leave");
        }
        let leave = Spread::new(t0, left.values(), n);
        eprintln!(
            "round {r} (via node {via}): join seen by all {} | announce-back {} | leave {}",
            join.cell(),
            back.cell(),
            leave.cell()
        );
        rounds.push(Round { join, back, leave });
        newcomer.handle.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), newcomer.task).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // ---- one original member leaves (well meshed, unlike a newcomer).
    while rx.try_recv().is_ok() {}
    let leaver = n - 1;
    let who = nodes[leaver].node;
    assert!(nodes[leaver].handle.leave_swarm(key).await.unwrap());
    let t0 = Instant::now();
    let left = collect(
        &mut rx,
        n - 1,
        a.limit,
        |i, e| matches!(e, Seen::Left(node, "leave") if i < leaver && *node == who),
    )
    .await;
    let veteran_leave = Spread::new(t0, left.values(), n - 1);

    let (mut dropped, mut send_failed) = (0, 0);
    let mut came = libmesh::node::SwarmArrivals::default();
    for m in &nodes {
        if let Ok(s) = m.handle.status().await {
            dropped += s.events_dropped;
            send_failed += s.gossip_send_failed;
            came.gossip += s.swarm_arrivals.gossip;
            came.table += s.swarm_arrivals.table;
            came.check += s.swarm_arrivals.check;
        }
    }
    let cpu_total = cpu_time() - cpu0;

    // ---- report.
    println!(
        "\nswarm of {n} in-process members on loopback TCP: {} seeds in a chain (Kademlia \
         server, max_sessions {}), the others round robin over them (Kademlia {}, \
         max_sessions {}); presence TTL {} s ({} s at {n} members); load {}\n",
        a.seeds,
        config(vec![], true, &a).limits.max_sessions,
        if a.all_servers { "server" } else { "client" },
        a.max_sessions,
        SwarmSettings::default().ttl_secs,
        mesh_signal::group::presence_ttl_secs(
            SwarmSettings::default().ttl_secs,
            n.saturating_sub(1)
        ),
        load()
    );
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| start {n} nodes (sequential, each until listening) | {} |",
        ms(started.as_secs_f64())
    );
    println!(
        "| all {n} join: every table holds the {} others | {} ({} `join_swarm` calls took {}; {:.1} s CPU) |",
        n - 1,
        match convergence {
            Ok(d) => ms(d.as_secs_f64()),
            Err(k) => format!("not within {:?} ({k}/{n} complete)", a.limit * 3),
        },
        n,
        ms(issued.as_secs_f64()),
        cpu_join.as_secs_f64()
    );
    println!(
        "| RSS: empty process / {n} nodes idle / in the swarm, settled | {rss0:.0} / {rss_idle:.0} / {rss_n:.0} MiB ({:.2} MiB per node) |",
        (rss_n - rss0) / n as f64
    );
    println!(
        "| heap the program holds: empty process / {n} nodes idle / in the swarm, settled | {heap0:.0} / {heap_idle:.0} / {heap_n:.0} MiB ({:.2} MiB per node) |",
        (heap_n - heap0) / n as f64
    );
    println!(
        "| open fds / threads at {n} nodes (RLIMIT_NOFILE {nofile}) | {fds_n} / {threads_n} |"
    );
    println!(
        "| CPU in steady state (timers, keepalives, heartbeats; after settling; mean over {:?}, 5 s slices) | {:.0}% of one core ({:.0}%..{:.0}%) |",
        a.steady,
        idle_cpu * 100.0,
        slices.0 * 100.0,
        slices.1 * 100.0
    );
    println!("| events dropped by the nodes' queues | {dropped} |");
    println!(
        "| gossipsub messages not sent to slow peers (queue full or timed out) | {send_failed} |"
    );
    println!(
        "| members that came into the tables: by gossip / in a fetched table / by a table check (what gossip lost) | {} / {} / {} |",
        came.gossip, came.table, came.check
    );
    println!(
        "| total CPU of the run | {:.0} s |",
        cpu_total.as_secs_f64()
    );
    println!(
        "| gossipsub signatures verified in full in the run (a copy already verified is not) | {} |",
        libp2p::gossipsub::signatures_checked()
    );
    println!(
        "\nnewcomer seeded to one member, from `join_swarm` returning; median / p90 / p99 / max \
         across the {n} members (max = the last one)\n"
    );
    println!(
        "| round | join seen by members | newcomer sees all {n} (announce-back) | leave seen by members |"
    );
    println!("|---|---|---|---|");
    for (r, x) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} |",
            r + 1,
            x.join.cell(),
            x.back.cell(),
            x.leave.cell()
        );
    }
    let med = |f: &dyn Fn(&Round) -> &Spread, p: f64| {
        let v: Vec<f64> = rounds.iter().filter_map(|x| f(x).pct(p)).collect();
        try_median(&v).map_or_else(|| "–".into(), ms)
    };
    println!(
        "| median of rounds | {} / {} / {} / {} | {} / {} / {} / {} | {} / {} / {} / {} |",
        med(&|x| &x.join, 0.5),
        med(&|x| &x.join, 0.9),
        med(&|x| &x.join, 0.99),
        med(&|x| &x.join, 1.0),
        med(&|x| &x.back, 0.5),
        med(&|x| &x.back, 0.9),
        med(&|x| &x.back, 0.99),
        med(&|x| &x.back, 1.0),
        med(&|x| &x.leave, 0.5),
        med(&|x| &x.leave, 0.9),
        med(&|x| &x.leave, 0.99),
        med(&|x| &x.leave, 1.0),
    );
    println!(
        "\nan original member leaves: seen by the {} others {}",
        n - 1,
        veteran_leave.cell()
    );
}
