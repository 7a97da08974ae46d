//! How many trace events a peer's bad input may make the node write.
//!
//! A refused mesh-DHT record, a refused provider record and a refused advertisement
//! each write trace events (what the operator's `--trace` file is for), and a peer sends
//! them as fast as it likes: bounded on disk by the file's rotation, they still pushed
//! every other event out of it. Per source (the peer's network, as the stores count
//! it, or the peer itself without one), [`TRACE_LIMIT`] of them are written; the rest
//! are counted in the metrics' refusal counters where there is one, and all of them in
//! `libmesh_traces_suppressed_total` (and `status`'s `traces_suppressed`). Pure; `now` passed in.

use libp2p::PeerId;
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, Timestamp, TraceEvent, TraceEventType};
use prometheus_client::metrics::counter::Counter;

use super::action::Action;
use super::view::View;

/// Trace events of refused input per source: 60 at once, then one a second.
pub(crate) const TRACE_LIMIT: RateLimit = RateLimit {
    burst: 60,
    per_second: 1.0,
};

/// Sources followed at once (the least recently seen forgotten first).
const TRACE_SOURCES: usize = 4096;

/// The per-source budget, and the count of refusals whose events it kept out
/// (`libmesh_traces_suppressed_total`).
#[derive(Debug)]
pub(crate) struct TraceBudget {
    limiter: RateLimiter<Source>,
    suppressed: Counter,
}

impl Default for TraceBudget {
    fn default() -> Self {
        TraceBudget::new(Counter::default())
    }
}

impl TraceBudget {
    /// A budget counting what it keeps out in `suppressed`.
    pub(crate) fn new(suppressed: Counter) -> Self {
        TraceBudget {
            limiter: RateLimiter::new(TRACE_LIMIT, TRACE_SOURCES),
            suppressed,
        }
    }

    /// Whether the trace events of one more refusal of `source`'s input are written.
    pub(crate) fn admit(&mut self, source: &Source, now: &Timestamp) -> bool {
        let admitted = self.limiter.check(source, now).is_ok();
        if !admitted {
            self.suppressed.inc();
        }
        admitted
    }

    /// [`TraceBudget::admit`] for the source of `peer` (its network, from its
    /// connections as `view` has them).
    pub(crate) fn admit_peer(&mut self, view: &dyn View, peer: PeerId, now: &Timestamp) -> bool {
        self.admit(&Source::of_peer(peer, &view.remote_addrs(&peer)), now)
    }
}

/// The peer an `error/occurred` event is about, when it names one by peer id: the
/// events a component writes about a peer's input (a refused signal frame, table page,
/// relay request…) are written within that peer's budget.
pub(crate) fn peer_of_error(event: &TraceEvent) -> Option<PeerId> {
    if event.event_type != TraceEventType::ErrorOccurred {
        return None;
    }
    event.peer.as_deref()?.parse().ok()
}

/// `actions` with each `error/occurred` trace event kept only if `admit` says so (the
/// budget of whoever handed the input over); every other action kept.
pub(crate) fn errors_within(actions: Vec<Action>, mut admit: impl FnMut() -> bool) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| match a {
            Action::Trace(t) if t.event_type == TraceEventType::ErrorOccurred => admit(),
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_one_a_second_and_others_their_own() {
        let mut b = TraceBudget::default();
        let now = Timestamp::now();
        let a = Source::Local;
        let peer = Source::of_peer(libp2p::PeerId::random(), &[]);
        let admitted = (0..100).filter(|_| b.admit(&a, &now)).count();
        assert_eq!(admitted, 60);
        assert!(b.admit(&peer, &now));
        assert!(b.admit(&a, &now.plus_secs(2)));
    }
}
