use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt::{Debug, Display, Formatter},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use either::Either;
use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::{ConnectedPoint, Endpoint, Multiaddr, multiaddr::Protocol, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm,
    NetworkBehaviour, NewExternalAddrCandidate, NotifyHandler, ToSwarm,
    behaviour::{ConnectionEstablished, ExternalAddrConfirmed, ExternalAddrExpired},
};
use rand::prelude::*;

use super::handler::{
    dial_back::{self, IncomingNonce},
    dial_request,
};
use crate::v2::{Nonce, protocol::DialRequest};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How many candidates we will test at most.
    pub(crate) max_candidates: usize,

    /// The interval at which we will attempt to confirm candidates as external addresses.
    pub(crate) probe_interval: Duration,

    /// Patched for libmesh: how many servers, each of its own network, must agree on a
    /// candidate before it is confirmed (or found unreachable).
    pub(crate) confirmations: usize,

    /// Patched for libmesh: how long a confirmation holds before the address is tested
    /// again (never, upstream).
    pub(crate) retest_after: Option<Duration>,
}

impl Config {
    pub fn with_max_candidates(self, max_candidates: usize) -> Self {
        Self {
            max_candidates,
            ..self
        }
    }

    pub fn with_probe_interval(self, probe_interval: Duration) -> Self {
        Self {
            probe_interval,
            ..self
        }
    }

    /// Patched for libmesh: a candidate is confirmed once servers of `confirmations`
    /// networks found it reachable, and found unreachable once servers of as many
    /// networks did not reach it (at least 1; 1 is upstream's behaviour, where one
    /// server's answer decides). A server's network is the IP address its connection
    /// was dialed to: an IPv4 /16 or an IPv6 /32 on the Internet, the whole address
    /// otherwise (a LAN, loopback, CGNAT), or the DNS name it was dialed by; a server
    /// reached through a relay has none and is not asked. No server (peer) is asked
    /// about an address twice, whatever connection it is on.
    pub fn with_confirmations(self, confirmations: usize) -> Self {
        Self {
            confirmations: confirmations.max(1),
            ..self
        }
    }

    /// Patched for libmesh: a confirmed address is tested again `after` its
    /// confirmation (as a new candidate: servers of as many networks), and stops being
    /// an external address (`ToSwarm::ExternalAddrExpired`) if they find it unreachable;
    /// it stays one while the test runs. Upstream never tested an address again, so an
    /// address the node had moved away from was advertised for the rest of the run.
    /// Addresses someone else confirmed (the application's own) are left alone.
    pub fn with_retest_after(self, after: Duration) -> Self {
        Self {
            retest_after: Some(after),
            ..self
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_candidates: 10,
            probe_interval: Duration::from_secs(5),
            confirmations: 1,
            retest_after: None,
        }
    }
}

pub struct Behaviour<R = rand::rngs::StdRng>
where
    R: rand::Rng + 'static,
{
    rng: R,
    config: Config,
    pending_events: VecDeque<
        ToSwarm<
            <Self as NetworkBehaviour>::ToSwarm,
            <<Self as NetworkBehaviour>::ConnectionHandler as ConnectionHandler>::FromBehaviour,
        >,
    >,
    address_candidates: HashMap<Multiaddr, AddressInfo>,
    next_tick: Delay,
    peer_info: HashMap<ConnectionId, ConnectionInfo>,
    /// Patched for libmesh: external addresses confirmed by someone else (the
    /// application), which the client never expires.
    confirmed_elsewhere: HashSet<Multiaddr>,
}

