//! libmesh's own Prometheus metrics: what the node's protocols did (sessions, adverts,
//! the mesh DHT's records, signaling, relay admission, discovery-key swarms, dropped
//! events) and each Kademlia DHT on its own (`dht="amino"` or `dht="mesh"`).
//!
//! Every family is named `libmesh_…` and every label value comes from a fixed set
//! (frozen error codes, frame kinds, states), never from what a peer chose, so a
//! hostile peer cannot grow the exposition. libp2p's own families (`libp2p_…`) are
//! registered by `libp2p::metrics::Metrics` next to these, except its Kademlia families:
//! it would mix both DHTs into one, so the node records the DHTs here instead and
//! [`encode`] leaves `libp2p_kad_…` out.

use libp2p::kad;
use libp2p::metrics::Registry;
use mesh_core::MeshError;
use mesh_core::families::FRAME_KINDS;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::api::Dht;

pub mod read_budget;

/// One label.
type L1 = [(&'static str, &'static str); 1];
/// Two labels.
type L2 = [(&'static str, &'static str); 2];
/// Three labels.
type L3 = [(&'static str, &'static str); 3];

/// The prefix libp2p-metrics gives its Kademlia families (left out by [`encode`]).
pub const LIBP2P_KAD_PREFIX: &str = "libp2p_kad_";

/// Who refused: this node (`local`) or the peer (`peer`).
fn by(by_peer: bool) -> &'static str {
    if by_peer { "peer" } else { "local" }
}

fn dht(d: Dht) -> &'static str {
    match d {
        Dht::Amino => "amino",
        Dht::Mesh => "mesh",
    }
}

fn code(e: &MeshError) -> &'static str {
    e.code.as_str()
}

/// A frame kind as a label: one of [`FRAME_KINDS`], else `other`.
fn frame_kind(kind: &str) -> &'static str {
    FRAME_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

