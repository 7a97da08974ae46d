//! Soak: one `meshd` process against hostile peers (default 10, for 5 minutes) while a
//! well-behaved node keeps a session with it, signals it and looks it up.
//!
//! 1. `meshd run` on loopback TCP (its own process, so that its RSS and CPU time are
//!    its own), Kademlia server, no bootstrap.
//! 2. A friendly in-process node dials it and keeps a session. Every 250 ms it does one
//!    operation, in turn: a lookup of the target, a signal (`send_signal`) to it, a
//!    marker to it. Success rate = operations answered `Ok` / operations.
//! 3. The hostile peers (each a [`mesh_testkit::hostile::HostilePeer`] under a fresh key
//!    every 30 s) loop over every protocol until the end:
//!    - `/mesh/signal`: batches of 64 `connect_request` frames signed by throwaway keys
//!      and `candidate` frames naming a UDP "victim" socket on 127.0.0.1 (which counts
//!      what reaches it: the node must not spray a third party), the same batch
//!      replayed;
//!    - `/mesh/marker`: markers from throwaway participants, and one replayed;
//!    - `/mesh/advert`: self-signed advertisements of throwaway keys published (the
//!      store must stay bounded), lookups of random ids;
//!    - every protocol: malformed, oversized (3 MiB) and half-sent bodies.
//! 4. RSS (`VmRSS`) sampled every 5 s; CPU time from `/proc/<pid>/stat`.
//!
//! `cargo bench --bench soak` (5 minutes after the build); flags after `--`:
//! `--secs S` (300), `--hostile H` (10).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, NodeEvent, Target};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{Artifact, NoTrace, NodeId, NodeKeypair, Timestamp};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::start_node;
use serde_json::{Map, json};

const SIGNAL: &str = "/mesh/signal/1.0.0";
const MARKER: &str = "/mesh/marker/1.0.0";
const ADVERT: &str = "/mesh/advert/1.0.0";
const SESSION: &str = "/mesh/session/1.0.0";
const ALL: [&str; 4] = [SESSION, MARKER, SIGNAL, ADVERT];
const WAIT: Duration = Duration::from_secs(10);

struct Args {
    secs: u64,
    hostile: usize,
}

