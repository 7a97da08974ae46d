//! Embedding libmesh's behaviours in a plain rust-libp2p application.
//!
//! This program knows nothing of the composed libmesh node (`libmesh::node`). It is an
//! ordinary rust-libp2p 0.57 app — its own `#[derive(NetworkBehaviour)]`, a swarm built
//! with `SwarmBuilder` over TCP + noise + yamux — made of libmesh behaviours, each a
//! plain field of the derived struct, none needing a call to make it work:
//!
//! - `mesh_session::Behaviour` (`/mesh/session/1.0.0`): on every new connection the
//!   dialer sends a signed hello, the listener a signed ack, both verify each other's
//!   node identity and capabilities and derive a session secret. The application sees
//!   `SessionEstablished { node, capabilities }` once the peer is authenticated. It runs
//!   its own libp2p ping (`/ipfs/ping/1.0.0`) for keepalive and reports every result as
//!   `mesh_session::Event::Pinged`: nothing to compose beside it, nothing to feed it.
//! - `mesh_advert::Behaviour<MemoryStore>` (`/mesh/advert/1.0.0`): signed node
//!   advertisements ("node X can be reached at these addresses, until then"). Peers
//!   publish theirs to each other and look each other's up; every advertisement that
//!   enters a store has been verified.
//! - `mesh_signal::Behaviour` (`/mesh/signal/1.0.0`): signed signaling frames (connect
//!   requests, candidates, opaque setup payloads such as an SDP offer), directly or
//!   through a signaling host; it expires and sweeps its correlations on its own.
//! - `mesh_admission::server::Behaviour` and `client::Behaviour`
//!   (`/mesh/relay-admission/1.0.0`): this app is also a circuit relay v2 that admits by
//!   identity. The server owns the relay itself, so a peer without a grant cannot
//!   reserve or open a circuit, and every relay event is counted before the app sees it;
//!   the client asks a relay for a grant and renews it.
//!
//! Usage:
//!
//! ```sh
//! # one terminal: a listener, prints its address
//! cargo run --example embed_behaviours
//! # another: dial it, wait for the session, publish our advertisement, look its up,
//! # send it a signaling request and ask it (as a relay) for a reservation grant
//! cargo run --example embed_behaviours -- /ip4/127.0.0.1/tcp/PORT/p2p/PEER
//! # both ends in one process (exits 0 on success; the test suite runs this)
//! cargo run --example embed_behaviours -- --demo
//! ```

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};
use mesh_advert::own::{advert_for, next_sequence, sequence_clock};
use mesh_advert::{AdvertStore, Answer, MemoryStore, StoreLimits};
use mesh_core::{NodeAdvertisement, NodeId, NodeKeypair, Timestamp};
use serde_json::json;
use tokio::sync::mpsc;

/// How long the dialer may take from dial to both answers.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The application's behaviour: libmesh behaviours as plain fields. The derive
/// generates `AppEvent { Advert(..), Session(..), Signal(..), Relay(..), Admission(..) }`,
/// one variant per field.
#[derive(NetworkBehaviour)]
struct App {
    /// Signed advertisements, served from (and stored into) an in-memory store. Any type
    /// implementing `mesh_advert::AdvertStore` works (libmesh's node uses a durable one).
    advert: mesh_advert::Behaviour<MemoryStore>,
    /// The authenticated session handshake, with its own libp2p ping for keepalive
    /// (`KeepaliveLost` / `KeepaliveRestored`, each ping result as `Pinged`). It must be
    /// built with the same key as the swarm: the libp2p peer id and the libmesh node id
    /// name the same Ed25519 key.
    session: mesh_session::Behaviour,
    /// Signed signaling frames between nodes (and through this node, for session peers
    /// that offer it as a host).
    signal: mesh_signal::Behaviour,
    /// A circuit relay v2 that admits by identity (here: anyone with a signed request,
    /// the `Open` policy of `server::Config::default()`).
    relay: mesh_admission::server::Behaviour,
    /// Asks relays for admission grants before reserving or opening circuits.
    admission: mesh_admission::client::Behaviour,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    about = "A plain rust-libp2p app with mesh-advert, mesh-session, mesh-signal and mesh-admission inside"
)]
struct Args {
    /// Run a listener and a dialer in this process, check the exchange, exit 0 on
    /// success.
    #[arg(long, conflicts_with = "peer")]
    demo: bool,
    /// Where to listen (both modes listen: the address goes into the advertisement).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// The listener to dial, `/ip4/…/tcp/…/p2p/<peer id>`. Without it (and without
    /// `--demo`) this process is the listener.
    peer: Option<Multiaddr>,
}

