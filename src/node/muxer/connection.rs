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
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use futures::{AsyncRead, AsyncWrite, ready};
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
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    pub(super) fn new(io: C, config: yamux::Config, mode: yamux::Mode) -> Self {
        let moved = Arc::new(AtomicUsize::new(0));
        let io = Moving {
            inner: io,
            moved: moved.clone(),
        };
        Muxer {
            connection: yamux::Connection::new(io, config, mode),
            moved,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
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
        self.get_mut().connection.poll_close(cx).map_err(Error)
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

/// The connection's socket, counting the bytes that go through it.
#[derive(Debug)]
struct Moving<C> {
    inner: C,
    moved: Arc<AtomicUsize>,
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
        if let Poll::Ready(Ok(n)) = written {
            this.moved.fetch_add(n, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
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
