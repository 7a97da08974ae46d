//! QUIC's flow control for every QUIC connection of the node (the node's own and the
//! birthday probes').
//!
//! `libp2p-quic` keeps quinn's windows: 10 MB per stream and 15 MB per connection of the
//! peer's data the node has not read. quinn grants a stream's window as soon as the peer
//! opens it, before the swarm has accepted or negotiated it, so a peer that opens
//! streams the node is slow to take (the swarm negotiates at most
//! [`super::MAX_NEGOTIATING_INBOUND_STREAMS`] at once, 10 s each) parks up to 15 MB in
//! every connection: some 5.4 GiB over the 384 inbound connections the node allows.
//! libmesh gives a QUIC stream the largest window a yamux stream of the node reaches,
//! 1 MiB (see [`super`]), and a connection 4 MiB in all (a yamux connection's streams
//! start at 256 KiB each; QUIC's grant every stream its whole window at once).
//!
//! The price: one stream carries at most 1 MiB and one connection 4 MiB per round trip
//! (80 and 320 Mbit/s at 100 ms); on loopback and LANs nothing changes (`cargo bench
//! --bench perf`, BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use libp2p::identity::Keypair;
use libp2p::quic;

/// The most of a peer's data one QUIC stream holds unread.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// The most of a peer's data one QUIC connection holds unread, over all its streams.
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// `libp2p-quic`'s settings for `key` with libmesh's windows, answering Initials from
/// addresses not yet validated with a Retry once `pending_before_retry` inbound
/// handshakes counted in `handshakes` (shared by all the node's QUIC transports) are
/// under way (the workspace's `libp2p-quic`, `vendor/libp2p-quic`).
pub fn config(
    key: &Keypair,
    pending_before_retry: usize,
    handshakes: &Arc<AtomicUsize>,
) -> quic::Config {
    let mut config = quic::Config::new(key);
    config.max_stream_data = STREAM_WINDOW;
    config.max_connection_data = CONNECTION_WINDOW;
    config.pending_before_retry = pending_before_retry;
    config.handshakes = Arc::clone(handshakes);
    config
}
