//! libp2p's connection caps and the per-network shares of inbound connections, as one
//! behaviour: the global caps on every connection, the per-peer cap on every connection
//! but our AutoNAT server's dial-backs ([`DialBacks`]), and [`IpShares`] on inbound
//! ones. When the node holds its inbound cap, a newcomer from a smaller network group
//! is let in and the connection [`IpShares`] names is closed for it.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, connection_limits};

use super::dial_back::DialBacks;
use super::ip_shares::{IpCaps, IpShares};

/// libp2p's connection caps: the global ones on every connection, the per-peer one on
/// every connection but our AutoNAT dial-backs; and the per-network shares of inbound
/// connections.
pub struct Limits {
    global: connection_limits::Behaviour,
    per_peer: connection_limits::Behaviour,
    ips: IpShares,
    dial_backs: DialBacks,
    /// The connection last let in at the inbound cap and the one to give way to it once
    /// every behaviour has let it in (its `ConnectionEstablished`): a newcomer another
    /// behaviour denies (a blocked peer) closes nothing.
    giving_way: Option<(ConnectionId, ConnectionId)>,
    /// Connections that gave way, to close (at most one per connection let in, drained
    /// at every poll).
    evicted: VecDeque<(PeerId, ConnectionId)>,
}

impl Limits {
    /// `limits` (its per-peer cap taken out and applied as `max_per_peer`), exempting
    /// `dial_backs` from the per-peer cap; `ips`, the shares of one network.
    pub fn new(
        limits: connection_limits::ConnectionLimits,
        max_per_peer: u32,
        ips: IpCaps,
        dial_backs: DialBacks,
    ) -> Self {
        Limits {
            global: connection_limits::Behaviour::new(limits.with_max_established_per_peer(None)),
            per_peer: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(max_per_peer)),
            ),
            ips: IpShares::new(ips),
            dial_backs,
            giving_way: None,
            evicted: VecDeque::new(),
        }
    }
}

