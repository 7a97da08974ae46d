//! Relay admission in the node: the `[admission]` settings, the policy spec of
//! `--admission` (pure parsing), and the node's advertisement store as the policies'
//! advertisement source.
//!
//! Policy spec: terms `open`, `advert` (a valid current advertisement), `allowlist:ID,…`
//! (node ids), `federation:FED,…` (a `federation-endorsement.v1` of one of the
//! federations, signed by one of `[admission] endorsers`, carried in the request);
//! `a+b` needs both, `a|b` either (`+` binds tighter). Every term grants the
//! configured limits.
//!
//! A node presents its own endorsements to relays from the files listed in
//! `relay_endorsements` ([`load_endorsements`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_admission::{
    AdmissionPolicy, AdvertSource, AllOf, Allowlist, AnyOf, Federation, FederationEndorsement,
    GrantLimits, Open, RequireAdvertisement,
};
use mesh_advert::AdvertStore;
use mesh_core::{Artifact, IdError, NodeAdvertisement, NodeId, RateLimit, Timestamp};
use serde::Deserialize;

use super::store::SharedAdverts;

/// Why `[admission]` or a policy spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// A limit of one circuit is zero.
    #[error("admission: circuits, circuit_bytes and circuit_secs must be positive")]
    ZeroLimit,
    /// `circuit_secs` or `block_secs` is longer than the relay can state or block.
    #[error(
        "admission: circuit_secs must be at most {MAX_CIRCUIT_SECS} (relay v2 states it in 32 \
         bits) and block_secs at most {MAX_BLOCK_SECS} (a year)"
    )]
    TooLong,
    /// `grant_ttl_secs` is out of range.
    #[error("admission: grant_ttl_secs must be within 2..={max}")]
    GrantTtl {
        /// The longest grant lifetime allowed, seconds.
        max: u64,
    },
    /// A relay-wide maximum is zero.
    #[error("admission: max_reservations and max_circuits must be positive")]
    ZeroMaximum,
    /// A policy term that takes a list has none.
    #[error("admission policy {term}: needs {what} after ':'")]
    EmptyList {
        /// The term's name (`allowlist`, `federation`).
        term: String,
        /// What the list holds.
        what: &'static str,
    },
    /// An allowlist entry is not a node id.
    #[error("admission allowlist: {entry}: {error}")]
    NodeId {
        /// The entry as written.
        entry: String,
        /// Why it is not a node id.
        error: IdError,
    },
    /// An `endorsers` entry is not a node id.
    #[error("admission endorsers: {entry}: {error}")]
    Endorser {
        /// The entry as written.
        entry: String,
        /// Why it is not a node id.
        error: IdError,
    },
    /// A `federation` term without any endorser key to check endorsements against.
    #[error(
        "admission policy federation: needs [admission] endorsers (node ids whose endorsements count)"
    )]
    NoEndorsers,
    /// A per-IP limit is zero.
    #[error(
        "admission: max_nodes_per_ip, max_circuits_per_ip, unused_grant_secs, \
         requests_burst and requests_per_minute must be positive"
    )]
    ZeroPerIp,
    /// A `relay_endorsements` file cannot be used.
    #[error("relay endorsement {path}: {reason}")]
    Endorsement {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A policy term that does not exist (or has an argument it does not take).
    #[error(
        "unknown admission policy term {0:?} (open, advert, allowlist:IDS, federation:IDS; \
         join with + for all, | for any)"
    )]
    UnknownTerm(String),
}

/// `[admission]`: the relay server's admission (used with `relay_server = true`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSettings {
    /// The policy spec (see the module docs). Default `advert`.
    pub policy: String,
    /// Admit standard libp2p relay clients (no admission request) when the policy
    /// allows them from their peer id and the advertisement store alone. Default on.
    pub implicit: bool,
    /// Lifetime of a grant, seconds.
    pub grant_ttl_secs: u64,
    /// Circuits one node may have open at once.
    pub circuits: u32,
    /// Bytes per circuit (relay v2's default is 128 KiB).
    pub circuit_bytes: u64,
    /// Duration of one circuit, seconds (relay v2's default is 120).
    pub circuit_secs: u64,
    /// How long a revoked node stays blocked, seconds.
    pub block_secs: u64,
    /// Reservations the relay holds at most.
    pub max_reservations: usize,
    /// Circuits the relay carries at most.
    pub max_circuits: usize,
    /// Node ids whose `federation-endorsement.v1` signatures the `federation` policy
    /// accepts.
    pub endorsers: Vec<String>,
    /// Nodes holding grants that asked from one IPv4 address or IPv6 /64.
    pub max_nodes_per_ip: usize,
    /// Circuits from the nodes of one IPv4 address or IPv6 /64 together.
    pub max_circuits_per_ip: usize,
    /// A grant never used for a reservation or circuit lapses after this many seconds.
    pub unused_grant_secs: u64,
    /// Admission requests per IPv4 address or IPv6 /64: at once…
    pub requests_burst: u32,
    /// …then per minute.
    pub requests_per_minute: u32,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        let caps = mesh_admission::server::DEFAULT_CAPS;
        AdmissionSettings {
            policy: "advert".into(),
            implicit: true,
            grant_ttl_secs: 3600,
            circuits: caps.circuits,
            circuit_bytes: caps.circuit_bytes,
            circuit_secs: caps.circuit_secs,
            block_secs: 600,
            max_reservations: 1024,
            max_circuits: 256,
            endorsers: Vec::new(),
            max_nodes_per_ip: 32,
            max_circuits_per_ip: 64,
            unused_grant_secs: 120,
            requests_burst: 32,
            requests_per_minute: 60,
        }
    }
}