fn duration_histogram() -> Histogram {
    // 0.05 s … 25.6 s: Kademlia queries run up to their timeout (60 s by default).
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

/// libmesh's metric families. Cheap to clone (each family is shared).
#[derive(Clone, Debug)]
pub struct Stats {
    sessions: Family<L1, Gauge>,
    session_events: Family<L1, Counter>,
    sessions_refused: Family<L2, Counter>,
    adverts: Gauge,
    adverts_stored: Family<L1, Counter>,
    adverts_refused: Family<L1, Counter>,
    dht_records_refused: Family<L2, Counter>,
    dht_queries: Family<L3, Counter>,
    dht_query_duration: Family<L2, Histogram, fn() -> Histogram>,
    dht_inbound: Family<L2, Counter>,
    dht_routing: Family<L2, Counter>,
    dht_peers: Family<L1, Gauge>,
    dht_records: Family<L1, Gauge>,
    signal_frames: Family<L2, Counter>,
    signal_forwarded: Counter,
    signal_refused: Family<L2, Counter>,
    relay_grants: Family<L1, Counter>,
    relay_denials: Family<L2, Counter>,
    relay_revocations: Counter,
    relay_answers: Family<L2, Counter>,
    swarms: Gauge,
    swarm_members: Gauge,
    autonat_candidates: Family<L1, Gauge>,
    autonat_tests_refused: Gauge,
    dial_addrs_refused: Gauge,
    events_dropped: Counter,
    traces_suppressed: Counter,
}

impl Stats {
    /// Registers the families under `libmesh_` in `registry`.
    pub fn new(registry: &mut Registry) -> Stats {
        let s = Stats {
            sessions: Family::default(),
            session_events: Family::default(),
            sessions_refused: Family::default(),
            adverts: Gauge::default(),
            adverts_stored: Family::default(),
            adverts_refused: Family::default(),
            dht_records_refused: Family::default(),
            dht_queries: Family::default(),
            dht_query_duration: Family::new_with_constructor(duration_histogram),
            dht_inbound: Family::default(),
            dht_routing: Family::default(),
            dht_peers: Family::default(),
            dht_records: Family::default(),
            signal_frames: Family::default(),
            signal_forwarded: Counter::default(),
            signal_refused: Family::default(),
            relay_grants: Family::default(),
            relay_denials: Family::default(),
            relay_revocations: Counter::default(),
            relay_answers: Family::default(),
            swarms: Gauge::default(),
            swarm_members: Gauge::default(),
            autonat_candidates: Family::default(),
            autonat_tests_refused: Gauge::default(),
            dial_addrs_refused: Gauge::default(),
            events_dropped: Counter::default(),
            traces_suppressed: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("libmesh");
        r.register(
            "sessions",
            "Mesh peers by governor state (state: hot, warm, cold, blocked; hot and warm peers hold a session)",
            s.sessions.clone(),
        );
        r.register(
            "session_events",
            "Session lifecycle events (event: established, closed, keepalive_lost)",
            s.session_events.clone(),
        );
        r.register(
            "sessions_refused",
            "Session handshakes refused, by error code and by whom (by: local, peer)",
            s.sessions_refused.clone(),
        );
        r.register(
            "adverts",
            "Advertisements held in the store",
            s.adverts.clone(),
        );
        r.register(
            "adverts_stored",
            "Advertisements stored (via: push, lookup, dht)",
            s.adverts_stored.clone(),
        );
        r.register(
            "adverts_refused",
            "Advertisements refused on /mesh/advert, by error code",
            s.adverts_refused.clone(),
        );
        r.register(
            "dht_records_refused",
            "DHT records refused, by DHT and error code",
            s.dht_records_refused.clone(),
        );
        r.register(
            "dht_queries",
            "Finished DHT queries (dht: amino, mesh; kind; outcome: ok, not_found, quorum_failed, timeout)",
            s.dht_queries.clone(),
        );
        r.register_with_unit(
            "dht_query_duration",
            "Duration of finished DHT queries, by DHT and kind",
            prometheus_client::registry::Unit::Seconds,
            s.dht_query_duration.clone(),
        );
        r.register(
            "dht_inbound_requests",
            "DHT requests served, by DHT and kind",
            s.dht_inbound.clone(),
        );
        r.register(
            "dht_routing_updates",
            "DHT routing table updates (action: added, updated, evicted)",
            s.dht_routing.clone(),
        );
        r.register(
            "dht_peers",
            "Peers in each DHT's routing table",
            s.dht_peers.clone(),
        );
        r.register(
            "dht_records",
            "Records held in each DHT's local store",
            s.dht_records.clone(),
        );
        r.register(
            "signal_frames",
            "Signaling frames of this node (direction: sent, received; kind)",
            s.signal_frames.clone(),
        );
        r.register(
            "signal_forwarded",
            "Signaling frames this node passed on as a host",
            s.signal_forwarded.clone(),
        );
        r.register(
            "signal_refused",
            "Signaling frames refused, by error code and by whom (by: local, peer)",
            s.signal_refused.clone(),
        );
        r.register(
            "relay_grants",
            "Relay admission grants issued by this relay (purpose: reservation, circuit)",
            s.relay_grants.clone(),
        );
        r.register(
            "relay_denials",
            "Relay denials by error code (stage: admission for a refused request, reservation or circuit for a relay request without a live grant)",
            s.relay_denials.clone(),
        );
        r.register(
            "relay_revocations",
            "Nodes whose relay grants were revoked",
            s.relay_revocations.clone(),
        );
        r.register(
            "relay_answers",
            "Answers of relays to this node's admission requests (outcome: granted, denied, unsupported, failed; code: the error code, none when granted or unsupported)",
            s.relay_answers.clone(),
        );
        r.register(
            "swarms",
            "Discovery-key swarms this node is in",
            s.swarms.clone(),
        );
        r.register(
            "swarm_members",
            "Members known in the discovery-key swarms this node is in (itself not counted)",
            s.swarm_members.clone(),
        );
        r.register(
            "autonat_candidates",
            "External address candidates made of what peers claim to observe (state: passed, the distinct ones handed to AutoNAT; refused, those the gate kept back)",
            s.autonat_candidates.clone(),
        );
        r.register(
            "autonat_tests_refused",
            "AutoNAT tests peers asked of this node's server and it refused for the test rate (no dial made)",
            s.autonat_tests_refused.clone(),
        );
        r.register(
            "dial_addrs_refused",
            "Addresses the node's behaviours named for dials and the dials did not take, for their destination's budget or the per-dial cap (dial_budget)",
            s.dial_addrs_refused.clone(),
        );
        r.register(
            "events_dropped",
            "Node events dropped because the application's queue was full",
            s.events_dropped.clone(),
        );
        r.register(
            "traces_suppressed",
            "Trace events of refused input not written: their source's trace budget (60, then one a second) was spent",
            s.traces_suppressed.clone(),
        );
        s
    }

    /// A session event.
    pub fn session(&self, e: &mesh_session::Event) {
        use mesh_session::Event as E;
        let event = match e {
            E::SessionEstablished { .. } => "established",
            E::SessionClosed { .. } => "closed",
            E::KeepaliveLost { .. } => "keepalive_lost",
            E::Rejected { error, by_peer, .. } => {
                self.sessions_refused
                    .get_or_create(&[("code", code(error)), ("by", by(*by_peer))])
                    .inc();
                return;
            }
            _ => return,
        };
        self.session_events.get_or_create(&[("event", event)]).inc();
    }

    /// An advertisement was stored, pushed by a peer (`push`), answered to our lookup
    /// (`lookup`) or put through the mesh DHT (`dht`).
    pub fn advert_stored(&self, via: &'static str) {
        self.adverts_stored.get_or_create(&[("via", via)]).inc();
    }

    /// An advertisement was refused on `/mesh/advert`.
    pub fn advert_refused(&self, error: &MeshError) {
        self.adverts_refused
            .get_or_create(&[("code", code(error))])
            .inc();
    }

    /// A record put to `d` was refused.
    pub fn dht_record_refused(&self, d: Dht, error: &MeshError) {
        self.dht_records_refused
            .get_or_create(&[("dht", dht(d)), ("code", code(error))])
            .inc();
    }

    /// A Kademlia event of DHT `d`.
    pub fn kad(&self, d: Dht, e: &kad::Event) {
        let d = dht(d);
        match e {
            kad::Event::OutboundQueryProgressed {
                result,
                stats,
                step,
                ..
            } if step.last => {
                let (kind, outcome) = query(result);
                self.dht_queries
                    .get_or_create(&[("dht", d), ("kind", kind), ("outcome", outcome)])
                    .inc();
                if let Some(t) = stats.duration() {
                    self.dht_query_duration
                        .get_or_create(&[("dht", d), ("kind", kind)])
                        .observe(t.as_secs_f64());
                }
            }
            kad::Event::InboundRequest { request } => {
                let kind = match request {
                    kad::InboundRequest::FindNode { .. } => "find_node",
                    kad::InboundRequest::GetProvider { .. } => "get_providers",
                    kad::InboundRequest::AddProvider { .. } => "add_provider",
                    kad::InboundRequest::GetRecord { .. } => "get_record",
                    kad::InboundRequest::PutRecord { .. } => "put_record",
                };
                self.dht_inbound
                    .get_or_create(&[("dht", d), ("kind", kind)])
                    .inc();
            }
            kad::Event::RoutingUpdated {
                is_new_peer,
                old_peer,
                ..
            } => {
                let action = if *is_new_peer { "added" } else { "updated" };
                self.dht_routing
                    .get_or_create(&[("dht", d), ("action", action)])
                    .inc();
                if old_peer.is_some() {
                    self.dht_routing
                        .get_or_create(&[("dht", d), ("action", "evicted")])
                        .inc();
                }
            }
            _ => {}
        }
    }

    /// A signaling frame this node handed to the signal behaviour.
    pub fn signal_sent(&self, kind: &str) {
        self.signal_frames
            .get_or_create(&[("direction", "sent"), ("kind", frame_kind(kind))])
            .inc();
    }

    /// An event of the signal behaviour.
    pub fn signal(&self, e: &mesh_signal::Event) {
        match e {
            mesh_signal::Event::Received { frame, .. } => {
                self.signal_frames
                    .get_or_create(&[
                        ("direction", "received"),
                        ("kind", frame_kind(frame.kind())),
                    ])
                    .inc();
            }
            mesh_signal::Event::Forwarded { .. } => {
                self.signal_forwarded.inc();
            }
            mesh_signal::Event::Refused { error, by_peer, .. } => {
                self.signal_refused
                    .get_or_create(&[("code", code(error)), ("by", by(*by_peer))])
                    .inc();
            }
            mesh_signal::Event::Delivered { .. } => {}
        }
    }

    /// An event of this node's relay server (admission side).
    pub fn relay(&self, e: &mesh_admission::server::Event) {
        use mesh_admission::server::Event as E;
        match e {
            E::Granted { grant, .. } => {
                let purpose = match grant.purpose() {
                    "circuit" => "circuit",
                    _ => "reservation",
                };
                self.relay_grants
                    .get_or_create(&[("purpose", purpose)])
                    .inc();
            }
            E::Admitted { what, .. } => {
                self.relay_grants
                    .get_or_create(&[("purpose", what.as_str())])
                    .inc();
            }
            E::Denied { error, .. } => {
                self.relay_denials
                    .get_or_create(&[("code", code(error)), ("stage", "admission")])
                    .inc();
            }
            E::Refused { what, error, .. } => {
                self.relay_denials
                    .get_or_create(&[("code", code(error)), ("stage", what.as_str())])
                    .inc();
            }
            E::Revoked { .. } => {
                self.relay_revocations.inc();
            }
            E::Relay(_) => {}
        }
    }

    /// A relay's answer to this node's admission request.
    pub fn relay_answer(&self, e: &mesh_admission::client::Event) {
        use mesh_admission::client::Event as E;
        let (outcome, code) = match e {
            E::Granted { .. } => ("granted", "none"),
            E::Denied { error, .. } => ("denied", code(error)),
            E::Unsupported { .. } => ("unsupported", "none"),
            E::Failed { error, .. } => ("failed", code(error)),
        };
        self.relay_answers
            .get_or_create(&[("outcome", outcome), ("code", code)])
            .inc();
    }

    /// An event for the application was dropped (queue full).
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// The counter of trace events not written for their source's budget (the trace
    /// budget increments it).
    pub(crate) fn traces_suppressed_counter(&self) -> Counter {
        self.traces_suppressed.clone()
    }

    /// Trace events not written for their source's budget, since start.
    pub fn traces_suppressed(&self) -> u64 {
        self.traces_suppressed.get()
    }

    /// The sampled figures, set on the node's tick.
    pub fn sample(&self, s: &Sample) {
        for (state, n) in [
            ("hot", s.hot),
            ("warm", s.warm),
            ("cold", s.cold),
            ("blocked", s.blocked),
        ] {
            self.sessions
                .get_or_create(&[("state", state)])
                .set(gauge(n));
        }
        for (d, peers, records) in [
            ("amino", s.amino_peers, s.amino_records),
            ("mesh", s.mesh_peers, s.mesh_records),
        ] {
            self.dht_peers
                .get_or_create(&[("dht", d)])
                .set(gauge(peers));
            self.dht_records
                .get_or_create(&[("dht", d)])
                .set(gauge(records));
        }
        self.adverts.set(gauge(s.adverts));
        self.swarms.set(gauge(s.swarms));
        self.swarm_members.set(gauge(s.swarm_members));
        for (state, n) in [("passed", s.autonat_passed), ("refused", s.autonat_refused)] {
            self.autonat_candidates
                .get_or_create(&[("state", state)])
                .set(gauge(n));
        }
        self.autonat_tests_refused
            .set(i64::try_from(s.autonat_tests_refused).unwrap_or(i64::MAX));
        self.dial_addrs_refused
            .set(i64::try_from(s.dial_addrs_refused).unwrap_or(i64::MAX));
    }
}

/// The figures [`Stats::sample`] sets (counted by the node on its tick).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Governor states.
    pub hot: usize,
    /// Governor states.
    pub warm: usize,
    /// Governor states.
    pub cold: usize,
    /// Governor states.
    pub blocked: usize,
    /// Amino routing table size.
    pub amino_peers: usize,
    /// Records in Amino's local store.
    pub amino_records: usize,
    /// Mesh-DHT routing table size.
    pub mesh_peers: usize,
    /// Records in the mesh DHT's local store.
    pub mesh_records: usize,
    /// Advertisements held.
    pub adverts: usize,
    /// Swarms joined.
    pub swarms: usize,
    /// Their members.
    pub swarm_members: usize,
    /// Distinct external address candidates handed to AutoNAT.
    pub autonat_passed: usize,
    /// Candidates the gate kept back.
    pub autonat_refused: usize,
    /// AutoNAT tests our server refused for the test rate.
    pub autonat_tests_refused: u64,
    /// Addresses behaviours named for dials that the dials did not take.
    pub dial_addrs_refused: u64,
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A finished query's kind and outcome.
fn query(r: &kad::QueryResult) -> (&'static str, &'static str) {
    use kad::QueryResult as Q;
    let timeout = "timeout";
    match r {
        Q::Bootstrap(r) => ("bootstrap", if r.is_ok() { "ok" } else { timeout }),
        Q::GetClosestPeers(r) => ("get_closest_peers", if r.is_ok() { "ok" } else { timeout }),
        Q::GetProviders(r) => ("get_providers", if r.is_ok() { "ok" } else { timeout }),
        Q::StartProviding(r) => ("start_providing", if r.is_ok() { "ok" } else { timeout }),
        Q::RepublishProvider(r) => ("republish_provider", if r.is_ok() { "ok" } else { timeout }),
        Q::GetRecord(r) => (
            "get_record",
            match r {
                Ok(_) => "ok",
                Err(kad::GetRecordError::NotFound { .. }) => "not_found",
                Err(kad::GetRecordError::Timeout { .. }) => timeout,
            },
        ),
        Q::PutRecord(r) => ("put_record", put_outcome(r)),
        Q::RepublishRecord(r) => ("republish_record", put_outcome(r)),
    }
}

fn put_outcome(r: &kad::PutRecordResult) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(kad::PutRecordError::QuorumFailed { .. }) => "quorum_failed",
        Err(kad::PutRecordError::Timeout { .. }) => "timeout",
    }
}

