//! One admission relay on this machine, loaded (issue: relay admission).
//!
//! The relay (circuit relay v2 + `mesh_admission::server::Behaviour`, open policy, caps
//! 16 circuits / 4 GiB / 1 h, no rate limiters) runs in a child process (this binary
//! with `--relay-child`, on a 2-worker tokio runtime) so that its memory and CPU time
//! can be read from `/proc`. Everything else runs in this process on one 2-worker
//! runtime, over TCP loopback (noise, yamux):
//!
//! 1. `--clients` (1000) client swarms, each asking for a grant
//!    (`/mesh/relay-admission/1.0.0`) and reserving (`listen_on <relay>/p2p-circuit`),
//!    at most 64 setting up at once. Reported: how many hold a reservation (as the relay
//!    counts them), the time it took, the relay's RSS before and after.
//! 2. `--circuits` (200) circuits at once, client i to client `clients/2 + i`, then
//!    `--circuit-bytes` (1 MiB) through each on one stream, all at once; each receiver
//!    counts and echoes the count back. Reported: whether every circuit opened and
//!    moved all of its data, the total throughput, the relay's CPU time.
//! 3. Single-stream throughput through the relay against a direct connection, both
//!    between two fresh client swarms: `--rounds` (15) alternating rounds of
//!    `--stream-bytes` (64 MiB); the median of the per-round ratios (target >= 0.5x),
//!    and the CPU time per MiB of each path (this process: both ends; the relay process).
//!
//! `cargo bench -p mesh-admission --bench relay [-- --clients N --circuits N
//! --circuit-bytes B --stream-bytes B --rounds N]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, relay, tcp, yamux};
use mesh_admission::{GrantLimits, Open, Purpose, client, server};
use mesh_core::NodeKeypair;
use mesh_testkit::median;
use tokio::sync::Semaphore;

const DATA: StreamProtocol = StreamProtocol::new("/mesh-admission-bench/data/1.0.0");
const TARGET: f64 = 0.5;
const CAPS: GrantLimits = GrantLimits {
    circuits: 16,
    circuit_bytes: 4 << 30,
    circuit_secs: 3600,
};

struct Args {
    clients: usize,
    circuits: usize,
    circuit_bytes: usize,
    stream_bytes: usize,
    rounds: usize,
    /// Run each single-stream sender on a runtime task (`--spawn`).
    spawn: bool,
}

fn args() -> Args {
    let mut a = Args {
        clients: 1000,
        circuits: 200,
        circuit_bytes: 1 << 20,
        stream_bytes: 64 << 20,
        rounds: 15,
        spawn: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).and_then(|v| v.parse().ok());
        match (argv[i].as_str(), next) {
            ("--clients", Some(v)) => a.clients = v,
            ("--circuits", Some(v)) => a.circuits = v,
            ("--circuit-bytes", Some(v)) => a.circuit_bytes = v,
            ("--stream-bytes", Some(v)) => a.stream_bytes = v,
            ("--rounds", Some(v)) => a.rounds = v,
            ("--spawn", _) => {
                a.spawn = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a.circuits = a.circuits.min(a.clients / 2);
    a
}

// ---------------------------------------------------------------------------------
// The relay process.

#[derive(NetworkBehaviour)]
struct RelayNode {
    admission: server::Behaviour,
}

/// `VmRSS` of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process, ms (clock ticks of 10 ms).
fn cpu_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10)
        })
        .unwrap_or(0)
}

