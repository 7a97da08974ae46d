//! `meshd directory` and `meshd advert publish|lookup`, run as real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

fn meshd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("MESHD_DATA_DIR")
        .output()
        .unwrap()
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

struct Directory(Child);

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `meshd directory` on a free loopback port; returns it and its URL.
fn directory(dir: &Path) -> (Directory, String) {
    directory_with(dir, &["directory", "--listen", "127.0.0.1:0"])
}

fn directory_with(dir: &Path, args: &[&str]) -> (Directory, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `meshd run` prints the identity (pretty JSON) first; the directory line follows.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    // The guard kills and reaps the process on every path, panics included.
    let guard = Directory(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "meshd exited before serving"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && let Some(url) = v["directory"].as_str()
        {
            return (guard, url.to_owned());
        }
    }
}

/// Asserts that `meshd advert publish` succeeded and its advertisement was stored.
fn assert_stored(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(out)["result"]["status"], "stored");
}

fn node_id(dir: &Path) -> String {
    stdout_json(&meshd(dir, &["identity", "init"]))["node/id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn publish_and_lookup_through_the_http_directory_across_a_restart() {
    let (ddir, pub_dir, reader) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let node = node_id(pub_dir.path());
    let (dir_proc, url) = directory(ddir.path());

    let out = meshd(
        pub_dir.path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--addr",
            "/ip4/127.0.0.1/tcp/4001",
            "--addr",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
        ],
    );
    assert_stored(&out);
    let seq1 = stdout_json(&out)["published"]["sequence/no"]
        .as_u64()
        .unwrap();
    let out = meshd(
        pub_dir.path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--addr",
            "/ip4/127.0.0.1/tcp/4002",
        ],
    );
    assert_eq!(stdout_json(&out)["result"]["status"], "stored");
    assert_eq!(stdout_json(&out)["result"]["replaced"], true);
    assert!(
        stdout_json(&out)["published"]["sequence/no"]
            .as_u64()
            .unwrap()
            > seq1
    );

    let out = meshd(reader.path(), &["advert", "lookup", &node, "--from", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ad = stdout_json(&out);
    assert_eq!(ad["node/id"], node.as_str());
    assert_eq!(
        ad["endpoints"][0]["endpoint/url"],
        "multiaddr:/ip4/127.0.0.1/tcp/4002"
    );

    // The directory keeps what it stored across a restart (durable store).
    drop(dir_proc);
    let (_dir_proc, url) = directory(ddir.path());
    let out = meshd(reader.path(), &["advert", "lookup", &node, "--from", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["node/id"], node.as_str());

    // Unknown node: exit 1; bad node id: exit 1 with a code.
    let unknown = node_id(reader.path());
    let out = meshd(
        reader.path(),
        &["advert", "lookup", &unknown, "--from", &url],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = meshd(
        reader.path(),
        &["advert", "lookup", "node:did:key:zBAD", "--from", &url],
    );
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_PROTO_INVALID");
}

#[test]
fn run_serves_the_directory_when_asked() {
    let (data, publisher) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_run, url) = directory_with(
        data.path(),
        &[
            "run",
            "--directory",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
        ],
    );
    let node = node_id(publisher.path());
    let out = meshd(
        publisher.path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--addr",
            "/ip4/127.0.0.1/tcp/4001",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = meshd(
        publisher.path(),
        &["advert", "lookup", &node, "--from", &url],
    );
    assert_eq!(stdout_json(&out)["node/id"], node.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_lookup_over_the_mesh_protocol() {
    use libp2p::swarm::SwarmEvent;
    use mesh_advert::{Behaviour, Config, MemoryStore, StoreLimits};
    let key = mesh_core::NodeKeypair::generate();
    let mut server = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            Behaviour::new(MemoryStore::new(StoreLimits::default()), Config::default())
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let target = format!("{addr}/p2p/{}", server.local_peer_id());
    let server_task = tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    let (pub_dir, reader) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = node_id(pub_dir.path());
    let t = target.clone();
    let p = pub_dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        meshd(
            &p,
            &[
                "advert",
                "publish",
                "--to",
                &t,
                "--addr",
                "/ip4/127.0.0.1/udp/4001/quic-v1",
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["result"]["status"], "stored");
    let r = reader.path().to_owned();
    let n = node.clone();
    let out = tokio::task::spawn_blocking(move || {
        meshd(&r, &["advert", "lookup", &n, "--from", &target])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["node/id"], node.as_str());
    server_task.abort();
}

/// An advertisement a peer publishes to a running node over `/mesh/advert` is committed
/// without an fsync (one per peer request stalled the node loop) and made durable by the
/// node's flush within a second: a node killed with SIGKILL a few seconds later still
/// holds it when its store is opened again.
#[test]
fn a_peer_s_advert_survives_a_sigkill_once_flushed() {
    let (data, publisher) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = meshd::Meshd::start(data.path(), meshd::LOCAL);
    let target = format!("{}/p2p/{}", node.addr(), node.peer_id());
    let author = node_id(publisher.path());
    assert_stored(&meshd(
        publisher.path(),
        &[
            "advert",
            "publish",
            "--to",
            &target,
            "--addr",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
        ],
    ));
    // The flush runs every second; a few seconds leave it room on a loaded machine.
    std::thread::sleep(Duration::from_secs(4));
    node.kill();
    let (store, _) = libmesh::advert_store::DurableStore::open(
        data.path(),
        mesh_advert::StoreLimits::default(),
        &mesh_core::Timestamp::now(),
    )
    .unwrap();
    let id = mesh_core::NodeId::parse(&author).unwrap();
    assert!(
        store.get(&id, &mesh_core::Timestamp::now()).is_some(),
        "the peer's advertisement was lost with the node"
    );
}
