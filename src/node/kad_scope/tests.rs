//! Tests of the DHTs' dial scope.
use super::*;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

/// A node on loopback alone, with no connection.
fn loopback_node() -> Vec<Multiaddr> {
    vec![ma("/ip4/127.0.0.1/tcp/4001")]
}

fn loopback(n: usize) -> Vec<Multiaddr> {
    (0..n)
        .map(|i| ma(&format!("/ip4/127.0.0.1/tcp/{}", 1000 + i)))
        .collect()
}

#[test]
fn a_peer_gets_the_same_few_routable_addresses_dialed_whatever_the_lists() {
    let mut addrs = vec![ma("/ip4/0.0.0.0/tcp/1"), ma("/ip4/224.0.0.1/tcp/1")];
    addrs.extend(loopback(30));
    let mut tried = Vec::new();
    let first = DialScope::Mesh.choose(
        &[],
        addrs.clone(),
        &mut tried,
        &Reach {
            own: &loopback_node(),
            paths: &[],
        },
    );
    assert_eq!(first, addrs[2..2 + MAX_DIAL_ADDRS]);
    // Another query's list of the same peer, without the first ones: nothing new.
    let rest = addrs[2 + MAX_DIAL_ADDRS..].to_vec();
    assert!(
        DialScope::Mesh
            .choose(
                &[],
                rest,
                &mut tried,
                &Reach {
                    own: &loopback_node(),
                    paths: &[]
                }
            )
            .is_empty()
    );
    // In any order, repeated: the same ones.
    let mut shuffled = addrs.clone();
    shuffled.reverse();
    shuffled.extend(addrs.clone());
    assert_eq!(
        DialScope::Mesh.choose(
            &[],
            shuffled,
            &mut tried,
            &Reach {
                own: &loopback_node(),
                paths: &[]
            }
        ),
        first
    );
    // The routing table's come first, and do not count as new.
    let table = [addrs[31].clone()];
    let with_table = DialScope::Mesh.choose(
        &table,
        addrs.clone(),
        &mut tried,
        &Reach {
            own: &loopback_node(),
            paths: &[],
        },
    );
    assert_eq!(with_table[0], addrs[31]);
    assert_eq!(with_table.len(), MAX_DIAL_ADDRS);
    assert_eq!(tried.len(), MAX_DIAL_ADDRS);
}

#[test]
fn amino_dials_no_lan_or_loopback_unless_told_or_configured() {
    let addrs = vec![
        ma("/ip4/192.168.1.7/tcp/4001"),
        ma("/ip4/127.0.0.1/tcp/4001"),
        ma("/ip4/198.51.100.7/tcp/4001"),
        ma("/dnsaddr/bootstrap.libp2p.io"),
        ma("/ip4/10.1.1.1/tcp/4001/p2p/12D3KooWGjMCgWVvg4wVKw8wqyKaxwQyfZ9aYQ8ZQ3MrK3n3y3Yd"),
    ];
    let strict = DialScope::Amino {
        keep_private: false,
        configured: vec![ma("/ip4/10.1.1.1/tcp/4001")],
    };
    let mut kept = strict.choose(
        &[],
        addrs.clone(),
        &mut Vec::new(),
        &Reach {
            own: &loopback_node(),
            paths: &[],
        },
    );
    kept.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    // `/dnsaddr` is no address the node dials itself (only a configured one).
    let mut want = vec![addrs[2].clone(), addrs[4].clone()];
    want.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    assert_eq!(kept, want);
    let told = DialScope::Amino {
        keep_private: true,
        configured: vec![],
    };
    assert_eq!(
        told.choose(
            &[],
            addrs.clone(),
            &mut Vec::new(),
            &Reach {
                own: &loopback_node(),
                paths: &[]
            }
        )
        .len(),
        4
    );
    let webtransport = ma("/ip4/198.51.100.7/udp/4001/quic-v1/webtransport");
    assert!(
        told.choose(
            &[],
            vec![webtransport],
            &mut Vec::new(),
            &Reach {
                own: &loopback_node(),
                paths: &[]
            }
        )
        .is_empty()
    );
}

/// A peer with more addresses than a dial takes, its public one listed after its
/// loopback and LAN ones (by bytes, 127… and 10… sort before 203…): the public one is
/// dialed (it was the ninth, never tried).
#[test]
fn public_addresses_go_first() {
    let mut addrs = loopback(6);
    addrs.extend((0..4).map(|i| ma(&format!("/ip4/10.0.0.{i}/tcp/4001"))));
    addrs.push(ma("/ip4/203.0.113.9/tcp/4001"));
    addrs.push(ma("/dns4/node.example/tcp/4001"));
    // A node on loopback with a connection into 10.0.0.0/24.
    let own = loopback_node();
    let on_lan = Reach {
        own: &own,
        paths: &[ma("/ip4/10.0.0.99/tcp/4001")],
    };
    let chosen = DialScope::Mesh.choose(&[], addrs.clone(), &mut Vec::new(), &on_lan);
    assert_eq!(chosen.len(), MAX_DIAL_ADDRS);
    assert!(chosen[..2].contains(&addrs[10]) && chosen[..2].contains(&addrs[11]));
    assert!(
        chosen[2..6]
            .iter()
            .all(|a| a.to_string().starts_with("/ip4/10."))
    );
}