fn relay_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Commands from the parent arrive on stdin, one per line.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if cmd_tx.send(line).is_err() {
                break;
            }
        }
    });
    rt.block_on(async move {
        let key = NodeKeypair::generate();
        let config = server::Config {
            policy: Arc::new(Open { limits: CAPS }),
            caps: CAPS,
            max_reservations: 2048,
            // Every client of this bench comes from 127.0.0.1: lift the per-IP limits.
            max_nodes_per_ip: 16_384,
            max_circuits_per_ip: 1 << 20,
            requests_per_ip: mesh_core::RateLimit {
                burst: 1 << 20,
                per_second: 1e6,
            },
            ..server::Config::default()
        };
        let base = relay::Config {
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
            max_reservations: 2048,
            max_reservations_per_peer: 4,
            max_circuits: 2048,
            max_circuits_per_peer: 64,
            ..relay::Config::default()
        };
        let admission = server::Behaviour::with_relay_config(key.clone(), config, base);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| RelayNode { admission })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let (mut reservations, mut live, mut total) = (0i64, 0i64, 0u64);
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd.as_deref() {
                    Some("stats") => {
                        let grants = swarm.behaviour().admission.grants().len();
                        let load = swarm.behaviour().admission.load_permille();
                        println!(
                            "STATS {reservations} {live} {total} {grants} {load} {} {}",
                            rss_kib(),
                            cpu_ms()
                        );
                        std::io::stdout().flush().unwrap();
                    }
                    Some(_) => {}
                    None => return,
                },
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        swarm.add_external_address(address.clone());
                        println!("LISTEN {}", address.with(Protocol::P2p(*swarm.local_peer_id())));
                        std::io::stdout().flush().unwrap();
                    }
                    SwarmEvent::Behaviour(RelayNodeEvent::Admission(server::Event::Relay(e))) => {
                        match &e {
                            relay::Event::ReservationReqAccepted { renewed: false, .. } => {
                                reservations += 1
                            }
                            relay::Event::ReservationTimedOut { .. } => reservations -= 1,
                            relay::Event::CircuitReqAccepted { .. } => {
                                live += 1;
                                total += 1;
                            }
                            relay::Event::CircuitClosed { .. } => live -= 1,
                            _ => {}
                        }
                    }
                    _ => {}
                },
            }
        }
    });
}

// ---------------------------------------------------------------------------------
// The parent: clients and measurements.

struct Child {
    proc: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std_mpsc::Receiver<String>,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    reservations: i64,
    circuits_live: i64,
    circuits_total: u64,
    grants: u64,
    load_permille: u64,
    rss_kib: u64,
    cpu_ms: u64,
}

impl Child {
    fn spawn() -> (Child, Multiaddr) {
        let mut proc = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--relay-child")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = proc.stdin.take().unwrap();
        let stdout = proc.stdout.take().unwrap();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        let addr = first.strip_prefix("LISTEN ").unwrap().parse().unwrap();
        (Child { proc, stdin, lines }, addr)
    }

    fn stats(&mut self) -> Stats {
        writeln!(self.stdin, "stats").unwrap();
        self.stdin.flush().unwrap();
        let line = self.lines.recv_timeout(Duration::from_secs(30)).unwrap();
        let f: Vec<u64> = line
            .strip_prefix("STATS ")
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse::<i64>().unwrap() as u64)
            .collect();
        Stats {
            reservations: f[0] as i64,
            circuits_live: f[1] as i64,
            circuits_total: f[2],
            grants: f[3],
            load_permille: f[4],
            rss_kib: f[5],
            cpu_ms: f[6],
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[derive(NetworkBehaviour)]
struct ClientNode {
    relay: relay::client::Behaviour,
    admission: client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Cmd {
    Dial(DialOpts, oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
struct Handle {
    peer: PeerId,
    control: libp2p_stream::Control,
    cmds: mpsc::UnboundedSender<Cmd>,
    direct: Option<Multiaddr>,
}

impl Handle {
    async fn dial(&self, opts: DialOpts) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .unbounded_send(Cmd::Dial(opts, tx))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| "dial timed out".to_owned())?
            .map_err(|_| "client gone".to_owned())?
    }

    async fn dial_via(&self, relay: &Multiaddr, dst: PeerId) -> Result<(), String> {
        let addr = relay
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(dst));
        self.dial(
            DialOpts::peer_id(dst)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build(),
        )
        .await
    }

    /// One stream: `n` bytes out, the receiver's count back; elapsed time.
    async fn push(&self, dst: PeerId, n: usize) -> Result<Duration, String> {
        let mut control = self.control.clone();
        let start = Instant::now();
        let mut s = control
            .open_stream(dst, DATA)
            .await
            .map_err(|e| e.to_string())?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            s.write_all(&chunk[..k]).await.map_err(|e| e.to_string())?;
            left -= k;
        }
        s.close().await.map_err(|e| e.to_string())?;
        let mut count = [0u8; 8];
        s.read_exact(&mut count).await.map_err(|e| e.to_string())?;
        let got = u64::from_be_bytes(count);
        if got != n as u64 {
            return Err(format!("receiver counted {got} of {n} bytes"));
        }
        Ok(start.elapsed())
    }
}

/// [`Handle::push`], on a runtime task when `spawn` (`--spawn`), else in the caller's
/// future (the `block_on` thread, outside the runtime's workers).
async fn push_on(spawn: bool, h: &Handle, dst: PeerId, n: usize) -> Duration {
    if spawn {
        let h = h.clone();
        tokio::spawn(async move { h.push(dst, n).await })
            .await
            .unwrap()
            .unwrap()
    } else {
        h.push(dst, n).await.unwrap()
    }
}

/// Counts each inbound stream to its end and answers the count.
fn serve_data(mut control: libp2p_stream::Control) {
    let mut incoming = control.accept(DATA).unwrap();
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(k) => n += k as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.close().await;
            });
        }
    });
}

