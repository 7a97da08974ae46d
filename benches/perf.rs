//! Single-stream throughput of the perf protocol (`/perf/1.0.0`) on loopback, both
//! ways: upload 64 MiB (nothing back) and download 64 MiB (nothing up), for
//!
//! - a plain tokio TCP socket doing the same exchange (the ceiling),
//! - two bare rust-libp2p swarms with only the perf behaviour, over TCP (noise + yamux)
//!   and over QUIC,
//! - two libmesh nodes (`perf = true`, loopback TCP and QUIC; [`libmesh_case`]),
//! - two bare swarms over TCP with libmesh's yamux settings ([`capped_swarm`]),
//! - the same with identify, ping, Kademlia and gossipsub beside the perf behaviour
//!   ([`standard_swarm`]; `--behaviours LIST` keeps only some of them),
//! - with `--js` (issue 18.5): js-libp2p 3 against itself, js-libp2p client against a
//!   libmesh node and libmesh client against js-libp2p, over TCP + noise + yamux (the
//!   interop node `tests/interop/js/node.mjs` with its `/perf/1.0.0` from `perf.mjs`;
//!   needs `npm ci --prefix tests/interop/js`).
//!
//! The cases alternate within every round, so background load hits all of them alike;
//! the table shows the median MiB/s per case and direction, and the ratios.
//!
//! `cargo bench --bench perf` (about a minute; `-- --rounds N` to change the rounds;
//! `-- --js` adds the js-libp2p cases, measured in the same rounds; `--only SUBSTR`
//! and `--dir up|down` measure a subset, for profiling; `--behaviours LIST` for the
//! standard-behaviours case; `PERF_LOG=yamux=debug` logs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/js_node.rs"]
mod js_node;
#[path = "support/standard_swarm.rs"]
mod standard_swarm;

use js_node::JsNode;
use serde_json::json;

use mesh_testkit::{Net, net_swarm, try_median};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::perf::{self, Behaviour, RunParams};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use libp2p_stream::Control;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const MIB: u64 = 1024 * 1024;
/// Bytes per run and direction.
const SIZE: u64 = 64 * MIB;
const DEFAULT_ROUNDS: usize = 31;
/// Rounds stop early (after at least 3) once this much time has gone.
const BUDGET: Duration = Duration::from_secs(150);
/// The bound on one run.
const RUN_LIMIT: Duration = Duration::from_secs(60);
const BUF: usize = perf::BUFFER_SIZE;

#[derive(Debug, Clone, Copy)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn params(self) -> RunParams {
        match self {
            Dir::Up => RunParams {
                upload_bytes: SIZE,
                download_bytes: 0,
            },
            Dir::Down => RunParams {
                upload_bytes: 0,
                download_bytes: SIZE,
            },
        }
    }
}

/// Something to measure: a plain TCP server, or a perf client with its peer.
enum Target {
    Tcp(SocketAddr),
    Libp2p {
        control: Control,
        peer: PeerId,
        /// Tasks driving the swarms (aborted at the end).
        tasks: Vec<JoinHandle<()>>,
    },
    /// A js-libp2p node's `perf` command against `addr` (its own timing).
    Js {
        client: Box<JsNode>,
        addr: String,
        /// A js server node, if the server is one (kept running).
        server: Option<Box<JsNode>>,
    },
}

struct Case {
    name: &'static str,
    target: Target,
    up: Vec<f64>,
    down: Vec<f64>,
}

impl Case {
    fn new(name: &'static str, target: Target) -> Self {
        Case {
            name,
            target,
            up: Vec::new(),
            down: Vec::new(),
        }
    }

