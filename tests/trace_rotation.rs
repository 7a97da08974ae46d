//! What peers can make `meshd --trace FILE` write: every new peer connection is a
//! `peer/connected` line, so the file rotates by size (`--trace-max-bytes`; FILE becomes
//! FILE.1) instead of growing for as long as strangers connect. The real binary, hostile
//! libp2p peers over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::time::{Duration, Instant};

use mesh_core::NodeKeypair;
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use meshd::Meshd;

const MAX: u64 = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_file_rotates_however_many_peers_connect() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let rotated = dir.path().join("trace.jsonl.1");
    let n = Meshd::start(
        dir.path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
            "--trace",
            trace.to_str().unwrap(),
            "--trace-max-bytes",
            &MAX.to_string(),
        ],
    );
    // Forty strangers connect, one after the other, and stay (one that left at once
    // could leave before the node had finished its side of the handshake).
    let mut strangers = Vec::new();
    for _ in 0..40 {
        let p = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        p.connect(n.addr().parse().unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
        strangers.push(p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rotated.exists() {
        assert!(
            Instant::now() < deadline,
            "the trace file never rotated: {} bytes:\n{}",
            std::fs::metadata(&trace).map(|m| m.len()).unwrap_or(0),
            std::fs::read_to_string(&trace).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each file stays near the bound (one line past it at most), and holds whole lines.
    for path in [&trace, &rotated] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            (text.len() as u64) < MAX + 2048,
            "{}: {} bytes",
            path.display(),
            text.len()
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", path.display()));
        }
    }
    let connected = std::fs::read_to_string(&rotated)
        .unwrap()
        .matches("peer/connected")
        .count();
    assert!(connected > 0, "no peer/connected line in the rotated file");
}
