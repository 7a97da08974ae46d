//! A stock rust-libp2p circuit relay v2 over loopback TCP (with ping and identify), for
//! tests that put the node behind a relay it does not control.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, SwarmBuilder, identify, noise, ping, relay, tcp, yamux};

/// The relay's behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct StockRelay {
    pub(crate) relay: relay::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) identify: identify::Behaviour,
}

/// A relay with `config`, listening on loopback TCP with that address as its external
/// one (a relay serves once it has one); its address with `/p2p/<relay>`. The caller
/// drives the swarm.
pub(crate) async fn stock_relay(config: relay::Config) -> (Swarm<StockRelay>, Multiaddr) {
    let mut r = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| StockRelay {
            relay: relay::Behaviour::new(k.public().to_peer_id(), config),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(1))),
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                k.public(),
            )),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    r.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = r.select_next_some().await {
            break address;
        }
    };
    r.add_external_address(addr.clone());
    let p2p = addr.with(Protocol::P2p(*r.local_peer_id()));
    (r, p2p)
}
