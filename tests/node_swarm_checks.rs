//! Every member checks its table against a random subscriber's
//! (`/mesh/swarm-table/1.0.0` with `have`), between in-process nodes on loopback: a
//! table server that leaves members out hides them only until the newcomer's next
//! check; a `leave` the newcomer missed comes with a check's answer; checks of tables
//! that agree take nothing from the server's page budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/swarm_members.rs"]
mod members;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub;
use mesh_core::{Artifact, NodeId, NodeKeypair, SwarmPresence, Timestamp, TraceEventType};
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange;

use members::*;

/// A table server that leaves members out of a table of some size (three members of
/// its own making, signed) is not caught by the newcomer's fetch, which takes a table
/// that size as it is; the newcomer's next check of its table against a random
/// subscriber's, a member's here, brings the members left out. Before the checks, the
/// newcomer saw them only at their refreshes (the TTL here is 10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_left_out_of_a_table_come_with_the_next_check() {
    let key = DiscoveryKey::from_name("partial table");
    let (m, x) = settled_pair(key).await;
    // M and X leave the newcomer's join unanswered.
    let newcomer = start_checking(vec![], 2).await;
    // Mallory answers every table request with three members of its own.
    let (mallory_peer, addr, mallory) = mallory(&key).await;
    let now = Timestamp::now();
    let fakes: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    let entries: Vec<(NodeId, Vec<u8>)> = fakes
        .iter()
        .map(|k| (k.node_id(), signed_presence(k, &key, &now)))
        .collect();
    let serve = serve_always(mallory, &entries);
    join_through(&newcomer, mallory_peer, addr, key).await;
    let fake: HashSet<NodeId> = fakes.iter().map(NodeKeypair::node_id).collect();
    assert_eq!(
        wait_table(&newcomer.handle, key, &fake, Duration::from_secs(15)).await,
        fake,
        "mallory's table is taken as it is"
    );
    // The newcomer meets member M; its checks ask M or mallory at random, every
    // 1.5-2.5 s.
    meet(&newcomer, &m).await;
    let mut all = fake.clone();
    all.extend([m.node, x.node]);
    let got = wait_table(&newcomer.handle, key, &all, Duration::from_secs(40)).await;
    assert_eq!(got, all, "M and X, from a check of M's table");
    let checked: HashSet<String> = arrivals(&newcomer.trace, key)
        .into_iter()
        .filter(|(_, via)| via == "check")
        .map(|(n, _)| n)
        .collect();
    let left_out: HashSet<String> = [m.node.to_string(), x.node.to_string()].into();
    assert_eq!(checked, left_out);
    // `meshd status` counts them too.
    let came = newcomer.handle.status().await.unwrap().swarm_arrivals;
    assert_eq!((came.table, came.check), (3, 2), "{came:?}");
    serve.abort();
}