/// The longest `circuit_secs`: relay v2 states a circuit's duration in 32 bits.
pub const MAX_CIRCUIT_SECS: u64 = u32::MAX as u64;
/// The longest `block_secs`: a year.
pub const MAX_BLOCK_SECS: u64 = 365 * 86_400;

impl AdmissionSettings {
    /// The limits every policy term grants (and the relay's caps).
    pub fn limits(&self) -> GrantLimits {
        GrantLimits {
            circuits: self.circuits,
            circuit_bytes: self.circuit_bytes,
            circuit_secs: self.circuit_secs,
        }
    }

    /// The endorser keys, parsed.
    pub fn endorser_ids(&self) -> Result<HashSet<NodeId>, AdmissionError> {
        self.endorsers
            .iter()
            .map(|s| {
                NodeId::parse(s.trim()).map_err(|error| AdmissionError::Endorser {
                    entry: s.clone(),
                    error,
                })
            })
            .collect()
    }

    /// Checks the numbers and the policy spec.
    pub fn check(&self) -> Result<(), AdmissionError> {
        parse_policy(&self.policy, self.limits(), &self.endorser_ids()?)?;
        if self.max_nodes_per_ip == 0
            || self.max_circuits_per_ip == 0
            || self.unused_grant_secs == 0
            || self.requests_burst == 0
            || self.requests_per_minute == 0
        {
            return Err(AdmissionError::ZeroPerIp);
        }
        if self.circuits == 0 || self.circuit_bytes == 0 || self.circuit_secs == 0 {
            return Err(AdmissionError::ZeroLimit);
        }
        // libp2p-relay panics (in the connection's task, at every reservation and
        // circuit) on a circuit duration past `u32::MAX` seconds; chrono on a block
        // past its range.
        if self.circuit_secs > MAX_CIRCUIT_SECS || self.block_secs > MAX_BLOCK_SECS {
            return Err(AdmissionError::TooLong);
        }
        let max_ttl = u64::try_from(mesh_core::families::MAX_GRANT_TTL_SECS).unwrap_or(u64::MAX);
        if !(2..=max_ttl).contains(&self.grant_ttl_secs) {
            return Err(AdmissionError::GrantTtl { max: max_ttl });
        }
        if self.max_reservations == 0 || self.max_circuits == 0 {
            return Err(AdmissionError::ZeroMaximum);
        }
        Ok(())
    }

    /// The server configuration for the relay.
    pub fn server_config(
        &self,
        store: SharedAdverts,
        trace: Arc<dyn mesh_core::TraceSink>,
    ) -> Result<mesh_admission::server::Config, AdmissionError> {
        Ok(mesh_admission::server::Config {
            policy: parse_policy(&self.policy, self.limits(), &self.endorser_ids()?)?,
            adverts: Arc::new(StoreAdverts(store)),
            implicit_grants: self.implicit,
            caps: self.limits(),
            grant_ttl: Duration::from_secs(self.grant_ttl_secs),
            block: Duration::from_secs(self.block_secs),
            max_nodes: 16_384,
            max_nodes_per_ip: self.max_nodes_per_ip,
            max_circuits_per_ip: self.max_circuits_per_ip,
            unused_grant: Duration::from_secs(self.unused_grant_secs),
            requests_per_ip: RateLimit::per_minute(self.requests_burst, self.requests_per_minute),
            max_reservations: self.max_reservations,
            trace,
            clock: mesh_admission::system_clock(),
            // The node gives it its own (`node::build`).
            read_budget: mesh_core::ReadBudget::default(),
        })
    }
}

