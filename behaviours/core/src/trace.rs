//! Trace events: the vocabulary of DESIGN.md as types, and a JSON-lines writer.
//!
//! One event is one JSON object on one line:
//! `{"trace/id", "event/type", "ts", "node/self", "peer"?, "detail"?}`.

use std::io::Write;
use std::sync::Mutex;

use rand_core::RngCore;
use serde_json::{Map, Value};

use crate::error::MeshError;
use crate::id::NodeId;
use crate::time::Timestamp;

macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The kind of a trace event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TraceEventType {
            $($(#[$doc])* $variant,)*
        }

        impl TraceEventType {
            /// Every event type.
            pub const ALL: &'static [TraceEventType] = &[$(TraceEventType::$variant,)*];

            /// The wire name, e.g. `handshake/accepted`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(TraceEventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    /// The node loaded its identity from the data dir.
    IdentityLoaded => "identity/loaded",
    /// The node generated a new identity.
    IdentityGenerated => "identity/generated",
    /// The node published an advertisement.
    AdvertisementPublished => "advertisement/published",
    /// The node fetched an advertisement.
    AdvertisementFetched => "advertisement/fetched",
    /// The node rejected an advertisement.
    AdvertisementRejected => "advertisement/rejected",
    /// A peer was discovered.
    PeerDiscovered => "peer/discovered",
    /// A connection to a peer opened.
    PeerConnected => "peer/connected",
    /// The last connection to a peer closed.
    PeerDisconnected => "peer/disconnected",
    /// A handshake started.
    HandshakeStarted => "handshake/started",
    /// A handshake was accepted.
    HandshakeAccepted => "handshake/accepted",
    /// A handshake was rejected.
    HandshakeRejected => "handshake/rejected",
    /// A session is established.
    SessionEstablished => "session/established",
    /// Capabilities were exchanged.
    CapabilityExchanged => "capability/exchanged",
    /// Keepalive to a peer was lost.
    KeepaliveLost => "keepalive/lost",
    /// Keepalive to a peer recovered.
    KeepaliveRestored => "keepalive/restored",
    /// A signal marker was sent.
    SignalMarkerSent => "signal-marker/sent",
    /// A signal marker was received.
    SignalMarkerReceived => "signal-marker/received",
    /// An error with a frozen code occurred.
    ErrorOccurred => "error/occurred",
    /// The routing policy chose a path.
    RouteSelected => "route/selected",
    /// A relay admitted a peer.
    RelayAdmitted => "relay/admitted",
    /// A relay denied a peer.
    RelayDenied => "relay/denied",
    /// A signaling frame was received.
    SignalReceived => "signal/received",
    /// The node joined a swarm.
    SwarmJoined => "swarm/joined",
    /// The node left a swarm.
    SwarmLeft => "swarm/left",
}

impl std::fmt::Display for TraceEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trace event.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEvent {
    /// Random 128-bit id, hex.
    pub trace_id: String,
    /// What happened.
    pub event_type: TraceEventType,
    /// When.
    pub ts: Timestamp,
    /// The node that emits the event.
    pub node_self: NodeId,
    /// The peer involved, if any (node id or libp2p peer id).
    pub peer: Option<String>,
    /// Structured detail.
    pub detail: Option<Value>,
}

impl TraceEvent {
    /// An event of `event_type` emitted by `node_self` at `ts`, with a fresh trace id.
    pub fn new(event_type: TraceEventType, node_self: NodeId, ts: Timestamp) -> Self {
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        TraceEvent {
            trace_id: hex::encode(id),
            event_type,
            ts,
            node_self,
            peer: None,
            detail: None,
        }
    }

    /// An `error/occurred` event whose detail carries the code, the class and the text.
    pub fn error(error: &MeshError, node_self: NodeId, ts: Timestamp) -> Self {
        TraceEvent::new(TraceEventType::ErrorOccurred, node_self, ts).with_detail(error.to_json())
    }

    /// With a peer.
    pub fn with_peer(mut self, peer: impl std::fmt::Display) -> Self {
        self.peer = Some(peer.to_string());
        self
    }

    /// With a detail.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The JSON object of the event.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("trace/id".into(), self.trace_id.clone().into());
        m.insert("event/type".into(), self.event_type.as_str().into());
        m.insert("ts".into(), self.ts.as_str().into());
        m.insert("node/self".into(), self.node_self.to_string().into());
        if let Some(p) = &self.peer {
            m.insert("peer".into(), p.clone().into());
        }
        if let Some(d) = &self.detail {
            m.insert("detail".into(), d.clone());
        }
        Value::Object(m)
    }
}

/// Where trace events go. Implementations must not block for long: they are called from
/// event loops.
pub trait TraceSink: Send + Sync {
    /// Records one event.
    fn emit(&self, event: &TraceEvent);

    /// Whether events are recorded at all; producers skip building events (random
    /// trace id, timestamps, peer ids) when this is false.
    fn enabled(&self) -> bool {
        true
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl TraceSink for NoTrace {
    fn emit(&self, _event: &TraceEvent) {}

    fn enabled(&self) -> bool {
        false
    }
}

/// Writes one JSON line per event to a writer (a file, stdout) and flushes it, so a
/// crash loses no written event. Write errors are logged once and otherwise ignored:
/// tracing never takes the node down.
pub struct JsonLinesTrace<W: Write + Send> {
    out: Mutex<W>,
    failed: std::sync::atomic::AtomicBool,
}

impl<W: Write + Send> JsonLinesTrace<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        JsonLinesTrace {
            out: Mutex::new(out),
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<W: Write + Send> TraceSink for JsonLinesTrace<W> {
    fn emit(&self, event: &TraceEvent) {
        let mut line = event.to_json().to_string();
        line.push('\n');
        let mut out = match self.out.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush())
            && !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "trace sink write failed; further failures are silent");
        }
    }
}

/// Keeps events in memory (tests, the status endpoint). Bounded: the oldest events are
/// dropped past `capacity`.
#[derive(Debug)]
pub struct MemoryTrace {
    events: Mutex<std::collections::VecDeque<TraceEvent>>,
    capacity: usize,
}

impl MemoryTrace {
    /// A sink holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        MemoryTrace {
            events: Mutex::new(std::collections::VecDeque::with_capacity(
                capacity.min(1024),
            )),
            capacity,
        }
    }

    /// A copy of the events held.
    pub fn events(&self) -> Vec<TraceEvent> {
        match self.events.lock() {
            Ok(g) => g.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }
}