impl<R> NetworkBehaviour for Behaviour<R>
where
    R: rand::Rng + 'static,
{
    type ConnectionHandler = Either<dial_request::Handler, dial_back::Handler>;

    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<<Self as NetworkBehaviour>::ConnectionHandler, ConnectionDenied> {
        Ok(Either::Right(dial_back::Handler::new()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<<Self as NetworkBehaviour>::ConnectionHandler, ConnectionDenied> {
        Ok(Either::Left(dial_request::Handler::new()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr }) => {
                self.address_candidates
                    .entry(addr.clone())
                    .or_default()
                    .score += 1;
            }
            // Patched for libmesh: whose confirmation it is.
            FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr }) => {
                let ours = self
                    .address_candidates
                    .get(addr)
                    .is_some_and(|i| matches!(i.status, TestStatus::Confirmed(_)) || i.retesting);
                if !ours {
                    self.confirmed_elsewhere.insert(addr.clone());
                }
            }
            FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr }) => {
                self.confirmed_elsewhere.remove(addr);
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                // Patched for libmesh: where the connection goes (a server's network) or
                // came in (the transport a dial-back arrived over).
                let (network, inbound_local) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => (network_of(address), None),
                    ConnectedPoint::Listener { local_addr, .. } => {
                        (None, Some(local_addr.clone()))
                    }
                };
                self.peer_info.insert(
                    connection_id,
                    ConnectionInfo {
                        peer_id,
                        supports_autonat: false,
                        network,
                        inbound_local,
                    },
                );
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let info = self
                    .peer_info
                    .remove(&connection_id)
                    .expect("inconsistent state");

                if info.supports_autonat {
                    tracing::debug!(%peer_id, "Disconnected from AutoNAT server");
                }
                // Patched for libmesh: a test whose server's connection closed gets no
                // answer (upstream left it pending for good, never tested again).
                let now = Instant::now();
                for info in self.address_candidates.values_mut() {
                    if info.asked_now().is_some_and(|a| a.connection == connection_id) {
                        info.no_answer(now);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: <Self::ConnectionHandler as ConnectionHandler>::ToBehaviour,
    ) {
        let (nonce, outcome) = match event {
            Either::Right(IncomingNonce { nonce, sender }) => {
                let Some((addr, info)) = self
                    .address_candidates
                    .iter_mut()
                    .find(|(_, info)| info.is_pending_with_nonce(nonce))
                else {
                    let _ = sender.send(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("Received unexpected nonce: {nonce} from {peer_id}"),
                    )));
                    return;
                };
                // Patched for libmesh: a dial-back proves the tested address only if it
                // came in over that address's transport, directly. Upstream took the
                // nonce over any inbound connection: a server could send it over a
                // relayed connection, or over a direct one to another address of ours,
                // and have an address we are not at confirmed.
                let local = self
                    .peer_info
                    .get(&connection_id)
                    .and_then(|c| c.inbound_local.as_ref());
                if !local.is_some_and(|local| fits(addr, local)) {
                    tracing::debug!(
                        %peer_id,
                        %nonce,
                        tested = %addr,
                        over = ?local,
                        "Dial-back not over the tested address's transport"
                    );
                    let _ = sender.send(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "dial-back not over the tested address's transport",
                    )));
                    return;
                }
                let TestStatus::Pending(_, asked) = info.status else {
                    return;
                };
                info.status = TestStatus::Received(nonce, asked);
                tracing::debug!(%peer_id, %nonce, "Successful dial-back");

                let _ = sender.send(Ok(()));

                return;
            }
            Either::Left(dial_request::ToBehaviour::PeerHasServerSupport) => {
                self.peer_info
                    .get_mut(&connection_id)
                    .expect("inconsistent state")
                    .supports_autonat = true;
                return;
            }
            Either::Left(dial_request::ToBehaviour::TestOutcome { nonce, outcome }) => {
                (nonce, outcome)
            }
        };

        let confirmations = self.config.confirmations;
        let ((tested_addr, bytes_sent), result) = match outcome {
            Ok(address) => {
                let Some(info) = self
                    .address_candidates
                    .values_mut()
                    .find(|info| info.is_received_with_nonce(nonce))
                else {
                    tracing::warn!(
                        %peer_id,
                        %nonce,
                        "Server reported reachbility but we never received a dial-back"
                    );
                    // Patched for libmesh: upstream left the candidate pending for good
                    // (never tested again); now it goes to a server of another network.
                    if let Some(info) = self
                        .address_candidates
                        .values_mut()
                        .find(|i| i.is_pending_with_nonce(nonce))
                    {
                        info.no_answer(Instant::now());
                    }
                    return;
                };
                // Patched for libmesh: one server's word is not enough.
                let TestStatus::Received(_, asked) = info.status else {
                    return;
                };
                info.reachable_from.push(asked.server());
                if info.reachable_from.len() < confirmations {
                    tracing::debug!(%peer_id, addr = %address.0, "Reachable; asking another network");
                    info.status = TestStatus::Untested;
                    return;
                }
                info.status = TestStatus::Confirmed(Instant::now());
                info.retesting = false;

                self.pending_events
                    .push_back(ToSwarm::ExternalAddrConfirmed(address.0.clone()));

                (address, Ok(()))
            }
            Err(dial_request::Error::UnsupportedProtocol) => {
                self.peer_info
                    .get_mut(&connection_id)
                    .expect("inconsistent state")
                    .supports_autonat = false;

                self.reset_status_to(nonce, TestStatus::Untested); // Reset so it will be tried again.

                return;
            }
            Err(dial_request::Error::Io(e)) => {
                tracing::debug!(
                    %peer_id,
                    %nonce,
                    "Failed to complete AutoNAT probe: {e}"
                );

                self.reset_status_to(nonce, TestStatus::Untested); // Reset so it will be tried again.

                return;
            }
            Err(dial_request::Error::AddressNotReachable {
                address,
                bytes_sent,
                error,
            }) => {
                // Patched for libmesh: as many networks must agree that it is not.
                let Some((candidate, info)) = self.address_candidates.iter_mut().find(|(_, i)| {
                    i.is_pending_with_nonce(nonce) || i.is_received_with_nonce(nonce)
                }) else {
                    return;
                };
                let (TestStatus::Pending(_, asked) | TestStatus::Received(_, asked)) = info.status
                else {
                    return;
                };
                info.unreachable_from.push(asked.server());
                if info.unreachable_from.len() < confirmations {
                    tracing::debug!(%peer_id, addr = %address, "Not reachable; asking another network");
                    info.status = TestStatus::Untested;
                    return;
                }
                info.status = TestStatus::Failed;
                // Patched for libmesh: a confirmed address tested again and found
                // unreachable is no longer an external address (unless someone else
                // confirmed it too).
                if std::mem::take(&mut info.retesting)
                    && !self.confirmed_elsewhere.contains(candidate)
                {
                    self.pending_events
                        .push_back(ToSwarm::ExternalAddrExpired(candidate.clone()));
                }

                ((address, bytes_sent), Err(error))
            }
        };

        self.pending_events.push_back(ToSwarm::GenerateEvent(Event {
            tested_addr,
            bytes_sent,
            server: peer_id,
            result: result.map_err(|e| Error { inner: e }),
        }));
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, <Self::ConnectionHandler as ConnectionHandler>::FromBehaviour>>
    {
        loop {
            if let Some(event) = self.pending_events.pop_front() {
                return Poll::Ready(event);
            }

            if self.next_tick.poll_unpin(cx).is_ready() {
                self.next_tick.reset(self.config.probe_interval);

                let now = Instant::now();
                self.retest_confirmed(now);
                self.end_overdue_tests(now);
                self.issue_dial_requests_for_untested_candidates();
                continue;
            }

            return Poll::Pending;
        }
    }
}

