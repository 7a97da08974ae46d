//! The node's own advertisement: built from its listen and external addresses, with a
//! sequence number that never goes backwards, rebuilt when the addresses change and
//! refreshed before it expires. Pure logic: the caller passes `now` and persists the
//! sequence number (see [`next_sequence`]).

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_core::artifact::Artifact;
use mesh_core::families::MULTIADDR_URL_PREFIX;
use mesh_core::{MeshError, MeshResult, NodeAdvertisement, NodeKeypair, Timestamp};
use serde_json::{Map, Value, json};

/// Default lifetime of an own advertisement.
pub const DEFAULT_TTL_SECS: i64 = 3600;

/// The next sequence number: above `last` (what was persisted) and at least the current
/// time in milliseconds, so it keeps growing even if the persisted value was lost, as
/// long as the clock does not go back.
pub fn next_sequence(last: Option<u64>, now: &Timestamp) -> u64 {
    let clock = u64::try_from(now.instant().timestamp_millis()).unwrap_or(0);
    last.map_or(clock, |l| l.saturating_add(1)).max(clock)
}

/// The endpoint of one address: `(transport, role, priority)`, or `None` for addresses
/// that other nodes cannot dial (memory, unix, loopback-free checks are the caller's).
fn classify(addr: &Multiaddr) -> Option<(&'static str, &'static str, u64)> {
    let has = |pred: fn(&Protocol<'_>) -> bool| addr.iter().any(|p| pred(&p));
    let relay = has(|p| matches!(p, Protocol::P2pCircuit));
    let (transport, priority) = if has(|p| matches!(p, Protocol::QuicV1)) {
        ("quic", 0)
    } else if has(|p| matches!(p, Protocol::WebRTCDirect)) {
        // Only with the certhash a browser needs to dial it.
        if !has(|p| matches!(p, Protocol::Certhash(_))) {
            return None;
        }
        ("webrtc-direct", 4)
    } else if has(|p| matches!(p, Protocol::Wss(_)))
        || (has(|p| matches!(p, Protocol::Tls)) && has(|p| matches!(p, Protocol::Ws(_))))
    {
        ("wss", 2)
    } else if has(|p| matches!(p, Protocol::Ws(_))) {
        ("ws", 3)
    } else if has(|p| matches!(p, Protocol::Tcp(_))) {
        ("tcp", 1)
    } else {
        return None;
    };
    Some(if relay {
        (transport, "relay", priority + 10)
    } else {
        (transport, "listener", priority)
    })
}

/// A signed advertisement of `key` for `addrs` (unusable addresses are left out).
pub fn advert_for(
    key: &NodeKeypair,
    addrs: &[Multiaddr],
    sequence_no: u64,
    now: &Timestamp,
    ttl_secs: i64,
) -> MeshResult<NodeAdvertisement> {
    let mut endpoints = Vec::new();
    let mut transports: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for addr in addrs {
        let Some((transport, role, priority)) = classify(addr) else {
            continue;
        };
        let url = format!("{MULTIADDR_URL_PREFIX}{addr}");
        if !seen.insert(url.clone()) {
            continue;
        }
        endpoints.push(json!({
            "endpoint/url": url,
            "endpoint/transport": transport,
            "endpoint/role": role,
            "endpoint/priority": priority,
        }));
        if !transports.contains(&transport) {
            transports.push(transport);
        }
    }
    if endpoints.is_empty() {
        return Err(MeshError::invalid(
            "no dialable address to advertise (tcp, quic, ws or wss)",
        ));
    }
    endpoints.sort_by_key(|e| e["endpoint/priority"].as_u64());
    let mut doc = Map::new();
    doc.insert("schema/v".into(), 1.into());
    doc.insert(
        "advertisement/id".into(),
        format!("adv:{}:{sequence_no}", key.fingerprint()).into(),
    );
    doc.insert("node/id".into(), key.node_id().to_string().into());
    doc.insert("sequence/no".into(), sequence_no.into());
    doc.insert("advertised-at".into(), now.as_str().into());
    doc.insert("expires-at".into(), now.plus_secs(ttl_secs).as_str().into());
    doc.insert("key/alg".into(), "ed25519".into());
    doc.insert("key/public".into(), key.fingerprint().to_string().into());
    doc.insert("endpoints".into(), Value::Array(endpoints));
    doc.insert("transports/supported".into(), json!(transports));
    NodeAdvertisement::sign(doc, key)
}

/// Keeps the node's current advertisement.
#[derive(Debug)]
pub struct OwnAdvert {
    key: NodeKeypair,
    ttl_secs: i64,
    addrs: Vec<Multiaddr>,
    current: Option<NodeAdvertisement>,
    last_sequence: Option<u64>,
    withdrawn: bool,
}

impl OwnAdvert {
    /// For `key`, with `ttl_secs` lifetime, continuing after `last_sequence` (persisted).
    pub fn new(key: NodeKeypair, ttl_secs: i64, last_sequence: Option<u64>) -> Self {
        OwnAdvert {
            key,
            ttl_secs: ttl_secs.max(60),
            addrs: Vec::new(),
            current: None,
            last_sequence,
            withdrawn: false,
        }
    }

    /// The current advertisement.
    pub fn current(&self) -> Option<&NodeAdvertisement> {
        self.current.as_ref()
    }

    /// The last sequence number used (persist it).
    pub fn last_sequence(&self) -> Option<u64> {
        self.last_sequence
    }

    /// Whether the advertisement is withdrawn (see [`OwnAdvert::withdraw`]).
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn
    }

    /// Withdraws the advertisement: signs a `node-withdrawal.v1` with the next sequence
    /// number (so it supersedes every advertisement issued so far) and drops the current
    /// advertisement. Until [`OwnAdvert::renew`], neither [`OwnAdvert::tick`] nor
    /// [`OwnAdvert::set_addresses`] makes a new one (the addresses are still kept).
    pub fn withdraw(&mut self, now: &Timestamp) -> MeshResult<crate::NodeWithdrawal> {
        let seq = next_sequence(self.last_sequence, now);
        let w = crate::NodeWithdrawal::create(&self.key, seq, now)?;
        self.last_sequence = Some(seq);
        self.current = None;
        self.withdrawn = true;
        Ok(w)
    }

    /// Sets the addresses; returns a new advertisement when they changed (never while
    /// withdrawn).
    pub fn set_addresses(
        &mut self,
        mut addrs: Vec<Multiaddr>,
        now: &Timestamp,
    ) -> MeshResult<Option<&NodeAdvertisement>> {
        addrs.sort();
        addrs.dedup();
        if self.withdrawn {
            self.addrs = addrs;
            return Ok(None);
        }
        if addrs == self.addrs && self.current.is_some() {
            return Ok(None);
        }
        self.addrs = addrs;
        self.rebuild(now).map(Some)
    }

    /// Returns a fresh advertisement when the current one is in the last quarter of its
    /// life (or gone); never while withdrawn.
    pub fn tick(&mut self, now: &Timestamp) -> MeshResult<Option<&NodeAdvertisement>> {
        if self.withdrawn {
            return Ok(None);
        }
        let due = match &self.current {
            None => !self.addrs.is_empty(),
            Some(ad) => ad.expires_at().secs_since(now) <= self.ttl_secs / 4,
        };
        if due {
            self.rebuild(now).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Signs a fresh advertisement for the current addresses now (an explicit
    /// publish), with the next sequence number; this also ends a withdrawal.
    pub fn renew(&mut self, now: &Timestamp) -> MeshResult<&NodeAdvertisement> {
        if self.addrs.is_empty() {
            return Err(MeshError::invalid("no address to advertise yet"));
        }
        self.withdrawn = false;
        self.rebuild(now)
    }

    fn rebuild(&mut self, now: &Timestamp) -> MeshResult<&NodeAdvertisement> {
        let seq = next_sequence(self.last_sequence, now);
        let ad = advert_for(&self.key, &self.addrs, seq, now, self.ttl_secs)?;
        self.last_sequence = Some(seq);
        Ok(self.current.insert(ad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::parse("2026-03-23T18:00:00Z")
            .unwrap()
            .plus_secs(s)
    }

    #[test]
    fn endpoints_follow_the_addresses() {
        let key = NodeKeypair::generate();
        let peer = key.to_libp2p().public().to_peer_id();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/4002/ws".parse().unwrap(),
            "/memory/1234".parse().unwrap(),
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{peer}/p2p-circuit")
                .parse()
                .unwrap(),
        ];
        let ad = advert_for(&key, &addrs, 5, &at(0), 600).unwrap();
        let eps = ad.endpoints();
        assert_eq!(eps.len(), 4, "memory address left out");
        assert_eq!(eps[0].transport, "quic");
        assert!(eps.iter().any(|e| e.is_relay() && e.transport == "tcp"));
        assert_eq!(ad.sequence_no(), 5);
        ad.verify_signature().unwrap();
        assert!(advert_for(&key, &addrs[3..4], 1, &at(0), 600).is_err());
    }

    #[test]
    fn webrtc_direct_is_advertised_with_its_certhash_only() {
        let key = NodeKeypair::generate();
        let with: Multiaddr = "/ip4/127.0.0.1/udp/4004/webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g"
            .parse()
            .unwrap();
        let without: Multiaddr = "/ip4/127.0.0.1/udp/4005/webrtc-direct".parse().unwrap();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let ad = advert_for(&key, &[with.clone(), without, tcp], 1, &at(0), 600).unwrap();
        let eps = ad.endpoints();
        assert_eq!(eps.len(), 2, "{eps:?}");
        assert_eq!(eps[1].transport, "webrtc-direct");
        assert_eq!(eps[1].multiaddr(), Some(with));
        ad.verify_signature().unwrap();
        // It survives the validator (what a receiving node runs).
        let back = NodeAdvertisement::from_json(ad.to_json()).unwrap();
        assert_eq!(back.endpoints().len(), 2);
    }

    #[test]
    fn sequence_never_goes_back_and_refresh_is_timely() {
        assert!(next_sequence(Some(u64::MAX - 1), &at(0)) == u64::MAX);
        let clock = next_sequence(None, &at(0));
        assert!(next_sequence(Some(5), &at(0)) == clock);
        assert!(next_sequence(Some(clock + 10), &at(0)) == clock + 11);

        let mut own = OwnAdvert::new(NodeKeypair::generate(), 400, None);
        assert!(
            own.tick(&at(0)).unwrap().is_none(),
            "no addresses, nothing to advertise"
        );
        let a1 = own
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], &at(0))
            .unwrap()
            .unwrap()
            .sequence_no();
        assert!(
            own.set_addresses(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], &at(1))
                .unwrap()
                .is_none()
        );
        assert!(own.tick(&at(200)).unwrap().is_none());
        let a2 = own.tick(&at(300)).unwrap().unwrap().sequence_no();
        assert!(a2 > a1);
        let a3 = own
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()], &at(300))
            .unwrap()
            .unwrap()
            .sequence_no();
        assert!(a3 > a2, "same second, still increasing");
        // After a restart with the persisted sequence, it keeps increasing.
        let mut again = OwnAdvert::new(NodeKeypair::generate(), 400, own.last_sequence());
        let a4 = again
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()], &at(0))
            .unwrap()
            .unwrap()
            .sequence_no();
        assert!(a4 > a3);
    }

    #[test]
    fn a_withdrawal_supersedes_and_stops_refreshes_until_renewed() {
        let key = NodeKeypair::generate();
        let mut own = OwnAdvert::new(key.clone(), 400, None);
        let a1 = own
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], &at(0))
            .unwrap()
            .unwrap()
            .sequence_no();
        let w = own.withdraw(&at(10)).unwrap();
        assert!(w.sequence_no() > a1);
        assert_eq!(w.node_id(), key.node_id());
        assert!(own.is_withdrawn() && own.current().is_none());
        assert_eq!(own.last_sequence(), Some(w.sequence_no()));
        // Neither the timer nor new addresses bring it back.
        assert!(own.tick(&at(390)).unwrap().is_none());
        assert!(
            own.set_addresses(vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()], &at(20))
                .unwrap()
                .is_none()
        );
        // An explicit publish does, above the withdrawal, with the new addresses.
        let back = own.renew(&at(30)).unwrap();
        assert!(back.sequence_no() > w.sequence_no());
        assert!(back.endpoints()[0].url.contains("/tcp/2"));
        assert!(!own.is_withdrawn());
        assert!(own.tick(&at(40)).unwrap().is_none());
    }
}
