//! AutoNAT v2 dial-backs: the connection our AutoNAT server opens to test a client's
//! address is closed as soon as the test on it is over, and it does not count towards
//! the per-peer connection cap.
//!
//! The server tests an address by dialing it on a new connection (a new port, so that
//! the client's NAT cannot take it for a reply). libp2p leaves that connection open,
//! and every other component keeps it alive, so each test used to leave one more
//! connection to the client behind. With the per-peer cap (`limits.max_per_peer`, 4)
//! two nodes testing each other soon reached it, and then the next dial-back was
//! refused by our own cap: the client was told its address is unreachable, a verdict
//! AutoNAT v2 never revisits (a public node got a `private` address). So:
//!
//! - [`AutonatServer`] remembers the connections it dials for a test ([`DialBacks`],
//!   bounded) and closes each once its dial-back handler reported;
//! - `limits::Limits` applies libp2p's connection caps, and the per-peer cap to every
//!   connection but those dial-backs (the global caps apply to them as to any other),
//!   and the per-network shares of inbound connections ([`IpShares`](super::ip_shares::IpShares)).
//!
//! It also rate-limits the tests: libp2p's server runs every test a client asks for (up
//! to 10 at once per connection, over as many connections as the caps allow), and each
//! is a dial we make. A test beyond [`TESTS_PER_CLIENT`] (per client network: IPv4
//! address, IPv6 /64, or peer id without one) or [`TESTS_OVERALL`] is dropped before the
//! dial: the server answers it as an internal error, which libp2p's client takes as "no
//! verdict" and asks again later (possibly of another server), never as "unreachable".
//! And a dial-back goes only where the client could be (see
//! [`AutonatServer`]'s `handle_pending_outbound_connection`): libp2p's server dials
//! whatever address the client names.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use either::Either;
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, Timestamp, take_all};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::ListenAddresses;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, autonat};

use super::ip_scope::{ip_of, plausible};

/// Dial-backs in flight at most: a test asked for while this many are in flight is
/// refused before its dial (no verdict, as beyond the rates); one that still finds no
/// room (tests accepted together) has its dial denied. Untracked, a dial-back escaped
/// the scope check, which knows the client only through this table.
pub const MAX_DIAL_BACKS: usize = 64;

/// The connections our AutoNAT server opened for a test and not yet closed, shared by
/// [`AutonatServer`] (which records and closes them) and `limits::Limits` (which exempts them
/// from the per-peer cap).
#[derive(Debug, Clone, Default)]
pub struct DialBacks(Arc<Mutex<DialBackSet>>);

impl DialBacks {
    pub(crate) fn lock(&self) -> MutexGuard<'_, DialBackSet> {
        // The set holds no invariant a panic elsewhere could break.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn contains(&self, id: ConnectionId) -> bool {
        self.lock().contains(id)
    }

    /// Dial-backs in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Remembers dial-back `id` to `client`, as the server does for each of its own;
    /// `false` when [`MAX_DIAL_BACKS`] are in flight.
    pub fn record(&self, id: ConnectionId, client: PeerId) -> bool {
        self.lock().insert(id, client)
    }
}

/// The table behind [`DialBacks`]: connection → the client dialed.
#[derive(Debug, Default)]
pub struct DialBackSet {
    by_connection: HashMap<ConnectionId, PeerId>,
}

impl DialBackSet {
    /// Remembers dial-back `id` to `client`; `false` (not remembered) when
    /// [`MAX_DIAL_BACKS`] are in flight.
    pub fn insert(&mut self, id: ConnectionId, client: PeerId) -> bool {
        if self.by_connection.len() >= MAX_DIAL_BACKS && !self.by_connection.contains_key(&id) {
            return false;
        }
        self.by_connection.insert(id, client);
        true
    }

    /// Whether `id` is a dial-back in flight.
    pub fn contains(&self, id: ConnectionId) -> bool {
        self.by_connection.contains_key(&id)
    }

    /// The client dial-back `id` is for.
    pub fn client_of(&self, id: ConnectionId) -> Option<PeerId> {
        self.by_connection.get(&id).copied()
    }

    /// Forgets `id` (closed or failed); the client it was for.
    pub fn remove(&mut self, id: ConnectionId) -> Option<PeerId> {
        self.by_connection.remove(&id)
    }

    /// Dial-backs in flight.
    pub fn len(&self) -> usize {
        self.by_connection.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.by_connection.is_empty()
    }
}

type ServerInner = autonat::v2::server::Behaviour;

/// A dial-back refused for its address (see [`AutonatServer`]).
#[derive(Debug, thiserror::Error)]
#[error("AutoNAT dial-back to {0} refused: not where the client could be")]
pub struct OutOfScope(pub Multiaddr);

/// A dial-back denied because [`MAX_DIAL_BACKS`] were in flight.
#[derive(Debug, thiserror::Error)]
#[error("AutoNAT dial-back refused: {MAX_DIAL_BACKS} in flight")]
pub struct Untracked;