impl<R> Behaviour<R>
where
    R: rand::Rng + 'static,
{
    pub fn new(rng: R, config: Config) -> Self {
        Self {
            rng,
            next_tick: Delay::new(config.probe_interval),
            config,
            pending_events: VecDeque::new(),
            address_candidates: HashMap::new(),
            peer_info: HashMap::new(),
            confirmed_elsewhere: HashSet::new(),
        }
    }

    /// Patched for libmesh: tests in flight for longer than [`TEST_DEADLINE`] get no
    /// answer (a server's handler that dropped the request, say).
    fn end_overdue_tests(&mut self, now: Instant) {
        for info in self.address_candidates.values_mut() {
            if info
                .asked_now()
                .is_some_and(|a| now.saturating_duration_since(a.at) >= TEST_DEADLINE)
            {
                info.no_answer(now);
            }
        }
    }

    /// Patched for libmesh: confirmations older than [`Config::with_retest_after`] go
    /// back to the untested candidates, their servers' answers forgotten.
    fn retest_confirmed(&mut self, now: Instant) {
        let Some(after) = self.config.retest_after else {
            return;
        };
        for (addr, info) in &mut self.address_candidates {
            let TestStatus::Confirmed(at) = info.status else {
                continue;
            };
            if now.saturating_duration_since(at) < after {
                continue;
            }
            tracing::debug!(%addr, "Confirmation due for a new test");
            info.status = TestStatus::Untested;
            info.retesting = true;
            info.reachable_from.clear();
            info.unreachable_from.clear();
            info.ignored_from.clear();
        }
    }

    /// Issues dial requests to random AutoNAT servers for the most frequently reported, untested
    /// candidates.
    ///
    /// In the current implementation, we only send a single address to each AutoNAT server.
    /// This spreads our candidates out across all servers we are connected to which should give us
    /// pretty fast feedback on all of them.
    ///
    /// Patched for libmesh: each to a server of a network (and a peer) not asked about
    /// it yet; candidates with none left wait, without holding the places of the
    /// others (at most `max_candidates` requests a tick).
    fn issue_dial_requests_for_untested_candidates(&mut self) {
        let mut sent = 0;
        for addr in self.untested_candidates() {
            if sent >= self.config.max_candidates {
                break;
            }
            let asked = self
                .address_candidates
                .get(&addr)
                .map(AddressInfo::asked)
                .unwrap_or_default();
            let Some((conn_id, peer_id, network)) = self.random_autonat_server(&asked) else {
                tracing::debug!(%addr, "Not connected to an AutoNAT server of a network not asked yet");
                continue;
            };

            let nonce = self.rng.random();
            let Some(info) = self.address_candidates.get_mut(&addr) else {
                continue;
            };
            info.status = TestStatus::Pending(
                nonce,
                Asked {
                    network,
                    peer: peer_id,
                    connection: conn_id,
                    at: Instant::now(),
                },
            );
            sent += 1;

            self.pending_events.push_back(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(conn_id),
                event: Either::Left(DialRequest {
                    nonce,
                    addrs: vec![addr],
                }),
            });
        }
    }

    /// Returns all untested candidates, sorted by the frequency they were reported at.
    ///
    /// More frequently reported candidates are considered to more likely be external addresses and
    /// thus tested first.
    fn untested_candidates(&self) -> impl Iterator<Item = Multiaddr> + use<R> {
        let mut entries = self
            .address_candidates
            .iter()
            .filter(|(_, info)| info.status == TestStatus::Untested)
            .map(|(addr, info)| (addr.clone(), info.score))
            .collect::<Vec<_>>();

        entries.sort_unstable_by_key(|(_, score)| *score);

        if entries.is_empty() {
            tracing::debug!("No untested address candidates");
        }

        entries
            .into_iter()
            .rev() // `sort_unstable` is ascending
            .map(|(addr, _)| addr)
    }

    /// Chooses an active connection to one of our peers that reported support for the
    /// [`DIAL_REQUEST_PROTOCOL`](crate::v2::DIAL_REQUEST_PROTOCOL) protocol.
    ///
    /// Patched for libmesh: neither of a network nor a peer of `asked` (none but a
    /// direct connection's has a network).
    fn random_autonat_server(
        &mut self,
        asked: &[(Network, PeerId)],
    ) -> Option<(ConnectionId, PeerId, Network)> {
        let (conn_id, info, network) = self
            .peer_info
            .iter()
            .filter(|(_, info)| info.supports_autonat)
            .filter_map(|(id, info)| info.network.map(|n| (id, info, n)))
            .filter(|(_, info, n)| !asked.iter().any(|(an, ap)| an == n || *ap == info.peer_id))
            .choose(&mut self.rng)?;

        Some((*conn_id, info.peer_id, network))
    }

    fn reset_status_to(&mut self, nonce: Nonce, new_status: TestStatus) {
        let Some((_, info)) = self
            .address_candidates
            .iter_mut()
            .find(|(_, i)| i.is_pending_with_nonce(nonce) || i.is_received_with_nonce(nonce))
        else {
            return;
        };

        info.status = new_status;
    }

    // FIXME: We don't want test-only APIs in our public API.
    #[doc(hidden)]
    pub fn validate_addr(&mut self, addr: &Multiaddr) {
        if let Some(info) = self.address_candidates.get_mut(addr) {
            info.status = TestStatus::Confirmed(Instant::now());
        }
    }
}

