//! The addresses a reservation on a relay gives the node: the one it reserved through,
//! once.
//!
//! libp2p-relay's client reports, for every reservation and every renewal, each address
//! the relay put in its answer, with `/p2p-circuit/p2p/<us>` appended: addresses of the
//! relay's choosing, as many as fit in 4 KiB, renewed as often as the relay sets its
//! `expire`. The swarm keeps every one it is told of until the listener closes, identify
//! pushes each new one to every connected peer, and the node's advertisement (signed,
//! sent to its session peers, put in the DHT) takes them: a relay could make the node
//! advertise anyone's address, a new one at each renewal, and have third parties dial it.
//!
//! [`CircuitAddrs`] wraps the relay client's transport: a listener on
//! `<relay address>/p2p/<relay>/p2p-circuit` reports that address (with `/p2p/<us>`) once,
//! when its first reservation is accepted, and nothing the relay names. The relay
//! address is the one the node dialed the relay at (its configured address), which is
//! what go-libp2p's autorelay advertises too (the relay's known addresses, not the
//! reservation's). A renewal changes nothing; a reservation that ends closes the
//! listener, and a new reservation is a new listener.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// A transport (the relay client's) whose circuit listeners report only the address
/// they listen on (module docs).
#[derive(Debug)]
pub(crate) struct CircuitAddrs<T> {
    inner: T,
    local: PeerId,
    /// Circuit listeners: the address each reports, and whether it has.
    listeners: HashMap<ListenerId, (Multiaddr, bool)>,
}

impl<T> CircuitAddrs<T> {
    /// Wraps `inner` for the node `local`.
    pub(crate) fn new(inner: T, local: PeerId) -> Self {
        Self {
            inner,
            local,
            listeners: HashMap::new(),
        }
    }
}

/// The address a circuit listener on `addr` reports: `addr` with `/p2p/<local>`.
fn reported(addr: &Multiaddr, local: PeerId) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a.with(Protocol::P2p(local))
}

impl<T> Transport for CircuitAddrs<T>
where
    T: Transport + Unpin,
{
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let circuit = addr.iter().any(|p| p == Protocol::P2pCircuit);
        let report = reported(&addr, self.local);
        self.inner.listen_on(id, addr)?;
        if circuit {
            self.listeners.insert(id, (report, false));
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        loop {
            let event = match Pin::new(&mut this.inner).poll(cx) {
                Poll::Ready(e) => e,
                Poll::Pending => return Poll::Pending,
            };
            match event {
                TransportEvent::NewAddress {
                    listener_id,
                    listen_addr,
                } => match this.listeners.get_mut(&listener_id) {
                    // Reported already: a renewal, or another address of the relay's.
                    Some((_, true)) => continue,
                    Some((addr, told)) => {
                        *told = true;
                        return Poll::Ready(TransportEvent::NewAddress {
                            listener_id,
                            listen_addr: addr.clone(),
                        });
                    }
                    None => {
                        return Poll::Ready(TransportEvent::NewAddress {
                            listener_id,
                            listen_addr,
                        });
                    }
                },
                // The relay client never expires an address of a circuit listener; one
                // it did would be an address this wrapper never reported.
                TransportEvent::AddressExpired { listener_id, .. }
                    if this.listeners.contains_key(&listener_id) =>
                {
                    continue;
                }
                TransportEvent::ListenerClosed {
                    listener_id,
                    reason,
                } => {
                    this.listeners.remove(&listener_id);
                    return Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id,
                        reason,
                    });
                }
                other => return Poll::Ready(other),
            }
        }
    }
}
