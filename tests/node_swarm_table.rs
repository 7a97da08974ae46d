//! The member table in one exchange (`/mesh/swarm-table/1.0.0`) between in-process
//! nodes on loopback: a newcomer to a settled swarm learns every member from the table
//! one member hands it (the members leave its `join` unanswered, and nobody
//! re-announces within the test: the TTL is 10 minutes); a peer that hands over a
//! forged presence gets it refused with `E_SIG_INVALID`, and the valid ones are kept; a
//! peer that answers an empty table does not hide the swarm from the newcomer; one
//! network's fresh keys share its pages. The checks of tables: `node_swarm_checks.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/swarm_members.rs"]
mod members;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::Target;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use mesh_core::{Artifact, NodeId, NodeKeypair, SwarmPresence, Timestamp, TraceEventType};
use mesh_signal::group::exchange::{self, Answer};
use mesh_signal::group::{DiscoveryKey, SETTLED_SECS};

use members::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_the_whole_table_from_one_member() {
    let key = DiscoveryKey::from_name("table in one exchange");
    let mut nodes = vec![start(vec![]).await];
    for i in 1..8 {
        let s = seed(&nodes[(i - 1) / 2]);
        nodes.push(start(vec![s]).await);
    }
    for m in &nodes {
        m.handle.join_swarm(key).await.unwrap();
    }
    let all: HashSet<NodeId> = nodes.iter().map(|m| m.node).collect();
    for m in &nodes {
        let mut want = all.clone();
        want.remove(&m.node);
        let got = wait_table(&m.handle, key, &want, Duration::from_secs(60)).await;
        assert_eq!(got, want, "the eight members see each other");
    }
    // Settled: the members no longer answer joins that fetch the table.
    tokio::time::sleep(Duration::from_secs(SETTLED_SECS as u64 + 1)).await;

    // A newcomer seeded to one member only.
    let newcomer = start(vec![seed(&nodes[7])]).await;
    newcomer
        .handle
        .dial(Target::Addr(nodes[7].addr.clone().with(
            libp2p::multiaddr::Protocol::P2p(nodes[7].node.to_peer_id().unwrap()),
        )))
        .await
        .unwrap();
    newcomer.handle.join_swarm(key).await.unwrap();
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(30)).await;
    assert_eq!(got, all, "the newcomer sees every member");
    // Every member came through the table, none through an answer on the topic.
    let seen = arrivals(&newcomer.trace, key);
    assert_eq!(seen.len(), all.len(), "{seen:?}");
    assert!(seen.iter().all(|(_, via)| via == "table"), "{seen:?}");
    // And every member sees the newcomer's join, as before.
    for m in &nodes {
        let mut want = all.clone();
        want.remove(&m.node);
        want.insert(newcomer.node);
        let got = wait_table(&m.handle, key, &want, Duration::from_secs(30)).await;
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_presence_in_a_table_is_refused_and_the_valid_ones_are_kept() {
    let key = DiscoveryKey::from_name("hostile table");
    let newcomer = start(vec![]).await;
    // Mallory: subscribed to the swarm's topic, and serving a table of three signed
    // presences and one whose address was changed after signing.
    let (mallory_peer, addr, mallory) = mallory(&key).await;
    let now = Timestamp::now();
    let honest: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    let forger = NodeKeypair::generate();
    let mut entries: Vec<(NodeId, Vec<u8>)> = honest
        .iter()
        .map(|k| (k.node_id(), signed_presence(k, &key, &now)))
        .collect();
    let forged = {
        let mut doc = SwarmPresence::from_cbor(&signed_presence(&forger, &key, &now))
            .unwrap()
            .into_map();
        doc.insert(
            "addrs".into(),
            serde_json::json!(["/ip4/127.0.0.1/tcp/6666"]),
        );
        mesh_core::cbor::encode(&serde_json::Value::Object(doc))
    };
    entries.push((forger.node_id(), forged));
    let serve = serve_always(mallory, &entries);
    join_through(&newcomer, mallory_peer, addr, key).await;
    let want: HashSet<NodeId> = honest.iter().map(NodeKeypair::node_id).collect();
    let got = wait_table(&newcomer.handle, key, &want, Duration::from_secs(30)).await;
    assert_eq!(got, want, "the three valid presences are taken");
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let hit = newcomer.trace.events().into_iter().find(|e| {
                e.event_type == TraceEventType::ErrorOccurred
                    && e.peer.as_deref() == Some(mallory_peer.to_string().as_str())
                    && e.detail
                        .as_ref()
                        .is_some_and(|d| d["error/code"] == "E_SIG_INVALID")
            });
            if let Some(e) = hit {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the forged presence is refused with E_SIG_INVALID, naming mallory");
    let _ = refused;
    assert!(
        !members_of(&newcomer.handle, key)
            .await
            .contains(&forger.node_id()),
        "the forged presence is not taken"
    );
    serve.abort();
}

/// A peer that answers the table request with an empty table (audit finding 6) does not
/// hide the swarm: the newcomer, connected meanwhile to a member subscribed to the
/// topic, finds that member missing from the table and asks it. Before, the newcomer
/// took the empty table as the swarm and saw the members only at their refreshes (the
/// TTL here is 10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_does_not_hide_the_swarm() {
    let key = DiscoveryKey::from_name("hidden swarm");
    let (m, x) = settled_pair(key).await;
    // M and X leave a join that fetches the table unanswered (gossipsub's IHAVE hands
    // them the newcomer's join once it meets M).
    let newcomer = start(vec![]).await;
    // Mallory holds the newcomer's request until the test says, then answers an
    // empty table.
    let (mallory_peer, addr, mut mallory) = mallory(&key).await;
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, mut release_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        let mut asked_tx = Some(asked_tx);
        let mut held = Vec::new();
        loop {
            tokio::select! {
                e = mallory.select_next_some() => {
                    if let SwarmEvent::Behaviour(HostileEvent::Table(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    })) = e
                    {
                        held.push(channel);
                        if let Some(tx) = asked_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                _ = &mut release_rx, if !release_rx.is_terminated() => {
                    let empty = exchange::page_of(std::iter::empty(), None);
                    for channel in held.drain(..) {
                        let _ = mallory.behaviour_mut().table.send_response(channel, Answer::Page(empty.clone()));
                    }
                }
            }
        }
    });
    join_through(&newcomer, mallory_peer, addr, key).await;
    tokio::time::timeout(Duration::from_secs(10), asked_rx)
        .await
        .expect("the newcomer asks mallory, the only subscriber")
        .unwrap();
    // Meanwhile the newcomer meets member M (subscribed to the topic).
    meet(&newcomer, &m).await;
    // Gossipsub's subscriptions go out with the connection; the request times out
    // after 10 s, so the empty answer comes well before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    release_tx.send(()).unwrap();
    let all: HashSet<NodeId> = [m.node, x.node].into();
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(15)).await;
    assert_eq!(got, all, "the members, from M's table");
    let seen = arrivals(&newcomer.trace, key);
    assert!(seen.iter().all(|(_, via)| via == "table"), "{seen:?}");
    serve.abort();
}

