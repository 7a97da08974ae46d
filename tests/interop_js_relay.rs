//! Relays across implementations: libmesh's composed node (`libmesh::node::Node`, in
//! process) and js-libp2p 3 nodes (`tests/interop/js/node.mjs`, with
//! `@libp2p/circuit-relay-v2`).
//!
//! 1. Our node as an admitting relay: a js node signs a `relay-admission-request.v1`
//!    itself (deterministic CBOR, Ed25519 with its libp2p key), verifies the signed
//!    grant against our relay's key, reserves (`<relay>/p2p-circuit`) and gets a
//!    circuit address; a second js node, refused a circuit until it is admitted for
//!    one, then pings and identifies the first through the circuit.
//! 2. Not admitted (allowlist without the js node): the js node gets the denial
//!    (`E_TRANSPORT_REJECTED`) and the relay refuses its reservation
//!    (`RESOURCE_LIMIT_EXCEEDED`).
//! 3. A plain js node (no admission protocol) at `meshd run --relay-server --admission
//!    open`: admitted under an implicit grant, it reserves, and a second plain js node
//!    pings and identifies it through the circuit.
//! 4. A js-libp2p relay (`circuitRelayServer`, no admission protocol) for our node: our
//!    client finds no admission protocol there and reserves anyway; our listen
//!    addresses and advertisement gain the circuit address, a js node pings and
//!    identifies us through it and a second node of ours sends us a signal marker
//!    through it.
//!
//! And the js side's artifact signing reproduces the byte-exact vectors of
//! `shared/vectors/signing.json`.
//!
//! Loopback only; no public bootstrap on any side. Skipped (with a message) when the
//! npm packages are not installed, unless `MESH_REQUIRE_JS_INTEROP` is set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/js_node.rs"]
mod js_node;
#[path = "support/meshd.rs"]
mod meshd;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use js_node::{JsNode, is_circuit};
use libmesh::node::{
    Bootstrap, BootstrapName, KadMode, Node, NodeConfig, NodeEvent, NodeHandle, Target,
};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{
    Artifact, MemoryTrace, NodeId, NodeKeypair, RelayAdmissionGrant, RelayAdmissionRequest,
    Timestamp, TraceEvent, TraceEventType,
};
use mesh_testkit::shared_dir;
use serde_json::{Value, json};
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(30);

/// `MESH_TEST_LOG=libmesh=debug,mesh_admission=debug` shows our nodes' logs.
fn logs() {
    if let Ok(f) = std::env::var("MESH_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

struct Ours {
    handle: NodeHandle,
    events: Receiver<NodeEvent>,
    backlog: Vec<NodeEvent>,
    node: NodeId,
    peer: PeerId,
    /// The TCP listen address with `/p2p/<peer>`.
    addr: Multiaddr,
    trace: Arc<MemoryTrace>,
    _dir: tempfile::TempDir,
}

impl Ours {
    async fn start(config: NodeConfig) -> Ours {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let trace = Arc::new(MemoryTrace::new(8192));
        let (mut node, handle, events) =
            Node::new(NodeKeypair::generate(), config, dir.path(), trace.clone()).unwrap();
        node.listen().unwrap();
        let (id, peer) = (node.node_id(), node.peer_id());
        tokio::spawn(node.run());
        let mut ours = Ours {
            handle,
            events,
            backlog: Vec::new(),
            node: id,
            peer,
            addr: Multiaddr::empty(),
            trace,
            _dir: dir,
        };
        let NodeEvent::Listening { addr } = ours
            .next(|e| matches!(e, NodeEvent::Listening { addr } if !is_circuit(addr)))
            .await
        else {
            unreachable!()
        };
        ours.addr = addr.with(Protocol::P2p(peer));
        ours
    }

    async fn next(&mut self, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("node stopped");
                if pred(&e) {
                    return e;
                }
                if self.backlog.len() < 10_000 {
                    self.backlog.push(e);
                }
            }
        })
        .await
        .expect("expected node event did not come")
    }

    /// Waits (bounded) until the trace holds an event of `kind` about `about` whose
    /// detail satisfies `pred` (the relay traces refusals from its own task, so they
    /// may land just after the refused peer got its answer).
    async fn wait_traced(
        &self,
        kind: TraceEventType,
        about: &NodeId,
        pred: impl Fn(&Value) -> bool,
    ) {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let hit = self
                    .traced(kind, about)
                    .iter()
                    .any(|e| e.detail.as_ref().is_some_and(&pred));
                if hit {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no matching {kind:?} about {about}: {:?}",
            self.traced(kind, about)
        );
    }

    fn traced(&self, kind: TraceEventType, about: &NodeId) -> Vec<TraceEvent> {
        let about = about.to_string();
        self.trace
            .events()
            .into_iter()
            .filter(|e| e.event_type == kind && e.peer.as_deref() == Some(&about))
            .collect()
    }
}

