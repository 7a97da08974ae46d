//! The admission client against real relays: renewal before expiry, and a plain relay
//! without admission.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::core::upgrade::Version;
use mesh_admission::{Open, Purpose, client, server};
use mesh_core::NodeKeypair;
use support::*;

fn unix_millis() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_kept_grant_is_renewed_before_it_expires() {
    let config = server::Config {
        policy: Arc::new(Open {
            limits: server::DEFAULT_CAPS,
        }),
        grant_ttl: Duration::from_secs(3),
        ..server::Config::default()
    };
    let relay = Relay::start("relay", config, base_relay_config()).await;
    let mut c = client("c");
    let (rp, addr) = (relay.node.peer, relay.addr());
    c.run(move |s| {
        s.behaviour_mut()
            .admission
            .keep(rp, Purpose::Reservation, vec![addr])
            .unwrap()
    })
    .await;
    let mut grant = c
        .wait("the first grant", |e| match admission(e)? {
            client::Event::Granted {
                grant,
                renewed: false,
                ..
            } => Some((**grant).clone()),
            _ => None,
        })
        .await;
    c.reserve(&relay).await.unwrap();
    let first_expiry = grant.expires_at().clone();

    // Three renewals, each arriving while the previous grant still holds.
    for round in 0..3 {
        let (next, at) = c
            .wait_within(
                "a renewed grant",
                Duration::from_secs(10),
                |e| match admission(e)? {
                    client::Event::Granted {
                        grant,
                        renewed: true,
                        ..
                    } => Some(((**grant).clone(), unix_millis())),
                    client::Event::Denied { error, .. } | client::Event::Failed { error, .. } => {
                        panic!("renewal {round} failed: {error}")
                    }
                    _ => None,
                },
            )
            .await;
        let expires = grant.expires_at().instant().timestamp_millis();
        assert!(
            at < expires,
            "renewal {round} arrived {} ms after the grant it renews expired",
            at - expires
        );
        assert!(next.expires_at() >= grant.expires_at());
        assert_ne!(next.ticket_id(), grant.ticket_id());
        grant = next;
    }
    assert!(grant.expires_at() > &first_expiry);
    // The relay holds the latest grant only, and admits a reservation past the first
    // grant's expiry.
    let grants = relay.node.run(|s| s.behaviour().admission.grants()).await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].ticket, grant.ticket_id());
    c.reserve(&relay).await.unwrap();
    assert!(
        c.run(move |s| s
            .behaviour()
            .admission
            .grant(&rp, Purpose::Reservation)
            .is_some())
            .await
    );
}

#[tokio::test]
async fn a_plain_relay_is_reported_unsupported() {
    plain_relay_unsupported(Version::V1).await;
}

/// With lazy negotiation the request is sent before the relay refuses the protocol; the
/// refusal comes back as the first bytes read and must still read as "unsupported".
#[tokio::test]
async fn a_plain_relay_is_reported_unsupported_with_lazy_negotiation() {
    plain_relay_unsupported(Version::V1Lazy).await;
}

async fn plain_relay_unsupported(version: Version) {
    let (plain, addr) = plain_relay("plain relay").await;
    let mut c = client_negotiating(
        "c",
        NodeKeypair::generate(),
        client::Config::default(),
        version,
    );
    let rp = plain.peer;
    let a = addr.clone();
    c.run(move |s| {
        s.behaviour_mut()
            .admission
            .request(rp, Purpose::Reservation, vec![a])
            .unwrap()
    })
    .await;
    match c.answer(rp).await {
        Err(client::Event::Unsupported { relay }) => assert_eq!(relay, rp),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // Such a relay is used as any libp2p relay: reserving needs no grant.
    reserve_at(&mut c, addr.with(libp2p::multiaddr::Protocol::P2pCircuit))
        .await
        .unwrap();
}

/// A kept grant at a relay that cannot be reached: each attempt waits longer than the
/// one before (exponential back-off, at least half of each doubling ceiling: the jitter
/// never halves it further), instead of one fixed retry.
#[tokio::test]
async fn a_dead_relay_is_retried_with_growing_pauses() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let relay = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let base = Duration::from_millis(100);
    let config = client::Config {
        retry: base,
        retry_max: Duration::from_secs(10),
        ..client::Config::default()
    };
    let mut c = client_with("c", NodeKeypair::generate(), config);
    c.run(move |s| {
        s.behaviour_mut()
            .admission
            .keep(relay, Purpose::Reservation, vec![dead])
            .unwrap()
    })
    .await;
    let mut at = Vec::new();
    while at.len() < 6 {
        c.wait("a failed attempt", |e| match admission(e)? {
            client::Event::Failed { relay: r, .. } if *r == relay => Some(()),
            _ => None,
        })
        .await;
        at.push(std::time::Instant::now());
    }
    for (i, pair) in at.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        // After failure i+1 the ceiling is base × 2^i; the wait is at least half of it.
        let floor = base * (1 << i) / 2;
        assert!(gap >= floor, "pause {i}: {gap:?} < {floor:?} ({at:?})");
    }
    // The fifth pause alone (ceiling 1.6 s) is longer than four fixed retries.
    assert!(at[5] - at[4] >= Duration::from_millis(800));
}
