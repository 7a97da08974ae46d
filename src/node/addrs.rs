//! Address policy, as pure functions: what the node advertises and where it dials a
//! node whose advertisement it holds.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_core::NodeAdvertisement;

/// The addresses of `candidates` the node may dial for a peer that named them itself
/// (a signed presence, a stored advertisement: anyone can sign those under fresh
/// identities), given the node's own listen and external addresses `own`: ones its
/// transports dial ([`dialable`]) starting with an IP (a name could point anywhere),
/// public; loopback only when the node itself has no address beyond loopback (several
/// nodes on one host, as in the tests); a private or link-local one only on a network
/// the node has an address in. At most `max`, in order.
pub fn in_node_scope(candidates: &[Multiaddr], own: &[Multiaddr], max: usize) -> Vec<Multiaddr> {
    use super::ip_scope::{Scope, ip_of, on_private_net, scope};
    // Loopback only when the node has addresses and all of them are loopback ones: a
    // node that knows none of its own (no listener reported yet) is not a same-host mesh.
    let mut own_ips = own.iter().filter_map(ip_of).peekable();
    let only_loopback = own_ips.peek().is_some() && own_ips.all(|ip| scope(ip) == Scope::Loopback);
    candidates
        .iter()
        .filter(|a| dialable(a))
        .filter(|a| {
            let Some(ip) = ip_of(a) else {
                return false;
            };
            match scope(ip) {
                Scope::Unroutable => false,
                Scope::Public => true,
                Scope::Loopback => only_loopback,
                Scope::Private => on_private_net(ip, own),
            }
        })
        .take(max)
        .cloned()
        .collect()
}

/// Whether `addr` is on a loopback interface.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// `addr` without a trailing `/p2p/<peer id>`.
pub fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// The addresses the node advertises: confirmed external addresses first, then its
/// listen addresses. Loopback addresses are left out once the node has any other
/// address (they only help nodes on the same host, and mislead everyone else);
/// unspecified and duplicate addresses never appear. Relay circuits stay whatever the
/// relay's address: the node holds a reservation there, which a configured relay on
/// this host (a test, a local setup) makes meaningful.
pub fn own_addrs<'a>(
    external: impl IntoIterator<Item = &'a Multiaddr>,
    listen: impl IntoIterator<Item = &'a Multiaddr>,
) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in external.into_iter().chain(listen) {
        let a = without_peer(a);
        if !is_unspecified(&a) && !out.contains(&a) {
            out.push(a);
        }
    }
    let circuit = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    if out.iter().any(|a| !is_loopback(a) && !circuit(a)) {
        out.retain(|a| !is_loopback(a) || circuit(a));
    }
    out
}

