//! Interop with an independent implementation: a js-libp2p 3 node
//! (`tests/interop/js/node.mjs`) against a rust-libp2p swarm with the protocols our node
//! has (TCP and WS with noise and yamux, identify, ping, Kademlia on `/ipfs/kad/1.0.0` and
//! `/mesh/kad/1.0.0`, signed strict gossipsub). Everything stays on loopback; neither
//! side knows any peer it is not told about.
//!
//! Skipped (with a message) when the npm packages are not installed, unless
//! `MESH_REQUIRE_JS_INTEROP` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[path = "support/js_node.rs"]
mod js_node;

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use js_node::{JsNode, is_ws};
use libp2p::core::ConnectedPoint;
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, GetClosestPeersOk, GetRecordOk, InboundRequest, QueryResult, Quorum};
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, identify, noise, ping, tcp, yamux};
use mesh_advert::kad::{accept_put, record_for, record_key, validate_record};
use mesh_advert::own::advert_for;
use mesh_core::artifact::Artifact;
use mesh_core::{NodeAdvertisement, NodeKeypair, Timestamp};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

const IPFS_KAD: StreamProtocol = kad::PROTOCOL_NAME;
const TOPIC: &str = "mesh-interop";
/// Bound on any single wait for an event.
const WAIT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    ipfs_kad: kad::Behaviour<MemoryStore>,
    mesh_kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
}

type Event = SwarmEvent<BehaviourEvent>;
type Cmd = Box<dyn FnOnce(&mut Swarm<Behaviour>) + Send>;

/// A bare rust-libp2p swarm driven by its own task: commands go in as closures, events
/// come out on a channel. Identify feeds the listen addresses of peers into both DHTs;
/// inbound mesh DHT PUTs are validated (`accept_put`) before they are stored.
struct RustNode {
    peer: PeerId,
    tcp: Multiaddr,
    ws: Multiaddr,
    cmds: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Event>,
    backlog: VecDeque<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RustNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn behaviour(key: &libp2p::identity::Keypair) -> Behaviour {
    let peer = key.public().to_peer_id();
    let mut ipfs_cfg = kad::Config::new(IPFS_KAD);
    ipfs_cfg.set_query_timeout(Duration::from_secs(20));
    let mut mesh_cfg = mesh_advert::kad::config();
    mesh_cfg.set_query_timeout(Duration::from_secs(20));
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new("/mesh/1.0.0".into(), key.public())
                .with_agent_version("libmesh-interop-test/0.1.0".into()),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
        ipfs_kad: kad::Behaviour::with_config(peer, MemoryStore::new(peer), ipfs_cfg),
        mesh_kad: kad::Behaviour::with_config(peer, MemoryStore::new(peer), mesh_cfg),
        gossipsub: gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .unwrap(),
    }
}

/// What the node does by itself with an event before passing it on.
fn handle(swarm: &mut Swarm<Behaviour>, event: &Event) {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            let b = swarm.behaviour_mut();
            for addr in &info.listen_addrs {
                if info.protocols.contains(&IPFS_KAD) {
                    b.ipfs_kad.add_address(peer_id, addr.clone());
                }
                if info.protocols.contains(&mesh_advert::kad::KAD_PROTOCOL) {
                    b.mesh_kad.add_address(peer_id, addr.clone());
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::MeshKad(kad::Event::InboundRequest {
            request:
                InboundRequest::PutRecord {
                    source,
                    record: Some(record),
                    ..
                },
        })) => {
            let store = swarm.behaviour_mut().mesh_kad.store_mut();
            if let Err(e) = accept_put(store, record.clone(), &Timestamp::now()) {
                eprintln!("refused a mesh DHT PUT from {source}: {e}");
            }
        }
        _ => {}
    }
}