/// Builds the swarm. The libmesh identity (`NodeKeypair`, an Ed25519 key) becomes the
/// libp2p identity, so `PeerId` and `NodeId` convert into each other.
fn build_swarm(key: &NodeKeypair) -> anyhow::Result<Swarm<App>> {
    let app = App {
        advert: mesh_advert::Behaviour::new(
            MemoryStore::new(StoreLimits::default()),
            mesh_advert::Config::default(),
        ),
        session: mesh_session::Behaviour::new(key.clone(), mesh_session::Config::default()),
        signal: mesh_signal::Behaviour::new(mesh_signal::Config::new(key.node_id())),
        relay: mesh_admission::server::Behaviour::new(
            key.clone(),
            mesh_admission::server::Config::default(),
        ),
        admission: mesh_admission::client::Behaviour::new(
            key.clone(),
            mesh_admission::client::Config::default(),
        ),
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| app)?
        // Nothing here keeps an idle connection open (ping does not), so give the
        // handshake and the requests time.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Starts listening on `addr` and waits for the actual address (port 0 picks one). Then
/// signs this node's advertisement for it and puts it into our own store, so that peers
/// that look us up find it. Returns the dialable address (with `/p2p/<peer id>`) and the
/// advertisement.
async fn start(
    swarm: &mut Swarm<App>,
    key: &NodeKeypair,
    addr: Multiaddr,
) -> anyhow::Result<(Multiaddr, NodeAdvertisement)> {
    swarm.listen_on(addr.clone())?;
    let listening = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .with_context(|| format!("no listen address for {addr} within 10 s"))?;

    let now = Timestamp::now();
    // A real app persists the last sequence number; `next_sequence` never goes below
    // the clock in milliseconds, so a fresh process still moves forward.
    let advert = advert_for(
        key,
        std::slice::from_ref(&listening),
        next_sequence(None, sequence_clock(&now)),
        &now,
        600,
    )?;
    swarm
        .behaviour_mut()
        .advert
        .store_mut()
        .insert(advert.clone(), &now)
        .map_err(|e| anyhow::anyhow!("own advertisement: {}", e.to_mesh_error()))?;
    let dialable = listening.with(Protocol::P2p(*swarm.local_peer_id()));
    Ok((dialable, advert))
}

/// What the listener saw that the demo checks.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// It stored this node's advertisement.
    Stored(NodeId),
    /// A signaling frame of this kind came from this node.
    Frame(NodeId, String),
}

/// The listener: drives the swarm forever, printing what happens. With `seen`, every
/// advertisement a peer publishes to us and every frame for us is also reported there
/// (the demo checks them).
async fn serve(mut swarm: Swarm<App>, tag: &str, seen: Option<mpsc::UnboundedSender<Seen>>) {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(AppEvent::Signal(mesh_signal::Event::Received {
                frame, ..
            })) => {
                // Verified by the behaviour: signed by `from`, addressed to us, fresh.
                println!(
                    "[{tag}] {} frame from {}: {}",
                    frame.kind(),
                    frame.from(),
                    serde_json::Value::Object(frame.payload().clone())
                );
                if let Some(tx) = &seen {
                    let _ = tx.send(Seen::Frame(frame.from(), frame.kind().to_owned()));
                }
            }
            SwarmEvent::Behaviour(AppEvent::Relay(mesh_admission::server::Event::Granted {
                peer,
                grant,
            })) => println!(
                "[{tag}] admitted {peer} as a relay: {} ticket {}",
                grant.purpose(),
                grant.ticket_id()
            ),
            SwarmEvent::Behaviour(AppEvent::Relay(e)) => println!("[{tag}] relay: {e:?}"),
            // Ping round trips are there for the app that wants them.
            SwarmEvent::Behaviour(AppEvent::Session(mesh_session::Event::Pinged { .. })) => {}
            SwarmEvent::Behaviour(AppEvent::Session(e)) => {
                if let mesh_session::Event::SessionEstablished {
                    node, capabilities, ..
                } = &e
                {
                    println!("[{tag}] session with {node}, capabilities {capabilities:?}");
                } else {
                    println!("[{tag}] session: {e:?}");
                }
            }
            SwarmEvent::Behaviour(AppEvent::Advert(mesh_advert::Event::Stored {
                peer,
                node,
                sequence_no,
                ..
            })) => {
                println!("[{tag}] stored the advertisement of {node} (#{sequence_no}) from {peer}");
                if let Some(tx) = &seen {
                    let _ = tx.send(Seen::Stored(node));
                }
            }
            SwarmEvent::Behaviour(AppEvent::Advert(e)) => println!("[{tag}] advert: {e:?}"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                println!("[{tag}] connected to {peer_id}");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => println!("[{tag}] disconnected from {peer_id}"),
            _ => {}
        }
    }
}

