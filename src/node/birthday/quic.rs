//! The QUIC endpoint on a probe port: a libp2p-quic transport of its own, used only
//! for the ports a birthday attempt registered in a [`ProbePorts`] table.
//!
//! Why a second instance: a libp2p-quic dial with port reuse leaves from a listener
//! chosen by a hash of the remote address among all listeners of the family, so next
//! to the node's own listeners the dial would leave from the probe port only part of
//! the time; here the probe listener is the instance's only one.
//!
//! [`ProbeQuic`] accepts `listen_on` only for a registered local address and `dial`
//! only to a registered remote address (anything else is `MultiaddrNotSupported`, so
//! in an `OrTransport` the node's own QUIC transport takes it). It never reports its
//! listen addresses (`NewAddress` and `AddressExpired` are dropped), so the swarm never
//! announces them, identify and Kademlia never see them. A listener whose entry
//! expired or was released is removed; libp2p-quic's `remove_listener` closes the
//! endpoint with every connection on it, so an entry with a connection does not expire
//! ([`ProbePorts::connected`]): it stays until [`ProbePorts::release`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, quic};

/// Probe listeners at once (one attempt runs at a time, [`super::MAX_CONCURRENT`]).
pub const MAX_PROBE_LISTENERS: usize = 2;
/// How long a registered port waits for its connection.
pub const PROBE_LISTEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    until: Instant,
    connected: bool,
    /// The connection on this port, once one came up.
    conn: Option<ConnectionId>,
}

/// The probe ports and their peers (pure; every call takes `now`).
#[derive(Debug, Default)]
pub struct Table {
    entries: Vec<Entry>,
}

/// Why a port was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// [`MAX_PROBE_LISTENERS`] ports are registered.
    #[error("{MAX_PROBE_LISTENERS} probe listeners already")]
    Full,
}

impl Table {
    /// Registers `local` (our probe socket's address) for a connection with
    /// `remote`, for [`PROBE_LISTEN_FOR`] unless it connects.
    pub fn open(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Result<(), Full> {
        self.expire(now);
        self.entries.retain(|e| e.local != local);
        if self.entries.len() >= MAX_PROBE_LISTENERS {
            return Err(Full::Full);
        }
        self.entries.push(Entry {
            local,
            remote,
            until: now + PROBE_LISTEN_FOR,
            connected: false,
            conn: None,
        });
        Ok(())
    }

    /// The entry of `local` has a connection: it no longer expires.
    pub fn connected(&mut self, local: SocketAddr) {
        for e in self.entries.iter_mut().filter(|e| e.local == local) {
            e.connected = true;
        }
    }

    /// A connection `cid` came up with `remote` (the dialed address, or the
    /// listener's send-back address): if `remote` is an entry's peer without a
    /// connection yet, the entry is connected through `cid` and its local address is
    /// returned. Any other connection is not a probe port's.
    pub fn established(&mut self, cid: ConnectionId, remote: SocketAddr) -> Option<SocketAddr> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.remote == remote && e.conn.is_none())?;
        e.connected = true;
        e.conn = Some(cid);
        Some(e.local)
    }

    /// Connection `cid` closed: the entry it connected is released (its listener is
    /// removed at the transport's next poll); returns its local address.
    pub fn closed(&mut self, cid: ConnectionId) -> Option<SocketAddr> {
        let local = self.entries.iter().find(|e| e.conn == Some(cid))?.local;
        self.release(local);
        Some(local)
    }

    /// Drops the entry of `local` (its connection closed, or the attempt ended).
    pub fn release(&mut self, local: SocketAddr) {
        self.entries.retain(|e| e.local != local);
    }

    /// Drops the entries past their time without a connection.
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|e| e.connected || now < e.until);
    }

    /// Whether `local` is registered.
    pub fn has_local(&self, local: SocketAddr) -> bool {
        self.entries.iter().any(|e| e.local == local)
    }

    /// Whether `remote` is some entry's peer.
    pub fn has_remote(&self, remote: SocketAddr) -> bool {
        self.entries.iter().any(|e| e.remote == remote)
    }

    /// Registered ports.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No port registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The table shared by the transport and the stage that registers ports.
