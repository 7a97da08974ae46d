//! Two ends of one loopback TCP connection with Noise on it, for tests of what runs
//! over a secured connection (libmesh's yamux) without a swarm.

use futures::{StreamExt, future};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::core::{Endpoint, Transport};
use libp2p::identity::Keypair;
use libp2p::{noise, tcp};

/// One end of a Noise-secured loopback TCP connection.
pub type Secured = noise::Output<tcp::tokio::TcpStream>;

/// Two ends of one loopback TCP connection with Noise on it (dialer, listener).
///
/// # Panics
/// When loopback TCP or the Noise handshake fails (a test setup error).
#[allow(clippy::unwrap_used)]
pub async fn noise_pair() -> (Secured, Secured) {
    let mut listener = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)).boxed();
    let any = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    listener.listen_on(ListenerId::next(), any).unwrap();
    let addr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = listener.select_next_some().await {
            break listen_addr;
        }
    };
    let mut dialer = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let dial = dialer.dial(addr, opts).unwrap();
    let accept = async {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await {
                break upgrade.await.unwrap();
            }
        }
    };
    let (dialed, accepted) = future::join(dial, accept).await;
    let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (a, b) = future::join(
        noise::Config::new(&a)
            .unwrap()
            .upgrade_outbound(dialed.unwrap(), "/noise"),
        noise::Config::new(&b)
            .unwrap()
            .upgrade_inbound(accepted, "/noise"),
    )
    .await;
    (a.unwrap().1, b.unwrap().1)
}
