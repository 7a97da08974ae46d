//! What a WebSocket frame's header alone makes the node hold: soketto (under
//! libp2p-websocket) zero-filled room for the frame's whole announced payload, up to
//! the largest message the node accepts (`MAX_WS_MESSAGE`, 1 MiB), as soon as the header
//! came, before a byte of it and before Noise: a client that then sends nothing held
//! 1 MiB per connection. The patched copy (`vendor/soketto`, `PATCHED.md`) grows the room
//! as the payload comes. The node's WebSocket settings over loopback TCP, a raw client,
//! on jemalloc as `meshd` runs.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, future};
use libmesh::node::transport::MAX_WS_MESSAGE;
use libp2p::core::transport::{ListenerId, Transport, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{tcp, websocket};
use mesh_testkit::heap::live;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One measurement at a time (jemalloc's count is the process's).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node's WebSocket listener on loopback: its port, and a task that accepts one
/// connection and sends what it reads from it (as Noise would read it) in pieces.
async fn listener() -> (u16, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let mut ws = websocket::Config::new(tcp::tokio::Transport::new(tcp::Config::default()));
    ws.set_max_data_size(MAX_WS_MESSAGE);
    ws.listen_on(
        ListenerId::next(),
        "/ip4/127.0.0.1/tcp/0/ws".parse().unwrap(),
    )
    .unwrap();
    let port = loop {
        let e = future::poll_fn(|cx| Pin::new(&mut ws).poll(cx)).await;
        if let TransportEvent::NewAddress { listen_addr, .. } = e {
            break listen_addr
                .iter()
                .find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
                .unwrap();
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let upgrade = loop {
            let e = future::poll_fn(|cx| Pin::new(&mut ws).poll(cx)).await;
            if let TransportEvent::Incoming { upgrade, .. } = e {
                break upgrade;
            }
        };
        let mut conn = upgrade.await.unwrap();
        let mut buf = vec![0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            if tx.send(buf[..n].to_vec()).await.is_err() {
                break;
            }
        }
        drop(ws);
    });
    (port, rx)
}

/// A raw client's WebSocket to `port` (the HTTP upgrade, answered 101).
async fn client(port: u16) -> tokio::net::TcpStream {
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    client
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") && answer.len() < 4096 {
        answer.push(client.read_u8().await.unwrap());
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"));
    client
}

/// The header of a binary frame (final or not) of `len` bytes, masked with `mask`.
fn header(fin: bool, len: usize, mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x82u8 } else { 0x02 }, 0x80 | 127];
    frame.extend((len as u64).to_be_bytes());
    frame.extend(mask);
    frame
}

/// A data frame's header announcing a payload of [`MAX_WS_MESSAGE`], then 100 bytes of it
/// and silence: the node holds room for what came (the first step, 131,074 bytes), not the
/// whole payload (1 MiB before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_alone_does_not_take_its_whole_payload() {
    let _serial = SERIAL.lock().await;
    let run = async {
        let (port, mut read) = listener().await;
        let mut client = client(port).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = live();
        // Masked with zeros: the 100 bytes are themselves.
        let mut frame = header(true, MAX_WS_MESSAGE, [0; 4]);
        frame.extend([7u8; 100]);
        client.write_all(&frame).await.unwrap();
        client.flush().await.unwrap();
        // Until the node has read the header and made room (bounded), then a moment.
        let waiting = Instant::now();
        while live() - before < 100_000 && waiting.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let held = live() - before;
        assert!(
            read.try_recv().is_err(),
            "the node read an unfinished frame"
        );
        drop(client);
        held
    };
    let held = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the test did not finish");
    eprintln!("a {MAX_WS_MESSAGE}-byte frame's header and 100 bytes: {held} bytes held");
    assert!(held >= 100_000, "the node made no room ({held} bytes)");
    assert!(
        held < 256 * 1024,
        "{held} bytes held for a header and 100 bytes"
    );
}

/// Messages of sizes around the steps (up to [`MAX_WS_MESSAGE`]), each sent as its header
/// with its first 1,000 bytes, then the rest in pieces of 10,000, and one message in
/// three continuation frames: every byte arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_whole() {
    let _serial = SERIAL.lock().await;
    let run = async {
        let (port, mut read) = listener().await;
        let mut client = client(port).await;
        let mask = [0x1f, 0x2e, 0x3d, 0x4c];
        let masked = |bytes: &[u8]| -> Vec<u8> {
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect()
        };
        let mut sent = Vec::new();
        let sizes = [
            1,
            65_536,
            65_537,
            131_073,
            131_074,
            131_075,
            262_149,
            MAX_WS_MESSAGE,
        ];
        for (k, len) in sizes.into_iter().enumerate() {
            let message: Vec<u8> = (0..len).map(|i| ((i + k) * 7 % 251) as u8).collect();
            let body = masked(&message);
            let first = body.len().min(1_000);
            let mut frame = header(true, len, mask);
            frame.extend(&body[..first]);
            client.write_all(&frame).await.unwrap();
            for piece in body[first..].chunks(10_000) {
                client.write_all(piece).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            sent.extend(message);
        }
        // One message in three frames: binary (not final), continuation, final
        // continuation.
        let parts: [&[u8]; 3] = [&[1u8; 70_000], &[2u8; 200_000], &[3u8; 5]];
        for (i, part) in parts.iter().enumerate() {
            let mut frame = header(i == 2, part.len(), mask);
            frame[0] = match i {
                0 => 0x02,
                1 => 0x00,
                _ => 0x80,
            };
            frame.extend(masked(part));
            client.write_all(&frame).await.unwrap();
            sent.extend_from_slice(part);
        }
        client.flush().await.unwrap();
        let mut got = Vec::with_capacity(sent.len());
        while got.len() < sent.len() {
            got.extend(read.recv().await.expect("the connection ended early"));
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the messages arrived altered");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the test did not finish");
}
