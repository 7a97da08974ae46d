//! The servers `meshd run` binds to loopback answer only requests that name the
//! address served (or `localhost`): a web page whose DNS name was rebound to 127.0.0.1
//! sends its own name in `Host` and reads nothing (the web page's `/api/info` and the
//! metrics' `/status` give the node's ids and addresses). The real binary, raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use meshd::{LOCAL, Meshd};

/// `GET path` at `base` (`http://IP:PORT`) with `Host: host`; the status and body.
fn get(base: &str, path: &str, host: &str) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn a_rebound_page_reads_neither_api_info_nor_status() {
    let d = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(root.path().join("app.js"), "//").unwrap();
    let mut args = LOCAL.to_vec();
    let root_arg = root.path().to_str().unwrap().to_owned();
    args.extend([
        "--metrics",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--web-root",
        &root_arg,
    ]);
    let n = Meshd::start(d.path(), &args);
    let node_id = n.node_id();
    for (key, path) in [("web", "/api/info"), ("metrics", "/status")] {
        let base = n.ready[key].as_str().unwrap().to_owned();
        let served = base.strip_prefix("http://").unwrap().to_owned();
        let port = served.rsplit(':').next().unwrap();
        // The address served, and localhost: answered.
        for host in [served.clone(), format!("localhost:{port}")] {
            let (status, body) = get(&base, path, &host);
            assert_eq!(status, 200, "{key} {path} Host {host}: {body}");
            assert!(body.contains(&node_id), "{body}");
        }
        // A rebound page's own name, another port, none of the node's secrets.
        for host in [format!("evil.example:{port}"), "127.0.0.1:1".to_owned()] {
            let (status, body) = get(&base, path, &host);
            assert_eq!(status, 403, "{key} {path} Host {host}: {body}");
            assert!(body.contains("E_TRANSPORT_REJECTED"), "{body}");
            assert!(!body.contains(&node_id), "{body}");
        }
    }
}
