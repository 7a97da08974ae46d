// Copyright 2023 Protocol Labs.
//
// Permission is hereby granted, free of charge, to any person obtaining a
// copy of this software and associated documentation files (the "Software"),
// to deal in the Software without restriction, including without limitation
// the rights to use, copy, modify, merge, publish, distribute, sublicense,
// and/or sell copies of the Software, and to permit persons to whom the
// Software is furnished to do so, subject to the following conditions:
//
// The above copyright notice and this permission notice shall be included in
// all copies or substantial portions of the Software.
//
// THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
// OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
// FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
// AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
// LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
// FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
// DEALINGS IN THE SOFTWARE.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{channel::oneshot, future::BoxFuture, prelude::*};
use futures_timer::Delay;
use libp2p_webrtc_utils::MAX_MSG_LEN;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use webrtc::{
    data::data_channel::{DataChannel, PollDataChannel},
    sctp::stream::StreamGone,
};

/// A substream on top of a WebRTC data channel.
///
/// To be a proper libp2p substream, we need to implement [`AsyncRead`] and [`AsyncWrite`] as well
/// as support a half-closed state which we do by framing messages in a protobuf envelope.
pub struct Stream {
    inner: libp2p_webrtc_utils::Stream<Compat<PollDataChannel>>,
    /// Patched for libmesh: sent when the stream is dropped, with whether it was closed
    /// (`closed`), which tells its [`StreamEnd`] that the data channel is no longer used.
    in_use: Option<oneshot::Sender<bool>>,
    /// Patched for libmesh: the stream was closed (its FIN sent).
    closed: bool,
}

/// Patched for libmesh: what the connection runs for each of its streams. First the
/// drop listener (a reset flag sent for a stream dropped before it was closed); then,
/// once the stream is dropped, the data channel's close: an SCTP stream reset, on which
/// the peer resets its side too, and both ends free the channel (its SCTP stream, and
/// its entry in webrtc's list of the peer connection's channels; webrtc 0.17.2, patched,
/// `RTCSctpTransport::keep_live_data_channels`). A stream dropped unclosed is reset at
/// once (what it had sent is cut, as its reset flag says). A stream that was closed is
/// reset once what it wrote has been acknowledged (up to [`ACK_WAIT`]) and [`GRACE`]
/// has passed: libp2p's WebRTC streams have no FIN_ACK here, and an unpatched webrtc-rs
/// peer drops what it has not read yet when a reset comes (the patched `webrtc-sctp`
/// reads it first), so the reset waits for the peer to have read the answer it was
/// sent (`MAX_IN_GRACE` streams of a connection wait at once at most; the rest are
/// reset at once). Upstream never closed a data channel: libp2p's close frames travel in the
/// channel and leave it open, so every stream a connection had stayed at both ends
/// until the connection closed (some 3 KiB each), a peer that opened and dropped
/// streams grew the node without bound, and the stream ids in use only ever grew.
pub(crate) type StreamEnd = BoxFuture<'static, Ended>;

/// Patched for libmesh: how a stream ended ([`StreamEnd`]).
pub(crate) struct Ended {
    /// Whether the stream's reset flag and its channel's reset went out.
    pub(crate) reset: std::io::Result<()>,
    /// Whether the reset is settled since: the peer responded to it and the channel's
    /// SCTP stream left the association (the connection bounds the resets a peer leaves
    /// unanswered, `crate::tokio::unanswered`).
    pub(crate) answered: StreamGone,
}

/// Patched for libmesh: how long a closed stream waits for what it wrote to be
/// acknowledged before its channel is reset.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Patched for libmesh: how long a closed stream's channel is kept once what it wrote
/// was acknowledged, for the peer to read it.
const GRACE: Duration = Duration::from_secs(5);
/// Patched for libmesh: how often a closed stream looks at what is unacknowledged.
const ACK_POLL: Duration = Duration::from_millis(50);
/// Patched for libmesh: how many closed streams of a connection may wait at once (for
/// acknowledgement and grace); the channels of more are reset at once, so that a peer
/// that opens streams the node answers and closes cannot keep their channels by the
/// thousand.
const MAX_IN_GRACE: usize = 256;

/// Patched for libmesh: a closed stream counted among its connection's streams in grace
/// while it waits.
struct InGrace(Arc<AtomicUsize>);

impl InGrace {
    fn enter(count: &Arc<AtomicUsize>) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_IN_GRACE).then_some(n + 1)
            })
            .ok()?;
        Some(Self(Arc::clone(count)))
    }
}

impl Drop for InGrace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stream {
    /// Returns a new `Substream` and what the connection runs until the stream's data
    /// channel is closed ([`StreamEnd`]).
    ///
    /// Patched for libmesh: `in_grace` counts the connection's closed streams waiting
    /// before their channel's reset (`MAX_IN_GRACE`).
    pub(crate) fn new(
        data_channel: Arc<DataChannel>,
        in_grace: Arc<AtomicUsize>,
    ) -> (Self, StreamEnd) {
        let channel = Arc::clone(&data_channel);
        let answered = data_channel.stream_gone_watch();
        let mut data_channel = PollDataChannel::new(data_channel).compat();
        data_channel.get_mut().set_read_buf_capacity(MAX_MSG_LEN);

        let (inner, drop_listener) = libp2p_webrtc_utils::Stream::new(data_channel);
        let (in_use, dropped) = oneshot::channel::<bool>();
        let end = async move {
            let reset_sent = drop_listener.await;
            // Sent when the stream is dropped.
            let closed = dropped.await.unwrap_or(false);
            // A stream the peer has reset already (released) needs no wait.
            if closed && let Some(_in_grace) = InGrace::enter(&in_grace) {
                let mut waited = Duration::ZERO;
                while channel.buffered_amount() > 0 && !channel.is_released() && waited < ACK_WAIT
                {
                    Delay::new(ACK_POLL).await;
                    waited += ACK_POLL;
                }
                if !channel.is_released() {
                    Delay::new(GRACE).await;
                }
            }
            let reset = channel.close().await.map_err(std::io::Error::other);
            Ended {
                reset: reset_sent.and(reset),
                answered,
            }
        }
        .boxed();

        (
            Self {
                inner,
                in_use: Some(in_use),
                closed: false,
            },
            end,
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(in_use) = self.in_use.take() {
            let _ = in_use.send(self.closed);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let closing = Pin::new(&mut this.inner).poll_close(cx);
        if let Poll::Ready(Ok(())) = closing {
            this.closed = true;
        }
        closing
    }
}
