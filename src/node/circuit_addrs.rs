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
//! `<relay address>/p2p/<relay>/p2p-circuit` reports that address (with `/p2p/<us>`) when
//! its first reservation is accepted, and of the addresses the relay names only those on
//! the same host (the IP address or DNS name the node was configured to reach the relay
//! at: the relay's other ports and transports), dialable, [`MAX_PER_RELAY`] in all. A
//! relay can no longer point the node's advertisement at anyone else's host, nor grow it
//! at its renewals. (The relay client also confirms the configured circuit as an
//! external address.) A reservation that ends closes the listener; a new reservation is a
//! new listener.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::addrs::dialable;

/// Addresses one circuit listener reports at most: the one it listens on and three the
/// relay names on the same host.
pub(crate) const MAX_PER_RELAY: usize = 4;

/// A transport (the relay client's) whose circuit listeners report only addresses on the
/// host they listen through (module docs).
#[derive(Debug)]
pub(crate) struct CircuitAddrs<T> {
    inner: T,
    local: PeerId,
    /// Circuit listeners: the address each listens on (with `/p2p/<us>`), and what it
    /// reported.
    listeners: HashMap<ListenerId, Circuit>,
    /// Addresses to report before polling `inner` again.
    queued: VecDeque<(ListenerId, Multiaddr)>,
}

#[derive(Debug)]
struct Circuit {
    own: Multiaddr,
    reported: Vec<Multiaddr>,
}

impl Circuit {
    /// What the listener reports for `named`, an address the relay named: the address it
    /// listens on first (once), then `named` if it is one already reported or, while
    /// there is room, on the same host and dialable.
    fn take(&mut self, named: Multiaddr) -> Vec<Multiaddr> {
        let mut out = Vec::new();
        if self.reported.is_empty() {
            self.reported.push(self.own.clone());
            out.push(self.own.clone());
        }
        if named == self.own {
            return out;
        }
        let same_host = named.iter().next() == self.own.iter().next();
        if self.reported.contains(&named) {
            out.push(named);
        } else if self.reported.len() < MAX_PER_RELAY && same_host && dialable(&named) {
            self.reported.push(named.clone());
            out.push(named);
        }
        out
    }
}

impl<T> CircuitAddrs<T> {
    /// Wraps `inner` for the node `local`.
    pub(crate) fn new(inner: T, local: PeerId) -> Self {
        Self {
            inner,
            local,
            listeners: HashMap::new(),
            queued: VecDeque::new(),
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
            self.listeners.insert(
                id,
                Circuit {
                    own: report,
                    reported: Vec::new(),
                },
            );
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
            if let Some((listener_id, listen_addr)) = this.queued.pop_front() {
                return Poll::Ready(TransportEvent::NewAddress {
                    listener_id,
                    listen_addr,
                });
            }
            let event = match Pin::new(&mut this.inner).poll(cx) {
                Poll::Ready(e) => e,
                Poll::Pending => return Poll::Pending,
            };
            match event {
                TransportEvent::NewAddress {
                    listener_id,
                    listen_addr,
                } => match this.listeners.get_mut(&listener_id) {
                    Some(circuit) => {
                        let take = circuit.take(listen_addr);
                        this.queued
                            .extend(take.into_iter().map(|a| (listener_id, a)));
                        continue;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn circuit(host: &str) -> Multiaddr {
        format!(
            "{host}/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit\
             /p2p/12D3KooWGjMCgWVvg4wVKw8wqyKaxwQyfZ9aYQ8ZQ3MrK3n3y3Yd"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn only_the_relays_own_host_and_at_most_four() {
        let own = circuit("/ip4/203.0.113.5/tcp/4001");
        let mut c = Circuit {
            own: own.clone(),
            reported: Vec::new(),
        };
        // Someone else's host: the listener reports its own address, nothing more.
        assert_eq!(
            c.take(circuit("/ip4/198.51.100.1/tcp/4001")),
            vec![own.clone()]
        );
        // The relay's own address again: nothing new.
        assert!(c.take(own.clone()).is_empty());
        // The relay's other transports on its host, up to four in all.
        let quic = circuit("/ip4/203.0.113.5/udp/4001/quic-v1");
        assert_eq!(c.take(quic.clone()), vec![quic.clone()]);
        // Not dialable by the node's transports.
        assert!(
            c.take(circuit("/ip4/203.0.113.5/udp/4002/webrtc-direct"))
                .is_empty()
        );
        for port in [4002, 4003] {
            let a = circuit(&format!("/ip4/203.0.113.5/tcp/{port}"));
            assert_eq!(c.take(a.clone()), vec![a]);
        }
        assert!(c.take(circuit("/ip4/203.0.113.5/tcp/4004")).is_empty());
        // A renewal naming an address reported already reports it again (the swarm
        // keeps one copy).
        assert_eq!(c.take(quic.clone()), vec![quic]);
        assert_eq!(c.reported.len(), MAX_PER_RELAY);
    }

    #[test]
    fn a_relay_reached_by_name_adds_only_that_name() {
        let own = circuit("/dns4/relay.example/tcp/4001");
        let mut c = Circuit {
            own: own.clone(),
            reported: Vec::new(),
        };
        assert_eq!(c.take(circuit("/ip4/203.0.113.5/tcp/4001")), vec![own]);
        let wss = circuit("/dns4/relay.example/tcp/443/tls/ws");
        assert_eq!(c.take(wss.clone()), vec![wss]);
        assert!(c.take(circuit("/dns4/other.example/tcp/4001")).is_empty());
    }
}