impl Default for Behaviour<rand::rngs::StdRng> {
    fn default() -> Self {
        Self::new(rand::make_rng::<rand::rngs::StdRng>(), Config::default())
    }
}

impl Behaviour<rand::rngs::StdRng> {
    /// Patched for libmesh: a client with `config` and the default random source (the
    /// embedder need not depend on `rand` of the same version).
    pub fn with_config(config: Config) -> Self {
        Self::new(rand::make_rng::<rand::rngs::StdRng>(), config)
    }
}

pub struct Error {
    pub(crate) inner: dial_request::DialBackError,
}

impl Display for Error {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        Display::fmt(&self.inner, f)
    }
}

impl Debug for Error {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(&self.inner, f)
    }
}

#[derive(Debug)]
pub struct Event {
    /// The address that was selected for testing.
    pub tested_addr: Multiaddr,
    /// The amount of data that was sent to the server.
    /// Is 0 if it wasn't necessary to send any data.
    /// Otherwise it's a number between 30.000 and 100.000.
    pub bytes_sent: usize,
    /// The peer id of the server that was selected for testing.
    pub server: PeerId,
    /// The result of the test. If the test was successful, this is `Ok(())`.
    /// Otherwise it's an error.
    pub result: Result<(), Error>,
}

struct ConnectionInfo {
    peer_id: PeerId,
    supports_autonat: bool,
    /// Patched for libmesh: the network of the peer an outbound direct connection goes
    /// to (servers are asked over those alone).
    network: Option<Network>,
    /// Patched for libmesh: the address an inbound connection came in on.
    inbound_local: Option<Multiaddr>,
}