/// A client: grant, reservation (when `reserve`), a TCP listener (when `listen`).
async fn client_node(
    relay: Multiaddr,
    relay_peer: PeerId,
    reserve: bool,
    listen: bool,
    permit: Arc<Semaphore>,
) -> Result<Handle, String> {
    let key = NodeKeypair::generate();
    let admission = client::Behaviour::new(key.clone(), client::Config::default());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| ClientNode {
            relay,
            admission,
            stream: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let control = swarm.behaviour().stream.new_control();
    serve_data(control.clone());
    let peer = *swarm.local_peer_id();
    let setup = async {
        let _permit = permit.acquire().await.unwrap();
        swarm
            .behaviour_mut()
            .admission
            .request(relay_peer, Purpose::Reservation, vec![relay.clone()])
            .map_err(|e| e.to_string())?;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ClientNodeEvent::Admission(e)) => match e {
                    client::Event::Granted { .. } => break,
                    other => return Err(format!("admission: {other:?}")),
                },
                _ => continue,
            }
        }
        if reserve {
            let id = swarm
                .listen_on(relay.clone().with(Protocol::P2pCircuit))
                .map_err(|e| e.to_string())?;
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr { listener_id, .. } if listener_id == id => break,
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason,
                        ..
                    } if listener_id == id => return Err(format!("reservation: {reason:?}")),
                    _ => continue,
                }
            }
        }
        let mut direct = None;
        if listen {
            let id = swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .map_err(|e| e.to_string())?;
            loop {
                if let SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } = swarm.select_next_some().await
                    && listener_id == id
                {
                    direct = Some(address.with(Protocol::P2p(peer)));
                    break;
                }
            }
        }
        Ok::<_, String>(direct)
    };
    let direct = tokio::time::timeout(Duration::from_secs(120), setup)
        .await
        .map_err(|_| "setup timed out".to_owned())??;
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded::<Cmd>();
    tokio::spawn(async move {
        let mut pending: Vec<(
            libp2p::swarm::ConnectionId,
            oneshot::Sender<Result<(), String>>,
        )> = Vec::new();
        loop {
            tokio::select! {
                cmd = cmd_rx.next() => match cmd {
                    Some(Cmd::Dial(opts, tx)) => {
                        let id = opts.connection_id();
                        match swarm.dial(opts) {
                            Ok(()) => pending.push((id, tx)),
                            Err(e) => { let _ = tx.send(Err(e.to_string())); }
                        }
                    }
                    None => return,
                },
                ev = swarm.select_next_some() => {
                    let done = match &ev {
                        SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                            Some((*connection_id, Ok(())))
                        }
                        SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                            Some((*connection_id, Err(error.to_string())))
                        }
                        _ => None,
                    };
                    if let Some((id, r)) = done
                        && let Some(i) = pending.iter().position(|(c, _)| *c == id)
                    {
                        let _ = pending.swap_remove(i).1.send(r);
                    }
                }
            }
        }
    });
    Ok(Handle {
        peer,
        control,
        cmds: cmd_tx,
        direct,
    })
}

