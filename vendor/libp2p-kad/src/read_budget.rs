//! Patched for libmesh: a byte budget that the messages being read on Kademlia streams
//! take their room from, shared with the application's other protocols.
//!
//! Upstream bounded a message by the packet size and a connection by its 32 inbound
//! streams, and nothing bounded the sum over connections: peers on many connections
//! that send every request but its end made the node hold the packet size on each
//! stream. With a budget set ([`crate::Behaviour::set_read_budget`]), each stream's
//! message takes room from its first byte, as the bytes come, and gives it back once
//! the message is whole (or the stream goes); a read the budget drops (or refuses) ends
//! the stream with an error. The framing reads in chunks of up to 8 KiB: bytes of a
//! next message that came in the chunk that ended one are buffered uncounted (at most
//! a chunk per stream; honest clients wait for the answer before they send again).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite};

/// Where reads take their room.
pub trait ReadBudget: Send + Sync + fmt::Debug + 'static {
    /// Begins a read, holding nothing yet.
    fn begin(&self) -> Box<dyn ReadHold>;
}

/// One read's room in a [`ReadBudget`], given back when dropped.
pub trait ReadHold: Send {
    /// Takes `n` more bytes; `false` when the read was dropped or is refused.
    fn grow(&mut self, n: usize) -> bool;
    /// Whether the budget dropped this read; if not, `cx` is woken when it does.
    fn poll_dropped(&self, cx: &mut Context<'_>) -> bool;
}

/// A stream whose reads take room from a budget until the message they make is whole.
pub struct Budgeted<S> {
    inner: S,
    budget: Option<Arc<dyn ReadBudget>>,
    hold: Option<Box<dyn ReadHold>>,
}

impl<S> Budgeted<S> {
    pub(crate) fn new(inner: S, budget: Option<Arc<dyn ReadBudget>>) -> Self {
        Budgeted {
            inner,
            budget,
            hold: None,
        }
    }

    /// A message was read whole: its room goes back.
    pub(crate) fn message_read(&mut self) {
        self.hold = None;
    }
}

fn spent() -> io::Error {
    io::Error::other("the node's read budget is spent: this read was dropped")
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.hold.as_ref().is_some_and(|h| h.poll_dropped(cx)) {
            return Poll::Ready(Err(spent()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if n > 0
            && let Some(budget) = &this.budget
            && !this.hold.get_or_insert_with(|| budget.begin()).grow(n)
        {
            return Poll::Ready(Err(spent()));
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