impl RustNode {
    async fn start() -> RustNode {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_websocket(noise::Config::new, yamux::Config::default)
            .await
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let b = swarm.behaviour_mut();
        b.ipfs_kad.set_mode(Some(kad::Mode::Server));
        b.mesh_kad.set_mode(Some(kad::Mode::Server));
        b.gossipsub
            .subscribe(&gossipsub::IdentTopic::new(TOPIC))
            .unwrap();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .unwrap();
        let (mut tcp, mut ws) = (None, None);
        timeout(WAIT, async {
            while tcp.is_none() || ws.is_none() {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    if is_ws(&address) {
                        ws = Some(address);
                    } else {
                        tcp = Some(address);
                    }
                }
            }
        })
        .await
        .expect("rust node did not listen");
        let peer = *swarm.local_peer_id();
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => {
                        handle(&mut swarm, &ev);
                        let _ = ev_tx.send(ev);
                    }
                    cmd = cmd_rx.recv() => match cmd {
                        Some(f) => f(&mut swarm),
                        None => break,
                    },
                }
            }
        });
        RustNode {
            peer,
            tcp: tcp.unwrap(),
            ws: ws.unwrap(),
            cmds,
            events,
            backlog: VecDeque::new(),
            task,
        }
    }

    fn addr(&self, ws: bool) -> Multiaddr {
        let a = if ws { &self.ws } else { &self.tcp };
        a.clone().with_p2p(self.peer).unwrap()
    }

    /// Runs `f` on the swarm (in its task) and returns its result.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("swarm task ended");
        timeout(WAIT, rx)
            .await
            .expect("swarm task did not answer")
            .expect("swarm task ended")
    }

    /// The first event for which `pick` returns something, within `within`; others are
    /// kept for later waits.
    async fn wait<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let e = self.backlog.remove(i).unwrap();
            return pick(&e).unwrap();
        }
        let deadline = Instant::now() + within;
        loop {
            let ev = timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("rust node: no {what} within {within:?}"))
                .expect("swarm task ended");
            if let Some(t) = pick(&ev) {
                return t;
            }
            if self.backlog.len() == 4096 {
                self.backlog.pop_front();
            }
            self.backlog.push_back(ev);
        }
    }

    /// Closes every connection with `peer` and waits until they are gone.
    async fn hang_up(&mut self, peer: PeerId) {
        let connected = self.with(move |s| s.is_connected(&peer)).await;
        if connected {
            self.with(move |s| s.disconnect_peer_id(peer)).await.ok();
            self.wait("connection close", WAIT, |e| match e {
                SwarmEvent::ConnectionClosed {
                    peer_id,
                    num_established: 0,
                    ..
                } if *peer_id == peer => Some(()),
                _ => None,
            })
            .await;
        }
        self.backlog.clear();
    }

    /// Runs a query that `start` begins on the DHT `dht` to its last step; returns every
    /// step's result. (Query ids are per DHT.)
    async fn query(
        &mut self,
        dht: &'static str,
        start: impl FnOnce(&mut kad::Behaviour<MemoryStore>) -> kad::QueryId + Send + 'static,
    ) -> Vec<QueryResult> {
        let id = self
            .with(move |s| start(kad_of(s.behaviour_mut(), dht)))
            .await;
        let mut results = Vec::new();
        for _ in 0..64 {
            let (result, last) = self
                .wait("kad query result", WAIT, |e| {
                    let (in_dht, ev) = match e {
                        SwarmEvent::Behaviour(BehaviourEvent::IpfsKad(ev)) => ("ipfs", ev),
                        SwarmEvent::Behaviour(BehaviourEvent::MeshKad(ev)) => ("mesh", ev),
                        _ => return None,
                    };
                    match ev {
                        kad::Event::OutboundQueryProgressed {
                            id: q,
                            result,
                            step,
                            ..
                        } if in_dht == dht && *q == id => Some((result.clone(), step.last)),
                        _ => None,
                    }
                })
                .await;
            results.push(result);
            if last {
                return results;
            }
        }
        panic!("query {id:?} did not end within 64 steps");
    }
}