    /// One run; MiB/s in the direction measured.
    async fn measure(&mut self, dir: Dir) -> f64 {
        let params = dir.params();
        let (bytes, time) = match &mut self.target {
            Target::Tcp(addr) => tcp_client(*addr, params).await,
            Target::Libp2p { control, peer, .. } => {
                let stats = tokio::time::timeout(RUN_LIMIT, perf::run(control, *peer, params))
                    .await
                    .expect("perf run timed out")
                    .expect("perf run failed");
                match dir {
                    Dir::Up => (stats.uploaded, stats.upload),
                    Dir::Down => (stats.downloaded, stats.download),
                }
            }
            Target::Js { client, addr, .. } => {
                let out = client
                    .call(json!({
                        "cmd": "perf",
                        "addr": addr,
                        "upload": params.upload_bytes,
                        "download": params.download_bytes,
                        "timeoutMs": RUN_LIMIT.as_millis() as u64,
                    }))
                    .await
                    .unwrap_or_else(|e| panic!("{}: js perf failed: {e}", self.name));
                let (bytes, ms) = match dir {
                    Dir::Up => (&out["uploaded"], &out["uploadMs"]),
                    Dir::Down => (&out["downloaded"], &out["downloadMs"]),
                };
                let ms = ms.as_f64().unwrap_or_else(|| panic!("{out}"));
                (
                    bytes.as_u64().unwrap_or_else(|| panic!("{out}")),
                    Duration::from_secs_f64(ms / 1000.0),
                )
            }
        };
        assert_eq!(bytes, SIZE, "{}: {dir:?} moved {bytes} bytes", self.name);
        bytes as f64 / MIB as f64 / time.as_secs_f64()
    }

    async fn stop(self) {
        match self.target {
            Target::Libp2p { tasks, .. } => {
                for task in tasks {
                    task.abort();
                }
            }
            Target::Js { client, server, .. } => {
                client.shutdown().await;
                if let Some(server) = server {
                    server.shutdown().await;
                }
            }
            Target::Tcp(_) => {}
        }
    }
}

// ---------------------------------------------------------------- the ceiling: tokio TCP

/// The perf exchange on a plain socket: request size, upload, half-close; answer, close.
async fn tcp_server(listener: TcpListener) {
    // Runs until the runtime shuts down.
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        socket.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; BUF];
            let mut header = [0u8; 8];
            socket.read_exact(&mut header).await.unwrap();
            while socket.read(&mut buf).await.unwrap() > 0 {}
            let zeros = vec![0u8; BUF];
            let mut left = u64::from_be_bytes(header);
            while left > 0 {
                let n = left.min(BUF as u64) as usize;
                socket.write_all(&zeros[..n]).await.unwrap();
                left -= n as u64;
            }
            socket.shutdown().await.unwrap();
        });
    }
}

/// Timed like `perf::client`: upload until the answer begins, download from there on.
async fn tcp_client(addr: SocketAddr, params: RunParams) -> (u64, Duration) {
    let run = async {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.set_nodelay(true).unwrap();
        let zeros = vec![0u8; BUF];
        let mut buf = vec![0u8; BUF];
        let start = Instant::now();
        socket
            .write_all(&params.download_bytes.to_be_bytes())
            .await
            .unwrap();
        let mut left = params.upload_bytes;
        while left > 0 {
            let n = left.min(BUF as u64) as usize;
            socket.write_all(&zeros[..n]).await.unwrap();
            left -= n as u64;
        }
        socket.shutdown().await.unwrap();
        let mut n = socket.read(&mut buf).await.unwrap();
        let upload = start.elapsed();
        let download_start = Instant::now();
        let mut received = 0u64;
        while n > 0 {
            received += n as u64;
            n = socket.read(&mut buf).await.unwrap();
        }
        if params.upload_bytes > 0 {
            (params.upload_bytes, upload)
        } else {
            (received, download_start.elapsed())
        }
    };
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("tcp run timed out")
}

async fn tcp_case() -> Case {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tcp_server(listener));
    Case::new("tokio TCP socket (ceiling)", Target::Tcp(addr))
}

// ------------------------------------------------------------ bare rust-libp2p swarms

fn swarm(net: Net) -> Swarm<Behaviour> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    net_swarm(&key, net, Duration::from_secs(600), Behaviour::new())
}

