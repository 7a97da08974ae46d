//! What a peer can make `meshd` write to its log at the default filter: streams it
//! opens beyond a protocol's per-connection cap are dropped without a log line each
//! (libp2p-request-response warns for every one). The real binary with `RUST_LOG`
//! unset, a hostile libp2p peer, loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::time::Duration;

use futures::StreamExt;

use mesh_core::NodeKeypair;
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use meshd::Meshd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_cap_leave_no_log_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let n = Meshd::start_logged(
        None,
        dir.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"],
        "",
    );
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile
        .connect(n.addr().parse().unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    let patience = Duration::from_secs(2);
    let held = futures::future::join_all(
        (0..40).map(|_| hostile.trickle(peer, "/mesh/signal/1.0.0", &[0x5a; 100], patience)),
    )
    .await;
    // Held to the end: the cap's worth; the others were dropped at once (closed or
    // reset while the hostile peer wrote).
    let kept = held
        .iter()
        .filter(|h| h.as_ref().is_ok_and(|d| *d >= patience))
        .count();
    assert!(
        kept <= mesh_signal::MAX_STREAMS,
        "{kept} streams held: no cap"
    );
    let dropped = held.len() - kept;
    let log = std::fs::read_to_string(n.log_file()).unwrap();
    let lines = log.matches("Dropping inbound stream").count();
    assert_eq!(
        lines, 0,
        "{lines} log lines for {dropped} dropped streams:\n{log}"
    );
}

#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Gossiper {
    gossipsub: libp2p::gossipsub::Behaviour,
}

/// A gossipsub peer that publishes unsigned messages: the node's gossipsub (strict
/// validation) refuses each one with a `warn` line of its own ("Invalid signature for
/// received message"). At most ten of them reach the log a minute, with one notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_gossip_writes_ten_lines_and_a_notice() {
    use libp2p::gossipsub;
    use libp2p::swarm::SwarmEvent;
    use std::hash::{Hash, Hasher};

    const TOPIC: &str = "log-flood";
    const SENT: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let n = Meshd::start_logged(
        None,
        dir.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"],
        "",
    );
    n.cli_ok(&["gossip", "subscribe", TOPIC]);

    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        // Unsigned messages have no source or sequence number: told apart by content.
        .message_id_fn(|m: &gossipsub::Message| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.data.hash(&mut h);
            gossipsub::MessageId::from(h.finish().to_be_bytes().to_vec())
        })
        .build()
        .unwrap();
    let key = libp2p::identity::Keypair::generate_ed25519();
    let behaviour = Gossiper {
        gossipsub: gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
            .unwrap(),
    };
    let mut peer = mesh_testkit::net_swarm(&key, Net::Tcp, Duration::from_secs(60), behaviour);
    let topic = gossipsub::IdentTopic::new(TOPIC);
    peer.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    peer.dial(n.addr().parse::<libp2p::Multiaddr>().unwrap())
        .unwrap();

    let log_has = |what: &str| {
        std::fs::read_to_string(n.log_file())
            .unwrap()
            .matches(what)
            .count()
    };
    let flood = async {
        // Until the node's subscription is known, then the flood, then until the notice.
        loop {
            if let SwarmEvent::Behaviour(GossiperEvent::Gossipsub(gossipsub::Event::Subscribed {
                topic: t,
                ..
            })) = peer.select_next_some().await
                && t == topic.hash()
            {
                break;
            }
        }
        for i in 0..SENT {
            peer.behaviour_mut()
                .gossipsub
                .publish(topic.clone(), format!("bad {i}").into_bytes())
                .unwrap();
        }
        while log_has("window is suppressed") == 0 {
            tokio::select! {
                _ = peer.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        // The rest of the flood, read by the node.
        let settle = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = peer.select_next_some() => {}
                _ = &mut settle => break,
            }
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(30), flood).await;
    let lines = log_has("Invalid signature for received message");
    let log = std::fs::read_to_string(n.log_file()).unwrap();
    assert!(
        done.is_ok(),
        "no notice of suppressed lines; {lines} lines for {SENT} messages:\n{log}"
    );
    assert!(
        (1..=10).contains(&lines),
        "{lines} lines for {SENT} bad messages:\n{log}"
    );
    assert_eq!(log_has("window is suppressed"), 1, "{log}");
}