fn kad_of<'a>(b: &'a mut Behaviour, dht: &str) -> &'a mut kad::Behaviour<MemoryStore> {
    match dht {
        "ipfs" => &mut b.ipfs_kad,
        _ => &mut b.mesh_kad,
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some(s.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn advert(key: &NodeKeypair, port: u16) -> NodeAdvertisement {
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    advert_for(key, &[addr], 1, &Timestamp::now(), 600).unwrap()
}

/// Ping and identify in both directions on one connection, which `rust_dials` or the
/// js node opened over TCP or WS.
async fn ping_and_identify(rust: &mut RustNode, js: &mut JsNode, rust_dials: bool, ws: bool) {
    let label = format!(
        "{} dials over {}",
        if rust_dials { "rust" } else { "js" },
        if ws { "WS" } else { "TCP" }
    );
    let js_peer = js.peer_id;
    let rust_peer = rust.peer;
    if rust_dials {
        let addr = if ws { js.ws_addr() } else { js.tcp_addr() }.unwrap();
        rust.with(move |s| s.dial(addr)).await.unwrap();
    } else {
        let answer = js
            .call(json!({"cmd": "dial", "addr": rust.addr(ws).to_string()}))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(answer["peer"], rust_peer.to_string(), "{label}");
    }
    let conn = rust
        .wait("connection", WAIT, |e| match e {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if *peer_id == js_peer => {
                let (dialer, addr) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => (true, address),
                    ConnectedPoint::Listener { local_addr, .. } => (false, local_addr),
                };
                Some((*connection_id, dialer, is_ws(addr)))
            }
            _ => None,
        })
        .await;
    assert_eq!((conn.1, conn.2), (rust_dials, ws), "{label}: connection");
    let conn = conn.0;

    // Rust pings and identifies js on this connection.
    let rtt = rust
        .wait("ping", WAIT, |e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) if *peer == js_peer && *connection == conn => {
                Some(result.as_ref().map(|d| *d).map_err(|e| e.to_string()))
            }
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: rust ping failed: {e}"));
    let info = rust
        .wait("identify", WAIT, |e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) if *peer_id == js_peer && *connection_id == conn => Some(info.clone()),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Error {
                peer_id,
                connection_id,
                error,
            })) if *peer_id == js_peer && *connection_id == conn => {
                panic!("{label}: rust identify failed: {error}")
            }
            _ => None,
        })
        .await;
    assert!(
        info.agent_version.starts_with("js-libp2p/"),
        "{label}: {info:?}"
    );
    for p in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        "/ipfs/kad/1.0.0",
        "/mesh/kad/1.0.0",
        "/meshsub/1.1.0",
    ] {
        assert!(
            info.protocols.iter().any(|q| q.as_ref() == p),
            "{label}: js lacks {p}: {:?}",
            info.protocols
        );
    }
    let js_tcp = js.tcp_addr().unwrap().with_p2p(js_peer).unwrap();
    assert!(
        info.listen_addrs
            .iter()
            .any(|a| a.clone().with_p2p(js_peer).ok().as_ref() == Some(&js_tcp)),
        "{label}: js listen addrs {:?}",
        info.listen_addrs
    );

    // Js pings and identifies rust, on the same (only) connection.
    let pong = js
        .call(json!({"cmd": "ping", "peer": rust_peer.to_string()}))
        .await
        .unwrap_or_else(|e| panic!("{label}: js ping: {e}"));
    let ident = js
        .call(json!({"cmd": "identify", "peer": rust_peer.to_string()}))
        .await
        .unwrap_or_else(|e| panic!("{label}: js identify: {e}"));
    for conns in [&pong["connections"], &ident["connections"]] {
        let conns = strs(conns);
        assert!(
            !conns.is_empty() && conns.iter().all(|a| a.contains("/ws") == ws),
            "{label}: js used connections {conns:?}"
        );
    }
    assert_eq!(ident["protocolVersion"], "/mesh/1.0.0", "{label}");
    assert_eq!(
        ident["agentVersion"], "libmesh-interop-test/0.1.0",
        "{label}"
    );
    let protocols = strs(&ident["protocols"]);
    for p in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        "/ipfs/kad/1.0.0",
        "/mesh/kad/1.0.0",
        "/meshsub/1.1.0",
    ] {
        assert!(
            protocols.iter().any(|q| q == p),
            "{label}: rust lacks {p}: {protocols:?}"
        );
    }
    let listen = strs(&ident["listenAddrs"]);
    for own in [&rust.tcp, &rust.ws] {
        assert!(
            listen.iter().any(|a| a.starts_with(&own.to_string())),
            "{label}: rust listen addrs {listen:?}"
        );
    }
    eprintln!(
        "{label}: rust ping {rtt:?}, js ping {} ms, identify both ways ok",
        pong["rtt"]
    );

    // Close it, so the next case starts from no connection.
    js.call(json!({"cmd": "hangup", "peer": rust_peer.to_string()}))
        .await
        .unwrap();
    rust.hang_up(js_peer).await;
}

/// Finds `target` through the DHT `dht` from the rust node: the addresses it learns.
async fn rust_find_peer(rust: &mut RustNode, dht: &'static str, target: PeerId) -> Vec<Multiaddr> {
    let results = rust.query(dht, move |k| k.get_closest_peers(target)).await;
    let mut addrs = Vec::new();
    for r in results {
        if let QueryResult::GetClosestPeers(Ok(GetClosestPeersOk { peers, .. })) = r {
            for p in peers.into_iter().filter(|p| p.peer_id == target) {
                addrs.extend(p.addrs.iter().map(without_p2p));
            }
        }
    }
    addrs
}

