//! The browser node in a real headless Chromium (Debian's `chromium`, driven by
//! `web/test/drive.mjs` with puppeteer-core) against `meshd run --web`, on loopback: the
//! page loads from `meshd`, the shared signing vectors pass byte-exactly in the
//! browser, the browser dials `meshd` over WebRTC-direct and over WebSocket (ping and
//! identify), joins a swarm, and `meshd swarm members` lists it by its own node id
//! (its signed presence verified by `meshd`). A screenshot of the page is saved.
//!
//! Gated: skipped unless `MESH_REQUIRE_BROWSER=1`; with it set, a missing chromium,
//! `web/node_modules` or `web/dist` fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshd::Meshd;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn required() -> bool {
    std::env::var("MESH_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn chromium() -> String {
    std::env::var("MESH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Whether the browser test can run here; panics when required and it cannot.
fn ready() -> bool {
    let missing: Vec<String> = [
        PathBuf::from(chromium()),
        web_dir().join("node_modules/puppeteer-core"),
        web_dir().join("dist/app.js"),
    ]
    .into_iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !required(),
        "MESH_REQUIRE_BROWSER=1 but missing: {missing:?} (apt-get install chromium; npm ci --prefix web; npm run build --prefix web)"
    );
    eprintln!("skipped: MESH_REQUIRE_BROWSER is not 1 and {missing:?} is missing");
    false
}

fn shared_dir() -> PathBuf {
    std::env::var_os("MESH_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn next_line(rx: &mpsc::Receiver<Value>, step: &str) -> Value {
    let v = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("no `{step}` line from the browser driver"));
    assert_eq!(v["step"], step, "expected `{step}`: {v}");
    v
}

#[test]
fn browser_node_against_meshd() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = web_dir().join("dist");
    let n = Meshd::start(
        dir.path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0/ws",
            "--listen",
            "/ip4/127.0.0.1/udp/0/webrtc-direct",
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
            "--no-autonat",
            "--web",
            "127.0.0.1:0",
            "--web-root",
            root.to_str().unwrap(),
        ],
    );
    let web = n.ready["web"].as_str().unwrap().to_owned();
    let swarm = "browser-test-swarm";
    n.cli_ok(&["swarm", "join", swarm]);

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let shot = out_dir.join("browser-page.png");
    let _ = std::fs::remove_file(&shot);
    let mut driver = Command::new("node")
        .arg(web_dir().join("test/drive.mjs"))
        .args([
            web.as_str(),
            shared_dir().to_str().unwrap(),
            swarm,
            shot.to_str().unwrap(),
        ])
        .env("MESH_CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the driver");
    let stdout = driver.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("driver: {line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });

    let loaded = next_line(&rx, "loaded");
    assert_eq!(loaded["info"]["node_id"], n.node_id().as_str());
    let browser_node = loaded["nodeId"].as_str().unwrap().to_owned();
    assert!(browser_node.starts_with("node:did:key:z6Mk"), "{loaded}");

    let vectors = next_line(&rx, "vectors");
    let results = vectors["results"].as_array().unwrap();
    assert!(results.len() >= 4, "{vectors}");
    for r in results {
        assert_eq!(r["ok"], true, "vector failed in the browser: {r}");
    }

    let mut connect_ms = Vec::new();
    for kind in ["ws", "webrtc-direct"] {
        let d = next_line(&rx, "dial");
        assert_eq!(d["kind"], kind, "{d}");
        assert_eq!(d["peer"], n.peer_id().as_str(), "{d}");
        let remote = d["remote"].as_str().unwrap();
        let fits = match kind {
            "ws" => remote.contains("/ws"),
            _ => remote.contains("/webrtc-direct"),
        };
        assert!(fits, "{kind} dial went over {remote}");
        assert!(d["rtt"].as_f64().is_some(), "no ping RTT: {d}");
        let protocols: Vec<&str> = d["protocols"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for p in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/meshsub/1."] {
            assert!(
                protocols.iter().any(|q| q.starts_with(p)),
                "identify did not learn {p}: {d}"
            );
        }
        connect_ms.push((kind, d["ms"].as_f64().unwrap_or(0.0)));
    }

    let joined = next_line(&rx, "joined");
    let key = joined["key"].as_str().unwrap().to_owned();
    assert!(
        joined["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == n.node_id().as_str()),
        "the browser never heard meshd's presence: {joined}"
    );
    // meshd verified the browser's signed presence and lists it.
    let deadline = Instant::now() + WAIT;
    loop {
        let v = n.cli_ok(&["swarm", "members", &key]);
        let listed = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["node"] == browser_node.as_str());
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "meshd never listed the browser: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // meshd also knows the browser as a connected peer.
    let peers = n.cli_ok(&["peers"]);
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == loaded["peerId"]),
        "{peers}"
    );

    driver.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let done = next_line(&rx, "done");
    assert!(shot.exists(), "no screenshot: {done}");
    assert!(driver.wait().unwrap().success());
    eprintln!(
        "browser -> meshd connect: {connect_ms:?} ms; join to meshd's presence: {} ms; screenshot {}",
        joined["ms"],
        shot.display()
    );
}
