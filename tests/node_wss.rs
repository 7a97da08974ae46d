//! WSS endpoints as the Orbiplex baseline has them (issue 22), between `meshd` processes
//! on loopback: a node with a WSS listener and a public name advertises
//! `wss://node-wss-test.libmesh.test:PORT/peer`; another node looks it up by node id
//! and holds a session with it over WSS, dialing the name (SNI and the certificate check
//! against the name, not against 127.0.0.1); a certificate for another name and an
//! untrusted root fail with `E_TRANSPORT_UNAVAILABLE` and say why; and a plain TLS
//! server sees the name as SNI and in the `Host` header.
//!
//! The name resolves through `/etc/hosts` (a line added for the run and removed after it,
//! even when a test panics; it needs root, as CI has), and a test CA made here issued the
//! certificates; dialers trust it with `--tls-root`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshd::Meshd;
use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use serde_json::Value;

/// The name the tests give 127.0.0.1.
const NAME: &str = "node-wss-test.libmesh.test";
const HOSTS: &str = "/etc/hosts";
const WAIT: Duration = Duration::from_secs(60);

/// How many tests hold the `/etc/hosts` line (added by the first, removed by the last).
static HOSTS_USERS: Mutex<usize> = Mutex::new(0);

/// `127.0.0.1 NAME` in `/etc/hosts` while held.
struct HostsName;

fn hosts_line() -> String {
    format!("127.0.0.1 {NAME}")
}

/// `/etc/hosts` without our line (other lines, other writers' included, untouched).
fn hosts_without_line() -> String {
    let text = std::fs::read_to_string(HOSTS).unwrap_or_default();
    let mut out: String = text
        .lines()
        .filter(|l| l.trim() != hosts_line())
        .map(|l| format!("{l}\n"))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

impl HostsName {
    fn hold() -> HostsName {
        let mut users = HOSTS_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 {
            let text = format!("{}{}\n", hosts_without_line(), hosts_line());
            std::fs::write(HOSTS, text).unwrap_or_else(|e| {
                panic!("cannot add {NAME} to {HOSTS} ({e}); these tests need root")
            });
        }
        *users += 1;
        HostsName
    }
}

impl Drop for HostsName {
    fn drop(&mut self) {
        let mut users = HOSTS_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = std::fs::write(HOSTS, hosts_without_line());
        }
    }
}

/// A test CA: its PEM file and what signs with it.
struct Ca {
    pem: PathBuf,
    cert: Certificate,
    key: KeyPair,
}

fn make_ca(dir: &Path) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca { pem, cert, key }
}

/// A leaf certificate for `names` issued by `ca`: (cert, key) PEM files in `dir`.
fn make_leaf(ca: &Ca, dir: &Path, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (
        c.to_str().unwrap().to_owned(),
        k.to_str().unwrap().to_owned(),
    )
}

/// A plain node on loopback TCP: the mesh DHT peer everyone seeds from.
fn dht_node(dir: &Path) -> Meshd {
    Meshd::start(dir, meshd::LOCAL)
}

/// A node listening on WSS only (127.0.0.1), advertising `wss://NAME:PORT/peer`.
fn wss_node(dir: &Path, cert: &str, key: &str, seed: &Meshd) -> Meshd {
    let seed = seed.seed();
    Meshd::start(
        dir,
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0/tls/ws",
            "--wss-cert",
            cert,
            "--wss-key",
            key,
            "--wss-hostname",
            NAME,
            "--wss-path",
            "/peer",
            "--seed",
            &seed,
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
            "--events",
        ],
    )
}

/// A dialer seeded from `seed`, with `extra` flags. Nobody can connect to it (it
/// listens on WSS with a self-signed certificate no other node trusts), so every
/// connection between it and the WSS node is its own dial.
fn dialer(dir: &Path, seed: &Meshd, extra: &[&str]) -> Meshd {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("own-cert.pem"), dir.join("own-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let seed = seed.seed();
    let mut args = vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        "--wss-cert",
        c.to_str().unwrap(),
        "--wss-key",
        k.to_str().unwrap(),
        "--seed",
        seed.as_str(),
        "--bootstrap",
        "none",
        "--kad-mode",
        "server",
        "--events",
    ];
    args.extend_from_slice(extra);
    Meshd::start(dir, &args)
}

