//! Address policy, as pure functions: what the node advertises and where it dials a
//! node whose advertisement it holds.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_core::NodeAdvertisement;

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

/// The dialable addresses of an advertisement, most preferred first (priority order),
/// without `/p2p` suffixes.
pub fn advert_addrs(ad: &NodeAdvertisement) -> Vec<Multiaddr> {
    let mut endpoints = ad.endpoints();
    endpoints.sort_by_key(|e| e.priority);
    let mut out = Vec::new();
    for e in endpoints {
        if let Some(a) = e.multiaddr().map(|a| without_peer(&a))
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
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
