//! The trace events of discovery: `advertisement/fetched` (an advertisement of another
//! node arrived and passed validation), `advertisement/rejected` (one was refused, with
//! its frozen code) and `peer/discovered` (a peer entered one of the DHT routing tables,
//! or a provider record named it). Pure builders; the node emits them.

use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId, Timestamp, TraceEvent, TraceEventType};
use serde_json::json;

/// Where an advertisement came from: pushed or answered by a peer over
/// `/mesh/advert/1.0.0`, found by a mesh-DHT lookup, put into our mesh-DHT store by a
/// peer, or fetched from a seed directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Over `/mesh/advert/1.0.0` (a push, or the answer to our lookup).
    Peer,
    /// A mesh-DHT lookup.
    MeshDht,
    /// A peer's put into our mesh-DHT record store.
    DhtPut,
    /// A seed directory over HTTP (`meshd advert lookup --from URL`).
    Directory,
}

impl Source {
    /// The `source` of the trace detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Peer => "peer",
            Source::MeshDht => "mesh-dht",
            Source::DhtPut => "dht-put",
            Source::Directory => "directory",
        }
    }
}

/// `advertisement/fetched`: `node`'s advertisement `sequence_no` from `source`,
/// delivered by `peer`.
pub fn fetched(
    me: NodeId,
    peer: Option<PeerId>,
    node: &NodeId,
    sequence_no: u64,
    source: Source,
    now: &Timestamp,
) -> TraceEvent {
    let e = TraceEvent::new(TraceEventType::AdvertisementFetched, me, now.clone()).with_detail(
        json!({"node": node.to_string(), "sequence/no": sequence_no, "source": source.as_str()}),
    );
    match peer {
        Some(p) => e.with_peer(p),
        None => e,
    }
}

/// Whether a refusal is about the advertisement itself (its signature, freshness,
/// sequence, form or signer), not about the request carrying it (a rate limit, a
/// transport failure): only those are `advertisement/rejected`.
pub fn is_about_advert(error: &MeshError) -> bool {
    !matches!(
        error.code,
        ErrorCode::TransportRejected | ErrorCode::TransportUnavailable
    )
}

/// `advertisement/rejected`: an advertisement from `source` (delivered by `peer`) was
/// refused with `error` (its code and class in the detail).
pub fn rejected(
    me: NodeId,
    peer: Option<PeerId>,
    error: &MeshError,
    source: Source,
    now: &Timestamp,
) -> TraceEvent {
    let mut detail = error.to_json();
    detail["source"] = source.as_str().into();
    let e =
        TraceEvent::new(TraceEventType::AdvertisementRejected, me, now.clone()).with_detail(detail);
    match peer {
        Some(p) => e.with_peer(p),
        None => e,
    }
}

/// `peer/discovered`: `peer` entered the routing table of `via` (`amino` or
/// `mesh-dht`) with `addrs`, or a provider record of `via` (`provider`) named it.
pub fn discovered(
    me: NodeId,
    peer: PeerId,
    via: &'static str,
    addrs: &[Multiaddr],
    now: &Timestamp,
) -> TraceEvent {
    let addrs: Vec<String> = addrs.iter().take(16).map(ToString::to_string).collect();
    TraceEvent::new(TraceEventType::PeerDiscovered, me, now.clone())
        .with_peer(peer)
        .with_detail(json!({"via": via, "addrs": addrs}))
}

/// `peer/discovered` for a peer new in the routing table of `via` (`e` a
/// `RoutingUpdated` with `is_new_peer`), with the addresses `in_scope` admits; none
/// for any other event, or when no address is admitted (a peer whose only addresses
/// Amino refused was not discovered).
pub(crate) fn routing_updated(
    me: NodeId,
    via: &'static str,
    e: &libp2p::kad::Event,
    in_scope: impl Fn(&Multiaddr) -> bool,
    now: &Timestamp,
) -> Option<TraceEvent> {
    let libp2p::kad::Event::RoutingUpdated {
        peer,
        is_new_peer: true,
        addresses,
        ..
    } = e
    else {
        return None;
    };
    let kept: Vec<Multiaddr> = addresses.iter().filter(|a| in_scope(a)).cloned().collect();
    (!kept.is_empty()).then(|| discovered(me, *peer, via, &kept, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    #[test]
    fn events_carry_what_happened() {
        let me = NodeKeypair::generate().node_id();
        let other = NodeKeypair::generate().node_id();
        let now = Timestamp::now();
        let peer = PeerId::random();
        let f = fetched(me, Some(peer), &other, 7, Source::MeshDht, &now);
        assert_eq!(f.event_type, TraceEventType::AdvertisementFetched);
        let d = f.detail.unwrap();
        assert_eq!(d["sequence/no"], 7);
        assert_eq!(d["source"], "mesh-dht");
        assert_eq!(f.peer, Some(peer.to_string()));
        let e = MeshError::new(ErrorCode::AdvStaleSeq, "old");
        assert!(is_about_advert(&e));
        assert!(!is_about_advert(&MeshError::new(
            ErrorCode::TransportRejected,
            "slow down"
        )));
        let r = rejected(me, None, &e, Source::Peer, &now);
        let d = r.detail.unwrap();
        assert_eq!(d["error/code"], "E_ADV_STALE_SEQ");
        assert_eq!(d["source"], "peer");
        let addr: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().unwrap();
        let p = discovered(me, peer, "amino", &[addr], &now);
        assert_eq!(p.event_type, TraceEventType::PeerDiscovered);
        assert_eq!(p.detail.unwrap()["via"], "amino");
    }

    #[test]
    fn a_new_routing_table_entry_is_discovered_with_its_admitted_addresses() {
        use libp2p::kad::{Addresses, Event};
        let me = NodeKeypair::generate().node_id();
        let now = Timestamp::now();
        let peer = PeerId::random();
        let public: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let private: Multiaddr = "/ip4/10.0.0.7/tcp/4001".parse().unwrap();
        let mut addresses = Addresses::new(public.clone());
        addresses.insert(private.clone());
        let updated = |is_new_peer: bool| Event::RoutingUpdated {
            peer,
            is_new_peer,
            addresses: addresses.clone(),
            bucket_range: (
                libp2p::kad::KBucketDistance::default(),
                libp2p::kad::KBucketDistance::default(),
            ),
            old_peer: None,
        };
        let only_public = |a: &Multiaddr| *a == public;
        let t = routing_updated(me, "amino", &updated(true), only_public, &now).unwrap();
        assert_eq!(t.event_type, TraceEventType::PeerDiscovered);
        let d = t.detail.unwrap();
        assert_eq!(d["via"], "amino");
        assert_eq!(d["addrs"], json!([public.to_string()]));
        // A peer already in the table, or one with no admitted address: nothing.
        assert!(routing_updated(me, "amino", &updated(false), |_| true, &now).is_none());
        assert!(routing_updated(me, "amino", &updated(true), |_| false, &now).is_none());
    }
}
