//! The control API of a real `meshd run` as a hostile local process or web page meets
//! it (no token, a wrong token, a rebound `Host`, a foreign `Origin`, every TCP
//! connection held), its files' modes, and SIGTERM stopping the node as cleanly as
//! Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use meshd::{LOCAL, Meshd};
use serde_json::Value;

/// The control API's `host:port` from `<data-dir>/control.addr`.
fn control_host(dir: &Path) -> String {
    let url = std::fs::read_to_string(dir.join("control.addr")).unwrap();
    url.trim()
        .strip_prefix("http://")
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// One raw request (what any local process or a browser can send); status, headers,
/// JSON body.
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        // A cross-origin "simple" request: text/plain needs no CORS preflight.
        req.push_str("Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn assert_refused(got: (u16, String, Value), status: u16, what: &str) {
    let (code, head, body) = got;
    assert_eq!(code, status, "{what}: {head}\n{body}");
    assert_eq!(body["error/code"], "E_TRANSPORT_REJECTED", "{what}: {body}");
    if status == 401 {
        assert!(head.contains("www-authenticate: bearer"), "{what}: {head}");
    }
}

#[test]
fn the_control_api_needs_the_token_its_own_host_and_no_foreign_origin() {
    let d = tempfile::tempdir().unwrap();
    let n = Meshd::start(d.path(), LOCAL);
    let host = control_host(d.path());

    // Any local process without the token: refused, whatever it asks.
    assert_refused(
        raw(&host, "GET", "/status", &[("Host", &host)]),
        401,
        "no token",
    );
    assert_refused(
        raw(&host, "POST", "/relay/revoke", &[("Host", &host)]),
        401,
        "no token, revoke",
    );
    let wrong = format!("Bearer {}", "0".repeat(64));
    assert_refused(
        raw(
            &host,
            "GET",
            "/status",
            &[("Host", &host), ("Authorization", &wrong)],
        ),
        401,
        "wrong token",
    );

    // The token file is the owner's only, and so is the address file.
    #[cfg(unix)]
    for file in ["control.token", "control.addr"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {:o}", mode & 0o777);
    }
    let token = std::fs::read_to_string(d.path().join("control.token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    let bearer = format!("Bearer {token}");

    // Even with the token: a page whose name was rebound to loopback (its own name in
    // Host), and a page of another origin, are refused.
    let port = host.rsplit_once(':').unwrap().1;
    let rebound = format!("attacker.example:{port}");
    assert_refused(
        raw(
            &host,
            "GET",
            "/status",
            &[("Host", &rebound), ("Authorization", &bearer)],
        ),
        403,
        "rebound Host",
    );
    let before = n.cli_ok(&["status"])["own_advert_sequence"].clone();
    assert_refused(
        raw(
            &host,
            "POST",
            "/publish",
            &[
                ("Host", &host),
                ("Origin", "http://attacker.example"),
                ("Authorization", &bearer),
            ],
        ),
        403,
        "foreign Origin",
    );
    assert_refused(
        raw(
            &host,
            "POST",
            "/publish",
            &[("Host", &host), ("Origin", "http://attacker.example")],
        ),
        403,
        "cross-origin simple POST",
    );
    // Nothing was published by the refused requests.
    assert_eq!(n.cli_ok(&["status"])["own_advert_sequence"], before);

    // With the token and the served address it answers; the CLI reads the token itself.
    let (code, _, body) = raw(
        &host,
        "GET",
        "/status",
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["peer_id"], n.peer_id().as_str());
    assert_eq!(n.cli_ok(&["peers"]), serde_json::json!([]));

    let status = n.interrupt();
    assert!(status.success(), "{status}");
    assert!(!d.path().join("control.addr").exists());
    assert!(!d.path().join("control.token").exists());
}

#[test]
fn sigterm_stops_the_node_like_ctrl_c() {
    let d = tempfile::tempdir().unwrap();
    let n = Meshd::start(d.path(), LOCAL);
    let s = n.wait_status(Duration::from_secs(30), |s| {
        s["own_advert_sequence"].as_u64().is_some()
    });
    let seq = s["own_advert_sequence"].as_u64().unwrap();

    let status = n.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "meshd exited with {status} on SIGTERM"
    );
    assert!(
        !d.path().join("control.addr").exists(),
        "control.addr left behind"
    );
    assert!(
        !d.path().join("control.token").exists(),
        "control.token left behind"
    );
    // The store was closed cleanly and holds the sequence number.
    let (store, _) = libmesh::advert_store::DurableStore::open(
        d.path(),
        mesh_advert::StoreLimits::default(),
        &mesh_core::Timestamp::now(),
    )
    .unwrap();
    assert_eq!(store.own_sequence().unwrap(), Some(seq));
}

/// The CLI sends the control token only to a loopback control API: a `--node` URL or a
/// `control.addr` naming another host is refused before any connection (the token went
/// out in clear text to whatever host they named).
#[test]
fn the_cli_sends_its_token_only_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("control.token"), "f".repeat(64)).unwrap();
    let meshd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshd"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = meshd(&["status", "--node", "http://192.0.2.1:9"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("loopback only"), "{text}");
    // Nor to `localhost`, which may resolve to the loopback address the node does not
    // hold (another user's listener there got the token).
    let out = meshd(&["status", "--node", "http://localhost:9"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("not localhost"), "{text}");
    std::fs::write(dir.path().join("control.addr"), "http://192.0.2.1:9\n").unwrap();
    let out = meshd(&["status"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("loopback only"), "{text}");
}

/// A local process of another user that holds every connection the control API's TCP
/// port takes (`[http] max_connections`, counted before any token is seen) does not
/// shut the owner's CLI out: the CLI reaches the node on `<data-dir>/control.sock`, mode
/// 0600, which a clean stop removes. With the socket moved away the CLI falls back to
/// TCP, and is shut out.
#[cfg(unix)]
#[test]
fn a_process_holding_the_tcp_api_does_not_shut_the_cli_out() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = tempfile::tempdir().unwrap();
    // A cap of 32 and idle connections kept for 300 s: what the default 256 and 10 s
    // allow a process that reconnects, without a race against the timer here.
    let config = d.path().join("meshd.toml");
    std::fs::write(
        &config,
        "[http]\nheader_timeout_secs = 300\nmax_connections = 32\nmax_connections_per_client = 32\n",
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(LOCAL);
    let n = Meshd::start(d.path(), &args);
    let socket = d.path().join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control.sock is {mode:o}");
    assert_eq!(n.cli_ok(&["status"])["node_id"], n.node_id());

    let host = control_host(d.path());
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&host).unwrap())
        .collect();
    // The TCP API is full: a request with the token is closed unanswered.
    let token = std::fs::read_to_string(d.path().join("control.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let full = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) = raw(
            &host,
            "GET",
            "/status",
            &[("Host", &host), ("Authorization", &bearer)],
        );
        if code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < full,
            "the TCP API never filled up"
        );
    }
    assert_eq!(n.cli_ok(&["status"])["node_id"], n.node_id());
    let peers = n.cli(&["peers"]);
    assert!(
        peers.status.success(),
        "{}",
        String::from_utf8_lossy(&peers.stderr)
    );

    // Without the socket (moved away) the CLI takes the TCP API, and is shut out.
    let away = d.path().join("control.sock.away");
    std::fs::rename(&socket, &away).unwrap();
    let out = n.cli(&["status"]);
    assert!(!out.status.success(), "the TCP API had room");
    std::fs::rename(&away, &socket).unwrap();
    assert_eq!(n.cli_ok(&["status"])["node_id"], n.node_id());
    drop(held);
    let status = n.interrupt();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "control.sock left behind");
}

/// A node killed without cleanup leaves `control.sock`, `control.addr` and
/// `control.token`; another local process may hold the port `control.addr` names by
/// then. The CLI finds the socket dead and says the node is not running: nothing (no
/// token, no request) goes to that port.
#[cfg(unix)]
#[test]
fn after_a_crash_the_cli_sends_nothing_to_the_port_control_addr_names() {
    let d = tempfile::tempdir().unwrap();
    let n = Meshd::start(d.path(), LOCAL);
    assert_eq!(n.cli_ok(&["status"])["node_id"], n.node_id());
    n.kill();
    assert!(d.path().join("control.sock").exists());
    // Another process takes the port the dead node served the API on.
    let host = control_host(d.path());
    let squatter = std::net::TcpListener::bind(&host).unwrap();
    squatter.set_nonblocking(true).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(d.path())
        .arg("status")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("not running"), "{text}");
    // Not one connection came to the squatter.
    match squatter.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected to the port control.addr names: {other:?}"),
    }
}