/// Loopback TCP only, no public bootstrap, no AutoNAT (its dial-backs would open
/// connections the tests do not expect, and a confirmed address makes a node give up
/// its relay reservations).
fn base() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        autonat: false,
        ..NodeConfig::default()
    }
}

/// A relay server admitting by `policy`. Relay v2 accepts reservations only once the
/// relay has an external address, so it listens on a fixed free port and names it.
fn relay_config(policy: String) -> NodeConfig {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let mut config = NodeConfig {
        listen: vec![addr.clone()],
        external: vec![addr],
        relay_server: true,
        ..base()
    };
    config.admission.policy = policy;
    config
}

async fn call(js: &mut JsNode, cmd: Value) -> Value {
    match js.call(cmd.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("js {cmd}: {e}\n{}", js.stderr_tail()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn circuit_through(relay: &Multiaddr, target: PeerId) -> Multiaddr {
    relay
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target))
}

/// `addr` ending in `/p2p/<peer>` (added when missing), as text.
fn ending_in(addr: &Multiaddr, peer: PeerId) -> String {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) if p == peer => addr.to_string(),
        _ => addr.clone().with(Protocol::P2p(peer)).to_string(),
    }
}

/// Every address of `addrs` that goes through `relay` (by peer id) to `target` (the
/// trailing `/p2p/<target>` may be left out, as in identify's listen addresses).
fn circuits_via(addrs: &[String], relay: PeerId, target: PeerId) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|a| ending_in(&a, target).parse::<Multiaddr>().unwrap())
        .filter(|a| {
            let peers: Vec<PeerId> = a
                .iter()
                .filter_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                })
                .collect();
            is_circuit(a) && peers == [relay, target]
        })
        .collect()
}

/// `js` pings and identifies `target` over a connection through exactly `circuit`
/// (without `force` js would use a direct connection if it had one, such as one its
/// DHT opened after learning the target's addresses from the relay's routing table).
/// The identify answer.
async fn ping_identify_via(js: &mut JsNode, circuit: &Multiaddr, target: PeerId) -> Value {
    let through = |v: &Value| {
        let via: Multiaddr = v["via"].as_str().unwrap().parse().unwrap();
        is_circuit(&via) && via.iter().last() == Some(Protocol::P2p(target))
    };
    let ping = call(
        js,
        json!({"cmd": "ping", "addr": circuit.to_string(), "force": true}),
    )
    .await;
    assert!(ping["rtt"].as_f64().is_some(), "{ping}");
    assert!(through(&ping), "not over the circuit: {ping}");
    // Relay v2 circuits carry limits; js-libp2p marks them limited.
    assert_eq!(ping["limited"], true, "{ping}");
    let id = call(
        js,
        json!({"cmd": "identify", "addr": circuit.to_string(), "force": true}),
    )
    .await;
    assert_eq!(id["peer"], target.to_string(), "{id}");
    assert!(through(&id), "not over the circuit: {id}");
    id
}