/// A bare TCP swarm with libmesh's yamux settings (`libmesh::node::muxer`: stream
/// windows capped at 1 MiB), to tell the window cap apart from the rest of the node.
fn capped_swarm() -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libmesh::node::muxer::config,
        )
        .unwrap()
        .with_behaviour(|_| Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

fn drive<B>(mut swarm: Swarm<B>) -> JoinHandle<()>
where
    B: libp2p::swarm::NetworkBehaviour + Send,
    B::ToSwarm: Send,
{
    tokio::spawn(async move {
        // Runs until aborted.
        loop {
            swarm.select_next_some().await;
        }
    })
}

async fn libp2p_case(name: &'static str, net: Net) -> Case {
    libp2p_case_with(name, net, || swarm(net)).await
}

async fn libp2p_case_with(
    name: &'static str,
    net: Net,
    swarm: impl Fn() -> Swarm<Behaviour>,
) -> Case {
    libp2p_case_of(name, net, swarm, Behaviour::new_control).await
}

/// Two swarms of behaviour `B` connected over `net`; `control` takes the perf stream
/// control out of `B`.
async fn libp2p_case_of<B>(
    name: &'static str,
    net: Net,
    swarm: impl Fn() -> Swarm<B>,
    control: fn(&B) -> Control,
) -> Case
where
    B: libp2p::swarm::NetworkBehaviour + Send,
    B::ToSwarm: Send,
{
    let mut server = swarm();
    server.listen_on(net.listen_addr()).unwrap();
    let setup = async {
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        let peer = *server.local_peer_id();
        let mut client = swarm();
        client.dial(addr.with(Protocol::P2p(peer))).unwrap();
        let (mut at_server, mut at_client) = (false, false);
        while !(at_server && at_client) {
            tokio::select! {
                e = server.select_next_some() => {
                    at_server |= matches!(e, SwarmEvent::ConnectionEstablished { .. });
                }
                e = client.select_next_some() => {
                    if let SwarmEvent::OutgoingConnectionError { error, .. } = &e {
                        panic!("{name}: dial failed: {error}");
                    }
                    at_client |= matches!(e, SwarmEvent::ConnectionEstablished { .. });
                }
            }
        }
        (peer, client)
    };
    let (peer, client) = tokio::time::timeout(RUN_LIMIT, setup)
        .await
        .expect("connecting timed out");
    let serving = perf::spawn_server(control(server.behaviour()), 4).unwrap();
    let control = control(client.behaviour());
    Case::new(
        name,
        Target::Libp2p {
            control,
            peer,
            tasks: vec![serving, drive(server), drive(client)],
        },
    )
}

// --------------------------------------------------------------------- libmesh nodes

/// A libmesh node with `perf = true` listening on loopback, and its stream control.
async fn mesh_node(net: Net) -> (mesh_testkit::node::TestNode, Control) {
    use libmesh::node::{Bootstrap, BootstrapName, NodeConfig};
    use mesh_testkit::node::start_node_with;
    let config = NodeConfig {
        listen: vec![net.listen_addr()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        perf: true,
        ..NodeConfig::default()
    };
    let key = mesh_core::NodeKeypair::generate();
    let trace = std::sync::Arc::new(mesh_core::NoTrace);
    start_node_with(key, config, trace, RUN_LIMIT, |node| {
        node.perf_control().unwrap()
    })
    .await
}

/// Keeps libmesh nodes running for the rest of the bench: their data dirs stay, their
/// handles live in a task that never ends (a node stops when its last handle drops).
fn keep(nodes: Vec<mesh_testkit::node::TestNode>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let mut kept = Vec::new();
    for node in nodes {
        std::mem::forget(node.dir);
        tasks.push(node.task);
        kept.push((node.handle, node.events));
    }
    tasks.push(tokio::spawn(async move {
        let _kept = kept;
        std::future::pending::<()>().await;
    }));
    tasks
}

/// Two libmesh nodes (config `perf = true`) connected over loopback, measured with
/// `perf::run` from one node's stream control.
async fn libmesh_case(name: &'static str, net: Net) -> Case {
    use libmesh::node::Target as Dial;
    let setup = async {
        let (server, _) = mesh_node(net).await;
        let (client, control) = mesh_node(net).await;
        client
            .handle
            .dial(Dial::Addr(server.p2p_addr()))
            .await
            .unwrap();
        (server, client, control)
    };
    let (server, client, control) = tokio::time::timeout(RUN_LIMIT, setup)
        .await
        .expect("connecting the libmesh nodes timed out");
    let peer = server.peer;
    Case::new(
        name,
        Target::Libp2p {
            control,
            peer,
            tasks: keep(vec![server, client]),
        },
    )
}

// --------------------------------------------------------------------- js-libp2p

async fn js_node() -> JsNode {
    match JsNode::spawn().await {
        Ok(Some(node)) => node,
        Ok(None) => panic!("--js needs `npm ci --prefix tests/interop/js`"),
        Err(e) => panic!("js node: {e}"),
    }
}

/// js-libp2p client and server, TCP + noise + yamux.
async fn js_js_case() -> Case {
    let (client, server) = (js_node().await, js_node().await);
    let addr = server.tcp_addr().unwrap().to_string();
    Case::new(
        "js-libp2p ⇄ js-libp2p, TCP",
        Target::Js {
            client: Box::new(client),
            addr,
            server: Some(Box::new(server)),
        },
    )
}

/// js-libp2p client, libmesh server (TCP).
async fn js_mesh_case() -> Case {
    let (server, _) = mesh_node(Net::Tcp).await;
    let addr = server.p2p_addr().to_string();
    // The node lives as long as the process.
    drop(keep(vec![server]));
    Case::new(
        "js-libp2p client → libmesh server, TCP",
        Target::Js {
            client: Box::new(js_node().await),
            addr,
            server: None,
        },
    )
}

/// libmesh client, js-libp2p server (TCP).
async fn mesh_js_case() -> (Case, JsNode) {
    use libmesh::node::Target as Dial;
    let server = js_node().await;
    let (client, control) = mesh_node(Net::Tcp).await;
    client
        .handle
        .dial(Dial::Addr(server.tcp_addr().unwrap()))
        .await
        .unwrap();
    let case = Case::new(
        "libmesh client → js-libp2p server, TCP",
        Target::Libp2p {
            control,
            peer: server.peer_id,
            tasks: keep(vec![client]),
        },
    );
    (case, server)
}

// --------------------------------------------------------------------------- report

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".to_owned(),
    }
}