impl NetworkBehaviour for Limits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.global
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)?;
        self.per_peer
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)?;
        self.ips
            .pending(connection_id, local_addr, remote_addr)
            .map_err(|e| {
                tracing::debug!(%remote_addr, "inbound connection refused: {e}");
                ConnectionDenied::new(e)
            })
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let gives_way = self.ips.check_established(remote_addr).map_err(|e| {
            tracing::debug!(%peer, %remote_addr, "inbound connection refused: {e}");
            ConnectionDenied::new(e)
        })?;
        // A newcomer another connection gives way to does not add to the total (that
        // one closes for it): with outbound and relayed connections filling the rest of
        // `max_established`, the global cap refused it and nobody gave way.
        if gives_way.is_none() {
            self.global.handle_established_inbound_connection(
                connection_id,
                peer,
                local_addr,
                remote_addr,
            )?;
        }
        let handler = self.per_peer.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        self.giving_way = gives_way.map(|victim| (connection_id, victim));
        Ok(handler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.global.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if self.dial_backs.contains(connection_id) {
            return Ok(vec![]);
        }
        self.per_peer.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.global.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        if self.dial_backs.contains(connection_id) {
            return Ok(dummy::ConnectionHandler);
        }
        self.per_peer.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.global.on_swarm_event(event);
        self.per_peer.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let inbound_from = match e.endpoint {
                    libp2p::core::ConnectedPoint::Listener { send_back_addr, .. } => {
                        Some(send_back_addr)
                    }
                    libp2p::core::ConnectedPoint::Dialer { .. } => None,
                };
                if let Some((_, victim)) = self
                    .giving_way
                    .take_if(|(newcomer, _)| *newcomer == e.connection_id)
                    && let Some(held_by) = self.ips.evict(victim)
                {
                    tracing::debug!(peer = %e.peer_id, evicted = %held_by, "inbound cap: a connection of the largest network group closes for a newcomer");
                    self.evicted.push_back((held_by, victim));
                }
                self.ips
                    .established(e.connection_id, e.peer_id, inbound_from);
            }
            FromSwarm::ListenFailure(f) => self.ips.failed(f.connection_id),
            FromSwarm::ConnectionClosed(c) => self.ips.closed(c.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.evicted.pop_front() {
            Some((peer_id, id)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_backs_pass_the_per_peer_cap_other_connections_do_not() {
        use libp2p::core::ConnectedPoint;
        use libp2p::swarm::behaviour::ConnectionEstablished;

        let dial_backs = DialBacks::default();
        let mut limits = Limits::new(
            connection_limits::ConnectionLimits::default().with_max_established(Some(3)),
            1,
            IpCaps {
                max_pending: 8,
                max_established: 64,
                max_pending_webrtc: 32,
                max_pending_quic: 32,
                max_pending_relayed: 32,
                max_pending_circuits: 64,
                max_pending_group: 8,
                max_inbound: 64,
            },
            dial_backs.clone(),
        );
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let endpoint = ConnectedPoint::Dialer {
            address: addr.clone(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let establish = |limits: &mut Limits, id: ConnectionId| {
            limits.handle_pending_outbound_connection(
                id,
                Some(peer),
                std::slice::from_ref(&addr),
                Endpoint::Dialer,
            )?;
            limits.handle_established_outbound_connection(
                id,
                peer,
                &addr,
                Endpoint::Dialer,
                PortUse::New,
            )?;
            limits.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
            Ok::<_, ConnectionDenied>(())
        };
        let id = |n| ConnectionId::new_unchecked(n);
        assert!(establish(&mut limits, id(1)).is_ok());
        // The peer is at its cap of one: another connection is refused...
        assert!(establish(&mut limits, id(2)).is_err());
        // ...but a dial-back of our AutoNAT server is not.
        dial_backs.lock().insert(id(3), peer);
        assert!(establish(&mut limits, id(3)).is_ok());
        // The global cap (3 established) still applies to dial-backs.
        dial_backs.lock().insert(id(4), peer);
        assert!(establish(&mut limits, id(4)).is_ok());
        dial_backs.lock().insert(id(5), peer);
        assert!(establish(&mut limits, id(5)).is_err());
    }

    #[test]
    fn a_newcomer_of_another_group_gets_in_when_outbound_fills_the_rest() {
        use libp2p::core::ConnectedPoint;
        use libp2p::swarm::behaviour::ConnectionEstablished;

        // Four connections in all, three of them inbound at most.
        let mut limits = Limits::new(
            connection_limits::ConnectionLimits::default().with_max_established(Some(4)),
            4,
            IpCaps {
                max_pending: 8,
                max_established: 8,
                max_pending_webrtc: 8,
                max_pending_quic: 8,
                max_pending_relayed: 8,
                max_pending_circuits: 16,
                max_pending_group: 8,
                max_inbound: 3,
            },
            DialBacks::default(),
        );
        let local: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        let inbound = |limits: &mut Limits, id: usize, remote: &str| {
            let id = ConnectionId::new_unchecked(id);
            let remote: Multiaddr = remote.parse().unwrap();
            let peer = PeerId::random();
            limits.handle_pending_inbound_connection(id, &local, &remote)?;
            limits.handle_established_inbound_connection(id, peer, &local, &remote)?;
            let endpoint = ConnectedPoint::Listener {
                local_addr: local.clone(),
                send_back_addr: remote.clone(),
            };
            limits.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
            Ok::<_, ConnectionDenied>(())
        };
        for n in 1..=3 {
            inbound(&mut limits, n, &format!("/ip4/203.0.113.{n}/tcp/1")).unwrap();
        }
        // One connection of ours fills the total.
        let out = ConnectionId::new_unchecked(10);
        let addr: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let endpoint = ConnectedPoint::Dialer {
            address: addr.clone(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        limits.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: PeerId::random(),
            connection_id: out,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        // The full group's fourth is refused; a peer of another group gets in and the
        // full group's newest is closed for it.
        assert!(inbound(&mut limits, 4, "/ip4/203.0.113.9/tcp/1").is_err());
        assert!(inbound(&mut limits, 5, "/ip4/198.51.100.1/tcp/1").is_ok());
        let closed: Vec<ConnectionId> = limits.evicted.iter().map(|(_, id)| *id).collect();
        assert_eq!(closed, vec![ConnectionId::new_unchecked(3)]);
    }
}
