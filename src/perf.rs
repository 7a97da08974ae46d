//! The libp2p perf protocol, `/perf/1.0.0`
//! ([spec](https://github.com/libp2p/specs/blob/master/perf/perf.md)): a throughput
//! measurement between two peers over one stream.
//!
//! The client opens a stream, writes the number of bytes it wants back as an 8-byte
//! big-endian `u64`, then its upload bytes, and closes its write side. The server reads
//! until end of stream (counting), then writes the requested number of bytes and closes.
//!
//! Built on [`libp2p_stream`]: add a [`Behaviour`] to the swarm, take a
//! [`Control`] from it ([`Behaviour::new_control`]), serve with [`spawn_server`] and
//! measure with [`run`]. [`serve`] and [`client`] run the protocol on any stream.
//!
//! Limits: a server refuses to send more than [`MAX_DOWNLOAD_BYTES`] and to read more
//! than [`MAX_UPLOAD_BYTES`]; every read and write gives up after [`IDLE_TIMEOUT`]
//! without progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::Control;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// The protocol name, `/perf/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/perf/1.0.0");

/// The most a client may ask a server to send back (16 GiB). A server refuses a larger
/// request without sending anything; [`client`] and [`run`] refuse it before asking.
pub const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

/// The most a server reads from one client (16 GiB); it gives up on a longer upload.
pub const MAX_UPLOAD_BYTES: u64 = 16 << 30;

/// Size of the read and write buffers (64 KiB).
pub const BUFFER_SIZE: usize = 64 * 1024;

/// How long one read, write, close or stream opening may go without progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The behaviour to put into the swarm: generic streams, on which the perf protocol runs.
pub type Behaviour = libp2p_stream::Behaviour;

/// What is sent: the same zero bytes over and over.
static ZEROS: [u8; BUFFER_SIZE] = [0; BUFFER_SIZE];

/// Why a perf run or a served stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerfError {
    /// The requested download is above [`MAX_DOWNLOAD_BYTES`].
    #[error("a download of {requested} bytes was requested; the limit is {max} bytes")]
    DownloadTooLarge {
        /// Bytes asked for.
        requested: u64,
        /// The limit.
        max: u64,
    },
    /// The client uploaded more than [`MAX_UPLOAD_BYTES`].
    #[error("the upload exceeds the limit of {max} bytes")]
    UploadTooLarge {
        /// The limit.
        max: u64,
    },
    /// The server's answer ended before the requested number of bytes.
    #[error("expected {expected} bytes from the server, the stream ended after {received}")]
    ShortDownload {
        /// Bytes asked for.
        expected: u64,
        /// Bytes received before the end of the stream.
        received: u64,
    },
    /// The server sent more than requested.
    #[error("the server sent more than the {expected} bytes requested")]
    LongDownload {
        /// Bytes asked for.
        expected: u64,
    },
    /// A read, write, close or stream opening made no progress in time.
    #[error("no progress on the perf stream for {0:?}")]
    Idle(Duration),
    /// The stream failed.
    #[error("perf stream: {0}")]
    Io(#[from] std::io::Error),
    /// No stream could be opened to the peer.
    #[error("{0}")]
    OpenStream(#[from] libp2p_stream::OpenStreamError),
    /// The perf protocol is already accepted through this behaviour.
    #[error("the perf protocol is already served through this behaviour")]
    AlreadyRegistered(#[from] libp2p_stream::AlreadyRegistered),
    /// [`spawn_server`] or [`run`] was called outside a tokio runtime.
    #[error("the perf server and client must run inside a tokio runtime")]
    NoRuntime,
    /// The task running [`run`]'s client panicked or was cancelled.
    #[error("the perf client task failed: {0}")]
    Task(String),
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunParams {
    /// Bytes the client sends to the server.
    pub upload_bytes: u64,
    /// Bytes the client asks the server to send back (at most [`MAX_DOWNLOAD_BYTES`]).
    pub download_bytes: u64,
}

/// The client's measurement of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Bytes sent to the server.
    pub uploaded: u64,
    /// Bytes received from the server.
    pub downloaded: u64,
    /// From the first byte written until the server's answer begins (its first byte, or
    /// its end when nothing was requested). The server answers only once it has read the
    /// whole upload, so this covers the upload plus about one round trip.
    pub upload: Duration,
    /// From the server's first answer bytes until the end of its answer. The first read
    /// (at most [`BUFFER_SIZE`] bytes) is not timed, but counts in [`Self::downloaded`].
    pub download: Duration,
}

impl RunStats {
    /// Upload throughput in bytes per second (0 when nothing was timed).
    pub fn upload_bytes_per_sec(&self) -> f64 {
        per_sec(self.uploaded, self.upload)
    }

    /// Download throughput in bytes per second (0 when nothing was timed).
    pub fn download_bytes_per_sec(&self) -> f64 {
        per_sec(self.downloaded, self.download)
    }
}

fn per_sec(bytes: u64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs > 0.0 { bytes as f64 / secs } else { 0.0 }
}

/// What a server did for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Bytes read from the client (its upload).
    pub received: u64,
    /// Bytes written back (its download).
    pub sent: u64,
    /// From the stream's start to the end of the answer.
    pub elapsed: Duration,
}

/// Runs `f` with [`IDLE_TIMEOUT`].
async fn idle<T>(f: impl Future<Output = std::io::Result<T>>) -> Result<T, PerfError> {
    match tokio::time::timeout(IDLE_TIMEOUT, f).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(PerfError::Idle(IDLE_TIMEOUT)),
    }
}

