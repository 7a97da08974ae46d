//! A small chat over gossipsub between libmesh nodes.
//!
//! Each process runs a full `libmesh::node::Node` (the same composed node as `meshd run`),
//! subscribes to one gossipsub topic, publishes every line read from stdin on it, and
//! prints every message received as `<sender>: text`. Peers find each other through
//! `--peer` (a static seed: dialed at start, kept connected by the session governor) or
//! through the DHTs.
//!
//! ```sh
//! # first terminal: prints {"ready": {..., "seed": "NODE_ID@MULTIADDR"}}
//! cargo run --example chat -- --listen /ip4/127.0.0.1/tcp/0
//! # second terminal, with the first one's seed
//! cargo run --example chat -- --listen /ip4/127.0.0.1/tcp/0 --peer NODE_ID@MULTIADDR
//! ```
//!
//! Options: `--topic NAME` (default `libmesh-chat`), `--data-dir DIR` (where the node
//! identity and stores live; default a temporary directory, i.e. a new identity each
//! run), `--bootstrap none|public` (default `none`: no public Amino bootstrap).
//!
//! It interoperates with `meshd` nodes: the topic is a plain gossipsub `IdentTopic`, so a
//! `meshd run --seed NODE_ID@MULTIADDR` node that ran `meshd gossip subscribe
//! libmesh-chat` receives the chat (in its `--events` output), and
//! `meshd gossip publish libmesh-chat "hello"` shows up here as a chat line.
//!
//! Stdout carries only the ready line and the chat; status goes to stderr. End with
//! Ctrl-D (end of input) or Ctrl-C.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use libmesh::node::{Bootstrap, BootstrapName, Node, NodeConfig, NodeEvent, NodeHandle, SeedPeer};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{IdentityStore, NodeId, Timestamp};
use serde_json::json;
use tokio::sync::mpsc;

/// How often a publish is retried while no peer is subscribed yet.
const PUBLISH_ATTEMPTS: u32 = 20;
/// The pause between attempts (the gossipsub mesh forms within a heartbeat or two).
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "A chat over gossipsub between libmesh nodes")]
struct Args {
    /// Listen address (repeatable).
    #[arg(
        long = "listen",
        value_name = "MULTIADDR",
        default_value = "/ip4/127.0.0.1/tcp/0"
    )]
    listen: Vec<Multiaddr>,
    /// A peer to connect to, `NODE_ID@MULTIADDR` (repeatable).
    #[arg(long = "peer", value_name = "NODE_ID@MULTIADDR", value_parser = parse_peer)]
    peers: Vec<SeedPeer>,
    /// The gossipsub topic.
    #[arg(long, default_value = "libmesh-chat")]
    topic: String,
    /// Identity and stores (default: a temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `none` (default) or `public` (the libp2p bootstrap nodes of the Amino DHT).
    #[arg(long, value_name = "none|public", default_value = "none", value_parser = parse_bootstrap)]
    bootstrap: BootstrapName,
}

fn parse_peer(s: &str) -> Result<SeedPeer, String> {
    let (node, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("{s}: expected NODE_ID@MULTIADDR"))?;
    Ok(SeedPeer {
        node_id: NodeId::parse(node).map_err(|e| format!("node id {node}: {e}"))?,
        addr: addr.parse().map_err(|e| format!("multiaddr {addr}: {e}"))?,
        label: None,
    })
}

fn parse_bootstrap(s: &str) -> Result<BootstrapName, String> {
    match s {
        "none" => Ok(BootstrapName::None),
        "public" => Ok(BootstrapName::Public),
        other => Err(format!("{other}: expected none or public")),
    }
}

/// A short name for a message's author (the end of its peer id).
fn short(peer: Option<PeerId>) -> String {
    match peer {
        Some(p) => {
            let s = p.to_string();
            s[s.len().saturating_sub(8)..].to_owned()
        }
        None => "anonymous".into(),
    }
}

/// Publishes `line`, retrying (bounded) while gossipsub knows no subscribed peer yet:
/// right after start the peers' subscriptions have not arrived. The node reports that as
/// a transport error whose detail names gossipsub's `PublishError`.
async fn publish(handle: &NodeHandle, topic: &str, line: String) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match handle
            .publish_topic(topic.to_owned(), line.clone().into_bytes())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if attempt < PUBLISH_ATTEMPTS
                    && (e.to_string().contains("NoPeersSubscribedToTopic")
                        || e.to_string().contains("InsufficientPeers")
                        || e.to_string().contains("AllQueuesFull")) =>
            {
                attempt += 1;
                tokio::time::sleep(PUBLISH_RETRY).await;
            }
            Err(e) => return Err(anyhow::anyhow!("not sent after {attempt} attempt(s): {e}")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    // The data dir: the node identity (created on first use) and the node's stores.
    let temp = match args.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("temporary data dir")?),
    };
    let data_dir = match (&args.data_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_owned(),
        (None, None) => anyhow::bail!("no data dir"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let identity = IdentityStore::new(&data_dir).load_or_generate(&Timestamp::now())?;

    let config = NodeConfig {
        listen: args.listen.clone(),
        seeds: args.peers.clone(),
        bootstrap: Bootstrap::Named(args.bootstrap),
        ..NodeConfig::default()
    };
    let (mut node, handle, mut events) = Node::new(
        identity.keypair,
        config,
        &data_dir,
        Arc::new(mesh_core::NoTrace),
    )?;
    node.listen()?;
    let (node_id, peer_id) = (node.node_id(), node.peer_id());
    let node_task = tokio::spawn(node.run());
    handle.subscribe(args.topic.clone()).await?;

    // The ready line waits (bounded) for the actual listen addresses.
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut early = Vec::new();
    while addrs.len() < args.listen.len() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(NodeEvent::Listening { addr })) => addrs.push(addr),
            Ok(Some(other)) => early.push(other),
            Ok(None) | Err(_) => break,
        }
    }
    let first = addrs
        .first()
        .context("the node is not listening on any address")?;
    println!(
        "{}",
        json!({"ready": {
            "node_id": node_id.to_string(),
            "peer_id": peer_id.to_string(),
            "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "seed": format!("{node_id}@{first}"),
            "topic": args.topic,
            "data_dir": data_dir.display().to_string(),
        }})
    );

    // Stdin is read on its own thread (blocking reads), one line at a time, and
    // published in order by one task, so a retrying publish holds up only the lines
    // after it, never the received messages.
    let (line_tx, mut line_rx) = mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let publisher = {
        let handle = handle.clone();
        let topic = args.topic.clone();
        tokio::spawn(async move {
            while let Some(line) = line_rx.recv().await {
                if let Err(e) = publish(&handle, &topic, line).await {
                    eprintln!("! {e}");
                }
            }
        })
    };
    tokio::pin!(publisher);

    for event in early {
        show(event);
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            // End of input: everything typed has been published (or reported).
            _ = &mut publisher => break,
            event = events.recv() => match event {
                Some(e) => show(e),
                None => break,
            },
        }
    }
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), node_task).await;
    drop(temp);
    Ok(())
}

/// Chat lines on stdout, everything else worth knowing on stderr.
fn show(event: NodeEvent) {
    match event {
        NodeEvent::GossipMessage { source, data, .. } => {
            println!("{}: {}", short(source), String::from_utf8_lossy(&data));
        }
        NodeEvent::SessionEstablished { peer, node, .. } => {
            eprintln!("* {} joined ({node})", short(Some(peer)));
        }
        NodeEvent::SessionClosed { peer, .. } => eprintln!("* {} left", short(Some(peer))),
        _ => {}
    }
}
