//! Yamux settings of every libmesh connection (TCP, WebSocket, relay circuits).
//!
//! js-libp2p's yamux (`@chainsafe/libp2p-yamux` 8, js-libp2p 3) sends data frames as
//! large as the stream's whole send window, while rust-yamux 0.14 (under rust-libp2p
//! 0.57) refuses a frame body over 1 MiB by closing the whole connection
//! (`FrameTooLarge`) and grows the receive window of a fast stream past 1 MiB. With the
//! defaults, a js-libp2p peer (a browser over WebSocket, a Node.js peer, a relayed
//! circuit) that uploads a few MiB on one stream loses its connection to us.
//!
//! rust-yamux shares the growth of stream windows beyond the spec's 256 KiB through one
//! budget per connection: the connection receive window minus 256 KiB per allowed
//! stream. libmesh sets that window to [`MAX_STREAMS`] stream windows and 768 KiB, so no
//! stream window ever exceeds 1 MiB and no conforming peer can send a frame rust-yamux
//! refuses.
//!
//! The price: one stream's window stops at 1 MiB (rust-libp2p lets it grow to the
//! bandwidth-delay product), which bounds a single stream at about 1 MiB per round
//! trip (80 Mbit/s at 100 ms) on long paths; on loopback and LANs nothing changes
//! (`cargo bench --bench perf`, BENCHMARKS.md). The number of streams a peer may open
//! is bounded elsewhere: the swarm negotiates at most 128 inbound streams at once per
//! connection and every protocol handler caps its own.
//!
//! **Frame sizes.** rust-yamux splits what a stream writes into data frames of at most
//! 16 KiB by default, and its connection flushes after every frame, so each frame
//! becomes its own Noise message (16 KiB + 12 bytes of header + 16 of tag) and its own
//! `send`. libmesh sends frames as large as one Noise message carries: [`SPLIT`] bytes
//! of body on a connection (the largest that fits `libp2p-noise`'s 64,511-byte
//! plaintext frame with the 12-byte yamux header), and [`CIRCUIT_SPLIT`] on a relayed
//! circuit, whose Noise messages travel inside the relay connection's yamux frames: one
//! circuit frame's Noise message (body, header, tag and length prefix) then fits one
//! frame of the connection under it instead of being cut into a full frame and a
//! 30-byte one. A peer accepts any frame within the window it granted (256 KiB at
//! first), so this changes nothing for what it must accept. The cost: a frame of
//! another stream waits behind at most 63 KiB instead of 16 KiB on a slow link (8 ms
//! instead of 2 at 64 Mbit/s).
//!
//! **A busy connection stays scheduled.** The connection's task (libp2p-swarm's) sleeps
//! when a poll of the muxer returns `Pending`, and is woken again by a stream that
//! queued a frame or by the socket. Between two frames of a bulk stream that sleep and
//! wake (a futex and a context switch on another thread) cost a quarter of the
//! throughput: a rust-libp2p connection with one stream escaped it by accident (its
//! `SelectAll` of stream queues re-wakes the task when it has polled all of them), and
//! any second open stream (ping's, gossipsub's) brought it back; the perf bench measured
//! 0.71–0.78x for a bare pair with the standard behaviours and 0.74–0.92x for a bare pair
//! with two idle streams (BENCHMARKS.md, *Perf protocol*, 2026-12-03). [`Muxer`]'s `poll`
//! therefore wakes its own task when at least 16 KiB went through the socket during the
//! poll: a busy connection is polled again after the other ready tasks; an idle one, or
//! one that moved a small message (gossip, a presence, a request), sleeps as before (with
//! every poll that moved any byte, 100 in-process swarm members took 5% more CPU).
//!
//! `libp2p-yamux` 0.48 keeps its `yamux::Config` private and exposes only the stream
//! count, so the upgrade and the [`StreamMuxer`](libp2p::core::muxing::StreamMuxer) are
//! libmesh's own ([`Yamux`], [`Muxer`]), the same as that crate's on the `yamux` crate it
//! wraps (the version libp2p 0.57 uses).

mod connection;
pub mod quic;

use std::{io, iter};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

pub use connection::{Error, MAX_BUFFERED_INBOUND_STREAMS, Muxer};

