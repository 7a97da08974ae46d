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
#[path = "support/raw_http.rs"]
mod raw_http;

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

/// Runs `node web/test/SCRIPT ARGS…` (headless Chromium through puppeteer-core) and
/// hands its JSON stdout lines over a channel; its stdin is piped when `stdin` is set.
fn driver(
    script: &str,
    args: &[&str],
    stdin: bool,
) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new("node")
        .arg(web_dir().join("test").join(script))
        .args(args)
        .env("MESH_CHROMIUM", chromium())
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the driver");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("driver: {line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

#[test]
fn browser_node_against_meshd() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = web_dir().join("dist");
    let mut n = Meshd::start(
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
            "--events",
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
    let (mut driver, rx) = driver(
        "drive.mjs",
        &[
            web.as_str(),
            shared_dir().to_str().unwrap(),
            swarm,
            shot.to_str().unwrap(),
        ],
        true,
    );

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

    // Gossipsub both ways on the swarm's chat topic (`/libmesh/chat/1/KEY`, what the
    // page's chat uses): meshd publishes, the page shows the line as meshd's; the page
    // publishes, meshd reports the message (its `gossip-message` event) from the
    // browser's peer id. Each is retried (bounded): a subscription needs a heartbeat
    // to reach the other side.
    let topic = format!("/libmesh/chat/1/{key}");
    n.cli_ok(&["gossip", "subscribe", &topic]);
    let mut stdin = driver.stdin.take().unwrap();
    let mut send = |cmd: Value| {
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("driver stdin");
    };
    let from_meshd = "hello from meshd";
    let mut received = false;
    for _ in 0..30 {
        n.cli_ok(&["gossip", "publish", &topic, from_meshd]);
        send(
            serde_json::json!({"cmd": "wait-chat", "text": from_meshd, "from": n.node_id(), "ms": 1000}),
        );
        let r = next_line(&rx, "chat-received");
        if r["found"] == true {
            received = true;
            break;
        }
    }
    assert!(received, "the page never showed meshd's chat message");
    let from_page = "hello from the browser";
    let page_peer = loaded["peerId"].as_str().unwrap().to_owned();
    let mut got = None;
    for _ in 0..10 {
        send(serde_json::json!({"cmd": "chat", "text": from_page}));
        next_line(&rx, "chat-sent");
        got = n.wait_line(Duration::from_secs(3), |v| {
            v["event"] == "gossip-message"
                && v["topic"] == topic.as_str()
                && v["data"] == from_page
                && v["source"] == page_peer.as_str()
        });
        if got.is_some() {
            break;
        }
    }
    assert!(
        got.is_some(),
        "meshd never received the page's chat message"
    );

    send(serde_json::json!({"cmd": "done"}));
    let done = next_line(&rx, "done");
    assert!(shot.exists(), "no screenshot: {done}");
    assert!(driver.wait().unwrap().success());
    eprintln!(
        "browser -> meshd connect: {connect_ms:?} ms; join to meshd's presence: {} ms; screenshot {}",
        joined["ms"],
        shot.display()
    );
}

/// Two pages (each `?ephemeral`, its own identity, its own browser context) served by
/// one `meshd run --web` connect to it, hold a libmesh session with it and join the same
/// swarm; page A opens a WebRTC data channel to page B with the `connect_request`, the
/// SDP offer and answer (`setup_payload`) and the ICE candidates (`candidate`) carried
/// as signed `signal-frame.v1` frames through meshd as the signaling host; one message
/// goes each way over the channel, which runs between the two browsers, not through
/// meshd.
#[test]
fn two_browsers_through_meshd_signaling() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = web_dir().join("dist");
    let mut n = Meshd::start(
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
            "--events",
            "--metrics",
            "127.0.0.1:0",
            "--web",
            "127.0.0.1:0",
            "--web-root",
            root.to_str().unwrap(),
        ],
    );
    let web = n.ready["web"].as_str().unwrap().to_owned();
    let metrics = n.ready["metrics"].as_str().unwrap().to_owned();
    let swarm = "browser-to-browser-swarm";
    n.cli_ok(&["swarm", "join", swarm]);
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let shots = out_dir.join("browser-b2b");
    let (mut driver, rx) = driver(
        "b2b.mjs",
        &[web.as_str(), swarm, shots.to_str().unwrap()],
        false,
    );

    // Each page holds a libmesh session with meshd (its hello verified, meshd's ack
    // verified by the page), and meshd reports both sessions.
    let s = next_line(&rx, "sessions");
    let pages: Vec<&Value> = s["pages"].as_array().unwrap().iter().collect();
    assert_eq!(pages.len(), 2, "{s}");
    for p in &pages {
        assert!(
            p["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == n.peer_id().as_str()),
            "the page holds no session with meshd: {p}"
        );
        let peer = p["peerId"].as_str().unwrap().to_owned();
        let node = p["nodeId"].as_str().unwrap().to_owned();
        let up = n.wait_line(WAIT, |v| {
            v["event"] == "session-established" && v["peer"] == peer.as_str()
        });
        let up = up.unwrap_or_else(|| panic!("meshd reported no session with {peer}"));
        assert_eq!(up["node"], node.as_str(), "{up}");
    }
    assert_ne!(pages[0]["nodeId"], pages[1]["nodeId"]);
    // meshd's WebRTC-direct UDP ports, as it told the pages.
    let webrtc_ports: Vec<String> = s["info"]["webrtc_direct"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|a| a.split('/').nth(4).map(str::to_owned))
        .collect();
    assert!(!webrtc_ports.is_empty(), "{s}");

    let joined = next_line(&rx, "joined");
    let key = joined["key"].as_str().unwrap().to_owned();
    // meshd verified both pages' presences.
    let deadline = Instant::now() + WAIT;
    loop {
        let v = n.cli_ok(&["swarm", "members", &key]);
        let listed = pages.iter().all(|p| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["node"] == p["nodeId"])
        });
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "meshd does not list both pages: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let open = next_line(&rx, "open");
    assert_eq!(open["peer"], pages[1]["nodeId"], "{open}");
    assert_eq!(open["responder"]["peer"], pages[0]["nodeId"], "{open}");
    assert_eq!(open["responder"]["role"], "responder", "{open}");
    // The channel runs between the browsers: its selected pair is not meshd's UDP port.
    let remote_port = open["path"]["remote"]["port"]
        .as_u64()
        .expect("no ICE pair");
    assert!(
        !webrtc_ports.contains(&remote_port.to_string()),
        "the data channel goes to meshd's WebRTC port: {open}"
    );
    // meshd carried the frames: the request, the accept, two SDPs, candidates.
    let (code, text) = raw_http::get(&format!("{metrics}/metrics"));
    assert_eq!(code, 200);
    let forwarded = text
        .lines()
        .find(|l| l.starts_with("libmesh_signal_forwarded_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        forwarded >= 4.0,
        "meshd forwarded {forwarded} frames:\n{text}"
    );

    let m = next_line(&rx, "messages");
    assert_eq!(m["a"]["text"], "hello from page B", "{m}");
    assert_eq!(m["a"]["from"], pages[1]["nodeId"], "{m}");
    assert_eq!(m["b"]["text"], "hello from page A", "{m}");
    assert_eq!(m["b"]["from"], pages[0]["nodeId"], "{m}");

    let done = next_line(&rx, "done");
    for shot in done["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).exists(), "{done}");
    }
    assert!(driver.wait().unwrap().success());
    eprintln!(
        "browser <-> browser: join to open {} ms, request to open {} ms (join until both saw each other {} ms); {forwarded} frames forwarded",
        open["joinToOpenMs"], open["ms"], joined["ms"]
    );
}

