//! Frames one signaling host forwards per second, with verification (issue 6: at least
//! 0.7x raw `verify_strict` throughput).
//!
//! Three real swarms on loopback TCP (noise, yamux): a sender, a host (`host: true`, a
//! per-sender limit far above the offered rate) and a receiver. The sender signs
//! `--frames` distinct `connect_request` frames (distinct `frame/id` and
//! `correlation/id`) before the clock starts, then keeps `--window` of them in flight end
//! to end (sent but not yet received by the receiver). The host verifies each frame, checks
//! duplicates and the sender's limit, counts the hop and forwards it to the receiver, which
//! verifies it again and opens its correlation. Rate = frames / (first send → the
//! receiver's last `Received`); every frame must arrive.
//!
//! Baseline, measured in the same run and interleaved with the forwarding rounds:
//! `ed25519_dalek::VerifyingKey::verify_strict` of the same frames' signing inputs
//! (`signal-frame.v1` || 0x00 || deterministic CBOR without `signature` and `hops`),
//! key decompressed and signature parsed beforehand, one thread.
//!
//! Two runtime layouts per round:
//! - `shared`: one tokio runtime with 2 worker threads (the machine's 2 cores); each swarm
//!   polled by its own task, connection tasks spawned on the same runtime. The wall-clock
//!   rate here is the whole system's: the sender's and the receiver's work share the
//!   cores with the host's.
//! - `split`: the host on its own single-threaded runtime (its own OS thread, so its
//!   connection tasks run there too), sender and receiver on a second one. Besides the
//!   wall-clock rate the host thread's CPU time is read (`/proc/.../schedstat`), which
//!   gives the host's own cost per forwarded frame and its capacity on one core.
//!
//! `cargo bench -p mesh-signal --bench forwarding [-- --frames N --rounds R --window W]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use mesh_core::artifact::read_signature;
use mesh_core::{Artifact, NodeKeypair, RateLimit, SignalFrame, Timestamp};
use mesh_signal::{Behaviour, Config, Event, Limits};
use mesh_testkit::{Net, median};
use serde_json::{Value, json};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot, watch};

const TARGET: f64 = 0.7;

struct Args {
    frames: usize,
    rounds: usize,
    window: usize,
}

fn args() -> Args {
    let mut a = Args {
        frames: 8000,
        rounds: 7,
        window: 512,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).and_then(|v| v.parse().ok());
        match (argv[i].as_str(), next) {
            ("--frames", Some(v)) => a.frames = v,
            ("--rounds", Some(v)) => a.rounds = v,
            ("--window", Some(v)) => a.window = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn frames(from: &NodeKeypair, to: &NodeKeypair, n: usize, round: usize) -> Vec<SignalFrame> {
    let now = Timestamp::now();
    (0..n)
        .map(|i| {
            let Value::Object(doc) = json!({
                "schema/v": 1, "message/kind": "signal-frame.v1",
                "frame/id": format!("sf:{round}:{i:08}"), "kind": "connect_request",
                "from": from.node_id().to_string(), "to": to.node_id().to_string(),
                "correlation/id": format!("bench-{round}-{i}"), "created-at": now.as_str(),
                "expires-at": now.plus_secs(120).as_str(),
                "payload": {"purpose": "webrtc"},
            }) else {
                unreachable!()
            };
            SignalFrame::sign(doc, from).unwrap()
        })
        .collect()
}

/// Raw `verify_strict` over the frames' signing inputs: frames per second.
fn baseline(key: &ed25519_dalek::VerifyingKey, raw: &[(ed25519_dalek::Signature, Vec<u8>)]) -> f64 {
    let start = Instant::now();
    for (sig, input) in raw {
        std::hint::black_box(key.verify_strict(std::hint::black_box(input), sig)).unwrap();
    }
    raw.len() as f64 / start.elapsed().as_secs_f64()
}

/// Correlation limits that hold one correlation per frame of a round.
fn limits(frames: usize) -> Limits {
    Limits {
        max_open: frames + 16,
        ..Limits::default()
    }
}

fn swarm(key: &NodeKeypair, host: bool, frames: usize) -> Swarm<Behaviour> {
    let config = Config {
        host,
        per_sender: RateLimit::per_minute(u32::MAX, u32::MAX),
        limits: limits(frames),
        ..Config::new(key.node_id())
    };
    mesh_testkit::net_swarm(
        &key.to_libp2p(),
        Net::Tcp,
        Duration::from_secs(30),
        Behaviour::new(config),
    )
}

#[derive(Debug, Default)]
struct Counts {
    forwarded: usize,
    received: usize,
    delivered: usize,
    refused: usize,
}

async fn host_node(
    key: NodeKeypair,
    frames: usize,
    addr: std_mpsc::Sender<(PeerId, Multiaddr)>,
    mut stop: watch::Receiver<bool>,
) -> Counts {
    let mut s = swarm(&key, true, frames);
    s.listen_on(Net::Tcp.listen_addr()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            addr.send((*s.local_peer_id(), address)).unwrap();
            break;
        }
    }
    let mut c = Counts::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return c,
            ev = s.select_next_some() => match ev {
                SwarmEvent::Behaviour(Event::Forwarded { .. }) => c.forwarded += 1,
                SwarmEvent::Behaviour(Event::Refused { error, by_peer, .. }) => {
                    if c.refused < 3 {
                        eprintln!("host: refused (by peer: {by_peer}): {error}");
                    }
                    c.refused += 1;
                }
                _ => {}
            },
        }
    }
}

