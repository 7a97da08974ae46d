//! The governor's settings.

use mesh_core::RateLimit;

/// Governor settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GovernorConfig {
    /// Hot sessions wanted.
    pub target_hot: usize,
    /// Most live (warm + hot) sessions.
    pub max_live: usize,
    /// First redial delay, seconds.
    pub backoff_base_secs: i64,
    /// Longest redial delay, seconds.
    pub backoff_max_secs: i64,
    /// Hard failures that block a peer.
    pub block_after: u32,
    /// Window in which hard failures count, seconds.
    pub failure_window_secs: i64,
    /// How long a block lasts, seconds.
    pub block_cooldown_secs: i64,
    /// Handshakes per node id.
    pub handshakes: RateLimit,
    /// Hellos from the peers of one network together (node ids are free, and a hello
    /// costs the verification of up to 34 signatures). Peers without a counted network
    /// (loopback at a node on loopback alone, see `room::network_of`) are not counted.
    pub network_handshakes: RateLimit,
    /// Messages per node id.
    pub messages: RateLimit,
    /// Most peers the table holds (named peers and live sessions may go beyond it;
    /// see the module docs). At least 1.
    pub max_peers: usize,
    /// Redials in a row without a session after which a past peer that was not named
    /// with [`super::Governor::add_known`] is forgotten.
    pub forget_after: u32,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            target_hot: 2,
            max_live: 4,
            backoff_base_secs: 1,
            backoff_max_secs: 300,
            block_after: 3,
            failure_window_secs: 600,
            block_cooldown_secs: 600,
            handshakes: RateLimit::per_minute(5, 10),
            network_handshakes: RateLimit::per_minute(64, 120),
            messages: RateLimit::per_minute(100, 600),
            max_peers: 1024,
            forget_after: 12,
        }
    }
}