/// `meshd lookup --fresh` until the mesh DHT has the node's advertisement.
fn wait_lookup(n: &Meshd, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = n.cli(&["lookup", "--fresh", id]);
        let mut last = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["source"] == "mesh-dht" {
                return v;
            }
            last = v.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no advertisement of {id}: {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The advertised `wss://` URL and its dial address from a lookup answer.
fn wss_endpoint(found: &Value, port: u16) -> (String, String) {
    let url = format!("wss://{NAME}:{port}/peer");
    let endpoints = found["advert"]["endpoints"].as_array().unwrap();
    let ep = endpoints
        .iter()
        .find(|e| e["endpoint/url"] == url.as_str())
        .unwrap_or_else(|| panic!("{url} not advertised: {found}"));
    assert_eq!(ep["endpoint/transport"], "wss");
    assert_eq!(ep["endpoint/role"], "listener");
    let addr = format!("/dns/{NAME}/tcp/{port}/tls/x-parity-ws/%2Fpeer");
    let addrs: Vec<&str> = found["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        addrs.contains(&addr.as_str()),
        "{addr} not dialable: {addrs:?}"
    );
    (url, addr)
}

fn wss_port(n: &Meshd) -> u16 {
    let listen = n.ready["listen"].as_array().unwrap();
    let addr = listen
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| a.ends_with("/tls/ws"))
        .unwrap_or_else(|| panic!("no WSS listener: {}", n.ready));
    let port = addr
        .split("/tcp/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    port.parse().unwrap()
}

fn wait_session(n: &Meshd, peer: &str) -> Value {
    let deadline = Instant::now() + WAIT;
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
        assert!(Instant::now() < deadline, "no session with {peer}: {peers}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A dial that must fail: its error JSON.
fn failed_dial(n: &Meshd, target: &str) -> Value {
    let out = n.cli(&["dial", target]);
    assert_eq!(out.status.code(), Some(1), "dial {target} did not fail");
    serde_json::from_slice(&out.stderr).unwrap()
}

#[test]
fn a_node_found_by_id_is_reached_over_its_advertised_wss_url() {
    let _hosts = HostsName::hold();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ca = make_ca(dirs[0].path());
    // The certificate names NAME only: dialing 127.0.0.1 (the multiaddr endpoint)
    // fails its check, so the session can only come from the URL.
    let (cert, key) = make_leaf(&ca, dirs[1].path(), &[NAME]);
    let dht = dht_node(dirs[0].path());
    let server = wss_node(dirs[1].path(), &cert, &key, &dht);
    let port = wss_port(&server);
    let ca_pem = ca.pem.to_str().unwrap();
    let client = dialer(dirs[2].path(), &dht, &["--tls-root", ca_pem]);

    let found = wait_lookup(&client, &server.node_id());
    let (_, addr) = wss_endpoint(&found, port);
    let out = client.cli_ok(&["dial", &server.node_id()]);
    assert_eq!(out["peer_id"], server.peer_id().as_str());
    let peer = wait_session(&client, &server.peer_id());
    let remote: Vec<&str> = peer["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        remote.iter().any(|a| a.starts_with(&addr)),
        "the session is not over {addr}: {remote:?}"
    );

    // Without the CA: the root is not trusted, and the error says so.
    let untrusting = dialer(dirs[3].path(), &dht, &[]);
    let found = wait_lookup(&untrusting, &server.node_id());
    let (_, addr) = wss_endpoint(&found, port);
    let err = failed_dial(&untrusting, &format!("{addr}/p2p/{}", server.peer_id()));
    assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("untrusted root"), "{err}");
}

#[test]
fn a_certificate_for_another_name_fails_with_the_reason() {
    let _hosts = HostsName::hold();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ca = make_ca(dirs[0].path());
    // Trusted, but issued for another name than the one the node advertises.
    let (cert, key) = make_leaf(&ca, dirs[1].path(), &["elsewhere.libmesh.test"]);
    let dht = dht_node(dirs[0].path());
    let server = wss_node(dirs[1].path(), &cert, &key, &dht);
    let port = wss_port(&server);
    let client = dialer(
        dirs[2].path(),
        &dht,
        &["--tls-root", ca.pem.to_str().unwrap()],
    );
    let found = wait_lookup(&client, &server.node_id());
    let (_, addr) = wss_endpoint(&found, port);
    let err = failed_dial(&client, &format!("{addr}/p2p/{}", server.peer_id()));
    assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("wrong name"), "{err}");
    assert!(detail.contains(&format!("dialed {NAME}")), "{err}");
}

/// What a TLS server saw of one WSS dial: the SNI name and the HTTP request head.
#[derive(Debug, Default)]
struct Seen {
    sni: Option<String>,
    request: String,
}

/// Accepts one TLS connection on `listener` with `cert`/`key`, records the SNI name and
/// the request head, answers 404 (so the dial fails after the WebSocket request).
fn record_one_wss_request(listener: TcpListener, cert: &str, key: &str, seen: Arc<Mutex<Seen>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let (mut tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    // Bounded: a handshake and one request take a few round trips.
    let mut head = Vec::new();
    for _ in 0..64 {
        if conn.complete_io(&mut tcp).is_err() {
            break;
        }
        if let Some(name) = conn.server_name() {
            seen.lock().unwrap().sni = Some(name.to_owned());
        }
        let mut buf = [0u8; 4096];
        match conn.reader().read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => {}
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > 16 * 1024 {
            break;
        }
    }
    seen.lock().unwrap().request = String::from_utf8_lossy(&head).into_owned();
    let _ = conn
        .writer()
        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    let _ = conn.complete_io(&mut tcp);
}

#[test]
fn wss_dials_send_the_name_as_sni_and_host() {
    let _hosts = HostsName::hold();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ca = make_ca(dirs[0].path());
    let (cert, key) = make_leaf(&ca, dirs[0].path(), &[NAME]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = {
        let seen = seen.clone();
        std::thread::spawn(move || record_one_wss_request(listener, &cert, &key, seen))
    };
    let client = Meshd::start(
        dirs[1].path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
            "--tls-root",
            ca.pem.to_str().unwrap(),
        ],
    );
    // Some peer id (nobody answers as it: the server is not libp2p).
    let peer = "12D3KooWSfMx5BpXVMrzyfMGHVLQe6UWNWX13ZBPLDmVoAKZ4oun";
    let target = format!("/dns/{NAME}/tcp/{port}/tls/x-parity-ws/%2Fpeer/p2p/{peer}");
    let err = failed_dial(&client, &target);
    assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sni.as_deref(), Some(NAME), "{seen:?}");
    let request = seen.request.to_ascii_lowercase();
    assert!(request.starts_with("get /peer http/1.1\r\n"), "{seen:?}");
    assert!(
        request.contains(&format!("\r\nhost: {NAME}:{port}\r\n")),
        "{seen:?}"
    );
}
