//! The `transport/profile` a hello or ack reports: the transport the connection really
//! uses, read from its multiaddr. `transport/profile` is framing (outside the signing
//! input of `peer-handshake.v1`); its values are `tcp`, `quic`, `ws` and `wss`.
//!
//! - `/quic-v1` (or the draft `/quic`) is `quic`; `/wss`, or `/tls` followed by `/ws`
//!   (`/tls/ws`, `/tls/sni/<host>/ws`), is `wss`; `/ws` is `ws`; `/tcp` is `tcp`.
//! - A relayed connection (`/p2p-circuit`) reports the transport of this side's hop to
//!   the relay: only the part of the address before `/p2p-circuit` is read. The dialer
//!   finds it in the address it dialed (`/ip4/…/udp/…/quic-v1/p2p/<relay>/p2p-circuit/…`);
//!   the listener's remote address of a circuit is only the source's `/p2p/<peer>`, so it
//!   reads its own listen address on the relay (`…/p2p/<relay>/p2p-circuit`). The hop on
//!   the other side of the relay may differ, and that peer reports its own.
//! - An address that names none of these (the in-memory transport, `/webrtc-direct`,
//!   which the enum has no value for) is reported as `tcp`, what every hello said before
//!   the profile was derived.

use libp2p::core::ConnectedPoint;
use libp2p::core::Multiaddr;
use libp2p::core::multiaddr::Protocol;
use mesh_core::PeerHandshake;
use mesh_core::artifact::Artifact;

/// A `transport/profile` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportProfile {
    /// TCP (with noise and yamux).
    Tcp,
    /// QUIC v1.
    Quic,
    /// WebSocket without TLS.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl TransportProfile {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProfile::Tcp => "tcp",
            TransportProfile::Quic => "quic",
            TransportProfile::Ws => "ws",
            TransportProfile::Wss => "wss",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(TransportProfile::Tcp),
            "quic" => Some(TransportProfile::Quic),
            "ws" => Some(TransportProfile::Ws),
            "wss" => Some(TransportProfile::Wss),
            _ => None,
        }
    }

    /// The transport `addr` names, read up to its first `/p2p-circuit`; `None` when it
    /// names none of the four.
    pub fn of_address(addr: &Multiaddr) -> Option<Self> {
        let mut found = None;
        let mut tls = false;
        for p in addr.iter() {
            match p {
                Protocol::P2pCircuit => break,
                Protocol::QuicV1 | Protocol::Quic => return Some(TransportProfile::Quic),
                Protocol::Wss(_) => return Some(TransportProfile::Wss),
                Protocol::Tls => tls = true,
                Protocol::Ws(_) if tls => return Some(TransportProfile::Wss),
                Protocol::Ws(_) => return Some(TransportProfile::Ws),
                Protocol::Tcp(_) => found = Some(TransportProfile::Tcp),
                _ => {}
            }
        }
        found
    }

    /// The transport of a connection: the dialed address for the dialer; for the
    /// listener its own listen address, else the remote one (see the module docs for
    /// relayed connections); `tcp` when neither names one.
    pub fn of_endpoint(endpoint: &ConnectedPoint) -> Self {
        let found = match endpoint {
            ConnectedPoint::Dialer { address, .. } => Self::of_address(address),
            ConnectedPoint::Listener {
                local_addr,
                send_back_addr,
            } => Self::of_address(local_addr).or_else(|| Self::of_address(send_back_addr)),
        };
        found.unwrap_or(TransportProfile::Tcp)
    }

    /// The `transport/profile` a hello or ack carries, if it is one of the four.
    pub fn of_handshake(hs: &PeerHandshake) -> Option<Self> {
        hs.as_map()
            .get("transport/profile")
            .and_then(serde_json::Value::as_str)
            .and_then(Self::parse)
    }

    /// The transport of the first of `addrs` that names one (a guess made while
    /// dialing, before the swarm has picked an address), `tcp` when none does.
    pub fn guess<'a>(addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Self {
        addrs
            .into_iter()
            .find_map(Self::of_address)
            .unwrap_or(TransportProfile::Tcp)
    }
}

impl std::fmt::Display for TransportProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    fn of(a: &str) -> Option<&'static str> {
        TransportProfile::of_address(&a.parse().unwrap()).map(TransportProfile::as_str)
    }

    #[test]
    fn addresses_name_their_transport() {
        assert_eq!(of("/ip4/127.0.0.1/udp/4001/quic-v1"), Some("quic"));
        assert_eq!(of("/ip6/::1/udp/4001/quic"), Some("quic"));
        assert_eq!(of("/ip4/127.0.0.1/tcp/4001"), Some("tcp"));
        assert_eq!(of("/ip4/127.0.0.1/tcp/80/ws"), Some("ws"));
        assert_eq!(of("/dns4/example.org/tcp/443/wss"), Some("wss"));
        assert_eq!(of("/dns4/example.org/tcp/443/tls/ws"), Some("wss"));
        assert_eq!(
            of("/dns4/example.org/tcp/443/tls/sni/example.org/ws"),
            Some("wss")
        );
        assert_eq!(of("/memory/1234"), None);
        assert_eq!(of("/ip4/127.0.0.1/udp/4001/webrtc-direct"), None);
    }

    #[test]
    fn a_relayed_address_names_the_hop_to_the_relay() {
        let (relay, peer) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        assert_eq!(
            of(&format!(
                "/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{peer}"
            )),
            Some("quic")
        );
        // Nothing before the circuit: the listener's remote address of a circuit.
        assert_eq!(of(&format!("/p2p/{peer}")), None);
        // What follows /p2p-circuit is not this side's hop.
        assert_eq!(
            of(&format!("/p2p/{relay}/p2p-circuit/ip4/1.2.3.4/tcp/1/ws")),
            None
        );
        let listener = ConnectedPoint::Listener {
            local_addr: format!("/ip4/1.2.3.4/tcp/4001/ws/p2p/{relay}/p2p-circuit")
                .parse()
                .unwrap(),
            send_back_addr: format!("/p2p/{peer}").parse().unwrap(),
        };
        assert_eq!(
            TransportProfile::of_endpoint(&listener),
            TransportProfile::Ws
        );
    }

    #[test]
    fn endpoints_fall_back_to_tcp() {
        let dialer = ConnectedPoint::Dialer {
            address: "/memory/7".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        assert_eq!(
            TransportProfile::of_endpoint(&dialer),
            TransportProfile::Tcp
        );
        let quic = ConnectedPoint::Listener {
            local_addr: "/ip4/0.0.0.0/udp/9/quic-v1".parse().unwrap(),
            send_back_addr: "/ip4/127.0.0.1/udp/10/quic-v1".parse().unwrap(),
        };
        assert_eq!(TransportProfile::of_endpoint(&quic), TransportProfile::Quic);
        for p in [
            TransportProfile::Tcp,
            TransportProfile::Quic,
            TransportProfile::Ws,
            TransportProfile::Wss,
        ] {
            assert_eq!(TransportProfile::parse(p.as_str()), Some(p));
        }
        let addrs: Vec<Multiaddr> = vec![
            "/memory/1".parse().unwrap(),
            "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap(),
        ];
        assert_eq!(TransportProfile::guess(&addrs), TransportProfile::Quic);
        assert_eq!(TransportProfile::guess(&[]), TransportProfile::Tcp);
    }
}