impl TraceSink for MemoryTrace {
    fn emit(&self, event: &TraceEvent) {
        let mut events = match self.events.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if events.len() >= self.capacity {
            events.pop_front();
        }
        events.push_back(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::keypair::NodeKeypair;

    #[test]
    fn vocabulary_covers_design() {
        let names: Vec<&str> = TraceEventType::ALL.iter().map(|t| t.as_str()).collect();
        for required in [
            "identity/loaded",
            "identity/generated",
            "advertisement/published",
            "advertisement/fetched",
            "advertisement/rejected",
            "peer/discovered",
            "peer/connected",
            "peer/disconnected",
            "handshake/started",
            "handshake/accepted",
            "handshake/rejected",
            "session/established",
            "capability/exchanged",
            "keepalive/lost",
            "keepalive/restored",
            "signal-marker/sent",
            "signal-marker/received",
            "error/occurred",
            "route/selected",
            "relay/admitted",
            "relay/denied",
            "signal/received",
            "swarm/joined",
            "swarm/left",
        ] {
            assert!(names.contains(&required), "{required}");
        }
    }

    #[test]
    fn json_lines_are_one_object_per_line() {
        let node = NodeKeypair::generate().node_id();
        let ts = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
        let sink = JsonLinesTrace::new(Vec::new());
        sink.emit(&TraceEvent::new(
            TraceEventType::IdentityLoaded,
            node,
            ts.clone(),
        ));
        let err = MeshError::new(ErrorCode::HsReplay, "seen nonce");
        sink.emit(&TraceEvent::error(&err, node, ts).with_peer("peer-x"));
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event/type"], "identity/loaded");
        assert_eq!(lines[0]["node/self"], node.to_string());
        assert!(lines[0].get("peer").is_none());
        assert_eq!(lines[0]["trace/id"].as_str().unwrap().len(), 32);
        assert_eq!(lines[1]["event/type"], "error/occurred");
        assert_eq!(lines[1]["detail"]["error/code"], "E_HS_REPLAY");
        assert_eq!(
            lines[1]["detail"]["error/class"],
            "handshake/replay-suspected"
        );
        assert_eq!(lines[1]["peer"], "peer-x");
    }

    #[test]
    fn memory_trace_is_bounded() {
        let node = NodeKeypair::generate().node_id();
        let sink = MemoryTrace::new(3);
        for _ in 0..10 {
            sink.emit(&TraceEvent::new(
                TraceEventType::PeerConnected,
                node,
                Timestamp::now(),
            ));
        }
        assert_eq!(sink.events().len(), 3);
    }
}