/// Inbound streams of one connection the swarm negotiates at once (libp2p's default is
/// 128): the rest waits in the muxer's buffer ([`MAX_BUFFERED_INBOUND_STREAMS`]). Each
/// stream in negotiation can hold a yamux window (256 KiB) of a peer's data until the
/// negotiation times out (10 s), so this bounds what one connection parks there (8 MiB
/// instead of 32). A peer waits for its streams' negotiations (one round trip), so 32
/// at once is more than any protocol of the node uses.
pub const MAX_NEGOTIATING_INBOUND_STREAMS: usize = 32;

/// Streams allowed per connection, both ways together (rust-yamux refuses a peer's
/// stream beyond them). Each stream may hold a window (256 KiB) of the peer's data the
/// node has not read, and a stream the node dropped holds its window until yamux has
/// sent its reset, which it does only once the connection's writes flow: with
/// rust-yamux's default of 4,093 streams, a peer that stopped reading and opened streams
/// the node dropped made one connection hold up to 1 GiB. 512 is far more than the
/// node's protocols use at once on one connection (each handler caps its own streams;
/// the swarm negotiates at most [`MAX_NEGOTIATING_INBOUND_STREAMS`] inbound ones).
pub const MAX_STREAMS: usize = 512;

/// The connection receive window: a 256 KiB window per stream and 768 KiB for the
/// growth of stream windows, so every stream window stays at or under 1 MiB
/// (256 KiB + 768 KiB), rust-yamux's largest frame body (its default, 1 GiB, let them
/// grow past it; libmesh kept 1 GiB and allowed 4,093 streams before).
const CONNECTION_WINDOW: usize = MAX_STREAMS * 256 * 1024 + 768 * 1024;

/// How long the node's writes on a connection may make no progress before the
/// connection is dropped ([`Muxer`] watches whether its socket takes writes). rust-yamux keeps
/// reading a connection whose writes stall, and frees dropped streams only once they
/// flow again; and the swarm waits for a connection's close without a deadline. A peer
/// that stops reading held what it sent on every stream until the connection ended,
/// and a close the node began could wait for ever.
pub const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// `libp2p-noise`'s largest plaintext per Noise message (65,535 minus its 1,024 bytes
/// of room for encryption).
const NOISE_PLAINTEXT: usize = 65_535 - 1_024;

/// A yamux frame header.
const YAMUX_HEADER: usize = 12;

/// What a Noise message adds around its plaintext: the 2-byte length and the 16-byte tag.
const NOISE_OVERHEAD: usize = 2 + 16;

/// The largest data frame body libmesh sends on a connection: one frame, one Noise
/// message.
pub const SPLIT: usize = NOISE_PLAINTEXT - YAMUX_HEADER;

/// The largest data frame body libmesh sends on a relayed circuit: its Noise message
/// fits one [`SPLIT`] frame of the relay connection.
pub const CIRCUIT_SPLIT: usize = SPLIT - YAMUX_HEADER - NOISE_OVERHEAD;

/// The yamux upgrade (`/yamux/1.0.0`) with libmesh's settings.
#[derive(Debug, Clone)]
pub struct Yamux {
    config: yamux::Config,
    write_stall: std::time::Duration,
}

impl Yamux {
    fn with_split(split: usize) -> Self {
        let mut config = yamux::Config::default();
        // The window first: rust-yamux checks it holds a window per stream.
        config.set_max_connection_receive_window(Some(CONNECTION_WINDOW));
        config.set_max_num_streams(MAX_STREAMS);
        config.set_split_send_size(split);
        Yamux {
            config,
            write_stall: WRITE_STALL,
        }
    }

    /// The same with another write-stall deadline ([`WRITE_STALL`]); for tests.
    pub fn with_write_stall(mut self, stall: std::time::Duration) -> Self {
        self.write_stall = stall;
        self
    }
}

/// The yamux upgrade of every connection the node makes or accepts over TCP or
/// WebSocket.
pub fn config() -> Yamux {
    Yamux::with_split(SPLIT)
}

/// The yamux upgrade of relayed circuits (inside a relay connection's stream).
pub fn circuit_config() -> Yamux {
    Yamux::with_split(CIRCUIT_SPLIT)
}

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(
            io,
            self.config,
            yamux::Mode::Server,
            self.write_stall,
        )))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(
            io,
            self.config,
            yamux::Mode::Client,
            self.write_stall,
        )))
    }
}