#[test]
fn tried_addresses_are_kept_for_a_bounded_number_of_peers_and_a_while() {
    let mut t = Tried::default();
    let now = Instant::now();
    let first = PeerId::random();
    t.of(first, now).push(ma("/ip4/127.0.0.1/tcp/1"));
    assert_eq!(t.of(first, now).len(), 1);
    assert!(
        t.of(first, now + TRIED_FOR).is_empty(),
        "forgotten after a while"
    );
    t.of(first, now).push(ma("/ip4/127.0.0.1/tcp/1"));
    for _ in 0..TRIED_PEERS {
        t.of(PeerId::random(), now);
    }
    assert_eq!(t.len(), TRIED_PEERS);
    assert!(t.of(first, now).is_empty(), "the oldest went first");
}

/// The mesh DHT's reach: a node with an address beyond loopback dials no loopback
/// address or DNS name a DHT answer names, and a private one only on a network it
/// has an address in or a connection to.
#[test]
fn the_mesh_dht_dials_only_what_the_node_reaches() {
    let own = [
        ma("/ip4/127.0.0.1/tcp/4001"),
        ma("/ip4/192.168.1.5/tcp/4001"),
    ];
    let paths = [ma("/ip4/10.77.0.1/tcp/4001")];
    let reach = Reach {
        own: &own,
        paths: &paths,
    };
    let offered = vec![
        ma("/ip4/127.0.0.1/tcp/6379"),
        ma("/dns4/localhost/tcp/6379"),
        ma("/dns4/metadata.internal/tcp/80"),
        ma("/ip4/10.99.0.1/tcp/22"),
        ma("/ip4/169.254.169.254/tcp/80"),
        ma("/ip4/192.168.1.20/tcp/4001"),
        ma("/ip4/10.77.0.9/tcp/4001"),
        ma("/ip4/203.0.113.9/tcp/4001"),
        ma("/dns4/node.example/tcp/4001"),
    ];
    let mut chosen = DialScope::Mesh.choose(&[], offered.clone(), &mut Vec::new(), &reach);
    chosen.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    // Not the name either: a public name may resolve to the node's loopback or LAN.
    let mut want = offered[5..8].to_vec();
    want.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    assert_eq!(chosen, want);
    // Routing-table entries are held to the same reach.
    let table = [ma("/ip4/127.0.0.1/tcp/6379")];
    assert!(
        DialScope::Mesh
            .choose(&table, Vec::new(), &mut Vec::new(), &reach)
            .is_empty()
    );
    // A node without an IP address yet dials none of them.
    let no_ip = Reach {
        own: &[],
        paths: &[],
    };
    assert!(
        DialScope::Mesh
            .choose(&[], offered[..3].to_vec(), &mut Vec::new(), &no_ip)
            .is_empty()
    );
    // A node on loopback alone (several on one host) dials loopback and names.
    assert_eq!(
        DialScope::Mesh
            .choose(
                &[],
                offered[..3].to_vec(),
                &mut Vec::new(),
                &Reach {
                    own: &loopback_node(),
                    paths: &[]
                }
            )
            .len(),
        3
    );
}

/// A name the node dialed itself (an explicit dial, a seed) stays in reach for the
/// DHT's later dials of that peer; peer-given names do not.
#[test]
fn a_name_the_node_dialed_itself_stays_in_reach() {
    use libp2p::core::ConnectedPoint;
    use libp2p::core::transport::PortUse;
    use libp2p::swarm::behaviour::{ConnectionEstablished, ExternalAddrConfirmed};

    let peer = PeerId::random();
    let me = PeerId::random();
    let mut k = ScopedKad::new(
        super::super::build::mesh_kad(me, super::super::KadMode::Server),
        DialScope::Mesh,
    );
    // A node beyond loopback: names are not in reach as such.
    let external = ma("/ip4/203.0.113.1/tcp/4001");
    k.on_swarm_event(FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed {
        addr: &external,
    }));
    let (seed, other) = (
        ma("/dns4/seed.example.org/tcp/4001"),
        ma("/dns4/127.0.0.1.nip.io/tcp/6379"),
    );
    k.add_address(&peer, seed.clone());
    k.add_address(&peer, other.clone());
    let dial = |k: &mut ScopedKad| {
        k.handle_pending_outbound_connection(
            ConnectionId::new_unchecked(7),
            Some(peer),
            &[],
            Endpoint::Dialer,
        )
        .unwrap()
    };
    assert!(dial(&mut k).is_empty(), "peer-given names are not dialed");
    // The node dials the seed by its name itself.
    let endpoint = ConnectedPoint::Dialer {
        address: seed.clone(),
        role_override: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    };
    k.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
        peer_id: peer,
        connection_id: ConnectionId::new_unchecked(1),
        endpoint: &endpoint,
        failed_addresses: &[],
        other_established: 0,
    }));
    let got = dial(&mut k);
    assert!(got.iter().any(|a| without_peer(a) == seed), "{got:?}");
    assert!(!got.iter().any(|a| without_peer(a) == other), "{got:?}");
}
