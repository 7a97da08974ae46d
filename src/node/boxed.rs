//! The node's behaviour with its connection handler in an allocation of its own.
//!
//! The derived [`MeshBehaviour`](super::behaviour::MeshBehaviour) hands every connection
//! one handler made of all its components' handlers side by side, about 10 KB. The
//! swarm keeps a connection's handler by value inside the connection's task, and that
//! task is an `async fn` whose state holds the connection in more than one place (its
//! argument, the running connection, the handler that `close` hands back in two
//! branches). [`Boxed`] changes nothing but where the handler lives: the task holds a
//! pointer, the handler sits once on the heap. Measured: about 28 KB less per
//! connection; 200 idle swarm members in one process, holding some 2,960 connection
//! ends, went from 584 to 513 MiB (BENCHMARKS, *Swarms*, thirtieth session).
//!
//! Everything is passed through unchanged; [`Boxed`] dereferences to the behaviour it
//! wraps, so `swarm.behaviour_mut().gossipsub` reads as before.

use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::handler::{ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// `B` with its connection handler boxed ([`BoxedHandler`]).
#[derive(Debug)]
pub struct Boxed<B>(pub B);

impl<B> Deref for Boxed<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for Boxed<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

/// A connection handler in a box of its own; every call goes to it unchanged.
#[derive(Debug)]
pub struct BoxedHandler<H>(Box<H>);

impl<H: ConnectionHandler> ConnectionHandler for BoxedHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event)
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.0.on_connection_event(event)
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Boxed<B> {
    type ConnectionHandler = BoxedHandler<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(|h| BoxedHandler(Box::new(h)))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(
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
        self.0
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(|h| BoxedHandler(Box::new(h)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0
            .on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection's task holds of the node's handler is one pointer, whatever the
    /// size of the handler.
    #[test]
    fn the_task_holds_a_pointer_to_the_node_s_handler() {
        let whole = std::mem::size_of::<THandler<super::super::behaviour::MeshBehaviour>>();
        let boxed = std::mem::size_of::<THandler<Boxed<super::super::behaviour::MeshBehaviour>>>();
        assert!(whole > 4096, "the derived handler is {whole} bytes");
        assert_eq!(boxed, std::mem::size_of::<usize>());
    }
}
