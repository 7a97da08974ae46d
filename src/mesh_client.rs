//! One-shot `/mesh/advert/1.0.0` requests from a short-lived swarm: what
//! `meshd advert publish|lookup` use for `MULTIADDR` targets.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use mesh_advert::{Answer, Behaviour, Config, Event, MemoryStore, NodeWithdrawal, StoreLimits};
use mesh_core::{MeshError, NodeAdvertisement, NodeId, NodeKeypair};

/// Why a mesh request failed before any answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The target multiaddr has no `/p2p/<peer id>`.
    #[error("the target multiaddr must end in /p2p/<peer id>")]
    NoPeerId,
    /// The swarm could not be built.
    #[error("transport setup failed: {0}")]
    Setup(String),
    /// Dialing or the request failed.
    #[error("{0}")]
    Failed(String),
    /// Nothing happened in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What to ask.
#[derive(Debug, Clone)]
pub enum Ask {
    /// Publish this advertisement.
    Publish(Box<NodeAdvertisement>),
    /// Look this node up.
    Lookup(NodeId),
    /// Apply this withdrawal.
    Withdraw(Box<NodeWithdrawal>),
}

fn swarm(key: &NodeKeypair) -> Result<Swarm<Behaviour<MemoryStore>>, ClientError> {
    let behaviour = Behaviour::new(
        MemoryStore::new(StoreLimits::default()),
        Config {
            forward: false,
            ..Config::default()
        },
    );
    Ok(
        libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                crate::node::muxer::config,
            )
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .with_quic()
            .with_dns()
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(5)))
            .build(),
    )
}

/// Dials `target`, sends one request, returns the peer's answer (`Err(MeshError)` when
/// the peer refused, with its code).
pub async fn request(
    key: &NodeKeypair,
    target: &Multiaddr,
    ask: Ask,
    timeout: Duration,
) -> Result<Result<Answer, MeshError>, ClientError> {
    let peer = target
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .ok_or(ClientError::NoPeerId)?;
    let mut swarm = swarm(key)?;
    swarm.add_peer_address(peer, target.clone());
    let correlation = match ask {
        Ask::Publish(ad) => swarm.behaviour_mut().publish(&peer, *ad),
        Ask::Lookup(node) => swarm.behaviour_mut().lookup(&peer, node),
        Ask::Withdraw(w) => swarm.behaviour_mut().withdraw(&peer, *w),
    };
    let run = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(Event::Response {
                    correlation: c,
                    result,
                    ..
                }) if c == correlation => return Ok(result),
                SwarmEvent::Behaviour(Event::OutboundFailure {
                    correlation: c,
                    error,
                    ..
                }) if c == correlation => return Err(ClientError::Failed(error)),
                SwarmEvent::OutgoingConnectionError {
                    peer_id: Some(p),
                    error,
                    ..
                } if p == peer => {
                    return Err(ClientError::Failed(format!("dial {target}: {error}")));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// The peer id of a multiaddr, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
