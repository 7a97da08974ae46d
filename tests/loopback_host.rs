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