/// Parses a policy spec; every term grants `limits`; `federation` terms accept
/// endorsements signed by `endorsers`.
pub fn parse_policy(
    spec: &str,
    limits: GrantLimits,
    endorsers: &HashSet<NodeId>,
) -> Result<Arc<dyn AdmissionPolicy>, AdmissionError> {
    let mut any: Vec<Arc<dyn AdmissionPolicy>> = Vec::new();
    for alt in spec.split('|') {
        let mut all: Vec<Arc<dyn AdmissionPolicy>> = Vec::new();
        for term in alt.split('+') {
            all.push(parse_term(term.trim(), limits, endorsers)?);
        }
        any.push(if all.len() == 1 {
            all.remove(0)
        } else {
            Arc::new(AllOf(all))
        });
    }
    Ok(if any.len() == 1 {
        any.remove(0)
    } else {
        Arc::new(AnyOf(any))
    })
}

fn parse_term(
    term: &str,
    limits: GrantLimits,
    endorsers: &HashSet<NodeId>,
) -> Result<Arc<dyn AdmissionPolicy>, AdmissionError> {
    let (name, arg) = match term.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (term, None),
    };
    let list = |what: &'static str| -> Result<Vec<&str>, AdmissionError> {
        let items: Vec<&str> = arg
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            Err(AdmissionError::EmptyList {
                term: name.to_owned(),
                what,
            })
        } else {
            Ok(items)
        }
    };
    match (name, arg) {
        ("open", None) => Ok(Arc::new(Open { limits })),
        ("advert" | "advertisement", None) => Ok(Arc::new(RequireAdvertisement { limits })),
        ("allowlist", _) => {
            let mut nodes = HashSet::new();
            for s in list("node ids")? {
                nodes.insert(NodeId::parse(s).map_err(|error| AdmissionError::NodeId {
                    entry: s.to_owned(),
                    error,
                })?);
            }
            Ok(Arc::new(Allowlist { nodes, limits }))
        }
        ("federation", _) => {
            let ids = list("federation ids")?
                .into_iter()
                .map(str::to_owned)
                .collect();
            if endorsers.is_empty() {
                return Err(AdmissionError::NoEndorsers);
            }
            Ok(Arc::new(Federation {
                ids,
                endorsers: endorsers.clone(),
                limits,
            }))
        }
        _ => Err(AdmissionError::UnknownTerm(term.to_owned())),
    }
}

/// Reads the node's own federation endorsements (`relay_endorsements`): each file holds
/// one `federation-endorsement.v1` (JSON, at most 64 KiB) about `node`, verified
/// against `now`.
pub fn load_endorsements(
    paths: &[PathBuf],
    node: &NodeId,
    now: &Timestamp,
) -> Result<Vec<FederationEndorsement>, AdmissionError> {
    if paths.len() > mesh_admission::endorsement::MAX_ENDORSEMENTS {
        return Err(AdmissionError::Endorsement {
            path: paths[mesh_admission::endorsement::MAX_ENDORSEMENTS].clone(),
            reason: format!(
                "at most {} endorsements",
                mesh_admission::endorsement::MAX_ENDORSEMENTS
            ),
        });
    }
    paths.iter().map(|p| load_one(p, node, now)).collect()
}

fn load_one(
    path: &Path,
    node: &NodeId,
    now: &Timestamp,
) -> Result<FederationEndorsement, AdmissionError> {
    let err = |reason: String| AdmissionError::Endorsement {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > mesh_core::MAX_ARTIFACT_BYTES as u64 {
        return Err(err(format!("{len} bytes is over the 64 KiB cap")));
    }
    let text = mesh_core::read_text_capped(path, mesh_core::MAX_ARTIFACT_BYTES as u64)
        .map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("malformed JSON: {e}")))?;
    let e = FederationEndorsement::verify_json(value, now).map_err(|e| err(e.to_string()))?;
    if &e.node_id() != node {
        return Err(err(format!("it endorses {}, not this node", e.node_id())));
    }
    Ok(e)
}

/// The node's advertisement store as the policies' source (it only holds verified,
/// unexpired advertisements).
#[derive(Debug, Clone)]
pub struct StoreAdverts(pub SharedAdverts);

