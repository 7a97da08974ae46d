//! `meshd run` as a user meets it: the ready line, metrics and status over HTTP, clean
//! Ctrl-C, and clear failures for bad configuration, a port in use and an unusable
//! data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/raw_http.rs"]
mod raw_http;

use std::process::Command;
use std::time::Duration;

use meshd::{LOCAL, Meshd, bin};
use serde_json::Value;

fn run_fails(args: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(d.path())
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "meshd run {args:?} did not fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ready_line_metrics_status_and_clean_stop() {
    let d = tempfile::tempdir().unwrap();
    let mut args = LOCAL.to_vec();
    args.extend(["--metrics", "127.0.0.1:0"]);
    let n = Meshd::start(d.path(), &args);
    assert!(n.node_id().starts_with("node:did:key:z6Mk"));
    assert!(n.peer_id().starts_with("12D3KooW"));
    assert!(n.addr().starts_with("/ip4/127.0.0.1/tcp/"), "{}", n.ready);

    let metrics = n.ready["metrics"].as_str().unwrap().to_owned();
    let (code, text) = raw_http::get(&format!("{metrics}/metrics"));
    assert_eq!(code, 200);
    assert!(text.contains("libp2p_"), "{text}");
    let (code, body) = raw_http::get(&format!("{metrics}/status"));
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["node_id"], n.node_id().as_str());
    assert_eq!(status["dht"]["mode"], "server");
    assert_eq!(status["nat"]["status"], "unknown");

    // The CLI finds the node through <data-dir>/control.addr.
    let s = n.cli_ok(&["status"]);
    assert_eq!(s["peer_id"], n.peer_id().as_str());
    assert_eq!(n.cli_ok(&["peers"]), serde_json::json!([]));
    // Bad input to the control API gets a frozen code.
    let out = n.cli(&["dial", "not-a-target"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_PROTO_INVALID");
    // An unknown node cannot be found, with a transport code rather than a hang.
    let stranger = mesh_core::NodeKeypair::generate().node_id().to_string();
    let out = n.cli(&["lookup", &stranger]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");

    let status = n.interrupt();
    assert!(status.success());
    assert!(!d.path().join("control.addr").exists());
}

#[test]
fn client_commands_without_a_node_say_so() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(d.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running node"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let err = run_fails(&["--listen", &addr, "--bootstrap", "none"]);
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn config_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\ncolour = \"blue\"\n",
    )
    .unwrap();
    let err = run_fails(&["--config", bad.to_str().unwrap()]);
    assert!(err.contains("bad.toml") && err.contains("colour"), "{err}");

    std::fs::write(&bad, "[limits]\nmax_sessions = 0\n").unwrap();
    let err = run_fails(&["--config", bad.to_str().unwrap()]);
    assert!(err.contains("max_sessions"), "{err}");

    let missing = d.path().join("missing.toml");
    let err = run_fails(&["--config", missing.to_str().unwrap()]);
    assert!(err.contains("missing.toml"), "{err}");

    let err = run_fails(&["--kad-mode", "sometimes", "--bootstrap", "none"]);
    assert!(err.contains("--kad-mode"), "{err}");
    let err = run_fails(&["--seed", "nonsense", "--bootstrap", "none"]);
    assert!(err.contains("seed"), "{err}");
    let err = run_fails(&["--bootstrap", "/ip4/127.0.0.1/tcp/1"]);
    assert!(err.contains("/p2p"), "{err}");
    let err = run_fails(&["--control", "0.0.0.0:0", "--bootstrap", "none"]);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(&data)
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain-file"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

/// `meshd run --events` (in `LOCAL`) whose reader went away: the node keeps running (the CLI still
/// reaches it) and stops cleanly, instead of dying on its first line.
#[test]
fn run_with_a_closed_stdout_keeps_running() {
    let d = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(d.path())
        .arg("run")
        .args(LOCAL)
        .env_remove("MESHD_DATA_DIR")
        .stdout(writer)
        .stderr(std::fs::File::create(d.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let control = d.path().join("control.addr");
    for _ in 0..200 {
        if control.exists() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let early = child.try_wait().unwrap();
    assert!(
        early.is_none(),
        "meshd run exited: {early:?} {}",
        std::fs::read_to_string(d.path().join("err.log")).unwrap_or_default()
    );
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(d.path())
        .arg("status")
        .env_remove("MESHD_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
    assert!(!control.exists());
}
