//! A web page rebound to one of the host's own addresses beyond loopback (its LAN or
//! public address) reads nothing from a server bound to every interface: a browser on
//! the host reaches `10.77.0.2` from `10.77.0.2` (the kernel sends from the address
//! dialed when it is the host's own), which the `Host` rule took for a client
//! elsewhere, free to name the server anything. The real binary in a network
//! namespace the test builds (the public host of the NAT lab), raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/raw_http.rs"]
mod raw_http;

use meshd::Meshd;
use netns::{Host, NatKind, Topology, available_or_skip, tool};

#[test]
fn a_page_rebound_to_the_hosts_own_address_reads_nothing() {
    if !available_or_skip("a_page_rebound_to_the_hosts_own_address_reads_nothing") {
        return;
    }
    let topo = Topology::new("ownaddr", NatKind::PortPreserving).expect("NAT lab");
    let d = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(root.path().join("app.js"), "//").unwrap();
    let root_arg = root.path().to_str().unwrap().to_owned();
    let launcher = vec![
        tool("ip").display().to_string(),
        "netns".into(),
        "exec".into(),
        topo.ns(Host::Pub).to_owned(),
    ];
    let n = Meshd::start_with(
        Some(launcher),
        d.path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
            "--no-autonat",
            "--events",
            "--metrics",
            "0.0.0.0:0",
            "--web",
            "0.0.0.0:0",
            "--web-root",
            &root_arg,
        ],
    );
    let node_id = n.node_id();
    let own = topo.ip(Host::Pub);
    for (key, path) in [("web", "/api/info"), ("metrics", "/status")] {
        let base = n.ready[key].as_str().unwrap().to_owned();
        let port = base.rsplit(':').next().unwrap().to_owned();
        let at = format!("{own}:{port}");
        let get = |host: Host, name: String| {
            let at = at.clone();
            topo.within(host, move || raw_http::get_as(&at, path, &name))
        };
        // From the host itself to its own address: a page's name is refused...
        let (status, body) = get(Host::Pub, format!("evil.example:{port}"));
        assert_eq!(status, 403, "{key} {path} from the host: {body}");
        assert!(body.contains("E_TRANSPORT_REJECTED"), "{body}");
        assert!(!body.contains(&node_id), "{body}");
        // ...the address itself answered.
        let (status, body) = get(Host::Pub, at.clone());
        assert_eq!(status, 200, "{key} {path} by address: {body}");
        assert!(body.contains(&node_id), "{body}");
        // A client elsewhere (host A, behind its NAT) names the server as it likes.
        let (status, body) = get(Host::A, format!("seeds.example.org:{port}"));
        assert_eq!(status, 200, "{key} {path} from elsewhere: {body}");
    }
}
