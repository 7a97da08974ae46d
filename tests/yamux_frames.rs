//! libmesh's yamux (`libmesh::node::muxer`) over real loopback TCP and Noise: the data
//! frames it sends carry as much as one Noise message holds (and, on a relayed circuit,
//! as much as fits one frame of the relay connection), and a stock rust-libp2p peer
//! (`libp2p-yamux` defaults) accepts them, byte for byte, both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::log_capture::Captured;
use mesh_testkit::secured::{Secured, noise_pair};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, future};
use libmesh::node::muxer;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::yamux;

const LIMIT: Duration = Duration::from_secs(30);

/// Drives a muxer's connection until it ends.
fn drive<M>(mut muxer: M) -> tokio::task::JoinHandle<()>
where
    M: StreamMuxer + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        // `poll` is pending for as long as the connection lives.
        let _ = future::poll_fn(|cx| muxer.poll_unpin(cx)).await;
    })
}

/// Reads raw yamux frames from `io` until `total` bytes of data arrived; returns the
/// body length of every data frame and the data.
async fn data_frames(io: &mut Secured, total: usize) -> (Vec<usize>, Vec<u8>) {
    let (mut sizes, mut data) = (Vec::new(), Vec::new());
    while data.len() < total {
        let mut header = [0u8; 12];
        io.read_exact(&mut header).await.unwrap();
        let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        // Type 0 is data; window updates (1), pings (2) and go-aways (3) have no body.
        if header[1] == 0 {
            let mut body = vec![0u8; length as usize];
            io.read_exact(&mut body).await.unwrap();
            sizes.push(body.len());
            data.extend_from_slice(&body);
        }
    }
    (sizes, data)
}

/// `payload` written at once on a stream of `upgrade`, as the raw frames the other end
/// reads (within the 256 KiB window every new stream starts with).
async fn frames_of(upgrade: muxer::Yamux, payload: &[u8]) -> (Vec<usize>, Vec<u8>) {
    let (dialer, mut listener) = noise_pair().await;
    let mut muxer = upgrade
        .upgrade_outbound(dialer, "/yamux/1.0.0")
        .await
        .unwrap();
    let mut stream = future::poll_fn(|cx| muxer.poll_outbound_unpin(cx))
        .await
        .unwrap();
    let driver = drive(muxer);
    stream.write_all(payload).await.unwrap();
    stream.flush().await.unwrap();
    let frames = data_frames(&mut listener, payload.len()).await;
    driver.abort();
    frames
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_connection_sends_frames_as_large_as_one_noise_message() {
    let data = payload(200_000);
    let (sizes, got) = tokio::time::timeout(LIMIT, frames_of(muxer::config(), &data))
        .await
        .unwrap();
    // 64,499 bytes of body + 12 of header: libp2p-noise's largest plaintext (64,511).
    assert_eq!(sizes, vec![64_499, 64_499, 64_499, 200_000 - 3 * 64_499]);
    assert_eq!(got, data);
}

#[tokio::test]
async fn a_circuit_frame_fits_one_frame_of_the_relay_connection() {
    let data = payload(200_000);
    let (sizes, got) = tokio::time::timeout(LIMIT, frames_of(muxer::circuit_config(), &data))
        .await
        .unwrap();
    // Its Noise message (body, 12 of header, 16 of tag, 2 of length) is 64,499 bytes:
    // one frame of the connection under it.
    let body = 64_499 - 12 - 16 - 2;
    assert_eq!(sizes, vec![body, body, body, 200_000 - 3 * body]);
    assert_eq!(got, data);
}

#[tokio::test]
async fn a_stock_rust_libp2p_peer_takes_the_large_frames_both_ways() {
    let run = async {
        let (dialer, listener) = noise_pair().await;
        let (ours, theirs) = future::join(
            muxer::config().upgrade_outbound(dialer, "/yamux/1.0.0"),
            yamux::Config::default().upgrade_inbound(listener, "/yamux/1.0.0"),
        )
        .await;
        let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());
        let stream = future::poll_fn(|cx| ours.poll_outbound_unpin(cx))
            .await
            .unwrap();
        let ours = drive(ours);
        // 8 MiB: past the first window, so the window updates of the stock peer count.
        let data = payload(8 << 20);
        let (mut read, mut write) = AsyncReadExt::split(stream);
        let send = async {
            write.write_all(&data).await.unwrap();
            write.close().await.unwrap();
        };
        let echo = async {
            let mut inbound = future::poll_fn(|cx| theirs.poll_inbound_unpin(cx))
                .await
                .unwrap();
            let theirs = drive(theirs);
            let mut got = Vec::new();
            inbound.read_to_end(&mut got).await.unwrap();
            inbound.write_all(&got).await.unwrap();
            inbound.close().await.unwrap();
            (got, theirs)
        };
        let receive = async {
            let mut back = Vec::new();
            read.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), (got, theirs), back) = futures::join!(send, echo, receive);
        ours.abort();
        theirs.abort();
        (got == data, back == data)
    };
    let (there, back) = tokio::time::timeout(LIMIT, run).await.unwrap();
    assert!(there, "the stock peer received other bytes");
    assert!(back, "the echo came back different");
}