async fn connected(s: &mut Swarm<Behaviour>, host: &(PeerId, Multiaddr)) {
    s.dial(host.1.clone().with(Protocol::P2p(host.0))).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = s.select_next_some().await {
            return;
        }
    }
}

async fn receiver_node(
    key: NodeKeypair,
    host: (PeerId, Multiaddr),
    frames: usize,
    progress: Arc<Progress>,
    ready: std_mpsc::Sender<()>,
    done: std_mpsc::Sender<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Counts {
    let mut s = swarm(&key, false, frames);
    connected(&mut s, &host).await;
    ready.send(()).unwrap();
    let mut c = Counts::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return c,
            ev = s.select_next_some() => match ev {
                SwarmEvent::Behaviour(Event::Received { .. }) => {
                    c.received += 1;
                    progress.received.store(c.received, Ordering::Release);
                    progress.wake.notify_one();
                    if c.received == frames {
                        let _ = done.send(Instant::now());
                    }
                }
                SwarmEvent::Behaviour(Event::Refused { .. }) => c.refused += 1,
                _ => {}
            },
        }
    }
}

/// How far the receiver has got, shared with the sender (its window is end to end).
#[derive(Default)]
struct Progress {
    received: AtomicUsize,
    wake: Notify,
}

#[allow(clippy::too_many_arguments)]
async fn sender_node(
    key: NodeKeypair,
    host: (PeerId, Multiaddr),
    frames: Vec<SignalFrame>,
    window: usize,
    progress: Arc<Progress>,
    ready: std_mpsc::Sender<()>,
    mut go: oneshot::Receiver<()>,
    started: std_mpsc::Sender<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Counts {
    let mut s = swarm(&key, false, frames.len());
    connected(&mut s, &host).await;
    ready.send(()).unwrap();
    loop {
        tokio::select! {
            _ = &mut go => break,
            _ = s.select_next_some() => {}
        }
    }
    started.send(Instant::now()).unwrap();
    let via = Some(host.0);
    let mut sent = 0;
    let mut c = Counts::default();
    loop {
        let limit = (progress.received.load(Ordering::Acquire) + window).min(frames.len());
        while sent < limit {
            s.behaviour_mut().send(&frames[sent], via).unwrap();
            sent += 1;
        }
        tokio::select! {
            _ = stop.changed() => return c,
            _ = progress.wake.notified() => {}
            ev = s.select_next_some() => match ev {
                SwarmEvent::Behaviour(Event::Delivered { .. }) => c.delivered += 1,
                SwarmEvent::Behaviour(Event::Refused { .. }) => c.refused += 1,
                _ => {}
            },
        }
    }
}

/// The thread id of the calling thread (Linux), to read its CPU time from another one.
fn thread_id() -> Option<String> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// CPU time of thread `tid` of this process, ns (first field of `schedstat`).
fn thread_cpu_ns(tid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

struct Outcome {
    rate: f64,
    host_cpu_per_frame: Option<Duration>,
    counts: [Counts; 3],
}

/// One forwarding round: host tasks on `host_rt`, sender and receiver on `peers_rt`.
fn forward_round(
    host_rt: &Handle,
    peers_rt: &Handle,
    host_tid: Option<&str>,
    keys: &(NodeKeypair, NodeKeypair, NodeKeypair),
    frames: Vec<SignalFrame>,
    window: usize,
) -> Outcome {
    let n = frames.len();
    let (ka, kh, kb) = keys.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (addr_tx, addr_rx) = std_mpsc::channel();
    let host = host_rt.spawn(host_node(kh, n, addr_tx, stop_rx.clone()));
    let host_addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (done_tx, done_rx) = std_mpsc::channel();
    let progress = Arc::new(Progress::default());
    let receiver = peers_rt.spawn(receiver_node(
        kb,
        host_addr.clone(),
        n,
        progress.clone(),
        ready_tx.clone(),
        done_tx,
        stop_rx.clone(),
    ));
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (go_tx, go_rx) = oneshot::channel();
    let (started_tx, started_rx) = std_mpsc::channel();
    let sender = peers_rt.spawn(sender_node(
        ka, host_addr, frames, window, progress, ready_tx, go_rx, started_tx, stop_rx,
    ));
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Let both connections settle (the host has seen the receiver's).
    std::thread::sleep(Duration::from_millis(50));

    let cpu0 = host_tid.and_then(thread_cpu_ns);
    go_tx.send(()).unwrap();
    let start = started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let end = done_rx.recv_timeout(Duration::from_secs(60));
    let cpu1 = host_tid.and_then(thread_cpu_ns);
    stop_tx.send(true).unwrap();
    let counts = [
        futures::executor::block_on(sender).unwrap(),
        futures::executor::block_on(host).unwrap(),
        futures::executor::block_on(receiver).unwrap(),
    ];
    let Ok(end) = end else {
        panic!("not every frame arrived within 60 s: {counts:?}");
    };
    Outcome {
        rate: n as f64 / (end - start).as_secs_f64(),
        host_cpu_per_frame: cpu0
            .zip(cpu1)
            .map(|(a, b)| Duration::from_nanos(b.saturating_sub(a) / n as u64)),
        counts,
    }
}

/// A single-threaded runtime on its own OS thread (until the returned sender drops),
/// and that thread's id.
fn runtime_thread(name: &str) -> (Handle, Option<String>, std_mpsc::Sender<()>) {
    let (tx, rx) = std_mpsc::channel();
    let (quit_tx, quit_rx) = std_mpsc::channel::<()>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send((rt.handle().clone(), thread_id())).unwrap();
            let (done_tx, done_rx) = oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = quit_rx.recv();
                let _ = done_tx.send(());
            });
            rt.block_on(async {
                let _ = done_rx.await;
            });
        })
        .unwrap();
    let (h, tid) = rx.recv().unwrap();
    (h, tid, quit_tx)
}