fn rounds_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
        .clamp(1, 50)
}

fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn runtime() -> Runtime {
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
    let rounds = rounds_arg();
    let js = std::env::args().any(|a| a == "--js");
    // `PERF_LOG=yamux=debug` shows yamux's window growth and round-trip estimates.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PERF_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = runtime();
    rt.block_on(async {
        let mut cases = vec![
            tcp_case().await,
            libp2p_case("rust-libp2p TCP+noise+yamux", Net::Tcp).await,
            libp2p_case("rust-libp2p QUIC", Net::Quic).await,
        ];
        cases.push(libmesh_case("libmesh nodes, TCP+noise+yamux", Net::Tcp).await);
        cases.push(libmesh_case("libmesh nodes, QUIC", Net::Quic).await);
        let mut js_servers = Vec::new();
        if js {
            cases.push(js_js_case().await);
            cases.push(js_mesh_case().await);
            let (case, server) = mesh_js_case().await;
            cases.push(case);
            js_servers.push(server);
        }
        cases.push(
            libp2p_case_with(
                "rust-libp2p TCP, libmesh yamux (1 MiB windows)",
                Net::Tcp,
                capped_swarm,
            )
            .await,
        );
        // Leaked once: the case names are `&'static str`.
        let standard = format!(
            "rust-libp2p TCP, libmesh yamux, {}",
            standard_swarm::label()
        );
        cases.push(
            libp2p_case_of(
                Box::leak(standard.into_boxed_str()),
                Net::Tcp,
                standard_swarm::swarm,
                |b| b.stream.new_control(),
            )
            .await,
        );

        // `--only SUBSTR` measures only the cases whose name contains it, `--dir up|down`
        // only one direction (for profiling one path; the others show n/a).
        let only = arg_value("--only");
        let wanted = |case: &Case| only.as_deref().is_none_or(|o| case.name.contains(o));
        let dir_arg = arg_value("--dir");
        let wanted_dir = |dir: Dir| {
            !matches!(
                (dir_arg.as_deref(), dir),
                (Some("up"), Dir::Down) | (Some("down"), Dir::Up)
            )
        };
        // Warm-up: one run each way per case, not counted.
        for case in cases.iter_mut().filter(|c| wanted(c)) {
            case.measure(Dir::Up).await;
            case.measure(Dir::Down).await;
        }
        let start = Instant::now();
        let mut done = 0;
        for round in 0..rounds {
            if round >= 3 && start.elapsed() > BUDGET {
                eprintln!("time budget spent after {round} rounds");
                break;
            }
            // Alternate the direction first, and rotate the case order every round.
            let dirs = if round % 2 == 0 {
                [Dir::Up, Dir::Down]
            } else {
                [Dir::Down, Dir::Up]
            };
            let n = cases.len();
            for i in 0..n {
                let case = &mut cases[(i + round) % n];
                if !wanted(case) {
                    continue;
                }
                for dir in dirs.into_iter().filter(|d| wanted_dir(*d)) {
                    let mibs = case.measure(dir).await;
                    match dir {
                        Dir::Up => case.up.push(mibs),
                        Dir::Down => case.down.push(mibs),
                    }
                }
            }
            done = round + 1;
        }

        println!(
            "\nperf protocol, one stream on loopback, {} MiB per run, median of {done} rounds \
             ({:.0} s)\n",
            SIZE / MIB,
            start.elapsed().as_secs_f64()
        );
        println!("| case | upload MiB/s | download MiB/s |");
        println!("|---|---|---|");
        let med: Vec<(Option<f64>, Option<f64>)> = cases
            .iter()
            .map(|c| (try_median(&c.up), try_median(&c.down)))
            .collect();
        for (case, (up, down)) in cases.iter().zip(&med) {
            println!("| {} | {} | {} |", case.name, cell(*up), cell(*down));
        }
        println!("\n| ratio | upload | download |");
        println!("|---|---|---|");
        let (ceiling, tcp, quic, mesh_tcp, mesh_quic) = (med[0], med[1], med[2], med[3], med[4]);
        let (capped, standard) = (med[med.len() - 2], med[med.len() - 1]);
        let mut rows = vec![
            ("rust-libp2p TCP / ceiling", tcp, ceiling),
            ("rust-libp2p QUIC / ceiling", quic, ceiling),
            ("libmesh TCP / rust-libp2p TCP", mesh_tcp, tcp),
            ("libmesh QUIC / rust-libp2p QUIC", mesh_quic, quic),
            ("libmesh TCP / ceiling", mesh_tcp, ceiling),
        ];
        if js {
            let (js_js, js_mesh, mesh_js) = (med[5], med[6], med[7]);
            rows.extend([
                (
                    "libmesh TCP / js-libp2p ⇄ js-libp2p (goal ≥ 2x)",
                    mesh_tcp,
                    js_js,
                ),
                ("js client → libmesh / js ⇄ js", js_mesh, js_js),
                ("libmesh client → js / js ⇄ js", mesh_js, js_js),
            ]);
        }
        rows.extend([
            (
                "rust-libp2p TCP with libmesh's yamux / rust-libp2p TCP",
                capped,
                tcp,
            ),
            (
                "the same with the standard behaviours / without",
                standard,
                capped,
            ),
            (
                "libmesh TCP / rust-libp2p with the standard behaviours",
                mesh_tcp,
                standard,
            ),
        ]);
        for (what, a, b) in rows {
            println!("| {what} | {} | {} |", ratio(a.0, b.0), ratio(a.1, b.1));
        }
        for case in cases {
            case.stop().await;
        }
        for server in js_servers {
            server.shutdown().await;
        }
    });
}