/// Patched for libmesh: tests of a candidate that got no answer we could take (a
/// "reachable" without a dial-back taken, a server gone, a test past its deadline)
/// before it is given up (a confirmation being tested again is kept, until its next
/// test).
const MAX_IGNORED: usize = 4;

/// Patched for libmesh: how long a test may stay in flight.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Patched for libmesh: the server a test in flight went to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Asked {
    network: Network,
    peer: PeerId,
    connection: ConnectionId,
    at: Instant,
}

impl Asked {
    fn server(self) -> (Network, PeerId) {
        (self.network, self.peer)
    }
}

#[derive(Clone, Default)]
struct AddressInfo {
    score: usize,
    status: TestStatus,
    /// Patched for libmesh: the networks of the servers that found it reachable, found
    /// it unreachable, said it was reachable without dialing back.
    reachable_from: Vec<(Network, PeerId)>,
    unreachable_from: Vec<(Network, PeerId)>,
    ignored_from: Vec<(Network, PeerId)>,
    /// Patched for libmesh: confirmed before and being tested again.
    retesting: bool,
}

impl AddressInfo {
    fn is_pending_with_nonce(&self, nonce: Nonce) -> bool {
        match self.status {
            TestStatus::Pending(c, _) => c == nonce,
            _ => false,
        }
    }

