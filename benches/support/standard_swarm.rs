//! A bare rust-libp2p swarm with the perf behaviour and the standard behaviours every
//! libp2p node runs (identify, ping, Kademlia, gossipsub), none of libmesh's: it tells
//! what rust-libp2p's own composition costs a single stream from what libmesh adds.
//! `--behaviours LIST` (comma-separated, of `identify,ping,kad,gossipsub`; default all
//! four) keeps only some, to find which one costs.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Swarm, gossipsub, identify, kad, noise, ping, tcp};

/// The perf behaviour beside the standard ones (each one can be left out).
#[derive(libp2p::swarm::NetworkBehaviour)]
pub(crate) struct Standard {
    pub(crate) stream: libp2p_stream::Behaviour,
    identify: Toggle<identify::Behaviour>,
    ping: Toggle<ping::Behaviour>,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    gossipsub: Toggle<gossipsub::Behaviour>,
}

/// Which of the standard behaviours `--behaviours` keeps (all without it).
fn kept(name: &str) -> bool {
    super::arg_value("--behaviours").is_none_or(|list| list.split(',').any(|b| b == name))
}

/// The behaviours `--behaviours` keeps, for the case's name.
pub(crate) fn label() -> String {
    let all = ["identify", "ping", "kad", "gossipsub"];
    let kept: Vec<_> = all.into_iter().filter(|b| kept(b)).collect();
    if kept.is_empty() {
        "none".into()
    } else {
        kept.join("+")
    }
}

/// TCP + noise + libmesh's yamux (so that only the behaviours differ from the
/// `capped_swarm` case).
pub(crate) fn swarm() -> Swarm<Standard> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            libmesh::node::muxer::config,
        )
        .unwrap()
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let gossipsub = kept("gossipsub").then(|| {
                let mut g = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossipsub::Config::default(),
                )
                .unwrap();
                g.subscribe(&gossipsub::IdentTopic::new("perf")).unwrap();
                g
            });
            let identify = identify::Config::new("/perf-bench/1".into(), key.public());
            Standard {
                stream: libp2p_stream::Behaviour::new(),
                identify: kept("identify")
                    .then(|| identify::Behaviour::new(identify))
                    .into(),
                ping: kept("ping").then(ping::Behaviour::default).into(),
                kad: kept("kad")
                    .then(|| kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer)))
                    .into(),
                gossipsub: gossipsub.into(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}