fn args() -> Args {
    let mut a = Args {
        secs: 300,
        hostile: 10,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "--secs" => {
                a.secs = argv[i + 1].parse().expect("--secs N");
                i += 1;
            }
            "--hostile" => {
                a.hostile = argv[i + 1].parse().expect("--hostile N");
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

struct Target_ {
    child: Child,
    node: NodeId,
    peer: PeerId,
    addr: Multiaddr,
    _dir: tempfile::TempDir,
}

impl Drop for Target_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_meshd() -> Target_ {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meshd");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = loop {
        let line = lines.next().expect("meshd ready line").unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v.get("node/id").is_some()
        {
            break v;
        }
    };
    // Keep reading its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let node: NodeId = ready["node/id"].as_str().unwrap().parse().unwrap();
    let peer: PeerId = ready["libp2p/peer-id"].as_str().unwrap().parse().unwrap();
    let addr: Multiaddr = ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .find(|a: &Multiaddr| a.to_string().contains("/tcp/"))
        .expect("a TCP listen address");
    Target_ {
        child,
        node,
        peer,
        addr,
        _dir: dir,
    }
}

/// RSS in KiB and CPU time (user + system) of `pid`.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (rss, Duration::from_millis(ticks * 10))
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

fn batch(frames: &[Vec<u8>]) -> Vec<u8> {
    // A CBOR array of byte strings (the /mesh/signal batch form).
    let mut out = Vec::new();
    head(&mut out, 4, frames.len() as u64);
    for f in frames {
        head(&mut out, 2, f.len() as u64);
        out.extend_from_slice(f);
    }
    out
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn signal_flood(to: NodeId, victim: u16, round: u64) -> Vec<u8> {
    let now = Timestamp::now();
    let mut frames = Vec::new();
    for i in 0..32 {
        let signer = NodeKeypair::generate();
        let corr = format!("soak:{round}:{i}");
        let req = mesh_signal::frame(
            &signer,
            to,
            "connect_request",
            &corr,
            Map::from_iter([("purpose".into(), json!("connect"))]),
            &now,
        )
        .unwrap();
        frames.push(req.to_cbor());
        // The victim's address and fifteen ports after it.
        let addrs: Vec<String> = (0..16u16)
            .map(|k| format!("/ip4/127.0.0.1/udp/{}/quic-v1", victim.wrapping_add(k)))
            .collect();
        let cand = mesh_signal::frame(
            &signer,
            to,
            "candidate",
            &corr,
            Map::from_iter([("addrs".into(), json!(addrs))]),
            &now,
        )
        .unwrap();
        frames.push(cand.to_cbor());
    }
    batch(&frames)
}

fn marker(key: &NodeKeypair, to: NodeId, id: &str) -> Vec<u8> {
    mesh_session::marker::envelope(key, to, id, "marker:soak", &Timestamp::now())
        .unwrap()
        .to_cbor()
}

fn publish(round: u64) -> Vec<u8> {
    let key = NodeKeypair::generate();
    let now = Timestamp::now();
    let addrs: Vec<Multiaddr> = (0..8)
        .map(|i| {
            format!("/ip4/198.51.100.{i}/tcp/{}", 4000 + round % 1000)
                .parse()
                .unwrap()
        })
        .collect();
    let ad = mesh_advert::own::advert_for(&key, &addrs, 1, &now, 60).unwrap();
    mesh_advert::protocol::encode_request(&mesh_advert::protocol::Request::Publish {
        correlation: format!("soak:{round}"),
        advert: Box::new(ad),
    })
}

fn lookup(round: u64) -> Vec<u8> {
    mesh_advert::protocol::encode_request(&mesh_advert::protocol::Request::Lookup {
        correlation: format!("soak:l{round}"),
        node: NodeKeypair::generate().node_id(),
    })
}

async fn hostile(
    target: NodeId,
    peer: PeerId,
    addr: Multiaddr,
    victim: u16,
    until: Instant,
    counts: Arc<Counts>,
) {
    let mut round = 0u64;
    let replay_marker = marker(&NodeKeypair::generate(), target, "soak-replayed");
    while Instant::now() < until {
        let h = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        if h.connect(addr.clone(), WAIT).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let key_until = (Instant::now() + Duration::from_secs(30)).min(until);
        let flood = signal_flood(target, victim, round);
        let mut trickles = Vec::new();
        for p in ALL {
            let h2 = h.clone();
            trickles.push(tokio::spawn(async move {
                let _ = h2
                    .trickle(peer, p, &[0xa2, 0x61], Duration::from_secs(60))
                    .await;
            }));
        }
        while Instant::now() < key_until {
            round += 1;
            let body: (&str, Vec<u8>) = match round % 8 {
                0 => (SIGNAL, signal_flood(target, victim, round)),
                1 => (SIGNAL, flood.clone()),
                2 => (
                    MARKER,
                    marker(&NodeKeypair::generate(), target, &format!("soak-{round}")),
                ),
                3 => (MARKER, replay_marker.clone()),
                4 => (ADVERT, publish(round)),
                5 => (ADVERT, lookup(round)),
                6 => (ALL[(round / 8 % 4) as usize], vec![0xa0; 3 << 20]),
                _ => (ALL[(round / 8 % 4) as usize], vec![0x81; 4096]),
            };
            counts.sent.fetch_add(1, Ordering::Relaxed);
            match h.send(peer, body.0, &body.1, WAIT).await {
                Ok(_) => counts.answered.fetch_add(1, Ordering::Relaxed),
                Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        for t in trickles {
            t.abort();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let target = start_meshd();
    let pid = target.child.id();
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim_port = victim.local_addr().unwrap().port();
    victim
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let victim_bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (vb, stop) = (victim_bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = victim.recv(&mut buf) {
                    vb.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        });
    }

    // The friendly node and its session.
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    let mut friend = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let target_addr = target
        .addr
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(target.peer));
    friend.handle.dial(Target::Addr(target_addr)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(NodeEvent::SessionEstablished { peer, .. }) = friend.events.recv().await
                && peer == target.peer
            {
                return;
            }
        }
    })
    .await
    .expect("friendly session");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_start, cpu_start) = usage(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(a.secs);
    println!(
        "soak: {} hostile peers for {} s against meshd (pid {pid}); RSS at start {} KiB",
        a.hostile, a.secs, rss_start
    );

    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for _ in 0..a.hostile {
        tasks.push(tokio::spawn(hostile(
            target.node,
            target.peer,
            target.addr.clone(),
            victim_port,
            until,
            counts.clone(),
        )));
    }

    // Friendly operations and RSS samples until the end.
    let (mut ok, mut total, mut closed) = (0u64, 0u64, 0u64);
    let mut failures: Vec<String> = Vec::new();
    let mut rss_max = rss_start;
    let mut next_sample = Instant::now();
    let mut op = 0u64;
    while Instant::now() < until {
        while let Ok(e) = friend.events.try_recv() {
            if let NodeEvent::SessionClosed { peer, .. } = e
                && peer == target.peer
            {
                closed += 1;
            }
        }
        op += 1;
        total += 1;
        let r = tokio::time::timeout(WAIT, async {
            match op % 3 {
                0 => friend.handle.lookup(target.node).await.map(|_| ()),
                1 => friend
                    .handle
                    .send_signal(target.node, b"soak".to_vec(), None)
                    .await
                    .map(|_| ()),
                _ => friend
                    .handle
                    .send_marker(Target::Node(target.node), format!("marker:soak-{op}"))
                    .await
                    .map(|_| ()),
            }
        })
        .await;
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => failures.push(format!("op {op} ({}): {e}", op % 3)),
            Err(_) => failures.push(format!("op {op} ({}): no answer in {WAIT:?}", op % 3)),
        }
        if Instant::now() >= next_sample {
            let (rss, _) = usage(pid);
            rss_max = rss_max.max(rss);
            println!(
                "t={:>4}s rss {rss} KiB, friendly {ok}/{total}, hostile requests {} (answered {})",
                started.elapsed().as_secs(),
                counts.sent.load(Ordering::Relaxed),
                counts.answered.load(Ordering::Relaxed)
            );
            next_sample += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let (rss_end, cpu_end) = usage(pid);
    let elapsed = started.elapsed();
    let cpu = (cpu_end - cpu_start).as_secs_f64() / elapsed.as_secs_f64() * 100.0;
    stop.store(true, Ordering::Relaxed);
    println!("---");
    println!("hostile peers             {}", a.hostile);
    println!("duration                  {:.0} s", elapsed.as_secs_f64());
    println!(
        "hostile requests          {} (answered {}, failed or refused at the stream {})",
        counts.sent.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    println!(
        "friendly operations       {ok}/{total} ok ({:.2}%), friendly session closed {closed} times",
        ok as f64 * 100.0 / total.max(1) as f64
    );
    println!(
        "meshd RSS                 start {rss_start} KiB, max {rss_max} KiB, end {rss_end} KiB"
    );
    println!("meshd CPU                 {cpu:.0}% of one core over the soak");
    println!(
        "bytes to the UDP victim   {}",
        victim_bytes.load(Ordering::Relaxed)
    );
    for f in failures.iter().take(10) {
        println!("failure: {f}");
    }
}
