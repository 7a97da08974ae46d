//! `/perf/1.0.0` between libmesh's composed node (`perf = true`) and the js-libp2p 3
//! interop node (`tests/interop/js/perf.mjs`, written from the libp2p perf spec since
//! `@libp2p/perf` is not published for js-libp2p 3): the js node uploads to and
//! downloads from libmesh, libmesh uploads to and downloads from the js node, and each
//! run moves exactly the bytes asked for, also a bulk upload with js-yamux's own frame
//! sizes (`node::muxer`). Loopback TCP only. The throughput figures are
//! in `benches/perf_js.rs`, not here.
//!
//! Skipped when the npm packages are not installed, unless `MESH_REQUIRE_JS_INTEROP` is
//! set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/js_node.rs"]
mod js_node;

use std::sync::Arc;
use std::time::Duration;

use js_node::JsNode;
use libmesh::node::{Bootstrap, BootstrapName, NodeConfig, Target};
use libmesh::perf::{self, RunParams};
use mesh_core::NodeKeypair;
use mesh_testkit::node::start_node_with;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
/// Sizes that are not multiples of the 64 KiB buffers, to catch a short last write.
const UP: u64 = 3 * 1024 * 1024 + 17;
const DOWN: u64 = 2 * 1024 * 1024 + 5;
/// A bulk upload, long enough for rust-yamux to grow the stream window past 1 MiB.
const BULK: u64 = 24 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_both_ways_between_libmesh_and_js_libp2p() {
    let Some(mut js) = JsNode::spawn().await.unwrap() else {
        return;
    };
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        perf: true,
        ..NodeConfig::default()
    };
    let (ours, mut control) = start_node_with(
        NodeKeypair::generate(),
        config,
        Arc::new(mesh_core::NoTrace),
        WAIT,
        |node| node.perf_control().unwrap(),
    )
    .await;

    // js client, libmesh server: both directions in one run, then each alone.
    for (up, down) in [(UP, DOWN), (UP, 0), (0, DOWN)] {
        let out = js
            .call(json!({
                "cmd": "perf",
                "addr": ours.p2p_addr().to_string(),
                "upload": up,
                "download": down,
                "timeoutMs": 20_000,
            }))
            .await
            .unwrap();
        assert_eq!(out["uploaded"], up, "{out}");
        assert_eq!(out["downloaded"], down, "{out}");
        assert!(out["uploadMs"].as_f64().unwrap() > 0.0, "{out}");
    }

    // A stock js-libp2p peer: js-yamux sends frames as large as the stream's window.
    // libmesh keeps every stream window at or under 1 MiB (`node::muxer`), so a bulk
    // upload does not end in rust-yamux's `FrameTooLarge` and a closed connection (it
    // did, after about 3 MiB, with rust-libp2p's default yamux settings).
    let out = js
        .call(json!({
            "cmd": "perf",
            "addr": ours.p2p_addr().to_string(),
            "upload": BULK,
            "download": 0,
            "capFrames": false,
            "timeoutMs": 20_000,
        }))
        .await
        .unwrap();
    assert_eq!(out["uploaded"], BULK, "{out}");

    // libmesh client, js server.
    let js_addr = js.tcp_addr().unwrap();
    ours.handle.dial(Target::Addr(js_addr)).await.unwrap();
    for (up, down) in [(UP, DOWN), (0, DOWN)] {
        let params = RunParams {
            upload_bytes: up,
            download_bytes: down,
        };
        let stats = tokio::time::timeout(WAIT, perf::run(&mut control, js.peer_id, params))
            .await
            .expect("perf run against the js node timed out")
            .expect("perf run against the js node failed");
        assert_eq!(stats.uploaded, up);
        assert_eq!(stats.downloaded, down);
    }

    // A stream that ends inside the 8-byte header is refused by the js server, which
    // keeps serving: the next run still works.
    let mut stream = control
        .clone()
        .open_stream(js.peer_id, perf::PROTOCOL)
        .await
        .unwrap();
    {
        use futures::AsyncWriteExt as _;
        stream.write_all(&[0, 0, 0]).await.unwrap();
        stream.close().await.unwrap();
    }
    let stats = tokio::time::timeout(
        WAIT,
        perf::run(
            &mut control,
            js.peer_id,
            RunParams {
                upload_bytes: 0,
                download_bytes: 1024,
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stats.downloaded, 1024);
    js.shutdown().await;
}