/// The pages a member serves to one network: fresh keys get no fresh budget beyond the
/// network's (each key's own burst is 8 pages of up to 256 KiB; one host holds up to 64
/// connections). Twelve raw peers from 127.0.0.1 ask eight times each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_of_one_network_share_its_table_pages() {
    use mesh_testkit::Net;
    use mesh_testkit::hostile::HostilePeer;
    let key = DiscoveryKey::from_name("pages per network");
    let member = start(vec![]).await;
    member.handle.join_swarm(key).await.unwrap();
    let p2p = member.addr.clone().with(libp2p::multiaddr::Protocol::P2p(
        member.node.to_peer_id().unwrap(),
    ));
    let request = exchange::TableRequest::first(key).to_cbor();
    let wait = Duration::from_secs(30);
    let started = Instant::now();
    let mut pages = 0;
    let mut refused = 0;
    for i in 0..12 {
        let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = hostile.connect(p2p.clone(), wait).await.unwrap();
        for _ in 0..8 {
            let answer = hostile
                .send(peer, "/mesh/swarm-table/1.0.0", &request, wait)
                .await
                .unwrap();
            match exchange::decode_answer(&answer) {
                Ok(_) => pages += 1,
                // Until our own table is in, the first asker may hear "not ready".
                Err(e) if i == 0 && pages == 0 && e.to_string().contains("not ready") => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => refused += 1,
            }
        }
    }
    let secs = started.elapsed().as_secs() as usize;
    // The network's burst of 64, and what it earned back meanwhile (4 a second).
    assert!(pages >= 8, "{pages} pages served");
    assert!(
        pages <= 64 + 4 * (secs + 1),
        "{pages} pages served to one network in {secs} s ({refused} refused)"
    );
}
