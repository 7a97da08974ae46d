//! Relay admission in the node: the `[admission]` settings, the policy spec of
//! `--admission` (pure parsing), and the node's advertisement store as the policies'
//! advertisement source.
//!
//! Policy spec: terms `open`, `advert` (a valid current advertisement), `allowlist:ID,…`
//! (node ids), `federation:FED,…` (`federation/id` of the current advertisement);
//! `a+b` needs both, `a|b` either (`+` binds tighter). Every term grants the
//! configured limits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_admission::{
    AdmissionPolicy, AdvertSource, AllOf, Allowlist, AnyOf, Federation, GrantLimits, Open,
    RequireAdvertisement,
};
use mesh_advert::AdvertStore;
use mesh_core::{IdError, NodeAdvertisement, NodeId, Timestamp};
use serde::Deserialize;

use super::store::SharedAdverts;

/// Why `[admission]` or a policy spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// A limit of one circuit is zero.
    #[error("admission: circuits, circuit_bytes and circuit_secs must be positive")]
    ZeroLimit,
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
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        let caps = mesh_admission::server::DEFAULT_CAPS;
        AdmissionSettings {
            policy: "advert".into(),
            grant_ttl_secs: 3600,
            circuits: caps.circuits,
            circuit_bytes: caps.circuit_bytes,
            circuit_secs: caps.circuit_secs,
            block_secs: 600,
            max_reservations: 1024,
            max_circuits: 256,
        }
    }
}

impl AdmissionSettings {
    /// The limits every policy term grants (and the relay's caps).
    pub fn limits(&self) -> GrantLimits {
        GrantLimits {
            circuits: self.circuits,
            circuit_bytes: self.circuit_bytes,
            circuit_secs: self.circuit_secs,
        }
    }

    /// Checks the numbers and the policy spec.
    pub fn check(&self) -> Result<(), AdmissionError> {
        parse_policy(&self.policy, self.limits())?;
        if self.circuits == 0 || self.circuit_bytes == 0 || self.circuit_secs == 0 {
            return Err(AdmissionError::ZeroLimit);
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
            policy: parse_policy(&self.policy, self.limits())?,
            adverts: Arc::new(StoreAdverts(store)),
            caps: self.limits(),
            grant_ttl: Duration::from_secs(self.grant_ttl_secs),
            block: Duration::from_secs(self.block_secs),
            max_nodes: 16_384,
            max_reservations: self.max_reservations,
            trace,
            clock: mesh_admission::system_clock(),
        })
    }
}

/// Parses a policy spec; every term grants `limits`.
pub fn parse_policy(
    spec: &str,
    limits: GrantLimits,
) -> Result<Arc<dyn AdmissionPolicy>, AdmissionError> {
    let mut any: Vec<Arc<dyn AdmissionPolicy>> = Vec::new();
    for alt in spec.split('|') {
        let mut all: Vec<Arc<dyn AdmissionPolicy>> = Vec::new();
        for term in alt.split('+') {
            all.push(parse_term(term.trim(), limits)?);
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

fn parse_term(term: &str, limits: GrantLimits) -> Result<Arc<dyn AdmissionPolicy>, AdmissionError> {
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
        ("federation", _) => Ok(Arc::new(Federation {
            ids: list("federation ids")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            limits,
        })),
        _ => Err(AdmissionError::UnknownTerm(term.to_owned())),
    }
}

/// The node's advertisement store as the policies' source (it only holds verified,
/// unexpired advertisements).
#[derive(Debug, Clone)]
pub struct StoreAdverts(pub SharedAdverts);

impl AdvertSource for StoreAdverts {
    fn current(&self, node: &NodeId, now: &Timestamp) -> Option<NodeAdvertisement> {
        self.0
            .get(node, now)
            .map(|s| (*s.advert).clone())
            .filter(|a| a.expires_at() > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_admission::{Decision, Purpose, Query};
    use mesh_core::NodeKeypair;

    fn decide(p: &Arc<dyn AdmissionPolicy>, node: NodeId) -> bool {
        let q = Query {
            node,
            purpose: Purpose::Reservation,
            advertisement: None,
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
        assert!(decide(&parse_policy("open", l).unwrap(), a));
        assert!(!decide(&parse_policy("advert", l).unwrap(), a));
        let allow = parse_policy(&format!("allowlist:{a}"), l).unwrap();
        assert!(decide(&allow, a) && !decide(&allow, b));
        let both = parse_policy(&format!("allowlist:{a},{b}+open"), l).unwrap();
        assert!(decide(&both, a) && decide(&both, b));
        let either = parse_policy(&format!("advert|allowlist:{b}"), l).unwrap();
        assert!(!decide(&either, a) && decide(&either, b));
        assert!(!decide(&parse_policy("federation:fed:x", l).unwrap(), a));
        for bad in [
            "",
            "nobody",
            "allowlist",
            "allowlist:nope",
            "federation:",
            "open:x",
        ] {
            assert!(parse_policy(bad, l).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_read_as_the_config_error_texts() {
        let l = AdmissionSettings::default().limits();
        let text = |spec: &str| parse_policy(spec, l).err().map(|e| e.to_string());
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
    }
}