impl AdvertSource for StoreAdverts {
    fn current(&self, node: &NodeId, now: &Timestamp) -> Option<NodeAdvertisement> {
        self.0
            .get(node, now)
            .filter(|s| s.expires_at() > now)
            .and_then(|s| s.decoded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_admission::{Decision, Purpose, Query};
    use mesh_core::NodeKeypair;

    fn none() -> HashSet<NodeId> {
        HashSet::new()
    }

    fn decide(p: &Arc<dyn AdmissionPolicy>, node: NodeId) -> bool {
        let q = Query {
            node,
            purpose: Purpose::Reservation,
            advertisement: None,
            endorsements: &[],
        };
        matches!(p.decide(&q, &Timestamp::now()), Decision::Allow { .. })
    }

    #[test]
    fn specs_parse_into_policies() {
        let l = AdmissionSettings::default().limits();
        let (a, b) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        assert!(decide(&parse_policy("open", l, &none()).unwrap(), a));
        assert!(!decide(&parse_policy("advert", l, &none()).unwrap(), a));
        let allow = parse_policy(&format!("allowlist:{a}"), l, &none()).unwrap();
        assert!(decide(&allow, a) && !decide(&allow, b));
        let both = parse_policy(&format!("allowlist:{a},{b}+open"), l, &none()).unwrap();
        assert!(decide(&both, a) && decide(&both, b));
        let either = parse_policy(&format!("advert|allowlist:{b}"), l, &none()).unwrap();
        assert!(!decide(&either, a) && decide(&either, b));
        assert_eq!(
            parse_policy("federation:fed:x", l, &none()).err(),
            Some(AdmissionError::NoEndorsers)
        );
        let fed = parse_policy("federation:fed:x", l, &[b].into()).unwrap();
        // Without an endorsement carried in the request, nobody.
        assert!(!decide(&fed, a) && !decide(&fed, b));
        for bad in [
            "",
            "nobody",
            "allowlist",
            "allowlist:nope",
            "federation:",
            "open:x",
        ] {
            assert!(parse_policy(bad, l, &none()).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_read_as_the_config_error_texts() {
        let l = AdmissionSettings::default().limits();
        let text = |spec: &str| parse_policy(spec, l, &none()).err().map(|e| e.to_string());
        assert_eq!(
            text("nobody").as_deref(),
            Some(
                "unknown admission policy term \"nobody\" (open, advert, allowlist:IDS, \
                 federation:IDS; join with + for all, | for any)"
            )
        );
        assert_eq!(
            text("federation:").as_deref(),
            Some("admission policy federation: needs federation ids after ':'")
        );
        let e = text("allowlist:nope").unwrap_or_default();
        assert!(e.starts_with("admission allowlist: nope: "), "{e}");
        let s = AdmissionSettings {
            grant_ttl_secs: 1,
            ..AdmissionSettings::default()
        };
        let max = mesh_core::families::MAX_GRANT_TTL_SECS;
        assert_eq!(
            crate::node::config::ConfigError::from(s.check().unwrap_err()).to_string(),
            format!("invalid configuration: admission: grant_ttl_secs must be within 2..={max}")
        );
    }

    #[test]
    fn endorsement_files_are_verified_and_must_be_about_this_node() {
        let dir = std::env::temp_dir().join(format!("relay-endorsements-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (op, me, other) = (
            NodeKeypair::generate(),
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let now = Timestamp::now();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let mine = FederationEndorsement::issue(&op, "fed:a", me, &now, 600).unwrap();
        let good = write("good.json", mine.to_json().to_string());
        assert_eq!(
            load_endorsements(std::slice::from_ref(&good), &me, &now).unwrap(),
            vec![mine]
        );
        let theirs = FederationEndorsement::issue(&op, "fed:a", other, &now, 600).unwrap();
        let foreign = write("foreign.json", theirs.to_json().to_string());
        let bad = write("bad.json", "{".into());
        for p in [foreign, bad, dir.join("missing.json")] {
            let e = load_endorsements(std::slice::from_ref(&p), &me, &now).unwrap_err();
            assert!(
                matches!(e, AdmissionError::Endorsement { ref path, .. } if *path == p),
                "{e}"
            );
        }
        let expired = load_endorsements(&[good], &me, &now.plus_secs(600)).unwrap_err();
        assert!(
            expired.to_string().contains("E_ADV_EXPIRED")
                || expired.to_string().contains("expired"),
            "{expired}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn implicit_grants_are_on_by_default_and_can_be_turned_off() {
        assert!(AdmissionSettings::default().implicit);
        let s: AdmissionSettings = toml::from_str("policy = \"open\"").unwrap();
        assert!(s.implicit);
        let s: AdmissionSettings = toml::from_str("policy = \"open\"\nimplicit = false").unwrap();
        assert!(!s.implicit);
        s.check().unwrap();
    }

    #[test]
    fn settings_are_checked() {
        let mut s = AdmissionSettings::default();
        s.check().unwrap();
        s.grant_ttl_secs = 1;
        assert!(s.check().is_err());
        s = AdmissionSettings {
            policy: "bogus".into(),
            ..AdmissionSettings::default()
        };
        assert!(s.check().is_err());
        // Durations libp2p-relay and chrono cannot hold (they would panic at each
        // reservation, at each block): refused when the config is read.
        for (circuit_secs, block_secs, ok) in [
            (MAX_CIRCUIT_SECS, MAX_BLOCK_SECS, true),
            (MAX_CIRCUIT_SECS + 1, 600, false),
            (120, MAX_BLOCK_SECS + 1, false),
            (120, u64::MAX, false),
        ] {
            let s = AdmissionSettings {
                circuit_secs,
                block_secs,
                ..AdmissionSettings::default()
            };
            assert_eq!(s.check().is_ok(), ok, "{circuit_secs} {block_secs}");
        }
    }
}
