//! A macro for behaviours that wrap an inner `NetworkBehaviour` (usually a
//! request-response behaviour) and only intercept its events.
//!
//! It expands to paths under `::libp2p`, resolved in the crate that uses it, so mesh-core
//! itself stays free of a libp2p-swarm dependency.

/// Inside `impl NetworkBehaviour for …`, generates the methods that only pass through to
/// `self.$inner`: `handle_pending_inbound_connection`,
/// `handle_established_inbound_connection`, `handle_established_outbound_connection` and
/// `on_connection_handler_event` (`delegate_to_inner!(inner, connections_only)`: all
/// but the last, for a wrapper that screens the handler's events). The wrapper writes
/// `on_swarm_event`, `poll` and `handle_pending_outbound_connection` itself (they are
/// where wrappers differ). The wrapper's `ConnectionHandler` must be the inner
/// behaviour's.
#[macro_export]
macro_rules! delegate_to_inner {
    ($inner:ident) => {
        $crate::delegate_to_inner!($inner, connections_only);

        fn on_connection_handler_event(
            &mut self,
            peer_id: ::libp2p::PeerId,
            connection_id: ::libp2p::swarm::ConnectionId,
            event: ::libp2p::swarm::THandlerOutEvent<Self>,
        ) {
            self.$inner
                .on_connection_handler_event(peer_id, connection_id, event);
        }
    };
    // The three connection methods only: for a wrapper that screens the handler's
    // events itself.
    ($inner:ident, connections_only) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> ::std::result::Result<(), ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
        }

        fn handle_established_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> ::std::result::Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            addr: &::libp2p::Multiaddr,
            role_override: ::libp2p::core::Endpoint,
            port_use: ::libp2p::core::transport::PortUse,
        ) -> ::std::result::Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner.handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
        }
    };
}
