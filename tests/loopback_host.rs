//! The servers `meshd run` binds to loopback answer only requests that name the
//! address served (or `localhost`): a web page whose DNS name was rebound to 127.0.0.1
//! sends its own name in `Host` and reads nothing (the web page's `/api/info` and the
//! metrics' `/status` give the node's ids and addresses). The real binary, raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/raw_http.rs"]
mod raw_http;

use meshd::{LOCAL, Meshd};

/// A node serving its web page and its metrics on `bind` (an address with port 0): its
/// data dir and web root, and the node.
fn web_and_metrics_on(bind: &str) -> ((tempfile::TempDir, tempfile::TempDir), Meshd) {
    let d = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(root.path().join("app.js"), "//").unwrap();
    let mut args = LOCAL.to_vec();
    let root_arg = root.path().to_str().unwrap().to_owned();
    args.extend(["--metrics", bind, "--web", bind, "--web-root", &root_arg]);
    let n = Meshd::start(d.path(), &args);
    ((d, root), n)
}

#[test]
fn a_rebound_page_reads_neither_api_info_nor_status() {
    let (_dirs, n) = web_and_metrics_on("127.0.0.1:0");
    let node_id = n.node_id();
    for (key, path) in [("web", "/api/info"), ("metrics", "/status")] {
        let base = n.ready[key].as_str().unwrap().to_owned();
        let served = base.strip_prefix("http://").unwrap().to_owned();
        let port = served.rsplit(':').next().unwrap();
        // The address served, and localhost: answered.
        for host in [served.clone(), format!("localhost:{port}")] {
            let (status, body) = raw_http::get_as(&served, path, &host);
            assert_eq!(status, 200, "{key} {path} Host {host}: {body}");
            assert!(body.contains(&node_id), "{body}");
        }
        // A rebound page's own name, another port, none of the node's secrets.
        for host in [format!("evil.example:{port}"), "127.0.0.1:1".to_owned()] {
            let (status, body) = raw_http::get_as(&served, path, &host);
            assert_eq!(status, 403, "{key} {path} Host {host}: {body}");
            assert!(body.contains("E_TRANSPORT_REJECTED"), "{body}");
            assert!(!body.contains(&node_id), "{body}");
        }
    }
}

/// Checks the seed directory served at `served` (`IP:PORT`): addresses, `localhost` and
/// `names` are answered, a rebound page's own name is `403`.
fn check_directory(served: &str, names: &[&str]) {
    let port = served.rsplit(':').next().unwrap();
    let mut answered = vec![
        served.to_owned(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    answered.extend(names.iter().map(|n| n.to_string()));
    for host in answered {
        let (status, body) = raw_http::get_as(served, "/adv?since=0", &host);
        assert_eq!(status, 200, "Host {host}: {body}");
        assert!(body.contains("\"items\""), "{body}");
    }
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
    ] {
        let (status, body) = raw_http::get_as(served, "/adv?since=0", &host);
        assert_eq!(status, 403, "Host {host}: {body}");
        assert!(body.contains("E_TRANSPORT_REJECTED"), "{body}");
        assert!(!body.contains("\"items\""), "{body}");
    }
}

#[test]
fn a_rebound_page_reaches_neither_seed_directory() {
    // The node's directory, with a reverse proxy's public name configured.
    let d = tempfile::tempdir().unwrap();
    let mut args = LOCAL.to_vec();
    args.extend([
        "--directory",
        "127.0.0.1:0",
        "--directory-host",
        "seeds.example.org",
    ]);
    let n = Meshd::start(d.path(), &args);
    let url = n.ready["directory"].as_str().unwrap().to_owned();
    check_directory(
        url.strip_prefix("http://").unwrap(),
        &["seeds.example.org:443"],
    );
    drop(n);

    // `meshd directory`, the standalone server.
    let (dir, mut child, served) =
        standalone(&["--listen", "127.0.0.1:0", "--host", "dir.example"]);
    let checked = std::panic::catch_unwind(|| check_directory(&served, &["dir.example"]));
    let _ = child.kill();
    let _ = child.wait();
    drop(dir);
    checked.unwrap();

    // Bound to every interface, loopback included: a rebound page comes over loopback.
    let (dir, mut child, served) = standalone(&["--listen", "0.0.0.0:0"]);
    let port = served.rsplit(':').next().unwrap().to_owned();
    let checked = std::panic::catch_unwind(|| {
        check_directory(&format!("127.0.0.1:{port}"), &[]);
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(dir);
    checked.unwrap();
}

/// Starts `meshd directory ARGS…` in a fresh data dir: the dir, the process and the
/// address it serves (`IP:PORT`).
fn standalone(args: &[&str]) -> (tempfile::TempDir, std::process::Child, String) {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(d.path())
        .arg("directory")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = v["directory"].as_str().unwrap();
    let served = url.strip_prefix("http://").unwrap().to_owned();
    (d, child, served)
}

#[test]
fn a_rebound_page_reads_nothing_of_servers_bound_to_every_interface() {
    let (_dirs, n) = web_and_metrics_on("0.0.0.0:0");
    let node_id = n.node_id();
    for (key, path) in [("web", "/api/info"), ("metrics", "/status")] {
        let base = n.ready[key].as_str().unwrap().to_owned();
        let port = base.rsplit(':').next().unwrap().to_owned();
        let local = format!("127.0.0.1:{port}");
        let (status, body) = raw_http::get_as(&local, path, &local);
        assert_eq!(status, 200, "{key} {path}: {body}");
        assert!(body.contains(&node_id), "{body}");
        let (status, body) = raw_http::get_as(&local, path, &format!("evil.example:{port}"));
        assert_eq!(status, 403, "{key} {path}: {body}");
        assert!(!body.contains(&node_id), "{body}");
    }
}