/// What the dialer got.
struct Exchange {
    /// The peer's node id.
    node: NodeId,
    /// The peer's answer to our publish.
    published: Answer,
    /// The peer's advertisement, verified.
    found: NodeAdvertisement,
    /// The peer's admission grant (it is a relay), verified.
    grant: mesh_core::RelayAdmissionGrant,
}

/// The dialer: dials `target`, waits for the mesh session, then publishes `own` to the
/// peer, looks the peer's advertisement up from it, sends it a connect request and asks
/// it for a reservation grant.
async fn exchange(
    swarm: &mut Swarm<App>,
    own_key: &NodeKeypair,
    own: NodeAdvertisement,
    target: Multiaddr,
    tag: &str,
) -> anyhow::Result<Exchange> {
    let Some(Protocol::P2p(peer)) = target.iter().last() else {
        bail!("{target}: the address must end in /p2p/<peer id>");
    };
    // The libmesh node id of the peer is its peer id's Ed25519 key.
    let node = NodeId::from_peer_id(&peer)
        .map_err(|e| anyhow::anyhow!("{peer} is not an Ed25519 peer id: {e}"))?;
    swarm.dial(target.clone())?;

    let mut publish_req: Option<String> = None;
    let mut lookup_req: Option<String> = None;
    let mut published: Option<Answer> = None;
    let mut found: Option<NodeAdvertisement> = None;
    let mut grant: Option<mesh_core::RelayAdmissionGrant> = None;
    let mut delivered = false;
    while published.is_none() || found.is_none() || grant.is_none() || !delivered {
        match swarm.select_next_some().await {
            // The session is up: the peer proved it holds the key of `node`. Only now
            // talk to it.
            SwarmEvent::Behaviour(AppEvent::Session(mesh_session::Event::SessionEstablished {
                peer: p,
                node: n,
                capabilities,
            })) if p == peer => {
                println!("[{tag}] session with {n}, capabilities {capabilities:?}");
                let advert = &mut swarm.behaviour_mut().advert;
                // Both return a correlation id; the answers come back as
                // `mesh_advert::Event::Response` carrying it.
                publish_req = Some(advert.publish(&peer, own.clone()));
                lookup_req = Some(advert.lookup(&peer, node));
                // A signed connect request that opens a correlation (the setup
                // payloads, candidates and answers of a WebRTC-style orchestrator follow
                // in it), addressed to the peer.
                let mut payload = serde_json::Map::new();
                payload.insert("purpose".into(), json!("setup"));
                let frame = mesh_signal::frame(
                    own_key,
                    node,
                    "connect_request",
                    &mesh_signal::random_id("corr:"),
                    payload,
                    &Timestamp::now(),
                )?;
                swarm
                    .behaviour_mut()
                    .signal
                    .send(&frame, None)
                    .map_err(|e| anyhow::anyhow!("connect request: {e}"))?;
                // The peer is a relay: ask it to admit a reservation.
                swarm
                    .behaviour_mut()
                    .admission
                    .request(peer, mesh_admission::Purpose::Reservation, Vec::new())
                    .map_err(|e| anyhow::anyhow!("admission request: {e}"))?;
            }
            SwarmEvent::Behaviour(AppEvent::Signal(mesh_signal::Event::Delivered {
                peer: p,
                ..
            })) if p == peer => delivered = true,
            SwarmEvent::Behaviour(AppEvent::Signal(mesh_signal::Event::Refused {
                error, ..
            })) => bail!("connect request refused: {error}"),
            SwarmEvent::Behaviour(AppEvent::Admission(e)) => match e {
                mesh_admission::client::Event::Granted {
                    relay, grant: g, ..
                } if relay == peer => grant = Some(*g),
                other => bail!("admission: {other:?}"),
            },
            SwarmEvent::Behaviour(AppEvent::Session(mesh_session::Event::Rejected {
                peer: p,
                error,
                by_peer,
                ..
            })) if p == peer => {
                bail!("session refused (by the peer: {by_peer}): {error}");
            }
            SwarmEvent::Behaviour(AppEvent::Advert(mesh_advert::Event::Response {
                correlation,
                result,
                ..
            })) => {
                let result = result.map_err(|e| anyhow::anyhow!("the peer refused: {e}"))?;
                if Some(&correlation) == publish_req.as_ref() {
                    published = Some(result);
                } else if Some(&correlation) == lookup_req.as_ref() {
                    match result {
                        // `Found` has been verified by the behaviour: signature, schema,
                        // expiry, and that it is about the node we asked for.
                        Answer::Found(ad) => found = Some(*ad),
                        other => bail!("lookup of {node}: {other:?}"),
                    }
                }
            }
            SwarmEvent::Behaviour(AppEvent::Advert(mesh_advert::Event::OutboundFailure {
                error,
                ..
            })) => bail!("advert request failed: {error}"),
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                bail!("cannot dial {target}: {error}")
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } if peer_id == peer => bail!("connection to {peer} closed: {cause:?}"),
            _ => {}
        }
    }
    match (published, found, grant) {
        (Some(published), Some(found), Some(grant)) => Ok(Exchange {
            node,
            published,
            found,
            grant,
        }),
        _ => bail!("exchange ended without every answer"),
    }
}