fn main() {
    let a = args();
    let keys = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let shared = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (host_rt, host_tid, _quit_host) = runtime_thread("host");
    let (peers_rt, _, _quit_peers) = runtime_thread("peers");
    let vk = keys.0.verifying_key();

    println!(
        "signal forwarding: {} frames per round, {} in flight, {} rounds, loopback TCP",
        a.frames, a.window, a.rounds
    );
    let (mut base, mut wall_shared, mut wall_split, mut cpu) = (vec![], vec![], vec![], vec![]);
    for round in 0..=a.rounds {
        let fs = frames(&keys.0, &keys.2, a.frames, round);
        if round == 0 {
            println!(
                "frame wire form {} bytes, signing input {} bytes",
                fs[0].to_cbor().len(),
                fs[0].signing_input().len()
            );
        }
        let raw: Vec<_> = fs
            .iter()
            .map(|f| (read_signature(f.as_map()).unwrap(), f.signing_input()))
            .collect();
        let b = baseline(&vk, &raw);
        let s = forward_round(
            shared.handle(),
            shared.handle(),
            None,
            &keys,
            fs.clone(),
            a.window,
        );
        let p = forward_round(
            &host_rt,
            &peers_rt,
            host_tid.as_deref(),
            &keys,
            fs,
            a.window,
        );
        let per_frame = p.host_cpu_per_frame.map_or(f64::NAN, |d| d.as_secs_f64());
        println!(
            "round {round}{}: verify_strict {b:.0}/s; shared runtime {:.0}/s ({:.2}x); split {:.0}/s ({:.2}x), host CPU {:.1} µs/frame ({:.0}/s, {:.2}x); refused {}",
            if round == 0 { " (warm-up)" } else { "" },
            s.rate,
            s.rate / b,
            p.rate,
            p.rate / b,
            per_frame * 1e6,
            1.0 / per_frame,
            1.0 / per_frame / b,
            s.counts
                .iter()
                .chain(&p.counts)
                .map(|c| c.refused)
                .sum::<usize>(),
        );
        if round > 0 {
            base.push(b);
            wall_shared.push(s.rate);
            wall_split.push(p.rate);
            cpu.push(1.0 / per_frame);
        }
    }
    let b = median(&base);
    let rows = [
        (
            "shared 2-worker runtime, wall clock (all three swarms)",
            median(&wall_shared),
        ),
        ("host on its own thread, wall clock", median(&wall_split)),
        (
            "host on its own thread, frames per host-CPU second",
            median(&cpu),
        ),
    ];
    println!(
        "\nraw verify_strict (1 thread): {b:.0} frames/s (median of {})",
        a.rounds
    );
    println!("| what | frames/s | ratio to verify_strict | target |");
    println!("|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {r:.0} | {:.2}x | >= {TARGET}x{} |",
            r / b,
            if r / b >= TARGET { "" } else { " (missed)" }
        );
    }
}
