//! Embedding libmesh's behaviours in a plain rust-libp2p application.
//!
//! This program knows nothing of the composed libmesh node (`libmesh::node`). It is an
//! ordinary rust-libp2p 0.57 app — its own `#[derive(NetworkBehaviour)]`, a swarm built
//! with `SwarmBuilder` over TCP + noise + yamux — made of two libmesh behaviours:
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
//!
//! Usage:
//!
//! ```sh
//! # one terminal: a listener, prints its address
//! cargo run --example embed_behaviours
//! # another: dial it, wait for the session, publish our advertisement, look its up
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
use mesh_advert::own::{advert_for, next_sequence};
use mesh_advert::{AdvertStore, Answer, MemoryStore, StoreLimits};
use mesh_core::{NodeAdvertisement, NodeId, NodeKeypair, Timestamp};
use tokio::sync::mpsc;

/// How long the dialer may take from dial to both answers.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The application's behaviour: the two libmesh behaviours. The derive generates
/// `AppEvent { Advert(..), Session(..) }`, one variant per field.
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
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "A plain rust-libp2p app with mesh-advert and mesh-session inside")]
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
        next_sequence(None, &now),
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

/// The listener: drives the swarm forever, printing what happens. With `stored`, every
/// advertisement a peer publishes to us is also reported there (the demo checks it).
async fn serve(mut swarm: Swarm<App>, tag: &str, stored: Option<mpsc::UnboundedSender<NodeId>>) {
    loop {
        match swarm.select_next_some().await {
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
                if let Some(tx) = &stored {
                    let _ = tx.send(node);
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
}

/// The dialer: dials `target`, waits for the mesh session, then publishes `own` to the
/// peer and looks the peer's advertisement up from it.
async fn exchange(
    swarm: &mut Swarm<App>,
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
    while published.is_none() || found.is_none() {
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
            }
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
    match (published, found) {
        (Some(published), Some(found)) => Ok(Exchange {
            node,
            published,
            found,
        }),
        _ => bail!("exchange ended without both answers"),
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
}

/// Runs the dialer against `target` with a fresh identity.
async fn dial(listen: Multiaddr, target: Multiaddr) -> anyhow::Result<()> {
    let key = NodeKeypair::generate();
    let mut swarm = build_swarm(&key)?;
    let (_, own) = start(&mut swarm, &key, listen).await?;
    println!("dialer {}", key.node_id());
    let x = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(&mut swarm, own, target, "dialer"),
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
    let (stored_tx, mut stored_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move { serve(listener, "listener", Some(stored_tx)).await });

    let mut dialer = build_swarm(&dkey)?;
    // Port 0 for the dialer: `--listen` may name a fixed port, which the listener holds.
    let (_, own) = start(&mut dialer, &dkey, "/ip4/127.0.0.1/tcp/0".parse()?).await?;
    println!("dialer {}", dkey.node_id());
    let result = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(&mut dialer, own.clone(), addr, "dialer"),
    )
    .await;
    let checked = check_demo(result, &lkey, &dkey, &mut stored_rx).await;
    server.abort();
    checked?;
    println!(
        "demo ok: session up, {} stored the advertisement of {} (#{}) and answered with its own",
        lkey.node_id(),
        dkey.node_id(),
        own.sequence_no()
    );
    Ok(())
}

/// The demo's checks: the dialer got the listener's advertisement and its publish was
/// stored, and the listener reported storing the dialer's advertisement.
async fn check_demo(
    result: Result<anyhow::Result<Exchange>, tokio::time::error::Elapsed>,
    lkey: &NodeKeypair,
    dkey: &NodeKeypair,
    stored_rx: &mut mpsc::UnboundedReceiver<NodeId>,
) -> anyhow::Result<()> {
    let x = result.context("no session and answers within 30 s")??;
    report("dialer", &x);
    if x.node != lkey.node_id() || x.found.node_id() != lkey.node_id() {
        bail!("looked up the wrong node: {}", x.found.node_id());
    }
    if !matches!(x.published, Answer::Stored | Answer::Replaced) {
        bail!("publish answered {:?}", x.published);
    }
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(node) = stored_rx.recv().await {
            if node == dkey.node_id() {
                return true;
            }
        }
        false
    })
    .await;
    if seen != Ok(true) {
        bail!("the listener did not report storing the dialer's advertisement");
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