/// Tests one client network may have us run: 8 at once, then 12 a minute.
pub const TESTS_PER_CLIENT: RateLimit = RateLimit {
    burst: 8,
    per_second: 12.0 / 60.0,
};
/// Tests for all clients together: 32 at once, then 120 a minute.
pub const TESTS_OVERALL: RateLimit = RateLimit {
    burst: 32,
    per_second: 2.0,
};
/// Client networks whose test rate is followed at once.
const CLIENTS_TRACKED: usize = 1024;

/// The test rates: per client network and overall. Pure; `now` passed in.
#[derive(Debug)]
struct TestRates {
    per_client: RateLimiter<Source>,
    overall: RateLimiter<()>,
}

impl TestRates {
    fn new(per_client: RateLimit, overall: RateLimit) -> Self {
        TestRates {
            per_client: RateLimiter::new(per_client, CLIENTS_TRACKED),
            overall: RateLimiter::new(overall, 1),
        }
    }

    /// Whether `client` may have one more test at `now`. A test refused takes no token:
    /// a client refused because others spent the overall budget keeps its own.
    fn admit(&mut self, client: &Source, now: &Timestamp) -> bool {
        take_all(
            now.instant().timestamp_millis(),
            &mut [
                &mut self.per_client.charge(client),
                &mut self.overall.charge(&()),
            ],
        )
        .is_ok()
    }
}

/// [`autonat::v2::server::Behaviour`] that closes each dial-back connection once the
/// test on it is over.
pub struct AutonatServer {
    inner: ServerInner,
    dial_backs: DialBacks,
    closing: VecDeque<(PeerId, ConnectionId)>,
    /// Each open connection's peer and remote address (a client's network).
    remotes: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Our own listen addresses (the networks we are on).
    own: ListenAddresses,
    rates: TestRates,
    refused: u64,
    out_of_scope: u64,
    /// Dials of tests that found [`DialBacks`] full: denied when the swarm asks.
    untracked: std::collections::HashSet<ConnectionId>,
    /// Tests accepted whose dial the server has not asked for yet: they count against
    /// [`MAX_DIAL_BACKS`] with those in flight, so a test is refused (no verdict) rather
    /// than accepted and its dial denied (the client's verdict: unreachable).
    accepted: usize,
}

impl AutonatServer {
    /// The server, recording its dial-backs in `dial_backs`, with the default test
    /// rates.
    pub fn new(dial_backs: DialBacks) -> Self {
        AutonatServer::with_rates(dial_backs, TESTS_PER_CLIENT, TESTS_OVERALL)
    }

    /// The server with these test rates.
    pub fn with_rates(dial_backs: DialBacks, per_client: RateLimit, overall: RateLimit) -> Self {
        AutonatServer {
            inner: ServerInner::default(),
            dial_backs,
            closing: VecDeque::new(),
            remotes: HashMap::new(),
            own: ListenAddresses::default(),
            rates: TestRates::new(per_client, overall),
            refused: 0,
            out_of_scope: 0,
            untracked: std::collections::HashSet::new(),
            accepted: 0,
        }
    }

    /// Dial-backs refused for their address so far.
    pub fn out_of_scope(&self) -> u64 {
        self.out_of_scope
    }

    /// Whether a dial-back to `client` may go to `addr`: an IP address (a name could
    /// resolve to anything) where the client could plausibly be, seen from its
    /// connections to us (`ip_scope::plausible`): a public one; loopback only for a client
    /// connected over loopback; a private network only one we or its connection are on.
    /// libp2p's server dials whatever address the client names, so without this any
    /// peer could have us connect to our own loopback (`0.0.0.0` included), our LAN
    /// or, through the verdict, map them.
    fn dial_back_in_scope(&self, client: PeerId, addr: &Multiaddr) -> bool {
        let path: Vec<Multiaddr> = self
            .remotes
            .values()
            .filter(|(p, _)| *p == client)
            .map(|(_, a)| a.clone())
            .collect();
        let own: Vec<Multiaddr> = self.own.iter().cloned().collect();
        ip_of(addr).is_some_and(|ip| plausible(ip, &path, &own))
    }

    /// Tests refused so far: for the rates, or with [`MAX_DIAL_BACKS`] in flight.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether the client on `connection` may have one more test run now.
    fn may_test(&mut self, peer: PeerId, connection: ConnectionId) -> bool {
        if self.dial_backs.in_flight() + self.accepted >= MAX_DIAL_BACKS {
            self.refused += 1;
            tracing::debug!(%peer, "AutoNAT test refused: {MAX_DIAL_BACKS} dial-backs in flight");
            return false;
        }
        let client = Source::of_peer(peer, self.remotes.get(&connection).map(|(_, a)| a));
        let ok = self.rates.admit(&client, &Timestamp::now());
        if !ok {
            self.refused += 1;
            tracing::debug!(%peer, ?client, "AutoNAT test refused: over the test rate");
        }
        ok
    }
}

