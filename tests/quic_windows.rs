//! QUIC's flow control of a libmesh node (`libmesh::node::muxer::quic`) over real
//! loopback UDP: a peer that opens streams the node does not take yet (the swarm
//! negotiates 32 inbound streams at once per connection) can park no more of its data in
//! one connection than the node's connection window, 4 MiB (with quinn's defaults,
//! 15 MB).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, future};
use libmesh::node::muxer::{MAX_NEGOTIATING_INBOUND_STREAMS, quic::CONNECTION_WINDOW};
use libp2p::core::Endpoint;
use libp2p::core::muxing::StreamMuxerExt;
use libp2p::core::transport::{DialOpts, PortUse, Transport};
use libp2p::quic;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{loopback_config, start_node};

const WAIT: Duration = Duration::from_secs(30);

/// How long a write may wait before the peer counts its stream as full.
const FULL: Duration = Duration::from_millis(500);

/// Streams the peer fills once the node's negotiation slots are taken.
const FILLED: usize = 8;

/// Writes `chunk` to `stream` until a write waits [`FULL`]; returns the bytes taken.
async fn fill<S: futures::AsyncWrite + Unpin>(mut stream: S, chunk: &[u8]) -> usize {
    let mut taken = 0;
    // Bounded: 64 MiB, well past quinn's default windows.
    while taken < 64 << 20 {
        match tokio::time::timeout(FULL, stream.write(chunk)).await {
            Ok(Ok(n)) => taken += n,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Kept open (dropping it would reset it): the test ends the connection.
    std::mem::forget(stream);
    taken
}

#[tokio::test]
async fn streams_the_node_has_not_taken_hold_at_most_its_connection_window() {
    let mut config = loopback_config();
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;

    // The peer: a stock libp2p-quic client (quinn's defaults), dialing by address.
    let key = NodeKeypair::generate().to_libp2p();
    let mut transport = quic::tokio::Transport::new(quic::Config::new(&key));
    let dial = transport
        .dial(
            node.addr.clone(),
            DialOpts {
                role: Endpoint::Dialer,
                port_use: PortUse::New,
            },
        )
        .unwrap();
    let (peer, mut conn) = tokio::time::timeout(WAIT, dial).await.unwrap().unwrap();
    assert_eq!(peer, node.peer);

    // The node's negotiation slots, each taken by a stream that announces a
    // multistream-select message of 19 bytes and sends one.
    let mut parked = Vec::new();
    for _ in 0..MAX_NEGOTIATING_INBOUND_STREAMS {
        let mut stream = future::poll_fn(|cx| conn.poll_outbound_unpin(cx))
            .await
            .unwrap();
        stream.write_all(&[19, b'/']).await.unwrap();
        stream.flush().await.unwrap();
        parked.push(stream);
    }
    // Streams after them, written to until the node grants no more.
    let mut filled = Vec::new();
    for _ in 0..FILLED {
        filled.push(
            future::poll_fn(|cx| conn.poll_outbound_unpin(cx))
                .await
                .unwrap(),
        );
    }
    let driver = tokio::spawn(async move {
        // Keeps the connection polled; pending for as long as it lives.
        let _ = future::poll_fn(|cx| conn.poll_unpin(cx)).await;
    });
    let chunk = vec![0x5a_u8; 64 * 1024];
    let taken: usize = tokio::time::timeout(
        WAIT,
        future::join_all(filled.into_iter().map(|s| fill(s, &chunk))),
    )
    .await
    .unwrap()
    .into_iter()
    .sum();
    driver.abort();
    drop(parked);

    let window = CONNECTION_WINDOW as usize;
    // The node granted its whole window: the streams were open, not refused ...
    assert!(
        taken >= window - 64 * 1024,
        "the peer's streams took {taken} bytes, under the node's window ({window})"
    );
    // ... and no more (quinn's default: 15,000,000).
    assert!(
        taken <= window + 64 * 1024,
        "the peer parked {taken} bytes in one connection (window {window})"
    );
}
