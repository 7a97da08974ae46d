//! Patched for libmesh: the stream resets of a connection that its peer has not answered.
//!
//! Each libp2p stream over WebRTC is a data channel, closed by an SCTP stream reset
//! ([`crate::tokio::stream::StreamEnd`]). Until the peer answers a reset (its RECONFIG
//! response, and its own reset of the stream, RFC 6525 and RFC 8831 6.7), the stream
//! stays at this side: its SCTP stream in the association, its reset request, which
//! webrtc-rs resends on every retransmission timeout until the response comes, and its
//! channel in webrtc's list, some 3 KiB, up to 11 KiB with a peer's 8 KiB opening message.
//! A peer whose SCTP stack answered none grew the node by that much with every stream it
//! opened and the node closed, up to the 65,535 ids of a connection. The connection
//! fails (and libp2p-swarm closes it) when more than [`MAX_UNANSWERED`] of its resets
//! are unsettled at once, or when one request has waited [`RESPONSE_WAIT`] for its
//! response since it went out.
//! A stream whose reset the peer responded to and which the peer has not reset on its
//! side is forgotten by the association after 10 s (the patched `webrtc-sctp`): an
//! unpatched webrtc-rs peer never resets its side of a stream whose reset it deferred.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    task::Context,
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;
use webrtc::sctp::stream::StreamGone;

/// How many of this side's stream resets may be unsettled at once (the stream still in
/// the association, or its request waiting for a response). A patched peer or a
/// browser settles each within a round trip.
pub(crate) const MAX_UNANSWERED: usize = 512;

/// How long a reset request may wait for the peer's response from when it went out. The
/// peer must respond to each (RFC 6525, 5.2), and webrtc-rs resends it on every
/// retransmission timeout until it does; that timer is shared by all of the
/// association's reset requests and runs while any waits, doubling from the RTO (1 s at
/// least) at each firing up to 60 s, so on a busy connection a lost request's next copy
/// may go out a minute later. Three minutes leave room for two lost copies in a row.
pub(crate) const RESPONSE_WAIT: Duration = Duration::from_secs(180);

/// How often the connection looks at its unsettled resets while it has some.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Why a connection fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// More than [`MAX_UNANSWERED`] resets unsettled at once.
    TooMany,
    /// A reset request left without a response for [`RESPONSE_WAIT`].
    Overdue,
}

const FINE: u8 = 0;
const TOO_MANY: u8 = 1;
const OVERDUE: u8 = 2;

/// The connection's unsettled resets, noted from the streams' ends and from the channels
/// refused when the swarm takes no more inbound streams (another task).
#[derive(Default)]
pub(crate) struct Unanswered {
    /// Each reset, with when it was noted; looked through when full and on each check.
    streams: Mutex<Vec<(StreamGone, Instant)>>,
    verdict: AtomicU8,
    waker: AtomicWaker,
}

impl Unanswered {
    /// Notes a stream this side has reset, at `now`, until its reset is settled.
    pub(crate) fn note(&self, end: StreamGone, now: Instant) {
        if end.is_settled() {
            return;
        }
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.len() >= MAX_UNANSWERED {
            streams.retain(|(s, _)| !s.is_settled());
        }
        if streams.len() >= MAX_UNANSWERED {
            self.fail(TOO_MANY);
            return;
        }
        streams.push((end, now));
        if streams.len() == 1 {
            // The connection starts its checks.
            self.waker.wake();
        }
    }

    /// Drops the settled resets, and fails when one has waited [`RESPONSE_WAIT`] for its
    /// response by `now`.
    pub(crate) fn check(&self, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.retain(|(s, _)| !s.is_settled());
        if streams.iter().any(|(s, _)| {
            s.awaiting_since()
                .is_some_and(|sent| now.saturating_duration_since(sent) >= RESPONSE_WAIT)
        }) {
            self.fail(OVERDUE);
        }
    }

    /// Whether no reset is unsettled (the checks stop).
    pub(crate) fn is_empty(&self) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Why the connection fails, if it does; wakes `cx` when that changes or the first
    /// reset is noted.
    pub(crate) fn poll_verdict(&self, cx: &mut Context<'_>) -> Option<Verdict> {
        self.waker.register(cx.waker());
        match self.verdict.load(Ordering::SeqCst) {
            TOO_MANY => Some(Verdict::TooMany),
            OVERDUE => Some(Verdict::Overdue),
            _ => None,
        }
    }

    fn fail(&self, verdict: u8) {
        let _ = self
            .verdict
            .compare_exchange(FINE, verdict, Ordering::SeqCst, Ordering::SeqCst);
        self.waker.wake();
    }
}