    fn is_received_with_nonce(&self, nonce: Nonce) -> bool {
        match self.status {
            TestStatus::Received(c, _) => c == nonce,
            _ => false,
        }
    }

    /// Patched for libmesh: every server (network and peer) asked about it so far.
    fn asked(&self) -> Vec<(Network, PeerId)> {
        let mut asked = self.reachable_from.clone();
        asked.extend(&self.unreachable_from);
        asked.extend(&self.ignored_from);
        asked
    }

    /// Patched for libmesh: the server of the test in flight, if one is.
    fn asked_now(&self) -> Option<Asked> {
        match self.status {
            TestStatus::Pending(_, a) | TestStatus::Received(_, a) => Some(a),
            _ => None,
        }
    }

    /// Patched for libmesh: the test in flight got no answer we could take; its
    /// server is not asked about this address again. After [`MAX_IGNORED`] such, a
    /// candidate is given up, and a confirmation being tested again stands until its
    /// next test.
    fn no_answer(&mut self, now: Instant) {
        let Some(asked) = self.asked_now() else {
            return;
        };
        self.ignored_from.push(asked.server());
        self.status = if self.ignored_from.len() < MAX_IGNORED {
            TestStatus::Untested
        } else if std::mem::take(&mut self.retesting) {
            self.reachable_from.clear();
            self.unreachable_from.clear();
            self.ignored_from.clear();
            TestStatus::Confirmed(now)
        } else {
            TestStatus::Failed
        };
    }
}

#[derive(Clone, Copy, Default, PartialEq)]
enum TestStatus {
    #[default]
    Untested,
    /// Patched for libmesh: with the server asked.
    Pending(Nonce, Asked),
    Failed,
    Received(Nonce, Asked),
    /// Patched for libmesh: reachable, as enough networks found, since then (upstream
    /// kept `Received`).
    Confirmed(Instant),
}

/// Patched for libmesh: the network a server's connection goes to, as
/// [`Config::with_confirmations`] counts them: an IPv4 /16 or an IPv6 /32 of an Internet
/// address, the whole address otherwise, the name of a DNS address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Network {
    V4(u32),
    V6(u128),
    /// Dialed by a DNS name (a seed, a bootstrap node): one network per name.
    Name(u64),
}

/// Patched for libmesh: the network of a connection dialed to `addr`; none through a
/// relay or without an IP address or DNS name.
fn network_of(addr: &Multiaddr) -> Option<Network> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let v4 = |ip: std::net::Ipv4Addr| {
        let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64;
        let local = ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_unspecified()
            || shared;
        let bits = u32::from(ip);
        Network::V4(if local { bits } else { bits & 0xffff_0000 })
    };
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(v4(ip)),
        Protocol::Dns(name)
        | Protocol::Dns4(name)
        | Protocol::Dns6(name)
        | Protocol::Dnsaddr(name) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.to_ascii_lowercase().trim_end_matches('.').hash(&mut h);
            Some(Network::Name(h.finish()))
        }
        Protocol::Ip6(ip) => {
            if let Some(mapped) = ip.to_ipv4_mapped() {
                return Some(v4(mapped));
            }
            let bits = u128::from(ip);
            let local = ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80;
            Some(Network::V6(if local { bits } else { bits & (0xffff_ffff << 96) }))
        }
        _ => None,
    }
}

/// Patched for libmesh: whether a dial-back that came in on `local` can prove `tested`:
/// the same protocols (IP version, transport, encapsulations) apart from the values,
/// and not through a relay.
fn fits(tested: &Multiaddr, local: &Multiaddr) -> bool {
    let shape = |a: &Multiaddr| {
        a.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_) | Protocol::Certhash(_)))
            .map(|p| p.tag())
            .collect::<Vec<_>>()
    };
    !local.iter().any(|p| matches!(p, Protocol::P2pCircuit)) && shape(tested) == shape(local)
}
