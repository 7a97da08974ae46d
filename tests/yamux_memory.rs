//! What a peer's tiny yamux frames make the node hold: rust-yamux gave every data
//! frame's body a buffered chunk and an allocation of its own (about 40 bytes besides
//! the body), so a peer sending one-byte frames made a stream's 256 KiB window hold
//! some 10 MiB, and every bound counted in windows (the streams a connection may
//! hold) some 40 times what it says. The patched copy (`vendor/yamux`, `PATCHED.md`)
//! joins small bodies into the stream's last chunk. And a frame's header alone had the
//! node allocate its whole body (up to 1 MiB) before a byte of it came; the patched
//! copy grows the room as the body comes. libmesh's muxer against a stock yamux sender
//! cutting its writes into one-byte frames, and against raw frames, over loopback TCP
//! and Noise, on jemalloc as `meshd` runs (one measurement at a time: the count is the
//! process's).
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, future};
use libmesh::node::muxer;
use libp2p::core::muxing::StreamMuxerExt;
use libp2p::core::upgrade::InboundConnectionUpgrade;
use mesh_testkit::heap::live;
use mesh_testkit::secured::noise_pair;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes sent on the stream, in one-byte frames (within its first window).
const SENT: usize = 200 * 1024;

/// One measurement at a time (jemalloc's count is the process's).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_frames_cost_about_what_they_carry() {
    let _serial = SERIAL.lock().await;
    let run = async {
        let (dialer, listener) = noise_pair().await;
        let mut ours = muxer::config()
            .upgrade_inbound(listener, "/yamux/1.0.0")
            .await
            .unwrap();
        let mut config = yamux::Config::default();
        config.set_split_send_size(1);
        let mut theirs = yamux::Connection::new(dialer, config, yamux::Mode::Client);
        let mut sending = future::poll_fn(|cx| theirs.poll_new_outbound(cx))
            .await
            .unwrap();
        // Their connection driven on a task of its own (it has no inbound streams).
        let driver = tokio::spawn(async move {
            let _ = future::poll_fn(|cx| theirs.poll_next_inbound(cx)).await;
        });
        let data: Vec<u8> = (0..SENT).map(|i| (i % 251) as u8).collect();
        let before = live();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                sending.write_all(&data).await.unwrap();
                sending.flush().await.unwrap();
                sending
            })
        };
        // Ours takes the stream and reads nothing until every byte is buffered.
        let mut stream = future::poll_fn(|cx| ours.poll_inbound_unpin(cx))
            .await
            .unwrap();
        let ours_driver = tokio::spawn(async move {
            let _ = future::poll_fn(|cx| ours.poll_unpin(cx)).await;
        });
        let sending = writer.await.unwrap();
        // The frames written reach our side.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = live() - before;
        let mut got = vec![0u8; SENT];
        stream.read_exact(&mut got).await.unwrap();
        driver.abort();
        ours_driver.abort();
        drop(sending);
        (held, got == data)
    };
    let (held, same) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the bytes did not arrive");
    assert!(same, "the bytes read back differ");
    eprintln!("{SENT} bytes in one-byte frames: {held} bytes held");
    assert!(
        held < 4 * SENT as isize,
        "{held} bytes held for {SENT} bytes in one-byte frames"
    );
}

/// A data frame's header announcing a 1 MiB body, then 100 bytes of it and silence:
/// the node holds room for what came (and the first step of 64 KiB), not the whole
/// body (1 MiB before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_alone_does_not_take_its_whole_body() {
    let _serial = SERIAL.lock().await;
    let run = async {
        let (mut dialer, listener) = noise_pair().await;
        let mut ours = muxer::config()
            .upgrade_inbound(listener, "/yamux/1.0.0")
            .await
            .unwrap();
        let ours_driver = tokio::spawn(async move {
            let _ = future::poll_fn(|cx| ours.poll_unpin(cx)).await;
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = live();
        // Version 0, data (0), SYN (1), stream 1, a body of 1 MiB.
        let mut frame = vec![0u8, 0, 0, 1, 0, 0, 0, 1];
        frame.extend((1u32 << 20).to_be_bytes());
        frame.extend([7u8; 100]);
        dialer.write_all(&frame).await.unwrap();
        dialer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = live() - before;
        ours_driver.abort();
        drop(dialer);
        held
    };
    let held = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the test did not finish");
    eprintln!("a 1 MiB frame's header and 100 bytes: {held} bytes held");
    assert!(
        held < 256 * 1024,
        "{held} bytes held for a header and 100 bytes"
    );
}
