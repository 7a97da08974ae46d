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
    sync::Arc,
    task::{Context, Poll},
};

use futures::{channel::oneshot, future::BoxFuture, prelude::*};
use libp2p_webrtc_utils::MAX_MSG_LEN;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use webrtc::data::data_channel::{DataChannel, PollDataChannel};

/// A substream on top of a WebRTC data channel.
///
/// To be a proper libp2p substream, we need to implement [`AsyncRead`] and [`AsyncWrite`] as well
/// as support a half-closed state which we do by framing messages in a protobuf envelope.
pub struct Stream {
    inner: libp2p_webrtc_utils::Stream<Compat<PollDataChannel>>,
    /// Patched for libmesh: dropped with the stream, which tells its [`StreamEnd`] that
    /// the data channel is no longer used.
    _in_use: oneshot::Sender<()>,
}

/// Patched for libmesh: what the connection runs for each of its streams. First the
/// drop listener (a reset flag sent for a stream dropped before it was closed), then,
/// once the stream is dropped, the data channel's close: an SCTP stream reset, on which
/// the peer resets its side too, and both ends free the channel (its SCTP stream, and
/// its entry in webrtc's list of the peer connection's channels; webrtc 0.17.2, patched,
/// `RTCSctpTransport::keep_live_data_channels`). Upstream never closed a data channel:
/// libp2p's close frames travel in the channel and leave it open, so every stream a
/// connection had stayed at both ends until the connection closed (some 3 KiB each), a
/// peer that opened and dropped streams grew the node without bound, and the stream ids
/// in use only ever grew.
pub(crate) type StreamEnd = BoxFuture<'static, std::io::Result<()>>;

impl Stream {
    /// Returns a new `Substream` and what the connection runs until the stream's data
    /// channel is closed ([`StreamEnd`]).
    pub(crate) fn new(data_channel: Arc<DataChannel>) -> (Self, StreamEnd) {
        let channel = Arc::clone(&data_channel);
        let mut data_channel = PollDataChannel::new(data_channel).compat();
        data_channel.get_mut().set_read_buf_capacity(MAX_MSG_LEN);

        let (inner, drop_listener) = libp2p_webrtc_utils::Stream::new(data_channel);
        let (in_use, dropped) = oneshot::channel::<()>();
        let end = async move {
            let reset_sent = drop_listener.await;
            // Never sent: ends when the stream is dropped.
            let _ = dropped.await;
            let closed = channel.close().await.map_err(std::io::Error::other);
            reset_sent.and(closed)
        }
        .boxed();

        (
            Self {
                inner,
                _in_use: in_use,
            },
            end,
        )
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
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