#[derive(Debug, Clone, Default)]
pub struct ProbePorts(Arc<Mutex<Table>>);

impl ProbePorts {
    /// Runs `f` on the table (a poisoned lock still holds a consistent table: every
    /// change is one `Vec` operation).
    pub fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// [`Table::open`].
    pub fn open(&self, local: SocketAddr, remote: SocketAddr, now: Instant) -> Result<(), Full> {
        self.with(|t| t.open(local, remote, now))
    }

    /// [`Table::connected`].
    pub fn connected(&self, local: SocketAddr) {
        self.with(|t| t.connected(local));
    }

    /// [`Table::release`].
    pub fn release(&self, local: SocketAddr) {
        self.with(|t| t.release(local));
    }

    /// [`Table::established`] for a connection of the swarm with `remote`.
    pub fn established(&self, cid: ConnectionId, remote: &Multiaddr) -> Option<SocketAddr> {
        let remote = super::socket_addr(remote)?;
        self.with(|t| t.established(cid, remote))
    }

    /// [`Table::closed`]: called from `ConnectionClosed` for every connection.
    pub fn closed(&self, cid: ConnectionId) -> Option<SocketAddr> {
        self.with(|t| t.closed(cid))
    }
}

/// A libp2p-quic transport for the registered probe ports only.
pub struct ProbeQuic {
    inner: quic::tokio::Transport,
    ports: ProbePorts,
    listeners: Vec<(ListenerId, SocketAddr)>,
    tick: tokio::time::Interval,
}

impl ProbeQuic {
    /// A transport with `config` (the node's QUIC config: same identity) serving the
    /// ports registered in `ports`. Call it within a tokio runtime (its expiry timer,
    /// like libp2p-quic's own sockets, needs one).
    pub fn new(config: quic::Config, ports: ProbePorts) -> Self {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ProbeQuic {
            inner: quic::tokio::Transport::new(config),
            ports,
            listeners: Vec::new(),
            tick,
        }
    }

    /// Removes the listeners whose entry expired or was released.
    fn prune(&mut self, now: Instant) {
        let ports = self.ports.clone();
        let stale: Vec<ListenerId> = ports.with(|t| {
            t.expire(now);
            self.listeners
                .iter()
                .filter(|(_, local)| !t.has_local(*local))
                .map(|(id, _)| *id)
                .collect()
        });
        for id in stale {
            self.listeners.retain(|(l, _)| *l != id);
            self.inner.remove_listener(id);
        }
    }
}

impl Transport for ProbeQuic {
    type Output = <quic::tokio::Transport as Transport>::Output;
    type Error = <quic::tokio::Transport as Transport>::Error;
    type ListenerUpgrade = <quic::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = <quic::tokio::Transport as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let local = super::socket_addr(&addr)
            .filter(|a| self.ports.with(|t| t.has_local(*a)))
            .ok_or_else(|| TransportError::MultiaddrNotSupported(addr.clone()))?;
        if self.listeners.iter().any(|(_, l)| *l == local) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.listen_on(id, addr)?;
        self.listeners.push((id, local));
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.listeners.retain(|(l, _)| *l != id);
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        // Only from an open probe listener: without one libp2p-quic would dial from a
        // fresh port, which no NAT mapping matches.
        let remote = super::socket_addr(&addr).filter(|a| self.ports.with(|t| t.has_remote(*a)));
        if remote.is_none() || self.listeners.is_empty() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        while this.tick.poll_tick(cx).is_ready() {}
        this.prune(Instant::now());
        loop {
            match Pin::new(&mut this.inner).poll(cx) {
                // Never reported: the swarm would announce them.
                Poll::Ready(TransportEvent::NewAddress { .. })
                | Poll::Ready(TransportEvent::AddressExpired { .. }) => continue,
                Poll::Ready(TransportEvent::ListenerClosed {
                    listener_id,
                    reason,
                }) => {
                    this.listeners.retain(|(l, _)| *l != listener_id);
                    return Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id,
                        reason,
                    });
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
#[path = "quic_tests.rs"]
mod tests;