/// The js node asks our relay for admission; the answer as the js side reported it.
async fn ask_admission(
    js: &mut JsNode,
    relay: &Ours,
    purpose: &str,
    target: Option<PeerId>,
) -> Value {
    let mut cmd = json!({
        "cmd": "admission",
        "relay": relay.peer.to_string(),
        "addr": relay.addr.to_string(),
        "purpose": purpose,
    });
    if let Some(t) = target {
        cmd["target"] = json!(t.to_string());
    }
    call(js, cmd).await
}

/// Checks on our side what the js side sent and got: the request it signed verifies
/// with our verifier (as from `js` to `relay`), and so does the grant it accepted.
fn check_granted(answer: &Value, js: &JsNode, relay: &Ours, purpose: &str) -> RelayAdmissionGrant {
    assert_eq!(answer["granted"], true, "{answer}");
    let now = Timestamp::now();
    let request = RelayAdmissionRequest::verify_cbor(
        &B64.decode(answer["requestB64"].as_str().unwrap()).unwrap(),
        &now,
    )
    .expect("the js-signed request verifies");
    assert_eq!(request.node_id(), js.node_id());
    assert_eq!(request.relay_id(), relay.node);
    assert_eq!(request.purpose(), purpose);
    let grant = RelayAdmissionGrant::verify_cbor(
        &B64.decode(answer["grantB64"].as_str().unwrap()).unwrap(),
        &now,
    )
    .expect("the grant js accepted verifies");
    assert_eq!(grant.relay_id(), relay.node);
    assert_eq!(grant.node_id(), js.node_id());
    assert_eq!(grant.request_nonce(), request.nonce());
    assert_eq!(grant.purpose(), purpose);
    // js reported the same grant it checked.
    assert_eq!(answer["grant"]["ticket/id"], grant.ticket_id());
    assert_eq!(answer["grant"]["node/id"], js.node_id().to_string());
    grant
}