/// CPU time (ms) spent during the single-stream rounds.
#[derive(Default)]
struct CpuSplit {
    relayed_ends: u64,
    relayed_relay: u64,
    direct_ends: u64,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--relay-child") {
        relay_child();
        return;
    }
    let a = args();
    let (mut child, relay) = Child::spawn();
    let relay_peer = match relay.iter().last() {
        Some(Protocol::P2p(p)) => p,
        _ => panic!("relay address without peer id"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "relay admission bench: {} clients, {} circuits x {} KiB, single stream {} MiB x {} rounds; loopback TCP, relay in its own process",
        a.clients,
        a.circuits,
        a.circuit_bytes / 1024,
        a.stream_bytes >> 20,
        a.rounds
    );
    let idle = child.stats();

    // 1. Reservations.
    let permit = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let results: Vec<Result<Handle, String>> = rt.block_on(async {
        let tasks: Vec<_> = (0..a.clients)
            .map(|_| {
                tokio::spawn(client_node(
                    relay.clone(),
                    relay_peer,
                    true,
                    false,
                    permit.clone(),
                ))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let setup_time = start.elapsed();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let clients: Vec<Handle> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    // Let the relay process the last acceptances.
    std::thread::sleep(Duration::from_millis(500));
    let held = child.stats();
    println!(
        "reservations: {} of {} clients reserved in {:.1} s ({} failed{}); relay counts {} reservations, {} grants, load {}‰; relay RSS {:.1} MiB idle -> {:.1} MiB ({:.1} KiB per reservation)",
        clients.len(),
        a.clients,
        setup_time.as_secs_f64(),
        failures.len(),
        failures
            .first()
            .map(|f| format!(", first: {f}"))
            .unwrap_or_default(),
        held.reservations,
        held.grants,
        held.load_permille,
        idle.rss_kib as f64 / 1024.0,
        held.rss_kib as f64 / 1024.0,
        (held.rss_kib.saturating_sub(idle.rss_kib)) as f64 / held.reservations.max(1) as f64,
    );

    // 2. Many circuits at once.
    let n = a.circuits.min(clients.len() / 2);
    let half = clients.len() / 2;
    let pairs: Vec<(Handle, Handle)> = (0..n)
        .map(|i| (clients[i].clone(), clients[half + i].clone()))
        .collect();
    let cpu0 = child.stats().cpu_ms;
    let start = Instant::now();
    let opened: Vec<Result<(), String>> = rt.block_on(async {
        let tasks: Vec<_> = pairs
            .iter()
            .map(|(s, d)| {
                let (s, d, r) = (s.clone(), d.peer, relay.clone());
                tokio::spawn(async move { s.dial_via(&r, d).await })
            })
            .collect();
        futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    });
    let open_time = start.elapsed();
    let open_ok = opened.iter().filter(|r| r.is_ok()).count();
    let live = child.stats();
    let bytes = a.circuit_bytes;
    let start = Instant::now();
    let moved: Vec<Result<Duration, String>> = rt.block_on(async {
        let tasks: Vec<_> = pairs
            .iter()
            .zip(&opened)
            .filter(|(_, o)| o.is_ok())
            .map(|((s, d), _)| {
                let (s, d) = (s.clone(), d.peer);
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(300), s.push(d, bytes))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()))
                })
            })
            .collect();
        futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    });
    let data_time = start.elapsed();
    let cpu1 = child.stats().cpu_ms;
    let moved_ok = moved.iter().filter(|r| r.is_ok()).count();
    let total = (moved_ok * bytes) as u64;
    println!(
        "circuits: {open_ok} of {n} opened in {:.2} s (relay counts {} live); {moved_ok} moved all {} KiB{}; {:.1} MiB in {:.2} s = {:.1} MiB/s total through the relay; relay CPU {:.2} s",
        open_time.as_secs_f64(),
        live.circuits_live,
        bytes / 1024,
        moved
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(|e| format!(" (first failure: {e})"))
            .unwrap_or_default(),
        mib(total),
        data_time.as_secs_f64(),
        mib(total) / data_time.as_secs_f64(),
        (cpu1 - cpu0) as f64 / 1000.0,
    );

    // 3. One stream: relayed against direct. CPU time per round: this process (both
    // ends) and the relay process.
    let mut cpu = CpuSplit::default();
    let (relayed, direct, ratio) = rt.block_on(async {
        let p = Arc::new(Semaphore::new(4));
        let rs = client_node(relay.clone(), relay_peer, false, false, p.clone())
            .await
            .unwrap();
        let rd = client_node(relay.clone(), relay_peer, true, false, p.clone())
            .await
            .unwrap();
        let ds = client_node(relay.clone(), relay_peer, false, false, p.clone())
            .await
            .unwrap();
        let dd = client_node(relay.clone(), relay_peer, false, true, p.clone())
            .await
            .unwrap();
        rs.dial_via(&relay, rd.peer).await.unwrap();
        let to = dd.direct.clone().unwrap();
        ds.dial(DialOpts::peer_id(dd.peer).addresses(vec![to]).build())
            .await
            .unwrap();
        // Warm-up (window growth, allocations), then alternating rounds.
        rs.push(rd.peer, 4 << 20).await.unwrap();
        ds.push(dd.peer, 4 << 20).await.unwrap();
        let (mut r, mut d) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            let (p0, c0) = (cpu_ms(), child.stats().cpu_ms);
            let t = push_on(a.spawn, &rs, rd.peer, a.stream_bytes).await;
            let (p1, c1) = (cpu_ms(), child.stats().cpu_ms);
            cpu.relayed_ends += p1 - p0;
            cpu.relayed_relay += c1 - c0;
            r.push(a.stream_bytes as f64 / t.as_secs_f64());
            let t = push_on(a.spawn, &ds, dd.peer, a.stream_bytes).await;
            let p2 = cpu_ms();
            cpu.direct_ends += p2 - p1;
            d.push(a.stream_bytes as f64 / t.as_secs_f64());
            let round_mib = mib(a.stream_bytes as u64);
            println!(
                "round {}: relayed/direct {:.2}; CPU per MiB relayed {:.2} ms (ends {:.2} + relay {:.2}), direct {:.2} ms",
                r.len(),
                r[r.len() - 1] / d[d.len() - 1],
                (p1 - p0 + c1 - c0) as f64 / round_mib,
                (p1 - p0) as f64 / round_mib,
                (c1 - c0) as f64 / round_mib,
                (p2 - p1) as f64 / round_mib,
            );
        }
        let ratios: Vec<f64> = r.iter().zip(&d).map(|(r, d)| r / d).collect();
        println!(
            "single-stream rounds (relayed/direct): {}",
            ratios
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        (median(&r), median(&d), median(&ratios))
    });
    let mib_moved = mib((a.stream_bytes * a.rounds) as u64);
    let per_mib = |ms: u64| ms as f64 / mib_moved;
    let relayed_cpu = per_mib(cpu.relayed_ends + cpu.relayed_relay);
    let direct_cpu = per_mib(cpu.direct_ends);
    let end = child.stats();
    println!(
        "single stream: relayed {:.1} MiB/s, direct {:.1} MiB/s (medians of {}), ratio {ratio:.2}x (median of the rounds' ratios)",
        relayed / 1048576.0,
        direct / 1048576.0,
        a.rounds
    );
    println!(
        "CPU per MiB: direct {direct_cpu:.2} ms (both ends); relayed {relayed_cpu:.2} ms ({:.2} ms both ends + {:.2} ms the relay), {:.2}x the direct path's; the relay alone forwards {:.0} MiB per CPU second",
        per_mib(cpu.relayed_ends),
        per_mib(cpu.relayed_relay),
        relayed_cpu / direct_cpu,
        1000.0 / per_mib(cpu.relayed_relay).max(1e-9),
    );
    println!(
        "relay process at the end: RSS {:.1} MiB, CPU {:.1} s, {} circuits accepted in all\n",
        end.rss_kib as f64 / 1024.0,
        end.cpu_ms as f64 / 1000.0,
        end.circuits_total
    );
    let all_reserved = clients.len() == a.clients && held.reservations as usize == a.clients;
    let all_moved = open_ok == n && moved_ok == n;
    println!("| what | figure | target |");
    println!("|---|---|---|");
    println!(
        "| reservations held by one relay | {} of {} ({:.1} s to set up; relay RSS {:.1} MiB) | {} {} |",
        held.reservations,
        a.clients,
        setup_time.as_secs_f64(),
        held.rss_kib as f64 / 1024.0,
        a.clients,
        if all_reserved { "met" } else { "MISSED" }
    );
    println!(
        "| concurrent circuits moving {} KiB each | {moved_ok} of {n}, {:.1} MiB/s total | all {n} {} |",
        bytes / 1024,
        mib(total) / data_time.as_secs_f64(),
        if all_moved { "met" } else { "MISSED" }
    );
    println!(
        "| single-stream throughput, relayed / direct | {:.1} / {:.1} MiB/s = **{ratio:.2}x** | >= {TARGET}x {} |",
        relayed / 1048576.0,
        direct / 1048576.0,
        if ratio >= TARGET { "met" } else { "MISSED" }
    );
    println!(
        "| CPU per MiB, relayed path / direct path (info) | {relayed_cpu:.2} / {direct_cpu:.2} ms = {:.2}x; relay alone {:.2} ms | — |",
        relayed_cpu / direct_cpu,
        per_mib(cpu.relayed_relay),
    );
    drop(clients);
    drop(pairs);
    rt.shutdown_timeout(Duration::from_secs(1));
}