fn check_download(requested: u64) -> Result<(), PerfError> {
    if requested > MAX_DOWNLOAD_BYTES {
        return Err(PerfError::DownloadTooLarge {
            requested,
            max: MAX_DOWNLOAD_BYTES,
        });
    }
    Ok(())
}

/// Writes `n` zero bytes, [`BUFFER_SIZE`] at a time.
async fn write_zeros<S: AsyncWrite + Unpin>(stream: &mut S, n: u64) -> Result<(), PerfError> {
    let mut left = n;
    while left > 0 {
        let chunk = usize::try_from(left).map_or(BUFFER_SIZE, |l| l.min(BUFFER_SIZE));
        idle(stream.write_all(&ZEROS[..chunk])).await?;
        left -= chunk as u64;
    }
    Ok(())
}

/// The server side of one stream: reads the requested size and the upload (until the
/// client closes its write side), then sends the requested bytes and closes.
///
/// A request above [`MAX_DOWNLOAD_BYTES`] is refused right after the size is read:
/// nothing is sent and the stream is dropped (the client sees it end or reset).
pub async fn serve<S>(stream: S) -> Result<Served, PerfError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_holding(stream, ()).await
}

/// [`serve`], holding `permit` until the answer is written: it is given back before the
/// stream is closed, so a client that opens its next stream as soon as it has read this
/// one to its end finds the permit free (given back after the close, it raced the
/// client's next stream and lost under load).
async fn serve_holding<S, P>(mut stream: S, permit: P) -> Result<Served, PerfError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut header = [0u8; 8];
    idle(stream.read_exact(&mut header)).await?;
    let requested = u64::from_be_bytes(header);
    check_download(requested)?;

    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut received: u64 = 0;
    // Each round reads at least one byte and the total is capped: bounded.
    loop {
        let n = idle(stream.read(&mut buf)).await?;
        if n == 0 {
            break;
        }
        received = received.saturating_add(n as u64);
        if received > MAX_UPLOAD_BYTES {
            return Err(PerfError::UploadTooLarge {
                max: MAX_UPLOAD_BYTES,
            });
        }
    }

    write_zeros(&mut stream, requested).await?;
    drop(permit);
    idle(stream.close()).await?;
    Ok(Served {
        received,
        sent: requested,
        elapsed: start.elapsed(),
    })
}

/// The client side of one stream: asks for `params.download_bytes`, uploads
/// `params.upload_bytes`, closes its write side and reads the answer to its end.
///
/// Fails if the answer is shorter or longer than requested, and before sending
/// anything if the request is above [`MAX_DOWNLOAD_BYTES`].
pub async fn client<S>(mut stream: S, params: RunParams) -> Result<RunStats, PerfError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let RunParams {
        upload_bytes,
        download_bytes,
    } = params;
    check_download(download_bytes)?;

    let start = Instant::now();
    idle(stream.write_all(&download_bytes.to_be_bytes())).await?;
    write_zeros(&mut stream, upload_bytes).await?;
    idle(stream.close()).await?;

    // The server answers only after reading the whole upload: its first bytes (or the
    // end of the stream) mark the end of the upload.
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut n = idle(stream.read(&mut buf)).await?;
    let upload = start.elapsed();
    let download_start = Instant::now();
    let mut received: u64 = 0;
    // Each round reads at least one byte and stops past the requested size: bounded.
    while n > 0 {
        received = received.saturating_add(n as u64);
        if received > download_bytes {
            return Err(PerfError::LongDownload {
                expected: download_bytes,
            });
        }
        n = idle(stream.read(&mut buf)).await?;
    }
    let download = download_start.elapsed();
    if received < download_bytes {
        return Err(PerfError::ShortDownload {
            expected: download_bytes,
            received,
        });
    }
    Ok(RunStats {
        uploaded: upload_bytes,
        downloaded: received,
        upload,
        download,
    })
}