impl NetworkBehaviour for AutonatServer {
    type ConnectionHandler = <ServerInner as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = <ServerInner as NetworkBehaviour>::ToSwarm;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
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
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if self.untracked.remove(&connection_id) {
            tracing::debug!(
                ?connection_id,
                "AutoNAT dial-back denied: no room to track it"
            );
            return Err(ConnectionDenied::new(Untracked));
        }
        let client = self.dial_backs.lock().client_of(connection_id);
        if let Some(client) = client
            && let Some(addr) = addresses
                .iter()
                .find(|a| !self.dial_back_in_scope(client, a))
        {
            self.out_of_scope += 1;
            tracing::debug!(%client, %addr, "AutoNAT dial-back refused: out of the client's scope");
            return Err(ConnectionDenied::new(OutOfScope(addr.clone())));
        }
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.own.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(c) => {
                self.remotes.insert(
                    c.connection_id,
                    (c.peer_id, c.endpoint.get_remote_address().clone()),
                );
            }
            FromSwarm::ConnectionClosed(c) => {
                self.remotes.remove(&c.connection_id);
                self.dial_backs.lock().remove(c.connection_id);
            }
            FromSwarm::DialFailure(f) => {
                self.dial_backs.lock().remove(f.connection_id);
                self.untracked.remove(&f.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        // On a dial-back connection our handler is the dial-back one, whose only event
        // is the outcome of the test: the connection has done its job.
        if self.dial_backs.contains(connection_id) {
            self.closing.push_back((peer_id, connection_id));
        }
        // A client's request for a test, which the server would dial: dropped (and so
        // answered as an internal error) beyond the rates.
        if matches!(event, Either::Right(Either::Left(_))) {
            if !self.may_test(peer_id, connection_id) {
                return;
            }
            self.accepted += 1;
        }
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, id)) = self.closing.pop_front() {
            tracing::debug!(%peer_id, ?id, "AutoNAT dial-back done, closing it");
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            });
        }
        let polled = self.inner.poll(cx);
        if let Poll::Ready(ToSwarm::Dial { .. }) = &polled {
            self.accepted = self.accepted.saturating_sub(1);
        }
        if let Poll::Ready(ToSwarm::Dial { opts }) = &polled
            && let Some(client) = opts.get_peer_id()
            && !self.dial_backs.lock().insert(opts.connection_id(), client)
        {
            tracing::debug!(%client, "too many AutoNAT dial-backs in flight: this one is denied");
            self.untracked.insert(opts.connection_id());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_the_overall_rate_refuses_costs_the_client_nothing() {
        let mut rates = TestRates::new(TESTS_PER_CLIENT, TESTS_OVERALL);
        let now = Timestamp::now();
        let net = |i: u8| {
            Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(
                198, 51, 100, i,
            )))
        };
        // Others spend the overall budget, a few tests each.
        let spent = (0..16u8)
            .flat_map(|i| std::iter::repeat_n(i, 4))
            .filter(|i| rates.admit(&net(*i), &now))
            .count();
        assert_eq!(spent, TESTS_OVERALL.burst as usize);
        // An honest client asks twenty times meanwhile, refused each time.
        let honest = net(200);
        assert!((0..20).all(|_| !rates.admit(&honest, &now)));
        // Five seconds on, the overall budget has ten tokens again (its own bucket
        // would have refilled one): the honest client has its whole burst.
        let later = now.plus_secs(5);
        let granted = (0..20).filter(|_| rates.admit(&honest, &later)).count();
        assert_eq!(granted, TESTS_PER_CLIENT.burst as usize);
    }

    #[test]
    fn the_dial_back_table_is_bounded_and_forgets_closed_connections() {
        let mut t = DialBackSet::default();
        let client = PeerId::random();
        let ids: Vec<ConnectionId> = (0..MAX_DIAL_BACKS + 5)
            .map(|_| ConnectionId::new_unchecked(rand_id()))
            .collect();
        for id in &ids[..MAX_DIAL_BACKS] {
            assert!(t.insert(*id, client));
        }
        // Full: a new one is not remembered (it stays an ordinary connection), a
        // remembered one may be recorded again.
        assert!(!t.insert(ids[MAX_DIAL_BACKS], client));
        assert!(!t.contains(ids[MAX_DIAL_BACKS]));
        assert!(t.insert(ids[0], client));
        assert_eq!(t.len(), MAX_DIAL_BACKS);
        // A closed one makes room.
        assert_eq!(t.remove(ids[3]), Some(client));
        assert!(!t.contains(ids[3]));
        assert!(t.insert(ids[MAX_DIAL_BACKS], client));
        assert_eq!(t.remove(ids[3]), None);
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1 << 40);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
