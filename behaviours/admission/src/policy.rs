//! Admission policies: who a relay admits, with which limits.
//!
//! A policy sees the requester's node id, what it asks for, its current signed
//! advertisement when one is known and the federation endorsements its request carries
//! (all already verified). It answers
//! [`Decision::Allow`] with the limits of the grant or [`Decision::Deny`] with a frozen
//! error code. Policies are pure: no I/O, no clock beyond the `now` they are given.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use mesh_core::{ErrorCode, GrantLimits, NodeAdvertisement, NodeId, Timestamp};

use crate::endorsement::FederationEndorsement;

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A reservation: others may reach the node through the relay.
    Reservation,
    /// Circuits from the node through the relay, to `target` (any if `None`).
    Circuit {
        /// The node the circuits go to.
        target: Option<NodeId>,
    },
}

impl Purpose {
    /// The wire name (`reservation`, `circuit`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Purpose::Reservation => "reservation",
            Purpose::Circuit { .. } => "circuit",
        }
    }
}

/// The question a policy answers.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Who asks (already authenticated: the request's signer and the connection's peer).
    pub node: NodeId,
    /// What for.
    pub purpose: Purpose,
    /// The requester's current advertisement, verified and unexpired, if known.
    pub advertisement: Option<&'a NodeAdvertisement>,
    /// The federation endorsements the request carries: verified (signature by their
    /// `endorser/node-id`, clock) and about [`Query::node`]. Who the endorser is, is for
    /// the policy to judge.
    pub endorsements: &'a [FederationEndorsement],
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admit, with these limits.
    Allow {
        /// Limits of the grant.
        limits: GrantLimits,
    },
    /// Refuse.
    Deny {
        /// One of the frozen codes.
        code: ErrorCode,
        /// Why, for the requester and the logs.
        reason: String,
    },
}

impl Decision {
    fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny {
            code: ErrorCode::TransportRejected,
            reason: reason.into(),
        }
    }
}

/// Decides admission. Implement it for your own rules; compose with [`AllOf`] and
/// [`AnyOf`].
pub trait AdmissionPolicy: Send + Sync + fmt::Debug + 'static {
    /// The decision for `query` at `now`.
    fn decide(&self, query: &Query<'_>, now: &Timestamp) -> Decision;
}

impl<P: AdmissionPolicy + ?Sized> AdmissionPolicy for Arc<P> {
    fn decide(&self, query: &Query<'_>, now: &Timestamp) -> Decision {
        (**self).decide(query, now)
    }
}

impl<P: AdmissionPolicy + ?Sized> AdmissionPolicy for Box<P> {
    fn decide(&self, query: &Query<'_>, now: &Timestamp) -> Decision {
        (**self).decide(query, now)
    }
}

/// Admits everyone.
#[derive(Debug, Clone)]
pub struct Open {
    /// Limits of every grant.
    pub limits: GrantLimits,
}

impl AdmissionPolicy for Open {
    fn decide(&self, _: &Query<'_>, _: &Timestamp) -> Decision {
        Decision::Allow {
            limits: self.limits,
        }
    }
}

/// Admits nodes with a valid current advertisement (one the relay has, or one the
/// request carries).
#[derive(Debug, Clone)]
pub struct RequireAdvertisement {
    /// Limits of every grant.
    pub limits: GrantLimits,
}

impl AdmissionPolicy for RequireAdvertisement {
    fn decide(&self, q: &Query<'_>, now: &Timestamp) -> Decision {
        match q.advertisement {
            Some(a) if a.expires_at() > now => Decision::Allow {
                limits: self.limits,
            },
            Some(a) => Decision::Deny {
                code: ErrorCode::AdvExpired,
                reason: format!("advertisement expired at {}", a.expires_at().as_str()),
            },
            None => Decision::deny("no current advertisement for this node"),
        }
    }
}

/// Admits the listed node ids.
#[derive(Debug, Clone)]
pub struct Allowlist {
    /// Who is admitted.
    pub nodes: HashSet<NodeId>,
    /// Limits of every grant.
    pub limits: GrantLimits,
}