/// Serves `/perf/1.0.0` on a spawned task: every inbound stream runs [`serve`], at most
/// `max_concurrent` at once; streams beyond that are dropped (logged at debug level).
///
/// The task ends when the swarm (its [`Behaviour`]) is gone; aborting the returned
/// handle stops it and every stream it is serving. Fails if the protocol is already
/// accepted through this behaviour, or outside a tokio runtime.
pub fn spawn_server(
    mut control: Control,
    max_concurrent: usize,
) -> Result<JoinHandle<()>, PerfError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| PerfError::NoRuntime)?;
    let incoming = control.accept(PROTOCOL)?;
    Ok(runtime.spawn(serve_incoming(incoming, max_concurrent)))
}

/// The server's loop over its inbound streams (see [`spawn_server`]).
async fn serve_incoming<I, S>(mut incoming: I, max_concurrent: usize)
where
    I: futures::Stream<Item = (PeerId, S)> + Unpin,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS)));
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::debug!(%peer, max_concurrent, "perf: too many streams, dropping one");
                    continue;
                };
                running.spawn(async move {
                    match serve_holding(stream, permit).await {
                        Ok(served) => tracing::debug!(
                            %peer,
                            received = served.received,
                            sent = served.sent,
                            elapsed = ?served.elapsed,
                            "perf: served"
                        ),
                        Err(error) => tracing::debug!(%peer, %error, "perf: stream failed"),
                    }
                });
            }
            // Reap finished streams so the set does not grow.
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    tracing::debug!("perf: no more inbound streams, server stops");
    // Let the streams in flight finish (each is bounded by the idle timeout and
    // the size limits).
    while running.join_next().await.is_some() {}
}

