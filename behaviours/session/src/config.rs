//! The behaviour's settings.

use std::sync::Arc;
use std::time::Duration;

use libp2p::ping;
use mesh_core::{Timestamp, TraceSink};

use crate::governor::GovernorConfig;
use crate::replay::ReplayConfig;

/// The clock (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Configuration.
#[derive(Clone)]
pub struct Config {
    /// Capabilities offered besides `core/messaging`.
    pub capabilities: Vec<String>,
    /// Transport profiles advertised.
    pub transports: Vec<String>,
    /// Lifetime of the self-issued passports, seconds.
    pub passport_ttl_secs: i64,
    /// Replay-guard settings.
    pub replay: ReplayConfig,
    /// Governor settings.
    pub governor: GovernorConfig,
    /// How long each request waits for its response.
    pub request_timeout: Duration,
    /// How often the governor runs (dials, unblocks, promotions).
    pub tick_interval: Duration,
    /// Consecutive ping failures that make a peer lost.
    pub keepalive_failures: u32,
    /// The behaviour's own libp2p ping (`/ipfs/ping/1.0.0`): interval and timeout of
    /// the pings that drive keepalive (libp2p's defaults: every 15 s, 20 s timeout).
    pub ping: ping::Config,
    /// Where trace events go.
    pub trace: Arc<dyn TraceSink>,
    /// The clock.
    pub clock: Clock,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capabilities: vec!["core/discovery".into(), "core/keepalive".into()],
            transports: vec!["tcp".into(), "quic".into()],
            passport_ttl_secs: 3600,
            replay: ReplayConfig::default(),
            governor: GovernorConfig::default(),
            request_timeout: Duration::from_secs(30),
            keepalive_failures: 3,
            ping: ping::Config::new(),
            tick_interval: Duration::from_secs(1),
            trace: Arc::new(mesh_core::NoTrace),
            clock: Arc::new(Timestamp::now),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("capabilities", &self.capabilities)
            .field("transports", &self.transports)
            .finish_non_exhaustive()
    }
}