/// The js side's signing (the one its admission requests use) reproduces the
/// byte-exact vectors: signing input, signature and node id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_signing_matches_the_shared_vectors() {
    let Some(mut js) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let shared = shared_dir();
    let vectors: Value =
        serde_json::from_slice(&std::fs::read(shared.join("vectors/signing.json")).unwrap())
            .unwrap();
    let identity = &vectors["identities"][0];
    let artifacts = vectors["artifacts"].as_array().unwrap();
    assert!(!artifacts.is_empty());
    for v in artifacts {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(shared.join(v["fixture"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let signed = call(
            &mut js,
            json!({
                "cmd": "sign-artifact",
                "family": v["domain"],
                "doc": doc,
                "excluded": v["excluded_fields"],
                "secretKeyHex": v["signer_secret_key_hex"],
            }),
        )
        .await;
        assert_eq!(
            signed["signingInputHex"], v["signing_input_hex"],
            "{}",
            v["domain"]
        );
        assert_eq!(
            signed["signature"], v["signature_base64url"],
            "{}",
            v["domain"]
        );
        if v["signer_secret_key_hex"] == identity["secret_key_hex"] {
            assert_eq!(signed["nodeId"], identity["node_id"]);
        }
    }
    js.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_node_reserves_on_our_relay_when_admitted() {
    let Some(mut js) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let Some(mut js2) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    // Implicit grants off: this relay admits only nodes that ask (with them on, the
    // allowlisted js2 would be admitted for its circuit without asking; see
    // `a_plain_js_node_reserves_on_an_open_meshd_relay_and_is_reached_through_it`).
    let mut config = relay_config(format!("allowlist:{},{}", js.node_id(), js2.node_id()));
    config.admission.implicit = false;
    let relay = Ours::start(config).await;

    // js asks, signing the request itself, and checks the grant's signature.
    let answer = ask_admission(&mut js, &relay, "reservation", None).await;
    let grant = check_granted(&answer, &js, &relay, "reservation");
    let grants = relay.handle.relay_grants().await.unwrap();
    assert!(
        grants.iter().any(|g| g.node == js.node_id().to_string()
            && g.ticket == grant.ticket_id()
            && g.purpose == "reservation"),
        "{grants:?}"
    );
    let admitted = relay.traced(TraceEventType::RelayAdmitted, &js.node_id());
    assert_eq!(admitted.len(), 1, "{admitted:?}");

    // Then it reserves through js-libp2p's circuit relay transport.
    let listen = call(
        &mut js,
        json!({"cmd": "listen", "addr": relay.addr.clone().with(Protocol::P2pCircuit).to_string()}),
    )
    .await;
    let circuits = circuits_via(&strings(&listen["addrs"]), relay.peer, js.peer_id);
    assert!(!circuits.is_empty(), "no circuit address: {listen}");
    let circuit = circuit_through(&relay.addr, js.peer_id);

    // A second js node is not admitted for circuits yet: the relay refuses it.
    let refused = js2
        .call(
            json!({"cmd": "ping", "addr": circuit.to_string(), "force": true, "timeoutMs": 10_000}),
        )
        .await
        .expect_err("a circuit without a grant must be refused");
    assert!(refused.contains("RESOURCE_LIMIT_EXCEEDED"), "{refused}");
    relay
        .wait_traced(TraceEventType::RelayDenied, &js2.node_id(), |d| {
            d["what"] == "circuit"
        })
        .await;

    // Admitted for circuits to the first js node, it reaches it through our relay.
    let answer = ask_admission(&mut js2, &relay, "circuit", Some(js.peer_id)).await;
    let grant2 = check_granted(&answer, &js2, &relay, "circuit");
    assert_eq!(grant2.target(), Some(js.node_id()));
    let id = ping_identify_via(&mut js2, &circuit, js.peer_id).await;
    assert!(
        id["agentVersion"]
            .as_str()
            .unwrap()
            .starts_with("js-libp2p/"),
        "{id}"
    );
    assert!(
        !circuits_via(&strings(&id["listenAddrs"]), relay.peer, js.peer_id).is_empty(),
        "js does not announce its circuit address: {id}"
    );
    // The relay counts the circuit against js2's grant.
    let js2_node = js2.node_id().to_string();
    tokio::time::timeout(WAIT, async {
        loop {
            let grants = relay.handle.relay_grants().await.unwrap();
            if grants
                .iter()
                .any(|g| g.node == js2_node && g.open_circuits >= 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the relay counts js2's circuit");

    js2.shutdown().await;
    js.shutdown().await;
    relay.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_node_without_admission_is_refused() {
    let Some(mut js) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let someone_else = NodeKeypair::generate().node_id();
    let relay = Ours::start(relay_config(format!("allowlist:{someone_else}"))).await;

    let answer = ask_admission(&mut js, &relay, "reservation", None).await;
    assert_eq!(answer["granted"], false, "{answer}");
    let denied = &answer["denied"];
    assert_eq!(denied["kind"], "denied", "{answer}");
    assert_eq!(denied["error/code"], "E_TRANSPORT_REJECTED", "{answer}");
    assert_eq!(denied["error/class"], "transport/rejected", "{answer}");
    assert!(
        denied["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{answer}"
    );
    // The request itself was fine: the policy said no.
    let request = RelayAdmissionRequest::verify_cbor(
        &B64.decode(answer["requestB64"].as_str().unwrap()).unwrap(),
        &Timestamp::now(),
    )
    .unwrap();
    assert_eq!(request.node_id(), js.node_id());

    // Reserving anyway: the relay refuses, and js says why.
    let refused = js
        .call(json!({
            "cmd": "listen",
            "addr": relay.addr.clone().with(Protocol::P2pCircuit).to_string(),
            "timeoutMs": 10_000,
        }))
        .await
        .expect_err("a reservation without a grant must be refused");
    assert!(refused.contains("RESOURCE_LIMIT_EXCEEDED"), "{refused}");
    let addrs = call(&mut js, json!({"cmd": "addrs"})).await;
    assert!(
        strings(&addrs["addrs"])
            .iter()
            .all(|a| !a.contains("p2p-circuit")),
        "{addrs}"
    );

    assert!(relay.handle.relay_grants().await.unwrap().is_empty());
    // Traced: the admission denial, then the refused reservation.
    relay
        .wait_traced(TraceEventType::RelayDenied, &js.node_id(), |d| {
            d["code"] == "E_TRANSPORT_REJECTED" && d.get("what").is_none()
        })
        .await;
    relay
        .wait_traced(TraceEventType::RelayDenied, &js.node_id(), |d| {
            d["what"] == "reservation"
        })
        .await;
    assert!(
        relay
            .traced(TraceEventType::RelayAdmitted, &js.node_id())
            .is_empty()
    );

    js.shutdown().await;
    relay.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_reserves_on_a_js_relay() {
    let Some(mut js_relay) = JsNode::spawn_with(&["--relay-server"]).await.unwrap() else {
        return;
    };
    let Some(mut js) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let relay_addr = js_relay.tcp_addr().unwrap();
    let relay_peer = js_relay.peer_id;
    let mut ours = Ours::start(NodeConfig {
        relays: vec![relay_addr.clone()],
        ..base()
    })
    .await;

    // The js relay has no admission protocol: our node reserves without a grant and
    // listens on the circuit, which goes into its advertisement.
    let circuit = circuit_through(&relay_addr, ours.peer);
    let NodeEvent::Listening { addr } = ours
        .next(|e| matches!(e, NodeEvent::Listening { addr } if is_circuit(addr)))
        .await
    else {
        unreachable!()
    };
    assert!(
        !circuits_via(&[addr.to_string()], relay_peer, ours.peer).is_empty(),
        "listening through another relay: {addr}"
    );
    let NodeEvent::OwnAdvertPublished { addrs, .. } = ours
        .next(|e| matches!(e, NodeEvent::OwnAdvertPublished { addrs, .. } if addrs.iter().any(is_circuit)))
        .await
    else {
        unreachable!()
    };
    let advertised: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    assert!(
        !circuits_via(&advertised, relay_peer, ours.peer).is_empty(),
        "{advertised:?}"
    );
    let status = ours.handle.status().await.unwrap();
    assert!(
        status
            .listen_addrs
            .iter()
            .any(|a| a.contains("p2p-circuit") && a.contains(&relay_peer.to_string())),
        "{status:?}"
    );
    let held = call(&mut js_relay, json!({"cmd": "relay-reservations"})).await;
    assert!(
        held["reservations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["peer"] == ours.peer.to_string()),
        "{held}"
    );

    // A js node reaches ours through the js relay: ping and identify.
    let id = ping_identify_via(&mut js, &circuit, ours.peer).await;
    assert!(
        id["agentVersion"].as_str().unwrap().starts_with("libmesh/"),
        "{id}"
    );
    assert!(
        !circuits_via(&strings(&id["listenAddrs"]), relay_peer, ours.peer).is_empty(),
        "our node does not announce its circuit address: {id}"
    );
    let jsp = js.peer_id;
    ours.next(|e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == jsp))
        .await;

    // A second node of ours reaches it through the js relay too: its first connection
    // (where the session handshake runs) is the circuit, then a signal marker. (DCUtR
    // may add a direct connection meanwhile, as designed.)
    let mut ours2 = Ours::start(base()).await;
    ours2
        .handle
        .dial(Target::Addr(circuit.clone()))
        .await
        .unwrap();
    let p1 = ours.peer;
    let NodeEvent::PeerConnected { addr, .. } = ours2
        .next(|e| matches!(e, NodeEvent::PeerConnected { peer, .. } if *peer == p1))
        .await
    else {
        unreachable!()
    };
    assert!(
        !circuits_via(&[addr.to_string()], relay_peer, ours.peer).is_empty(),
        "ours2's first connection to ours is not the circuit: {addr}"
    );
    let n1 = ours.node;
    ours2
        .next(|e| matches!(e, NodeEvent::SessionEstablished { node, .. } if *node == n1))
        .await;
    ours2
        .handle
        .send_marker(Target::Node(ours.node), "through-the-js-relay".into())
        .await
        .unwrap();
    let NodeEvent::MarkerReceived { peer, .. } = ours
        .next(|e| matches!(e, NodeEvent::MarkerReceived { marker_ref, .. } if marker_ref == "through-the-js-relay"))
        .await
    else {
        unreachable!()
    };
    assert_eq!(peer, ours2.peer);

    ours2.handle.shutdown().await;
    js.shutdown().await;
    js_relay.shutdown().await;
    ours.handle.shutdown().await;
}

/// A standard js-libp2p client (it never speaks `/mesh/relay-admission/1.0.0`) at a
/// `meshd run --relay-server --admission open`: the relay admits it under an implicit
/// grant, it reserves and gets a circuit address, and a second plain js node (also
/// admitted implicitly, for its circuit) pings and identifies it through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_js_node_reserves_on_an_open_meshd_relay_and_is_reached_through_it() {
    let Some(mut js) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let Some(mut js2) = JsNode::spawn_with(&["--relay-client"]).await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let trace = dir.path().join("trace.jsonl");
    let (data, l, t) = (dir.path().to_owned(), listen.clone(), trace.clone());
    let relay = tokio::task::spawn_blocking(move || {
        meshd::Meshd::start(
            &data,
            &[
                "--listen",
                &l,
                "--external",
                &l,
                "--bootstrap",
                "none",
                "--kad-mode",
                "server",
                "--no-autonat",
                "--relay-server",
                "--admission",
                "open",
                "--trace",
                t.to_str().unwrap(),
            ],
        )
    })
    .await
    .unwrap();
    let relay_peer: PeerId = relay.peer_id().parse().unwrap();
    let relay_addr: Multiaddr = format!("{listen}/p2p/{relay_peer}").parse().unwrap();

    // js reserves through js-libp2p's circuit relay transport, without asking first.
    let listened = call(
        &mut js,
        json!({"cmd": "listen", "addr": relay_addr.clone().with(Protocol::P2pCircuit).to_string()}),
    )
    .await;
    assert!(
        !circuits_via(&strings(&listened["addrs"]), relay_peer, js.peer_id).is_empty(),
        "no circuit address: {listened}"
    );

    // js2 reaches it through the relay: ping and identify over the circuit.
    let circuit = circuit_through(&relay_addr, js.peer_id);
    let id = ping_identify_via(&mut js2, &circuit, js.peer_id).await;
    assert!(
        id["agentVersion"]
            .as_str()
            .unwrap()
            .starts_with("js-libp2p/"),
        "{id}"
    );

    // The relay holds implicit grants for both, traced with the reason.
    let grants = relay.cli_ok(&["relay", "grants"]);
    let grant_of = |node: NodeId| {
        grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["node"] == node.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no grant for {node}: {grants}"))
    };
    let g = grant_of(js.node_id());
    assert_eq!(
        (&g["purpose"], &g["implicit"]),
        (&json!("reservation"), &json!(true)),
        "{g}"
    );
    assert!(g["ticket"].as_str().unwrap().starts_with("ig:"), "{g}");
    let g2 = grant_of(js2.node_id());
    assert_eq!(
        (&g2["purpose"], &g2["implicit"]),
        (&json!("circuit"), &json!(true)),
        "{g2}"
    );
    let admitted = |node: NodeId, purpose: &str| {
        let traced = std::fs::read_to_string(&trace).unwrap_or_default();
        traced.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            v["event/type"] == "relay/admitted"
                && v["peer"] == node.to_string()
                && v["detail"]["reason"] == "implicit"
                && v["detail"]["purpose"] == purpose
        })
    };
    tokio::time::timeout(WAIT, async {
        while !(admitted(js.node_id(), "reservation") && admitted(js2.node_id(), "circuit")) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no implicit relay/admitted for both: {}",
            std::fs::read_to_string(&trace).unwrap_or_default()
        )
    });

    js2.shutdown().await;
    js.shutdown().await;
    drop(relay);
}