/// The Prometheus text of `registry` (OpenMetrics), without libp2p-metrics' Kademlia
/// families (the node records each DHT under `libmesh_dht_…` instead; libp2p's would
/// stay empty).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(without_families(&text, LIBP2P_KAD_PREFIX))
}

/// `text` (Prometheus text) without the families whose names start with `prefix`: their
/// `# HELP`, `# TYPE`, `# UNIT` lines and samples.
pub fn without_families(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let name = ["# HELP ", "# TYPE ", "# UNIT "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or(line);
        if !name.starts_with(prefix) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::ErrorCode;

    fn text(s: &Registry) -> String {
        encode(s).unwrap()
    }

    #[test]
    fn families_are_named_libmesh_and_labelled() {
        let mut r = Registry::default();
        let s = Stats::new(&mut r);
        s.advert_refused(&MeshError::new(ErrorCode::SigInvalid, "bad"));
        s.advert_stored("push");
        s.signal_sent("connect_request");
        s.signal_sent("made-up");
        s.event_dropped();
        s.sample(&Sample {
            hot: 2,
            mesh_peers: 3,
            autonat_refused: 4,
            autonat_tests_refused: 6,
            dial_addrs_refused: 7,
            ..Sample::default()
        });
        let t = text(&r);
        assert!(
            t.contains("libmesh_adverts_refused_total{code=\"E_SIG_INVALID\"} 1"),
            "{t}"
        );
        assert!(t.contains("libmesh_adverts_stored_total{via=\"push\"} 1"));
        assert!(t.contains(
            "libmesh_signal_frames_total{direction=\"sent\",kind=\"connect_request\"} 1"
        ));
        assert!(t.contains("libmesh_signal_frames_total{direction=\"sent\",kind=\"other\"} 1"));
        assert!(t.contains("libmesh_events_dropped_total 1"));
        assert!(t.contains("libmesh_sessions{state=\"hot\"} 2"));
        assert!(t.contains("libmesh_dht_peers{dht=\"mesh\"} 3"));
        assert!(t.contains("libmesh_autonat_candidates{state=\"refused\"} 4"));
        assert!(t.contains("libmesh_autonat_tests_refused 6"));
        assert!(t.contains("libmesh_dial_addrs_refused 7"));
        assert!(!t.contains("made-up"));
    }

    #[test]
    fn libp2p_kad_families_are_left_out_and_nothing_else() {
        let text = "# HELP libp2p_kad_x X.\n# TYPE libp2p_kad_x counter\nlibp2p_kad_x_total 0\n\
                    # HELP libp2p_swarm_y Y.\n# TYPE libp2p_swarm_y counter\n\
                    # UNIT libp2p_kad_z seconds\nlibp2p_swarm_y_total{a=\"libp2p_kad_\"} 1\n# EOF\n";
        let out = without_families(text, LIBP2P_KAD_PREFIX);
        assert_eq!(
            out,
            "# HELP libp2p_swarm_y Y.\n# TYPE libp2p_swarm_y counter\n\
             libp2p_swarm_y_total{a=\"libp2p_kad_\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn a_real_registry_has_no_doubled_prefix_and_no_mixed_kad_family() {
        let mut r = Registry::default();
        let _libp2p = libp2p::metrics::Metrics::new(&mut r);
        let _ours = Stats::new(&mut r);
        let t = text(&r);
        assert!(t.contains("libp2p_swarm_"), "{t}");
        assert!(!t.contains("libp2p_libp2p_"), "{t}");
        assert!(!t.contains(LIBP2P_KAD_PREFIX), "{t}");
        // Families without samples yet are not written; plain counters are.
        assert!(t.contains("# TYPE libmesh_events_dropped counter"), "{t}");
        assert!(t.trim_end().ends_with("# EOF"));
    }
}