/// Opens a `/perf/1.0.0` stream to `peer` (dialing it if needed and its address is
/// known to the swarm) and runs [`client`] on it.
///
/// The client runs as a task of the current tokio runtime, not in the caller's future:
/// awaited from `Runtime::block_on` the caller's future runs on a thread outside the
/// runtime's workers, and every time the yamux stream's frame queue fills (every few
/// 16 KiB frames) the writer parks that thread and a worker must wake it through the OS
/// (a futex wake and a context switch). That made uploads about a fifth slower than
/// downloads (BENCHMARKS.md, *Perf protocol*). Fails with [`PerfError::NoRuntime`]
/// outside a tokio runtime.
pub async fn run(
    control: &mut Control,
    peer: PeerId,
    params: RunParams,
) -> Result<RunStats, PerfError> {
    check_download(params.download_bytes)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| PerfError::NoRuntime)?;
    let mut control = control.clone();
    let task = runtime.spawn(async move {
        let stream =
            match tokio::time::timeout(IDLE_TIMEOUT, control.open_stream(peer, PROTOCOL)).await {
                Ok(stream) => stream?,
                Err(_) => return Err(PerfError::Idle(IDLE_TIMEOUT)),
            };
        client(stream, params).await
    });
    // Dropping this future (a caller's timeout) must also stop the client.
    let mut task = AbortOnDrop(task);
    match task.wait().await {
        Ok(result) => result,
        Err(error) => Err(PerfError::Task(error.to_string())),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn wait(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

    use super::*;

    /// An in-memory duplex pipe (tokio's, seen through futures' I/O traits).
    fn pipe() -> (
        compat::Compat<tokio::io::DuplexStream>,
        compat::Compat<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(BUFFER_SIZE);
        (compat::Compat(a), compat::Compat(b))
    }

    /// A minimal futures-io adapter, so the unit tests need no extra dependency.
    mod compat {
        use std::io;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        pub(super) struct Compat<T>(pub(super) T);

        impl<T: tokio::io::AsyncRead + Unpin> futures::AsyncRead for Compat<T> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let mut read_buf = tokio::io::ReadBuf::new(buf);
                match Pin::new(&mut self.0).poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(read_buf.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }

        impl<T: tokio::io::AsyncWrite + Unpin> futures::AsyncWrite for Compat<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_flush(cx)
            }
            fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.0).poll_shutdown(cx)
            }
        }
    }

    const LIMIT: Duration = Duration::from_secs(20);

    /// A stream whose close ends the other side's reading at once but returns only half
    /// a second later: a muxer's close reaches the wire before the closing task runs on.
    struct SlowClose<T> {
        inner: T,
        delay: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for SlowClose<T> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for SlowClose<T> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            futures::ready!(std::pin::Pin::new(&mut self.inner).poll_close(cx))?;
            let delay = self
                .delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(500))));
            futures::ready!(delay.as_mut().poll(cx));
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// With one permit, a client that opens its next stream as soon as it has read the
    /// last one to its end is served: the permit is back before the end is sent.
    #[tokio::test]
    async fn the_permit_is_back_when_the_client_reads_the_end() {
        use futures::SinkExt;
        let (mut streams, incoming) = futures::channel::mpsc::channel(4);
        let server = tokio::spawn(serve_incoming(incoming, 1));
        let params = RunParams {
            upload_bytes: 10,
            download_bytes: 10,
        };
        for run in 0..3 {
            let (a, b) = pipe();
            let slow = SlowClose {
                inner: b,
                delay: None,
            };
            streams.send((PeerId::random(), slow)).await.unwrap();
            let stats = tokio::time::timeout(LIMIT, client(a, params))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("run {run} was refused: {e}"));
            assert_eq!(stats.downloaded, 10);
        }
        drop(streams);
        tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn client_and_server_over_a_pipe() {
        for (up, down) in [(0, 0), (1, 0), (0, 1), (300_000, 200_001), (65_536, 65_536)] {
            let (a, b) = pipe();
            let params = RunParams {
                upload_bytes: up,
                download_bytes: down,
            };
            let (stats, served) =
                tokio::time::timeout(LIMIT, async { futures::join!(client(a, params), serve(b)) })
                    .await
                    .unwrap();
            let (stats, served) = (stats.unwrap(), served.unwrap());
            assert_eq!((stats.uploaded, stats.downloaded), (up, down));
            assert_eq!((served.received, served.sent), (up, down));
        }
    }

    #[tokio::test]
    async fn client_refuses_an_oversized_request_before_sending() {
        let (a, _b) = pipe();
        let params = RunParams {
            upload_bytes: 0,
            download_bytes: MAX_DOWNLOAD_BYTES + 1,
        };
        let err = tokio::time::timeout(LIMIT, client(a, params))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, PerfError::DownloadTooLarge { requested, max } if requested == MAX_DOWNLOAD_BYTES + 1 && max == MAX_DOWNLOAD_BYTES),
            "{err}"
        );
    }

    #[tokio::test]
    async fn server_refuses_an_oversized_request() {
        let (mut a, b) = pipe();
        let server = tokio::spawn(serve(b));
        a.write_all(&u64::MAX.to_be_bytes()).await.unwrap();
        let err = tokio::time::timeout(LIMIT, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, PerfError::DownloadTooLarge { .. }), "{err}");
        // Nothing was sent: the pipe just ends.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(LIMIT, a.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn truncated_header_and_short_answer_are_errors() {
        // The client closes after half the header.
        let (mut a, b) = pipe();
        a.write_all(&[0, 0, 0, 0]).await.unwrap();
        a.close().await.unwrap();
        let err = tokio::time::timeout(LIMIT, serve(b))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, PerfError::Io(_)), "{err}");

        // The server answers 10 bytes of the 100 asked for, then closes.
        let (a, mut b) = pipe();
        let params = RunParams {
            upload_bytes: 5,
            download_bytes: 100,
        };
        let fake_server = async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), 8 + 5);
            b.write_all(&[0; 10]).await.unwrap();
            let _ = b.close().await;
        };
        let (result, ()) = tokio::time::timeout(LIMIT, async {
            futures::join!(client(a, params), fake_server)
        })
        .await
        .unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                PerfError::ShortDownload {
                    expected: 100,
                    received: 10
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_longer_answer_is_an_error() {
        let (a, mut b) = pipe();
        let params = RunParams {
            upload_bytes: 0,
            download_bytes: 3,
        };
        let fake_server = async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            b.write_all(&[0; 4]).await.unwrap();
            let _ = b.close().await;
        };
        let (result, ()) = tokio::time::timeout(LIMIT, async {
            futures::join!(client(a, params), fake_server)
        })
        .await
        .unwrap();
        assert!(matches!(
            result,
            Err(PerfError::LongDownload { expected: 3 })
        ));
    }
}
