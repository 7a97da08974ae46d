//! Test support for libmesh's crates, in one place: swarm builders with the transports
//! libp2p-swarm-test's `listen()` expects or one real loopback transport, a driver for
//! several swarms at once, a raw request-response codec for sending what no well-behaved
//! peer would, a clock tests can move, the shared vectors' directory, the median and the
//! interleaved ratio timer of the benchmarks, a hostile peer that sends any bytes on any
//! protocol ([`hostile::HostilePeer`]) with raw Kademlia requests ([`kad_wire`]), and (feature `node`) in-process libmesh nodes.

pub mod candidates;
pub mod clock;
pub mod gossip_wire;
#[cfg(feature = "heap")]
pub mod heap;
pub mod hostile;
pub mod kad_wire;
pub mod log_capture;
#[cfg(feature = "node")]
pub mod node;
pub mod ratio;
pub mod secured;
pub mod shared;
pub mod stats;

pub use clock::{Clock, TestClock};
pub use shared::shared_dir;
pub use stats::{median, try_median};

use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;

use libp2p::Swarm;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use mesh_core::NodeKeypair;

/// A swarm whose identity is `key` (so its peer id names the same node), over TCP and the
/// memory transport, both with noise and yamux (libp2p-swarm-test's `listen()` listens on
/// both), idle connections kept for 60 s.
///
/// # Panics
/// When the transports cannot be built (a test setup error).
#[allow(clippy::expect_used)]
pub fn swarm_with<B: NetworkBehaviour>(key: &NodeKeypair, behaviour: B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp transport")
        .with_other_transport(|k| {
            use libp2p::Transport;
            use libp2p::core::upgrade::Version;
            libp2p::core::transport::MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(libp2p::noise::Config::new(k).expect("noise keys"))
                .multiplex(libp2p::yamux::Config::default())
                .timeout(Duration::from_secs(20))
                .boxed()
        })
        .expect("memory transport")
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A request-response codec of raw bytes (read to the end, at most 1 MiB).
pub mod raw {
    use std::io;

    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use libp2p::StreamProtocol;

    /// Raw bytes both ways.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct RawCodec;

    async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
        let mut b = Vec::new();
        io.take(1 << 20).read_to_end(&mut b).await?;
        Ok(b)
    }

    impl libp2p::request_response::Codec for RawCodec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            read_all(io).await
        }

        async fn read_response<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            read_all(io).await
        }

        async fn write_request<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            r: Vec<u8>,
        ) -> io::Result<()> {
            io.write_all(&r).await
        }

        async fn write_response<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            r: Vec<u8>,
        ) -> io::Result<()> {
            io.write_all(&r).await
        }
    }
}

/// A loopback transport for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// TCP with noise and yamux (Nagle off).
    Tcp,
    /// QUIC v1.
    Quic,
}

impl Net {
    /// A loopback listen address with a free port.
    ///
    /// # Panics
    /// Never: the addresses are constants.
    #[allow(clippy::expect_used)]
    pub fn listen_addr(self) -> libp2p::Multiaddr {
        match self {
            Net::Tcp => "/ip4/127.0.0.1/tcp/0".parse().expect("constant address"),
            Net::Quic => "/ip4/127.0.0.1/udp/0/quic-v1"
                .parse()
                .expect("constant address"),
        }
    }
}

/// A swarm with identity `key` over one real transport (`net`), idle connections kept
/// for `idle`.
///
/// # Panics
/// When the transport cannot be built (a test setup error).
#[allow(clippy::expect_used)]
pub fn net_swarm<B: NetworkBehaviour>(
    key: &libp2p::identity::Keypair,
    net: Net,
    idle: Duration,
    behaviour: B,
) -> Swarm<B> {
    net_swarm_with(
        key,
        net,
        |c| c.with_idle_connection_timeout(idle),
        behaviour,
    )
}

/// As [`net_swarm`], with the swarm configuration made by `config` from the builder's
/// (for instance to choose the substream negotiation).
///
/// # Panics
/// When the transport cannot be built (a test setup error).
#[allow(clippy::expect_used)]
pub fn net_swarm_with<B: NetworkBehaviour>(
    key: &libp2p::identity::Keypair,
    net: Net,
    config: impl FnOnce(libp2p::swarm::Config) -> libp2p::swarm::Config,
    behaviour: B,
) -> Swarm<B> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key.clone()).with_tokio();
    match net {
        Net::Tcp => builder
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| behaviour)
            .expect("behaviour")
            .with_swarm_config(config)
            .build(),
        Net::Quic => builder
            .with_quic()
            .with_behaviour(|_| behaviour)
            .expect("behaviour")
            .with_swarm_config(config)
            .build(),
    }
}

/// Polls every swarm in turn until one yields a behaviour event, and returns the swarm's
/// index and the event (the swarms' other events are dropped). Never times out: bound it
/// with a timeout.
pub async fn next_event<B: NetworkBehaviour>(swarms: &mut [&mut Swarm<B>]) -> (usize, B::ToSwarm) {
    futures::future::poll_fn(|cx| {
        for (i, s) in swarms.iter_mut().enumerate() {
            while let Poll::Ready(Some(ev)) = s.poll_next_unpin(cx) {
                if let SwarmEvent::Behaviour(e) = ev {
                    return Poll::Ready((i, e));
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Has `b` listen on 127.0.0.1 and on 0.0.0.0, and answers its loopback address once a
/// non-loopback address is up too: a swarm listening beyond loopback counts all of
/// loopback as one network (`mesh_core::Source::for_rates`), as a node on a LAN counts
/// the peers behind one address.
///
/// # Panics
/// When the host has no interface beyond loopback, or the addresses do not come within
/// 5 s (a test setup error).
#[allow(clippy::expect_used)]
pub async fn listen_beyond_loopback<B: NetworkBehaviour>(b: &mut Swarm<B>) -> libp2p::Multiaddr {
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("constant address"))
        .expect("listen on loopback");
    b.listen_on("/ip4/0.0.0.0/tcp/0".parse().expect("constant address"))
        .expect("listen on every interface");
    let (mut lo, mut beyond) = (None, false);
    let listening = async {
        while lo.is_none() || !beyond {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                if address.to_string().starts_with("/ip4/127.") {
                    lo.get_or_insert(address);
                } else {
                    beyond = true;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .expect("a loopback and a non-loopback listen address (this host has an interface)");
    lo.expect("a loopback address")
}
