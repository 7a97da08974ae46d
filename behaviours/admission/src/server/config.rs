//! The relay's settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{GrantLimits, RateLimit, TraceSink};

use crate::Clock;
use crate::gate::{AdvertSource, NoAdverts};
use crate::policy::{AdmissionPolicy, Open};

/// Server settings.
#[derive(Clone)]
pub struct Config {
    /// Who is admitted.
    pub policy: Arc<dyn AdmissionPolicy>,
    /// Where advertisement-based policies look a requester up (besides the
    /// advertisement a request may carry).
    pub adverts: Arc<dyn AdvertSource>,
    /// Whether peers without a grant (standard libp2p relay clients) are admitted under
    /// an implicit grant when the policy allows them from their peer id and
    /// [`Config::adverts`] alone ([`crate::implicit`]). Default on; off, only holders of
    /// a requested grant may reserve or open circuits.
    pub implicit_grants: bool,
    /// The most any grant gets; also the relay's own per-circuit caps.
    pub caps: GrantLimits,
    /// How long a grant lives.
    pub grant_ttl: Duration,
    /// How long a revoked node stays blocked.
    pub block: Duration,
    /// Most nodes holding grants at once.
    pub max_nodes: usize,
    /// Most nodes holding grants that asked from one IP key (an IPv4 address or an
    /// IPv6 /64, [`crate::IpKey`]).
    pub max_nodes_per_ip: usize,
    /// Most circuits (open or allowed) from the nodes of one IP key together.
    pub max_circuits_per_ip: usize,
    /// A grant never used for a reservation or a circuit lapses after this long.
    pub unused_grant: Duration,
    /// Admission requests per IP key (an IPv4 address or an IPv6 /64): a burst, then a
    /// rate. Checked before anything else (no signature is verified for a request over
    /// the limit). A connection without an IP (a relayed one) gets the same limit per
    /// peer id.
    pub requests_per_ip: RateLimit,
    /// Reservations the relay holds at most (for the load figure in grants).
    pub max_reservations: usize,
    /// Where trace events go (relay/admitted, relay/denied).
    pub trace: Arc<dyn TraceSink>,
    /// The wall clock: grant times, request freshness, blocks, circuit durations.
    pub clock: Clock,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

/// The caps when none are configured: 16 circuits per node, 16 MiB and 30 minutes per
/// circuit (relay v2's own defaults are 128 KiB and 2 minutes).
pub const DEFAULT_CAPS: GrantLimits = GrantLimits {
    circuits: 16,
    circuit_bytes: 16 * 1024 * 1024,
    circuit_secs: 30 * 60,
};

/// Admission requests per IP key by default: 32 at once, then 60 a minute.
pub const DEFAULT_REQUESTS_PER_IP: RateLimit = RateLimit {
    burst: 32,
    per_second: 1.0,
};

/// IP keys the request limiter tracks at most.
pub(super) const MAX_TRACKED_IPS: usize = 65_536;

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Arc::new(Open {
                limits: DEFAULT_CAPS,
            }),
            adverts: Arc::new(NoAdverts),
            implicit_grants: true,
            caps: DEFAULT_CAPS,
            grant_ttl: Duration::from_secs(3600),
            block: Duration::from_secs(600),
            max_nodes: 16_384,
            max_nodes_per_ip: 32,
            max_circuits_per_ip: 64,
            unused_grant: Duration::from_secs(120),
            requests_per_ip: DEFAULT_REQUESTS_PER_IP,
            max_reservations: 1024,
            trace: Arc::new(mesh_core::NoTrace),
            clock: crate::system_clock(),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("policy", &self.policy)
            .field("implicit_grants", &self.implicit_grants)
            .field("caps", &self.caps)
            .field("grant_ttl", &self.grant_ttl)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}
