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

/// The next sequence number: above `last` (what was persisted) and at least `clock_ms`
/// (see [`sequence_clock`]), so it keeps growing even if the persisted value was lost,
/// as long as the clock does not go back.
pub fn next_sequence(last: Option<u64>, clock_ms: u64) -> u64 {
    last.map_or(clock_ms, |l| l.saturating_add(1)).max(clock_ms)
}

/// The clock a fresh sequence number starts from: the system clock in milliseconds,
/// never below `now`. [`Timestamp`]s hold whole seconds (the schemas' timestamps), so
/// `now` alone would give two processes of one key that sign within the same second
/// (a node restarted elsewhere without its data directory) the same sequence number
/// for different advertisements, and every peer holding the first would refuse the
/// second as stale.
pub fn sequence_clock(now: &Timestamp) -> u64 {
    let signed = u64::try_from(now.instant().timestamp_millis()).unwrap_or(0);
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    signed.max(system)
}

/// The endpoint of one address: `(transport, role, priority)`, or `None` for addresses
/// that other nodes cannot dial (memory, unix, loopback-free checks are the caller's).
fn classify(addr: &Multiaddr) -> Option<(&'static str, &'static str, u64)> {
    let has = |pred: fn(&Protocol<'_>) -> bool| addr.iter().any(|p| pred(&p));
    let relay = has(|p| matches!(p, Protocol::P2pCircuit));
    let (transport, priority) = if has(|p| matches!(p, Protocol::QuicV1)) {
        ("quic", 0)
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

/// Priority of a `wss://` URL endpoint: that of WSS multiaddrs, and listed before them
/// (a dialer that keeps document order for equal priorities tries the name first, which
/// the certificate is issued for).
pub const WSS_URL_PRIORITY: u64 = 2;

/// A signed advertisement of `key` for `addrs` (unusable addresses are left out).
pub fn advert_for(
    key: &NodeKeypair,
    addrs: &[Multiaddr],
    sequence_no: u64,
    now: &Timestamp,
    ttl_secs: i64,
) -> MeshResult<NodeAdvertisement> {
    advert_with_url(key, addrs, None, sequence_no, now, ttl_secs)
}

/// [`advert_for`] plus, when `wss_url` is given, a `wss` listener endpoint with that
/// URL (`wss://hostname[:port]/path`, the Orbiplex form) before the multiaddr
/// endpoints of the same priority.
pub fn advert_with_url(
    key: &NodeKeypair,
    addrs: &[Multiaddr],
    wss_url: Option<&str>,
    sequence_no: u64,
    now: &Timestamp,
    ttl_secs: i64,
) -> MeshResult<NodeAdvertisement> {
    let mut endpoints = Vec::new();
    let mut transports: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Some(url) = wss_url
        && !addrs.is_empty()
    {
        endpoints.push(json!({
            "endpoint/url": url,
            "endpoint/transport": "wss",
            "endpoint/role": "listener",
            "endpoint/priority": WSS_URL_PRIORITY,
        }));
        transports.push("wss");
    }
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
    wss_url: Option<String>,
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
            wss_url: None,
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
        let seq = next_sequence(self.last_sequence, sequence_clock(now));
        let w = crate::NodeWithdrawal::create(&self.key, seq, now)?;
        self.last_sequence = Some(seq);
        self.current = None;
        self.withdrawn = true;
        Ok(w)
    }

    /// Sets the addresses; returns a new advertisement when they changed (never while
    /// withdrawn). The `wss://` URL stays.
    pub fn set_addresses(
        &mut self,
        addrs: Vec<Multiaddr>,
        now: &Timestamp,
    ) -> MeshResult<Option<&NodeAdvertisement>> {
        let url = self.wss_url.clone();
        self.set_endpoints(addrs, url, now)
    }

    /// Sets the addresses and the `wss://` URL endpoint (see [`advert_with_url`]);
    /// returns a new advertisement when either changed (never while withdrawn).
    pub fn set_endpoints(
        &mut self,
        mut addrs: Vec<Multiaddr>,
        wss_url: Option<String>,
        now: &Timestamp,
    ) -> MeshResult<Option<&NodeAdvertisement>> {
        addrs.sort();
        addrs.dedup();
        if self.withdrawn {
            self.addrs = addrs;
            self.wss_url = wss_url;
            return Ok(None);
        }
        if addrs == self.addrs && wss_url == self.wss_url && self.current.is_some() {
            return Ok(None);
        }
        self.addrs = addrs;
        self.wss_url = wss_url;
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
        let seq = next_sequence(self.last_sequence, sequence_clock(now));
        let ad = advert_with_url(
            &self.key,
            &self.addrs,
            self.wss_url.as_deref(),
            seq,
            now,
            self.ttl_secs,
        )?;
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
    fn a_wss_url_is_advertised_beside_the_multiaddrs() {
        let key = NodeKeypair::generate();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/10.0.0.1/tcp/4003/tls/ws".parse().unwrap(),
            "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap(),
            "/ip4/10.0.0.1/tcp/4002/ws".parse().unwrap(),
        ];
        let url = "wss://node-01.example.org:4003/peer";
        let ad = advert_with_url(&key, &addrs, Some(url), 1, &at(0), 600).unwrap();
        ad.verify_signature().unwrap();
        let eps = ad.endpoints();
        let got: Vec<(&str, &str, u64)> = eps
            .iter()
            .map(|e| (e.url.as_str(), e.transport.as_str(), e.priority))
            .collect();
        assert_eq!(
            got,
            vec![
                ("multiaddr:/ip4/10.0.0.1/udp/4001/quic-v1", "quic", 0),
                (url, "wss", 2),
                ("multiaddr:/ip4/10.0.0.1/tcp/4003/tls/ws", "wss", 2),
                ("multiaddr:/ip4/10.0.0.1/tcp/4002/ws", "ws", 3),
            ]
        );
        // A URL the validator refuses is an error, not a silently different advert.
        assert!(advert_with_url(&key, &addrs, Some("https://x.example"), 1, &at(0), 600).is_err());

        // The URL changing alone makes a new advertisement; withdrawn, nothing.
        let mut own = OwnAdvert::new(key, 400, None);
        let a1 = own
            .set_endpoints(addrs.clone(), None, &at(0))
            .unwrap()
            .unwrap()
            .sequence_no();
        let a2 = own
            .set_endpoints(addrs.clone(), Some(url.into()), &at(1))
            .unwrap()
            .unwrap();
        assert!(a2.sequence_no() > a1 && a2.endpoints().iter().any(|e| e.url == url));
        assert!(own.set_addresses(addrs.clone(), &at(2)).unwrap().is_none());
        let a3 = own.tick(&at(390)).unwrap().unwrap();
        assert!(
            a3.endpoints().iter().any(|e| e.url == url),
            "kept on refresh"
        );
    }

    #[test]
    fn a_key_restarted_within_a_second_signs_a_higher_sequence() {
        // One key, two fresh processes (no persisted sequence), both signing at the same
        // whole second: the second advertisement must supersede the first, or every
        // peer that holds the first refuses it as stale.
        let key = NodeKeypair::generate();
        let now = Timestamp::now();
        let mut first = OwnAdvert::new(key.clone(), 600, None);
        let a1 = first
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()], &now)
            .unwrap()
            .unwrap()
            .sequence_no();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let mut second = OwnAdvert::new(key, 600, None);
        let a2 = second
            .set_addresses(vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()], &now)
            .unwrap()
            .unwrap()
            .sequence_no();
        assert!(a2 > a1, "{a2} must be above {a1}");
    }

    #[test]
    fn sequence_never_goes_back_and_refresh_is_timely() {
        assert!(next_sequence(Some(u64::MAX - 1), 1_000) == u64::MAX);
        let clock = 1_774_288_800_000;
        assert!(next_sequence(None, clock) == clock);
        assert!(next_sequence(Some(5), clock) == clock);
        assert!(next_sequence(Some(clock + 10), clock) == clock + 11);
        // Never below the given time, though the system clock may be behind it.
        let ahead = at(0).plus_secs(100 * 365 * 86_400);
        assert!(sequence_clock(&ahead) == 1_000 * ahead.instant().timestamp() as u64);

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
