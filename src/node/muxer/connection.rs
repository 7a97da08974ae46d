//! The [`StreamMuxer`] over a `yamux` connection: what `libp2p-yamux` 0.48's `Muxer` does,
//! on a `yamux::Config` that libmesh sets in full (that crate keeps its config private
//! and exposes only the stream count). Adapted from `libp2p-yamux` 0.48 (MIT, Parity
//! Technologies).

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite, FutureExt, ready};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

/// Inbound streams buffered while the swarm is not asking for them; past it a new
/// inbound stream is dropped (reset). The swarm stops asking only while it negotiates
/// [`MAX_NEGOTIATING_INBOUND_STREAMS`](super::MAX_NEGOTIATING_INBOUND_STREAMS) streams of
/// the connection at once, which a peer that waits for its streams' answers does not
/// reach. Each buffered stream can hold a whole yamux window (256 KiB) of the peer's
/// data, so the buffer is kept small: `libp2p-yamux`'s 256 let one connection park 64
/// MiB. A dropped stream is logged at `debug` only (one line per stream a peer opens
/// would be a log it writes).
pub const MAX_BUFFERED_INBOUND_STREAMS: usize = 32;

/// A yamux connection as libp2p's [`StreamMuxer`].
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<Moving<C>>,
    /// Bytes that went through the socket in the current poll (see
    /// [`StreamMuxer::poll`]).
    moved: Arc<AtomicUsize>,
    /// Inbound streams that arrived while [`StreamMuxer::poll`] drove the connection.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
    /// Since when the socket's writes have made no progress (see [`Stall`]).
    stalled: Stall,
    /// How long they may ([`super::WRITE_STALL`]).
    write_stall: Duration,
    /// Wakes the connection by the stall's deadline (kept while it has not fired: a
    /// new timer for every stall would wake the timer thread each time).
    alarm: Option<futures_timer::Delay>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    pub(super) fn new(
        io: C,
        config: yamux::Config,
        mode: yamux::Mode,
        write_stall: Duration,
    ) -> Self {
        let moved = Arc::new(AtomicUsize::new(0));
        let stalled = Stall::default();
        let io = Moving {
            inner: io,
            moved: moved.clone(),
            stalled: stalled.clone(),
        };
        Muxer {
            connection: yamux::Connection::new(io, config, mode),
            moved,
            inbound: VecDeque::new(),
            inbound_waker: None,
            stalled,
            write_stall,
            alarm: None,
        }
    }

    /// An error once the socket's writes have made no progress for `write_stall`;
    /// until then, a timer that wakes the connection at that deadline.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        // A timer set for an earlier stall is kept: it fires no later than this one's
        // deadline, and is set again then.
        let Some(since) = self.stalled.since() else {
            return Ok(());
        };
        let deadline = since + self.write_stall;
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(stall = ?self.write_stall, "closing a connection whose writes made no progress");
            return Err(Error(yamux::ConnectionError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no write went through for {:?}", self.write_stall),
            ))));
        }
        let left = deadline - now;
        let timer = self
            .alarm
            .get_or_insert_with(|| futures_timer::Delay::new(left));
        if timer.poll_unpin(cx).is_ready() {
            // Set for an earlier stall, which flowed since: set again for this one.
            let mut timer = futures_timer::Delay::new(left);
            if timer.poll_unpin(cx).is_ready() {
                // Already due (no waker registered): come back at once.
                cx.waker().wake_by_ref();
            }
            self.alarm = Some(timer);
        }
        Ok(())
    }

    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Error>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(Ok(stream)) => Poll::Ready(Ok(stream)),
            Some(Err(e)) => Poll::Ready(Err(Error(e))),
            None => Poll::Ready(Err(Error(yamux::ConnectionError::Closed))),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(next) = this.poll_next_inbound(cx) {
            return Poll::Ready(next);
        }
        this.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut()
            .connection
            .poll_new_outbound(cx)
            .map_err(Error)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        // The swarm waits for a close without a deadline: a peer that reads nothing
        // would hold the connection for ever. A close that waits counts as a stall
        // from then on, unless its writes go through.
        if let Poll::Ready(closed) = this.connection.poll_close(cx) {
            return Poll::Ready(closed.map_err(Error));
        }
        this.stalled.blocked();
        this.check_stall(cx)?;
        Poll::Pending
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        this.moved.store(0, Ordering::Relaxed);
        let stream = match this.poll_next_inbound(cx) {
            Poll::Ready(stream) => stream?,
            Poll::Pending => {
                this.check_stall(cx)?;
                // A bulk load of bytes went through the socket in this poll: the
                // connection is busy, come back at once instead of sleeping until a
                // waker fires. (A poll that moved a small message sleeps.)
                if this.moved.load(Ordering::Relaxed) >= BUSY {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        };
        if this.inbound.len() >= MAX_BUFFERED_INBOUND_STREAMS {
            tracing::debug!(%stream, "dropping an inbound yamux stream: buffer full");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Come back at once: the connection may have more to do, and others may run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Bytes through the socket in one poll from which the connection counts as busy: a
/// poll of a bulk stream moves at least one full frame (up to 64 KiB), one that carries
/// messages (gossip, presences, requests) moves far less.
const BUSY: usize = 16 * 1024;

/// Since when the socket's writes have been waiting: set when a write, a flush or a close
/// finds the socket full, cleared when a write takes bytes or a flush or close goes
/// through. Noise takes a write only once its buffers have room (it holds up to some
/// 192 KiB above the kernel), so progress shows in steps of tens of KiB: a link that
/// drains less than about 64 KiB in [`super::WRITE_STALL`] while the node has more to
/// send (some 17 kbit/s) counts as stalled. One whose peer reads nothing never clears
/// it. (A peer that reads, however slowly, keeps its connection: what its streams hold
/// is bounded by their windows and [`super::MAX_STREAMS`].)
///
/// One atomic, read on every write: clearing it when already clear is a load only.
#[derive(Debug, Clone)]
struct Stall {
    /// What [`Stall::since`] counts from.
    base: Instant,
    /// Nanoseconds after `base` at which the stall began, plus one; 0 while writes flow.
    since: Arc<AtomicU64>,
}

impl Default for Stall {
    fn default() -> Self {
        Stall {
            base: Instant::now(),
            since: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Stall {
    fn since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn blocked(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            // A stall already begun keeps its start.
            let _ = self.since.compare_exchange(
                0,
                now.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn flowed(&self) {
        if self.since.load(Ordering::Relaxed) != 0 {
            self.since.store(0, Ordering::Relaxed);
        }
    }
}

/// The connection's socket, counting the bytes that go through it and watching whether
/// its writes stall ([`Stall`]).
#[derive(Debug)]
struct Moving<C> {
    inner: C,
    moved: Arc<AtomicUsize>,
    stalled: Stall,
}

impl<C: AsyncRead + Unpin> AsyncRead for Moving<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            this.moved.fetch_add(n, Ordering::Relaxed);
        }
        read
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Moving<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        match written {
            Poll::Ready(Ok(n)) => {
                this.moved.fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    this.stalled.flowed();
                }
            }
            Poll::Pending => this.stalled.blocked(),
            Poll::Ready(Err(_)) => {}
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        match flushed {
            Poll::Ready(Ok(())) => this.stalled.flowed(),
            Poll::Pending => this.stalled.blocked(),
            Poll::Ready(Err(_)) => {}
        }
        flushed
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let closed = Pin::new(&mut this.inner).poll_close(cx);
        match closed {
            Poll::Ready(Ok(())) => this.stalled.flowed(),
            Poll::Pending => this.stalled.blocked(),
            Poll::Ready(Err(_)) => {}
        }
        closed
    }
}

/// A yamux connection's error (the connection is gone).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(yamux::ConnectionError);

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        match err.0 {
            yamux::ConnectionError::Io(e) => e,
            e => std::io::Error::other(e),
        }
    }
}