/// Counts the wake-ups of the task that polls the muxer.
#[derive(Default)]
struct Wakes(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Wakes {
    fn wake_by_ref(arc: &std::sync::Arc<Self>) {
        arc.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_busy_connection_polls_itself_again_and_a_quiet_one_sleeps() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::Context;
    let run = async {
        let (dialer, listener) = noise_pair().await;
        let (ours, theirs) = future::join(
            muxer::config().upgrade_inbound(dialer, "/yamux/1.0.0"),
            yamux::Config::default().upgrade_outbound(listener, "/yamux/1.0.0"),
        )
        .await;
        let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());
        let wakes = Arc::new(Wakes::default());
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);
        let mut stream = future::poll_fn(|cx| theirs.poll_outbound_unpin(cx))
            .await
            .unwrap();
        let theirs = drive(theirs);
        // The stream reaches us with its first byte, and we take it.
        stream.write_all(&[1]).await.unwrap();
        stream.flush().await.unwrap();
        let mut inbound = None;
        for _ in 0..50 {
            let _ = ours.poll_unpin(&mut cx);
            if let std::task::Poll::Ready(s) = ours.poll_inbound_unpin(&mut cx) {
                inbound = Some(s.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _inbound = inbound.expect("the stream did not arrive");
        // The start (yamux's first round-trip measurement) settles; then a poll leaves
        // the connection asleep: no wake-up, of its own or from the socket.
        let mut settled = false;
        for _ in 0..20 {
            let before = woken();
            assert!(ours.poll_unpin(&mut cx).is_pending());
            tokio::time::sleep(Duration::from_millis(100)).await;
            if woken() == before {
                settled = true;
                break;
            }
        }
        assert!(settled, "an idle connection kept waking");
        // A small message (100 bytes) is read and the connection sleeps again.
        stream.write_all(&payload(100)).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = woken();
        assert!(ours.poll_unpin(&mut cx).is_pending());
        let small_woke = woken() > before;
        // The peer sends 100 kB more on the stream (within its first window, so all of
        // it is in our socket's buffer after a moment).
        stream.write_all(&payload(100_000)).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A poll that reads those bytes asks, before it returns, to be polled again.
        let before = woken();
        assert!(ours.poll_unpin(&mut cx).is_pending());
        let busy = woken() > before;
        // Once nothing moves any more, a poll returns without waking itself.
        let mut slept = false;
        for _ in 0..10 {
            let before = woken();
            assert!(ours.poll_unpin(&mut cx).is_pending());
            if woken() == before {
                slept = true;
                break;
            }
        }
        theirs.abort();
        (small_woke, busy, slept)
    };
    let (small_woke, busy, slept) = tokio::time::timeout(LIMIT, run).await.unwrap();
    assert!(
        !small_woke,
        "a poll that read a small message asked to be polled again"
    );
    assert!(
        busy,
        "a poll that read bytes did not ask to be polled again"
    );
    assert!(
        slept,
        "the connection kept waking itself with nothing to do"
    );
}

/// A peer that opens streams faster than the swarm takes them (the swarm stops taking
/// while it negotiates its maximum) gets a few buffered and the rest reset, and writes
/// no log line at `warn` for each one dropped.
#[tokio::test]
async fn streams_the_swarm_does_not_take_are_few_and_dropped_quietly() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(log.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    const OPENED: usize = 100;
    let run = async {
        let (dialer, listener) = noise_pair().await;
        let (theirs, ours) = future::join(
            yamux::Config::default().upgrade_outbound(dialer, "/yamux/1.0.0"),
            muxer::config().upgrade_inbound(listener, "/yamux/1.0.0"),
        )
        .await;
        let (mut theirs, ours) = (theirs.unwrap(), ours.unwrap());
        let mut streams = Vec::new();
        for _ in 0..OPENED {
            streams.push(
                future::poll_fn(|cx| theirs.poll_outbound_unpin(cx))
                    .await
                    .unwrap(),
            );
        }
        let theirs = drive(theirs);
        // Ours is driven (`poll`) but nobody takes its inbound streams, as when the
        // swarm's negotiation slots are full.
        let ours = std::sync::Arc::new(std::sync::Mutex::new(ours));
        let driven = ours.clone();
        let driver = tokio::spawn(future::poll_fn(move |cx| {
            let _ = driven.lock().unwrap().poll_unpin(cx);
            std::task::Poll::<()>::Pending
        }));
        for s in &mut streams {
            // The first byte of a multistream-select header that never ends.
            s.write_all(&[0x13]).await.unwrap();
            s.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A reset stream fails to read at once; a buffered one waits.
        let alive = future::join_all(streams.iter_mut().map(|s| async move {
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut b))
                .await
                .is_err()
        }))
        .await
        .into_iter()
        .filter(|a| *a)
        .count();
        driver.abort();
        let _ = driver.await;
        let mut ours = std::sync::Arc::try_unwrap(ours)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap();
        let mut buffered = 0;
        while future::poll_fn(|cx| std::task::Poll::Ready(ours.poll_inbound_unpin(cx)))
            .await
            .is_ready()
        {
            buffered += 1;
        }
        theirs.abort();
        (alive, buffered)
    };
    let (alive, buffered) = tokio::time::timeout(LIMIT, run).await.unwrap();
    assert_eq!(buffered, muxer::MAX_BUFFERED_INBOUND_STREAMS);
    assert_eq!(
        alive,
        muxer::MAX_BUFFERED_INBOUND_STREAMS,
        "streams left open of {OPENED}"
    );
    let written = log.text();
    assert!(written.is_empty(), "logged at warn:\n{written}");
}

/// A muxer with write-stall deadline `stall` whose peer (the returned end, kept open)
/// reads nothing, with 64 streams each writing its first window (256 KiB): 16 MiB,
/// more than a loopback TCP connection's buffers hold. The writers run on tasks.
async fn muxer_to_a_silent_peer(
    stall: Duration,
) -> (
    muxer::Muxer<Secured>,
    Vec<tokio::task::JoinHandle<()>>,
    Secured,
) {
    let (dialer, listener) = noise_pair().await;
    let mut ours = muxer::config()
        .with_write_stall(stall)
        .upgrade_outbound(dialer, "/yamux/1.0.0")
        .await
        .unwrap();
    let mut writers = Vec::new();
    for _ in 0..64 {
        let mut s = future::poll_fn(|cx| ours.poll_outbound_unpin(cx))
            .await
            .unwrap();
        writers.push(tokio::spawn(async move {
            let _ = s.write_all(&payload(256 * 1024)).await;
            let _ = s.flush().await;
        }));
    }
    (ours, writers, listener)
}

/// A peer that stops reading: once the node's writes on the connection have made no
/// progress for the write-stall deadline (`muxer::WRITE_STALL`, 30 s; 1 s here), the
/// connection ends. rust-yamux kept reading such a connection and holding what the peer
/// sent, on streams the node had dropped as well, until the connection ended, which it
/// never did; and the swarm waits for a close without a deadline.
#[tokio::test]
async fn a_connection_whose_writes_stall_ends() {
    let stall = Duration::from_secs(1);
    let run = async {
        let (mut ours, writers, listener) = muxer_to_a_silent_peer(stall).await;
        let started = std::time::Instant::now();
        let ended = future::poll_fn(|cx| ours.poll_unpin(cx)).await;
        for w in writers {
            w.abort();
        }
        (
            ended.err().map(|e| e.to_string()),
            started.elapsed(),
            listener,
        )
    };
    let (error, took, _listener) = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the stalled connection did not end");
    let error = error.expect("the connection ended without an error");
    assert!(error.contains("no write went through"), "{error}");
    assert!(
        took >= stall / 2,
        "ended after {took:?}, before the stall deadline"
    );
}

/// A close the node begins on a peer that reads nothing ends by the write-stall
/// deadline too (the swarm waits for a connection's close without one).
#[tokio::test]
async fn a_close_to_a_peer_that_reads_nothing_ends() {
    let stall = Duration::from_secs(1);
    let run = async {
        let (mut ours, writers, listener) = muxer_to_a_silent_peer(stall).await;
        // Let the writes fill what the connection takes, then close.
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            future::poll_fn(|cx| ours.poll_unpin(cx)),
        )
        .await;
        let started = std::time::Instant::now();
        let closed = future::poll_fn(|cx| ours.poll_close_unpin(cx)).await;
        for w in writers {
            w.abort();
        }
        (closed.is_err(), started.elapsed(), listener)
    };
    let (failed, took, _listener) = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the close did not end");
    assert!(
        failed,
        "the close to a peer that reads nothing went through"
    );
    assert!(took <= stall * 3, "the close took {took:?}");
}