/// The dialable addresses of an advertisement, most preferred first, without `/p2p`
/// suffixes: `multiaddr:` endpoints and `wss://`/`ws://` URLs (as WebSocket multiaddrs,
/// see [`mesh_core::families::ws_url_multiaddr`]), endpoints the node's transports
/// cannot dial left out (see [`dialable`]), then ordered by `endpoint/priority` (stable:
/// equal priorities keep document order), duplicates dropped.
pub fn advert_addrs(ad: &NodeAdvertisement) -> Vec<Multiaddr> {
    let mut endpoints: Vec<(u64, Multiaddr)> = ad
        .endpoints()
        .into_iter()
        .filter_map(|e| Some((e.priority, without_peer(&e.multiaddr()?))))
        .filter(|(_, a)| dialable(a))
        .collect();
    endpoints.sort_by_key(|(priority, _)| *priority);
    let mut out = Vec::new();
    for (_, a) in endpoints {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Whether the node's transport stack dials `addr`: an IP or DNS host, then TCP (plain,
/// or WebSocket as `/ws`, `/wss`, `/tls/ws`, `/tls/sni/<name>/ws`) or UDP with QUIC v1,
/// then optionally `/p2p/<peer>`; or such a relay address followed by `/p2p-circuit`.
/// Everything else (WebTransport, WebRTC, QUIC draft-29, unix sockets, `/dnsaddr`, which
/// no advertisement needs) is an unsupported transport.
pub fn dialable(addr: &Multiaddr) -> bool {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    match parts.iter().position(|p| matches!(p, Protocol::P2pCircuit)) {
        // A circuit: the relay's own address, its peer id, then the circuit (and the
        // target's peer id, which `without_peer` removes from advertised endpoints).
        Some(i) => {
            let relay = &parts[..i];
            let rest = &parts[i + 1..];
            matches!(relay.last(), Some(Protocol::P2p(_)))
                && direct(&relay[..relay.len() - 1])
                && matches!(rest, [] | [Protocol::P2p(_)])
        }
        None => match parts.split_last() {
            Some((Protocol::P2p(_), head)) => direct(head),
            _ => direct(&parts),
        },
    }
}

fn direct(parts: &[Protocol<'_>]) -> bool {
    use Protocol as P;
    let [host, rest @ ..] = parts else {
        return false;
    };
    if !matches!(
        host,
        P::Ip4(_) | P::Ip6(_) | P::Dns(_) | P::Dns4(_) | P::Dns6(_)
    ) {
        return false;
    }
    matches!(
        rest,
        [P::Tcp(_)]
            | [P::Tcp(_), P::Ws(_) | P::Wss(_)]
            | [P::Tcp(_), P::Tls, P::Ws(_)]
            | [P::Tcp(_), P::Tls, P::Sni(_), P::Ws(_)]
            | [P::Udp(_), P::QuicV1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    /// A candidate on loopback is in scope on a node whose own addresses are all
    /// loopback ones, not on one that knows none of its own yet (a stranger's stored
    /// `127.0.0.1:6379` was dialed then, and loopback costs no destination budget).
    #[test]
    fn loopback_candidates_need_a_loopback_only_node_with_addresses() {
        let redis = [ma("/ip4/127.0.0.1/tcp/6379")];
        assert_eq!(in_node_scope(&redis, &[], 8), Vec::<Multiaddr>::new());
        let lo = [ma("/ip4/127.0.0.1/tcp/4001")];
        assert_eq!(in_node_scope(&redis, &lo, 8), redis.to_vec());
        let public = [ma("/ip4/203.0.113.5/tcp/4001")];
        assert_eq!(in_node_scope(&redis, &public, 8), Vec::<Multiaddr>::new());
    }

    #[test]
    fn loopback_only_when_nothing_else() {
        let lo = [ma("/ip4/127.0.0.1/tcp/1"), ma("/ip4/0.0.0.0/tcp/1")];
        assert_eq!(own_addrs([], &lo), vec![ma("/ip4/127.0.0.1/tcp/1")]);
        let ext = [ma("/ip4/203.0.113.5/tcp/4001")];
        let listen = [
            ma("/ip4/127.0.0.1/tcp/4001"),
            ma("/ip4/192.168.1.4/tcp/4001"),
        ];
        assert_eq!(
            own_addrs(&ext, &listen),
            vec![
                ma("/ip4/203.0.113.5/tcp/4001"),
                ma("/ip4/192.168.1.4/tcp/4001")
            ]
        );
    }

    #[test]
    fn circuits_stay_even_through_a_loopback_relay() {
        let relay = libp2p::PeerId::random();
        let circuit = ma(&format!("/ip4/127.0.0.1/tcp/9/p2p/{relay}/p2p-circuit"));
        let ext = [ma("/ip4/203.0.113.5/tcp/4001")];
        let listen = [ma("/ip4/127.0.0.1/tcp/4001"), circuit.clone()];
        assert_eq!(
            own_addrs(&ext, &listen),
            vec![ma("/ip4/203.0.113.5/tcp/4001"), circuit]
        );
    }

    #[test]
    fn peer_suffix_and_duplicates_dropped() {
        let p = libp2p::PeerId::random();
        let a = ma(&format!("/ip4/10.0.0.1/tcp/1/p2p/{p}"));
        let out = own_addrs([&a], [&ma("/ip4/10.0.0.1/tcp/1")]);
        assert_eq!(out, vec![ma("/ip4/10.0.0.1/tcp/1")]);
    }

    #[test]
    fn what_the_transports_dial() {
        let p = libp2p::PeerId::random();
        for a in [
            "/ip4/10.0.0.1/tcp/1".to_owned(),
            "/ip6/::1/udp/1/quic-v1".to_owned(),
            "/dns/n.example/tcp/443/tls/x-parity-ws/%2Fpeer".to_owned(),
            "/dns4/n.example/tcp/443/tls/sni/n.example/ws".to_owned(),
            "/ip4/10.0.0.1/tcp/443/wss".to_owned(),
            format!("/ip4/10.0.0.1/tcp/1/p2p/{p}"),
            format!("/ip4/10.0.0.1/tcp/1/p2p/{p}/p2p-circuit"),
            format!("/dns/r.example/tcp/443/tls/ws/p2p/{p}/p2p-circuit/p2p/{p}"),
        ] {
            assert!(dialable(&ma(&a)), "{a}");
        }
        for a in [
            "/ip4/10.0.0.1/udp/1/quic".to_owned(),
            "/ip4/10.0.0.1/udp/1/quic-v1/webtransport".to_owned(),
            "/ip4/10.0.0.1/udp/1/webrtc-direct".to_owned(),
            "/dnsaddr/n.example".to_owned(),
            "/unix/%2Ftmp%2Fs".to_owned(),
            "/ip4/10.0.0.1/tcp/1/p2p-circuit".to_owned(),
            format!("/p2p/{p}"),
            "/ip4/10.0.0.1".to_owned(),
        ] {
            assert!(!dialable(&ma(&a)), "{a}");
        }
    }

    /// An advertisement with hand-made endpoints `(url, transport, role, priority)`.
    fn advert_with(endpoints: &[(&str, &str, &str, u64)]) -> NodeAdvertisement {
        use mesh_core::artifact::Artifact;
        let key = mesh_core::NodeKeypair::generate();
        let now = mesh_core::Timestamp::now();
        let eps: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(u, t, r, p)| {
                serde_json::json!({
                    "endpoint/url": u, "endpoint/transport": t,
                    "endpoint/role": r, "endpoint/priority": p,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "schema/v": 1,
            "advertisement/id": "adv:test:1",
            "node/id": key.node_id().to_string(),
            "sequence/no": 1,
            "advertised-at": now.as_str(),
            "expires-at": now.plus_secs(600).as_str(),
            "key/alg": "ed25519",
            "key/public": key.fingerprint().to_string(),
            "endpoints": eps,
            "transports/supported": ["wss", "quic", "tcp"],
        });
        let serde_json::Value::Object(doc) = doc else {
            unreachable!()
        };
        NodeAdvertisement::sign(doc, &key).unwrap()
    }

    #[test]
    fn wss_urls_are_dialed_in_priority_order_after_filtering() {
        let ad = advert_with(&[
            ("wss://node-01.docs.orbiplex.ai/peer", "wss", "listener", 5),
            (
                "multiaddr:/ip4/10.0.0.1/udp/1/quic-v1/webtransport",
                "quic",
                "listener",
                0,
            ),
            ("multiaddr:/unix/%2Ftmp%2Fs/tcp/1", "tcp", "listener", 0),
            (
                "multiaddr:/ip4/10.0.0.1/udp/1/quic-v1",
                "quic",
                "listener",
                1,
            ),
            ("ws://127.0.0.1:4002", "ws", "listener", 9),
            ("wss://user@node.example/", "wss", "listener", 0),
            ("wss://relay.example", "wss", "relay", 3),
            ("wss://node-01.docs.orbiplex.ai/peer", "wss", "listener", 7),
        ]);
        assert_eq!(
            advert_addrs(&ad),
            vec![
                ma("/ip4/10.0.0.1/udp/1/quic-v1"),
                ma("/dns/relay.example/tcp/443/tls/ws"),
                ma("/dns/node-01.docs.orbiplex.ai/tcp/443/tls/x-parity-ws/%2Fpeer"),
                ma("/ip4/127.0.0.1/tcp/4002/ws"),
            ]
        );
        // The Orbiplex example itself (a WSS-only seed) now has an address.
        let text = std::fs::read_to_string(
            mesh_testkit::shared_dir()
                .join("orbiplex-schemas/examples/seed-wss.node-advertisement.json"),
        )
        .unwrap();
        let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let ad = <NodeAdvertisement as mesh_core::artifact::Artifact>::from_map(doc).unwrap();
        assert_eq!(
            advert_addrs(&ad),
            vec![ma(
                "/dns/node-01.docs.orbiplex.ai/tcp/443/tls/x-parity-ws/%2Fpeer"
            )]
        );
    }

    #[test]
    fn advert_addresses_in_priority_order() {
        let key = mesh_core::NodeKeypair::generate();
        let now = mesh_core::Timestamp::now();
        let ad = mesh_advert::own::advert_for(
            &key,
            &[
                ma("/ip4/10.0.0.1/tcp/4002/ws"),
                ma("/ip4/10.0.0.1/udp/4001/quic-v1"),
                ma("/ip4/10.0.0.1/tcp/4001"),
            ],
            1,
            &now,
            600,
        )
        .unwrap();
        assert_eq!(
            advert_addrs(&ad),
            vec![
                ma("/ip4/10.0.0.1/udp/4001/quic-v1"),
                ma("/ip4/10.0.0.1/tcp/4001"),
                ma("/ip4/10.0.0.1/tcp/4002/ws")
            ]
        );
    }
}