/// Prints what the dialer got.
fn report(tag: &str, x: &Exchange) {
    println!("[{tag}] published our advertisement: {:?}", x.published);
    let addrs: Vec<String> = x.found.endpoints().into_iter().map(|e| e.url).collect();
    println!(
        "[{tag}] advertisement of {}: sequence {}, expires {}, endpoints {addrs:?}",
        x.node,
        x.found.sequence_no(),
        x.found.expires_at().as_str(),
    );
    println!(
        "[{tag}] admitted by relay {}: ticket {}, until {}",
        x.node,
        x.grant.ticket_id(),
        x.grant.expires_at().as_str()
    );
}

/// Runs the dialer against `target` with a fresh identity.
async fn dial(listen: Multiaddr, target: Multiaddr) -> anyhow::Result<()> {
    let key = NodeKeypair::generate();
    let mut swarm = build_swarm(&key)?;
    let (_, own) = start(&mut swarm, &key, listen).await?;
    println!("dialer {}", key.node_id());
    let x = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(&mut swarm, &key, own, target, "dialer"),
    )
    .await
    .context("no session and answers within 30 s")??;
    report("dialer", &x);
    Ok(())
}

/// Runs a listener until interrupted.
async fn listen(listen: Multiaddr) -> anyhow::Result<()> {
    let key = NodeKeypair::generate();
    let mut swarm = build_swarm(&key)?;
    let (addr, _) = start(&mut swarm, &key, listen).await?;
    println!("listener {} ({})", key.node_id(), swarm.local_peer_id());
    println!("dial me with: cargo run --example embed_behaviours -- {addr}");
    serve(swarm, "listener", None).await;
    Ok(())
}

/// Both ends in one runtime; checks what each side should have seen.
async fn demo(listen: Multiaddr) -> anyhow::Result<()> {
    let (lkey, dkey) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut listener = build_swarm(&lkey)?;
    let (addr, _) = start(&mut listener, &lkey, listen).await?;
    println!("listener {} at {addr}", lkey.node_id());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move { serve(listener, "listener", Some(seen_tx)).await });

    let mut dialer = build_swarm(&dkey)?;
    // Port 0 for the dialer: `--listen` may name a fixed port, which the listener holds.
    let (_, own) = start(&mut dialer, &dkey, "/ip4/127.0.0.1/tcp/0".parse()?).await?;
    println!("dialer {}", dkey.node_id());
    let result = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(&mut dialer, &dkey, own.clone(), addr, "dialer"),
    )
    .await;
    let checked = check_demo(result, &lkey, &dkey, &mut seen_rx).await;
    server.abort();
    checked?;
    println!(
        "demo ok: session up, {} stored the advertisement of {} (#{}) and answered with its own, took its connect request and admitted it",
        lkey.node_id(),
        dkey.node_id(),
        own.sequence_no()
    );
    Ok(())
}

/// The demo's checks: the dialer got the listener's advertisement, its publish was
/// stored and it holds a grant signed by the listener; the listener reported storing the
/// dialer's advertisement and receiving its connect request.
async fn check_demo(
    result: Result<anyhow::Result<Exchange>, tokio::time::error::Elapsed>,
    lkey: &NodeKeypair,
    dkey: &NodeKeypair,
    seen_rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> anyhow::Result<()> {
    let x = result.context("no session and answers within 30 s")??;
    report("dialer", &x);
    if x.node != lkey.node_id() || x.found.node_id() != lkey.node_id() {
        bail!("looked up the wrong node: {}", x.found.node_id());
    }
    if !matches!(x.published, Answer::Stored | Answer::Replaced) {
        bail!("publish answered {:?}", x.published);
    }
    if x.grant.relay_id() != lkey.node_id() || x.grant.node_id() != dkey.node_id() {
        bail!("the grant names the wrong relay or node");
    }
    let mut wanted = vec![
        Seen::Stored(dkey.node_id()),
        Seen::Frame(dkey.node_id(), "connect_request".into()),
    ];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(s) = seen_rx.recv().await {
            wanted.retain(|w| *w != s);
            if wanted.is_empty() {
                break;
            }
        }
    })
    .await;
    if !wanted.is_empty() {
        bail!("the listener did not report {wanted:?}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.demo {
        demo(args.listen).await
    } else if let Some(peer) = args.peer {
        dial(args.listen, peer).await
    } else {
        listen(args.listen).await
    }
}
