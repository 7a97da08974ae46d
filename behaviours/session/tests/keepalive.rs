//! Keepalive lost and restored with a peer that stops answering pings and comes back.
//! The session behaviour pings on its own: nothing is fed to it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::swarm_with;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, Swarm, SwarmEvent, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol, ping};
use libp2p_swarm_test::SwarmExt;
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_session::governor::Temperature;
use mesh_session::{Behaviour, Config, Event};

/// Answers `/ipfs/ping/1.0.0` like libp2p ping does, except while `paused`.
struct Responder {
    paused: Arc<AtomicBool>,
}

struct Handler {
    paused: Arc<AtomicBool>,
    streams: FuturesUnordered<BoxFuture<'static, ()>>,
}

const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(PING), ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        while let Poll::Ready(Some(())) = self.streams.poll_next_unpin(cx) {}
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, e: Infallible) {
        match e {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, DeniedUpgrade, (), ()>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: mut stream,
            ..
        }) = event
        {
            let paused = self.paused.clone();
            self.streams.push(Box::pin(async move {
                let mut buf = [0u8; 32];
                loop {
                    if stream.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    while paused.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
}

impl NetworkBehaviour for Responder {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            paused: self.paused.clone(),
            streams: FuturesUnordered::new(),
        })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            paused: self.paused.clone(),
            streams: FuturesUnordered::new(),
        })
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// B: a session behaviour beside a ping responder that can be paused. The responder
/// comes first, so it is the one that answers A's pings (an inbound protocol goes to the
/// first handler that offers it; B's session behaviour offers ping too).
#[derive(NetworkBehaviour)]
struct Ponger {
    pong: Responder,
    session: Behaviour,
}

/// Drives both swarms until A's session behaviour emits an event accepted by `want`;
/// returns the ping results it reported on the way.
async fn until_a(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Ponger>,
    want: impl Fn(&Event) -> bool,
) -> Vec<bool> {
    let run = async {
        let mut pings = Vec::new();
        loop {
            tokio::select! {
                ev = a.select_next_some() => match ev {
                    SwarmEvent::Behaviour(Event::Pinged { result, .. }) => pings.push(result.is_ok()),
                    SwarmEvent::Behaviour(e) if want(&e) => return pings,
                    _ => {}
                },
                _ = b.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn keepalive_lost_and_restored() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let trace = Arc::new(MemoryTrace::new(200));
    let paused = Arc::new(AtomicBool::new(false));
    let mut a = swarm_with(
        &ka,
        Behaviour::new(
            ka.clone(),
            Config {
                trace: trace.clone(),
                keepalive_failures: 2,
                ping: ping::Config::new()
                    .with_interval(Duration::from_millis(100))
                    .with_timeout(Duration::from_millis(200)),
                ..Config::default()
            },
        ),
    );
    let mut b = swarm_with(
        &kb,
        Ponger {
            pong: Responder {
                paused: paused.clone(),
            },
            session: Behaviour::new(kb.clone(), Config::default()),
        },
    );
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    until_a(&mut a, &mut b, |e| {
        matches!(e, Event::SessionEstablished { .. })
    })
    .await;
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Hot)
    );

    paused.store(true, Ordering::SeqCst);
    let pings = until_a(&mut a, &mut b, |e| matches!(e, Event::KeepaliveLost { .. })).await;
    assert!(
        pings.ends_with(&[false, false]),
        "lost after 2 failed pings, each reported: {pings:?}"
    );
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Warm),
        "a lost peer is demoted"
    );

    paused.store(false, Ordering::SeqCst);
    let pings = until_a(&mut a, &mut b, |e| {
        matches!(e, Event::KeepaliveRestored { .. })
    })
    .await;
    assert_eq!(
        pings.last(),
        Some(&true),
        "restored by a ping answered: {pings:?}"
    );
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Hot)
    );
    let kinds: Vec<&str> = trace
        .events()
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert!(
        kinds.contains(&"keepalive/lost") && kinds.contains(&"keepalive/restored"),
        "{kinds:?}"
    );
    assert!(
        a.behaviour().session(b.local_peer_id()).is_some(),
        "the session survives"
    );
}