impl AdmissionPolicy for Allowlist {
    fn decide(&self, q: &Query<'_>, _: &Timestamp) -> Decision {
        if self.nodes.contains(&q.node) {
            Decision::Allow {
                limits: self.limits,
            }
        } else {
            Decision::deny("node is not on the relay's allowlist")
        }
    }
}

/// Admits members of the federations: nodes whose request carries a
/// `federation-endorsement.v1` of one of `ids`, signed by one of `endorsers` (keys the
/// relay operator trusts). The `federation/id` a node's own advertisement claims counts
/// for nothing: anyone can sign that about themselves.
#[derive(Debug, Clone)]
pub struct Federation {
    /// Accepted federation ids.
    pub ids: HashSet<String>,
    /// Whose endorsements count (none: nobody is admitted).
    pub endorsers: HashSet<NodeId>,
    /// Limits of every grant.
    pub limits: GrantLimits,
}

impl AdmissionPolicy for Federation {
    fn decide(&self, q: &Query<'_>, now: &Timestamp) -> Decision {
        let mut last = "federation policy: the request carries no federation endorsement";
        for e in q.endorsements {
            if e.node_id() != q.node || e.expires_at() <= now {
                last = "federation policy: endorsement not about this node or expired";
            } else if !self.ids.contains(e.federation_id()) {
                last = "federation policy: endorsed for a federation not admitted here";
            } else if !self.endorsers.contains(&e.endorser()) {
                last = "federation policy: endorsed by a key this relay does not trust";
            } else {
                return Decision::Allow {
                    limits: self.limits,
                };
            }
        }
        Decision::deny(last)
    }
}

/// Every policy must allow; the grant gets the smallest of their limits.
#[derive(Debug, Clone)]
pub struct AllOf(pub Vec<Arc<dyn AdmissionPolicy>>);

impl AdmissionPolicy for AllOf {
    fn decide(&self, q: &Query<'_>, now: &Timestamp) -> Decision {
        let mut limits: Option<GrantLimits> = None;
        for p in &self.0 {
            match p.decide(q, now) {
                Decision::Allow { limits: l } => {
                    limits = Some(match limits {
                        None => l,
                        Some(m) => min_limits(m, l),
                    });
                }
                deny => return deny,
            }
        }
        match limits {
            Some(limits) => Decision::Allow { limits },
            None => Decision::deny("empty policy admits nobody"),
        }
    }
}

/// The first policy that allows decides; if none does, the last denial stands.
#[derive(Debug, Clone)]
pub struct AnyOf(pub Vec<Arc<dyn AdmissionPolicy>>);

impl AdmissionPolicy for AnyOf {
    fn decide(&self, q: &Query<'_>, now: &Timestamp) -> Decision {
        let mut last = Decision::deny("empty policy admits nobody");
        for p in &self.0 {
            match p.decide(q, now) {
                allow @ Decision::Allow { .. } => return allow,
                deny => last = deny,
            }
        }
        last
    }
}

