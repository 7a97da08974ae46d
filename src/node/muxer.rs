//! Yamux settings of every libmesh connection (TCP, WebSocket, relay circuits).
//!
//! js-libp2p's yamux (`@chainsafe/libp2p-yamux` 8, js-libp2p 3) sends data frames as
//! large as the stream's whole send window, while rust-yamux 0.14 (under rust-libp2p
//! 0.57) refuses a frame body over 1 MiB by closing the whole connection
//! (`FrameTooLarge`) and grows the receive window of a fast stream past 1 MiB. With the
//! defaults, a js-libp2p peer (a browser over WebSocket, a Node.js peer, a relayed
//! circuit) that uploads a few MiB on one stream loses its connection to us.
//!
//! `libp2p-yamux` 0.48 exposes only the stream count, but rust-yamux shares the growth
//! of stream windows beyond the spec's 256 KiB through one budget per connection:
//! 1 GiB (its fixed connection window) minus 256 KiB per allowed stream. With
//! [`MAX_STREAMS`] streams that budget is 768 KiB, so no stream window ever exceeds
//! 1 MiB and no conforming peer can send a frame rust-yamux refuses.
//!
//! The price: one stream's window stops at 1 MiB (rust-libp2p lets it grow to the
//! bandwidth-delay product), which bounds a single stream at about 1 MiB per round
//! trip (80 Mbit/s at 100 ms) on long paths; on loopback and LANs nothing changes
//! (`cargo bench --bench perf`, BENCHMARKS.md). The number of streams a peer may open
//! is bounded elsewhere: the swarm negotiates at most 128 inbound streams at once per
//! connection and every protocol handler caps its own.

use libp2p::yamux;

/// rust-yamux's fixed connection receive window (1 GiB) in units of the spec's stream
/// window (256 KiB): 4096.
const WINDOWS_PER_CONNECTION: usize = 4096;

/// Streams allowed per connection: three 256 KiB windows short of the connection
/// window, so the budget for growing stream windows is 768 KiB and every stream window
/// stays at or under 1 MiB (256 KiB + 768 KiB), rust-yamux's largest frame body.
pub const MAX_STREAMS: usize = WINDOWS_PER_CONNECTION - 3;

/// The yamux configuration of every connection the node makes or accepts.
pub fn config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS);
    config
}