/// A member that missed a `leave` (the newcomer holds Z from a table; Z's leave went
/// out on the topic before it came) drops the member with its next check: M's answer
/// carries the leaves it remembers of members whose last presence may still be held.
/// Before, the newcomer held Z until Z's presence expired (120 s here), and its checks
/// cost a full table each meanwhile, as the members' digests differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_a_member_missed_comes_with_the_next_check() {
    let key = DiscoveryKey::from_name("missed leave");
    let (m, x) = settled_pair(key).await;
    // Z, a raw libp2p peer, announces itself on the topic through M, then leaves.
    let z = NodeKeypair::generate();
    let (z_peer, z_addr, mut zs) = mallory_as(z.clone(), &key).await;
    let m_peer = m.node.to_peer_id().unwrap();
    zs.dial(
        m.addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(m_peer)),
    )
    .unwrap();
    let topic = gossipsub::IdentTopic::new(key.topic());
    let start = Instant::now();
    let hash = topic.hash();
    while !zs
        .behaviour()
        .gossipsub
        .all_peers()
        .any(|(p, topics)| *p == m_peer && topics.contains(&&hash))
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "M's subscription seen"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), zs.select_next_some()).await;
    }
    let now = Timestamp::now();
    let announce = signed_as(&z, &key, &now, "announce", 5);
    zs.behaviour_mut()
        .gossipsub
        .publish(topic.clone(), announce.clone())
        .unwrap();
    let with_z: HashSet<NodeId> = [x.node, z.node_id()].into();
    let mh = m.handle.clone();
    assert!(
        drive_until(&mut zs, Duration::from_secs(15), || {
            let mh = mh.clone();
            let want = with_z.clone();
            async move { members_of(&mh, key).await == want }
        })
        .await,
        "M takes Z's announce"
    );
    zs.behaviour_mut()
        .gossipsub
        .publish(topic, signed_as(&z, &key, &now, "leave", 6))
        .unwrap();
    let without_z: HashSet<NodeId> = [x.node].into();
    assert!(
        drive_until(&mut zs, Duration::from_secs(15), || {
            let mh = mh.clone();
            let want = without_z.clone();
            async move { members_of(&mh, key).await == want }
        })
        .await,
        "M takes Z's leave"
    );
    // Z now serves its announce as its table; the leave has left every gossipsub
    // message cache (5 heartbeats) before the newcomer comes.
    let serve = serve_always(zs, &[(z.node_id(), announce)]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let newcomer = start_checking(vec![], 2).await;
    join_through(&newcomer, z_peer, z_addr, key).await;
    let only_z: HashSet<NodeId> = [z.node_id()].into();
    assert_eq!(
        wait_table(&newcomer.handle, key, &only_z, Duration::from_secs(15)).await,
        only_z,
        "Z's table is taken as it is"
    );
    // The newcomer meets M; its checks ask M or Z at random, every 1.5-2.5 s.
    meet(&newcomer, &m).await;
    let real: HashSet<NodeId> = [m.node, x.node].into();
    let got = wait_table(&newcomer.handle, key, &real, Duration::from_secs(40)).await;
    assert_eq!(
        got, real,
        "Z gone with M's check answer, M and X come with it"
    );
    let left: Vec<(String, String)> = newcomer
        .trace
        .events()
        .into_iter()
        .filter(|e| e.event_type == TraceEventType::SwarmLeft)
        .filter_map(|e| {
            let d = e.detail?;
            Some((
                d["member"].as_str()?.to_owned(),
                d["reason"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(left, vec![(z.node_id().to_string(), "leave".to_owned())]);
    serve.abort();
}

/// A peer whose table agrees with ours checks it as often as the checks' own budget
/// allows (a node in many swarms whose checks pick the same member): answered with
/// empty pages that take nothing from its pages, which a check of a table that differs
/// still takes. Before, every check took a page, and the ninth request within a few
/// seconds was refused whatever it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_tables_that_agree_take_no_pages() {
    use mesh_testkit::Net;
    use mesh_testkit::hostile::HostilePeer;
    let key = DiscoveryKey::from_name("agreeing checks");
    let member = start(vec![]).await;
    member.handle.join_swarm(key).await.unwrap();
    let p2p = member.addr.clone().with(libp2p::multiaddr::Protocol::P2p(
        member.node.to_peer_id().unwrap(),
    ));
    let wait = Duration::from_secs(30);
    let asker = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = asker.connect(p2p, wait).await.unwrap();
    let ask = |request: Vec<u8>| {
        let asker = &asker;
        async move {
            let answer = asker
                .send(peer, "/mesh/swarm-table/1.0.0", &request, wait)
                .await
                .unwrap();
            exchange::decode_answer(&answer)
        }
    };
    // The member's table (one page), once its own is in.
    let started = Instant::now();
    let page = loop {
        match ask(exchange::TableRequest::first(key).to_cbor()).await {
            Ok(p) => break p,
            Err(e) if e.to_string().contains("not ready") && started.elapsed() < wait => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let nodes: Vec<NodeId> = page
        .items
        .iter()
        .map(|b| SwarmPresence::from_cbor(b).unwrap().node_id())
        .collect();
    assert_eq!(nodes, vec![member.node]);
    let agreed = exchange::MemberDigest::of(&key, &nodes);
    for i in 0..40 {
        let answer = ask(exchange::TableRequest::unless(key, agreed).to_cbor()).await;
        assert_eq!(answer.map(|p| p.items.len()).ok(), Some(0), "check {i}");
    }
    // Tables that differ: pages, the burst of 8 less the fetch's, then refused.
    let differs = exchange::MemberDigest::of(&key, &[]);
    let mut pages = 0;
    for _ in 0..20 {
        match ask(exchange::TableRequest::unless(key, differs).to_cbor()).await {
            Ok(p) => {
                assert_eq!(p.items.len(), 1);
                pages += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("too many"), "{e}");
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs() as usize;
    assert!(
        (7..=7 + secs / 2 + 1).contains(&pages),
        "{pages} pages in {secs} s"
    );
}