/// The smaller of each limit.
pub fn min_limits(a: GrantLimits, b: GrantLimits) -> GrantLimits {
    GrantLimits {
        circuits: a.circuits.min(b.circuits),
        circuit_bytes: a.circuit_bytes.min(b.circuit_bytes),
        circuit_secs: a.circuit_secs.min(b.circuit_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::{Artifact, NodeKeypair};
    use serde_json::Value;

    const L: GrantLimits = GrantLimits {
        circuits: 4,
        circuit_bytes: 1 << 20,
        circuit_secs: 600,
    };

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-22T12:00:00Z").unwrap()
    }

    fn advert(key: &NodeKeypair, federation: Option<&str>, ttl: i64) -> NodeAdvertisement {
        let addr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut doc = mesh_advert::own::advert_for(key, &[addr], 1, &now(), ttl)
            .unwrap()
            .into_map();
        if let Some(f) = federation {
            doc.insert("federation/id".into(), Value::from(f));
        }
        NodeAdvertisement::sign(doc, key).unwrap()
    }

    fn q<'a>(node: NodeId, advertisement: Option<&'a NodeAdvertisement>) -> Query<'a> {
        Query {
            node,
            purpose: Purpose::Reservation,
            advertisement,
            endorsements: &[],
        }
    }

    fn code(d: Decision) -> Option<ErrorCode> {
        match d {
            Decision::Deny { code, .. } => Some(code),
            Decision::Allow { .. } => None,
        }
    }

    #[test]
    fn each_policy_decides() {
        let k = NodeKeypair::generate();
        let other = NodeKeypair::generate();
        let a = advert(&k, Some("fed:a"), 60);
        let plain = advert(&k, None, 60);
        let open = Open { limits: L };
        assert_eq!(code(open.decide(&q(k.node_id(), None), &now())), None);
        let adv = RequireAdvertisement { limits: L };
        assert_eq!(code(adv.decide(&q(k.node_id(), Some(&a)), &now())), None);
        assert_eq!(
            code(adv.decide(&q(k.node_id(), None), &now())),
            Some(ErrorCode::TransportRejected)
        );
        assert_eq!(
            code(adv.decide(&q(k.node_id(), Some(&a)), &now().plus_secs(61))),
            Some(ErrorCode::AdvExpired)
        );
        let allow = Allowlist {
            nodes: [k.node_id()].into(),
            limits: L,
        };
        assert_eq!(code(allow.decide(&q(k.node_id(), None), &now())), None);
        assert_eq!(
            code(allow.decide(&q(other.node_id(), None), &now())),
            Some(ErrorCode::TransportRejected)
        );
        let op = NodeKeypair::generate();
        let fed = Federation {
            ids: ["fed:a".to_owned()].into(),
            endorsers: [op.node_id()].into(),
            limits: L,
        };
        // An advertisement's own claim admits nobody.
        assert!(code(fed.decide(&q(k.node_id(), Some(&a)), &now())).is_some());
        assert!(code(fed.decide(&q(k.node_id(), Some(&plain)), &now())).is_some());
        assert!(code(fed.decide(&q(k.node_id(), None), &now())).is_some());
        let endorsed = |by: &NodeKeypair, fed_id: &str| {
            crate::FederationEndorsement::issue(by, fed_id, k.node_id(), &now(), 60).unwrap()
        };
        let with = |e: &[crate::FederationEndorsement]| {
            let q = Query {
                endorsements: e,
                ..q(k.node_id(), None)
            };
            fed.decide(&q, &now())
        };
        assert_eq!(code(with(&[endorsed(&op, "fed:a")])), None);
        assert!(code(with(&[endorsed(&op, "fed:b")])).is_some());
        assert!(code(with(&[endorsed(&other, "fed:a")])).is_some());
        assert_eq!(
            code(with(&[endorsed(&other, "fed:a"), endorsed(&op, "fed:a")])),
            None
        );
    }

    #[test]
    fn compositions_combine_decisions_and_limits() {
        let k = NodeKeypair::generate();
        let small = GrantLimits {
            circuits: 1,
            circuit_bytes: 1 << 30,
            circuit_secs: 60,
        };
        let both = AllOf(vec![
            Arc::new(Open { limits: L }),
            Arc::new(Allowlist {
                nodes: [k.node_id()].into(),
                limits: small,
            }),
        ]);
        assert_eq!(
            both.decide(&q(k.node_id(), None), &now()),
            Decision::Allow {
                limits: GrantLimits {
                    circuits: 1,
                    circuit_bytes: 1 << 20,
                    circuit_secs: 60
                }
            }
        );
        let stranger = NodeKeypair::generate().node_id();
        assert!(code(both.decide(&q(stranger, None), &now())).is_some());
        let either = AnyOf(vec![
            Arc::new(Allowlist {
                nodes: HashSet::new(),
                limits: L,
            }),
            Arc::new(RequireAdvertisement { limits: small }),
        ]);
        let a = advert(&k, None, 60);
        assert_eq!(
            either.decide(&q(k.node_id(), Some(&a)), &now()),
            Decision::Allow { limits: small }
        );
        assert!(code(either.decide(&q(k.node_id(), None), &now())).is_some());
        assert!(code(AllOf(vec![]).decide(&q(k.node_id(), None), &now())).is_some());
        assert!(code(AnyOf(vec![]).decide(&q(k.node_id(), None), &now())).is_some());
    }
}