/// The page's pure logic (signal frames, batches and answers, ICE candidates as
/// multiaddrs, the session hello and the checks of an ack), under Node:
/// `node --test web/test/unit.mjs`.
#[test]
fn page_logic_unit_tests() {
    if !ready() {
        return;
    }
    let out = Command::new("node")
        .args(["--test", "--test-reporter=tap"])
        .arg(web_dir().join("test/unit.mjs"))
        .output()
        .expect("node runs the unit tests");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("# fail 0") && !text.contains("# pass 0"),
        "{text}"
    );
}

/// The standard js-libp2p path between two pages: `meshd run --relay-server --admission
/// open` (its WebSocket address given as `--external`, so the relay server is on) serves
/// both; page B reserves a slot on it without the admission protocol (an implicit
/// grant), its signed presence lists its `/p2p-circuit/webrtc` address, and page A dials
/// that: `/webrtc-signaling` over the circuit, then a direct (unlimited) WebRTC
/// connection, pinged both ways.
#[test]
fn two_browsers_over_webrtc_signaling_on_a_meshd_relay() {
    if !ready() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = format!("/ip4/127.0.0.1/tcp/{port}/ws");
    let dir = tempfile::tempdir().unwrap();
    let root = web_dir().join("dist");
    let n = Meshd::start(
        dir.path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            &ws,
            "--external",
            &ws,
            "--listen",
            "/ip4/127.0.0.1/udp/0/webrtc-direct",
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
            "--no-autonat",
            "--events",
            "--relay-server",
            "--admission",
            "open",
            "--web",
            "127.0.0.1:0",
            "--web-root",
            root.to_str().unwrap(),
        ],
    );
    let web = n.ready["web"].as_str().unwrap().to_owned();
    let swarm = "browser-relayed-swarm";
    n.cli_ok(&["swarm", "join", swarm]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-relayed.png");
    let (mut driver, rx) = driver(
        "relayed.mjs",
        &[web.as_str(), swarm, shot.to_str().unwrap()],
        false,
    );

    let r = next_line(&rx, "reserved");
    let b_peer = r["pages"][1]["peerId"].as_str().unwrap().to_owned();
    let circuit = r["addr"].as_str().unwrap();
    assert!(
        circuit.starts_with(&format!(
            "{ws}/p2p/{}/p2p-circuit/webrtc/p2p/{b_peer}",
            n.peer_id()
        )),
        "{r}"
    );
    next_line(&rx, "joined");
    let d = next_line(&rx, "dialed");
    assert_eq!(d["peer"], b_peer.as_str(), "{d}");
    assert_eq!(
        d["limited"], false,
        "still the relayed (limited) connection: {d}"
    );
    assert!(d["rtt"].as_f64().is_some(), "{d}");
    assert!(d["back"]["rtt"].as_f64().is_some(), "{d}");
    next_line(&rx, "done");
    assert!(driver.wait().unwrap().success());
    eprintln!(
        "browser <-> browser over /webrtc-signaling on a meshd relay: dial {} ms",
        d["ms"]
    );
}
