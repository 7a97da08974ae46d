//! The node's transports between `meshd` processes on loopback: TCP, QUIC, WebSocket,
//! and WSS listening from certificate files (a test CA made here, trusted by the
//! dialer with `--tls-root`; a dialer without it is refused by TLS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::path::Path;
use std::time::Duration;

use meshd::Meshd;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A CA and a leaf certificate for localhost / 127.0.0.1, as PEM files in `dir`.
fn make_certs(dir: &Path) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", leaf.pem()),
        write("key.pem", leaf_key.serialize_pem()),
    )
}

fn listen_addr(n: &Meshd, pred: impl Fn(&str) -> bool) -> String {
    n.ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| pred(a))
        .unwrap_or_else(|| panic!("no such listen address in {}", n.ready))
        .to_owned()
}

fn client(dir: &Path, extra: &[&str]) -> Meshd {
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        "none",
        "--kad-mode",
        "server",
    ];
    args.extend_from_slice(extra);
    Meshd::start(dir, &args)
}

fn dial_and_session(from: &Meshd, addr: &str, server: &Meshd) {
    let target = format!("{addr}/p2p/{}", server.peer_id());
    let out = from.cli_ok(&["dial", &target]);
    assert_eq!(out["peer_id"], server.peer_id().as_str());
    let peers = wait_session(from, &server.peer_id());
    let remote = peers["addrs"][0].as_str().unwrap().to_owned();
    assert!(remote.starts_with(addr), "{remote} is not over {addr}");
}

fn wait_session(n: &Meshd, peer: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let peers = n.cli_ok(&["peers"]);
        if let Some(p) = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer_id"] == peer && p["session"] == true)
        {
            return p.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no session: {peers}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tcp_quic_ws_and_wss_between_nodes() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ca, cert, key) = make_certs(dirs[0].path());
    let server = Meshd::start(
        dirs[0].path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--listen",
            "/ip4/127.0.0.1/tcp/0/ws",
            "--listen",
            "/ip4/127.0.0.1/tcp/0/wss",
            "--wss-cert",
            &cert,
            "--wss-key",
            &key,
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
        ],
    );
    let quic = listen_addr(&server, |a| a.contains("quic-v1"));
    let ws = listen_addr(&server, |a| a.ends_with("/ws") && !a.contains("/tls/"));
    let wss = listen_addr(&server, |a| a.ends_with("/wss") || a.ends_with("/tls/ws"));

    // QUIC and plain WebSocket from one client, WSS from one that trusts the CA.
    let a = client(dirs[1].path(), &[]);
    dial_and_session(&a, &quic, &server);
    let b = client(dirs[2].path(), &[]);
    dial_and_session(&b, &ws, &server);
    let c = client(dirs[3].path(), &["--tls-root", &ca]);
    dial_and_session(&c, &wss, &server);

    // Without the CA, TLS refuses the self-signed chain.
    let d = tempfile::tempdir().unwrap();
    let untrusting = client(d.path(), &[]);
    let out = untrusting.cli(&["dial", &format!("{wss}/p2p/{}", server.peer_id())]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");
}

#[test]
fn wss_needs_certificate_files_that_exist() {
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(d.path())
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0/wss",
            "--wss-cert",
            "/nonexistent/cert.pem",
            "--wss-key",
            "/nonexistent/key.pem",
            "--bootstrap",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let out = std::process::Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(d.path())
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0/wss",
            "--bootstrap",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"));
}