/// `addr` without its `/p2p/<peer>` part (js-libp2p sends addresses with it).
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_interop() {
    let started = Instant::now();
    let Some(mut js) = JsNode::spawn().await.unwrap() else {
        return;
    };
    let mut rust = RustNode::start().await;
    eprintln!(
        "js node {} at {:?}; rust node {} at {} and {}",
        js.peer_id, js.addrs, rust.peer, rust.tcp, rust.ws
    );

    // --- ping and identify, both ways, over TCP and over WS -----------------------
    for ws in [false, true] {
        for rust_dials in [true, false] {
            ping_and_identify(&mut rust, &mut js, rust_dials, ws).await;
        }
    }

    // --- Kademlia ----------------------------------------------------------------
    // One connection (rust dials js over TCP); each side puts the other in both DHTs'
    // routing tables.
    let dial = js.tcp_addr().unwrap();
    rust.with(move |s| s.dial(dial)).await.unwrap();
    let js_peer = js.peer_id;
    rust.wait("identify", WAIT, |e| match e {
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            ..
        })) if *peer_id == js_peer => Some(()),
        _ => None,
    })
    .await;
    for dht in ["ipfs", "mesh"] {
        let known = rust
            .with(move |s| {
                kad_of(s.behaviour_mut(), dht)
                    .kbuckets()
                    .any(|b| b.iter().any(|e| *e.node.key.preimage() == js_peer))
            })
            .await;
        assert!(
            known,
            "{dht}: identify did not put js in rust's routing table"
        );
        js.call(json!({
            "cmd": "kad-add-peer", "dht": dht, "peer": rust.peer.to_string(),
            "addrs": [rust.tcp.to_string()],
        }))
        .await
        .unwrap_or_else(|e| panic!("js kad-add-peer {dht}: {e}"));
    }

    // Two third peers: t1 known only to js, t2 known only to rust.
    let t1 = RustNode::start().await;
    let t2 = RustNode::start().await;
    for dht in ["ipfs", "mesh"] {
        js.call(json!({
            "cmd": "kad-add-peer", "dht": dht, "peer": t1.peer.to_string(),
            "addrs": [t1.tcp.to_string()],
        }))
        .await
        .unwrap_or_else(|e| panic!("js kad-add-peer t1 {dht}: {e}"));
        let (peer, addr) = (t2.peer, t2.tcp.clone());
        rust.with(move |s| kad_of(s.behaviour_mut(), dht).add_address(&peer, addr))
            .await;
    }
    for dht in ["ipfs", "mesh"] {
        // Rust finds t1 through js.
        let found = rust_find_peer(&mut rust, dht, t1.peer).await;
        assert!(
            found.contains(&t1.tcp),
            "{dht}: rust found t1 at {found:?}, not {}",
            t1.tcp
        );
        // Js finds t2 through rust.
        let answer = js
            .call(json!({"cmd": "kad-find-peer", "dht": dht, "peer": t2.peer.to_string()}))
            .await
            .unwrap_or_else(|e| panic!("{dht}: js kad-find-peer t2: {e}"));
        let addrs: Vec<String> = strs(&answer["addrs"])
            .iter()
            .filter_map(|a| Some(without_p2p(&a.parse().ok()?).to_string()))
            .collect();
        assert!(
            addrs.contains(&t2.tcp.to_string()),
            "{dht}: js found t2 at {addrs:?}, not {}",
            t2.tcp
        );
        eprintln!("{dht} DHT: each side found the other's third peer");
    }

    // Records on /mesh/kad/1.0.0: signed node advertisements.
    // (a) Rust PUTs one; js (whose validator accepts it) stores it and GETs it.
    let k1 = NodeKeypair::generate();
    let a1 = advert(&k1, 4101);
    let r1 = record_for(&a1, &Timestamp::now());
    let results = rust
        .query("mesh", move |k| k.put_record(r1, Quorum::One).unwrap())
        .await;
    assert!(
        results
            .iter()
            .any(|r| matches!(r, QueryResult::PutRecord(Ok(_)))),
        "rust put: {results:?}"
    );
    let key1 = String::from_utf8(record_key(&k1.node_id()).to_vec()).unwrap();
    let got = js
        .call(json!({"cmd": "kad-get", "dht": "mesh", "key": key1}))
        .await
        .unwrap_or_else(|e| panic!("js kad-get a1: {e}"));
    let value = B64.decode(got["valueB64"].as_str().unwrap()).unwrap();
    let back = NodeAdvertisement::verify_cbor(&value, &Timestamp::now()).unwrap();
    assert_eq!(back.node_id(), k1.node_id());

    // (b) A record only the rust node holds: js can only get it from rust.
    let k3 = NodeKeypair::generate();
    let r3 = record_for(&advert(&k3, 4103), &Timestamp::now());
    rust.with(move |s| s.behaviour_mut().mesh_kad.store_mut().put(r3))
        .await
        .unwrap();
    let key3 = String::from_utf8(record_key(&k3.node_id()).to_vec()).unwrap();
    let got = js
        .call(json!({"cmd": "kad-get", "dht": "mesh", "key": key3}))
        .await
        .unwrap_or_else(|e| panic!("js kad-get a3: {e}"));
    assert_eq!(got["from"], rust.peer.to_string(), "{got}");
    let value = B64.decode(got["valueB64"].as_str().unwrap()).unwrap();
    assert_eq!(
        NodeAdvertisement::verify_cbor(&value, &Timestamp::now())
            .unwrap()
            .node_id(),
        k3.node_id()
    );

    // (c) Js PUTs one; rust validates and stores it, drops its copy, and GETs it back
    // from js.
    let k2 = NodeKeypair::generate();
    let a2 = advert(&k2, 4102);
    let key2 = record_key(&k2.node_id());
    let put = js
        .call(json!({
            "cmd": "kad-put", "dht": "mesh",
            "key": String::from_utf8(key2.to_vec()).unwrap(),
            "valueB64": B64.encode(a2.to_cbor()),
        }))
        .await
        .unwrap_or_else(|e| panic!("js kad-put a2: {e}"));
    assert!(
        strs(&put["storedAt"]).contains(&rust.peer.to_string()),
        "js put reached {put}"
    );
    let k = key2.clone();
    let held = rust
        .with(move |s| {
            s.behaviour_mut()
                .mesh_kad
                .store_mut()
                .get(&k)
                .map(|r| r.into_owned())
        })
        .await
        .expect("rust did not store the js PUT");
    assert_eq!(
        validate_record(&held, &Timestamp::now()).unwrap().node_id(),
        k2.node_id()
    );
    let k = key2.clone();
    rust.with(move |s| s.behaviour_mut().mesh_kad.store_mut().remove(&k))
        .await;
    let results = rust.query("mesh", move |k| k.get_record(key2)).await;
    let from_js = results.iter().find_map(|r| match r {
        QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(pr))) if pr.peer == Some(js_peer) => {
            Some(pr.record.clone())
        }
        _ => None,
    });
    let from_js = from_js.unwrap_or_else(|| panic!("rust get found nothing at js: {results:?}"));
    assert_eq!(
        validate_record(&from_js, &Timestamp::now())
            .unwrap()
            .node_id(),
        k2.node_id()
    );
    eprintln!("mesh DHT: records put and got both ways");

    // --- gossipsub ---------------------------------------------------------------
    js.call(json!({"cmd": "subscribe", "topic": TOPIC}))
        .await
        .unwrap();
    rust.wait("js subscription", WAIT, |e| match e {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
            peer_id,
            topic,
        })) if *peer_id == js_peer && topic.as_str() == TOPIC => Some(()),
        _ => None,
    })
    .await;
    // Js to rust: js publishes once it knows rust is subscribed.
    let data = b"hello from js".to_vec();
    let mut published = false;
    for _ in 0..40 {
        let r = js
            .call(json!({"cmd": "publish", "topic": TOPIC, "dataB64": B64.encode(&data)}))
            .await;
        if r.is_ok_and(|r| strs(&r["recipients"]).contains(&rust.peer.to_string())) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(published, "js could not publish to rust");
    let got = rust
        .wait("gossipsub message", WAIT, |e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => Some(message.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got.source, Some(js_peer));
    assert_eq!(got.data, data);
    assert_eq!(got.topic.as_str(), TOPIC);
    // Rust to js.
    let data = b"hello from rust".to_vec();
    let d = data.clone();
    rust.with(move |s| {
        s.behaviour_mut()
            .gossipsub
            .publish(gossipsub::IdentTopic::new(TOPIC), d)
    })
    .await
    .unwrap();
    let rust_peer = rust.peer.to_string();
    let msg = js
        .wait_event(WAIT, |e| e["event"] == "message" && e["from"] == rust_peer)
        .await
        .unwrap();
    assert_eq!(msg["topic"], TOPIC);
    assert_eq!(msg["signed"], true);
    assert_eq!(B64.decode(msg["dataB64"].as_str().unwrap()).unwrap(), data);
    eprintln!("gossipsub: signed messages both ways");

    drop((t1, t2));
    js.shutdown().await;
    eprintln!("js-libp2p interop passed in {:?}", started.elapsed());
}
