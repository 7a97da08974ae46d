//! Implicit grants: admission of standard libp2p relay clients, which never send a
//! `relay-admission-request.v1`. Pure logic, `now` passed in.
//!
//! When a peer without a live grant asks the relay for a reservation or a circuit, the
//! relay asks its policy the question a request would have asked, with what it knows
//! without one: the peer's node id (the peer id of its Ed25519 key), the purpose, the
//! peer's current advertisement if the relay's [`AdvertSource`] has it, and no
//! federation endorsements. If the policy allows, the peer gets an implicit grant (a
//! table entry like any other, not signed, never sent) with the policy's limits clamped
//! to the relay's caps; if not, the relay refuses with the policy's own coded denial.
//!
//! So `Open` and `Allowlist` admit standard clients, `RequireAdvertisement` admits those
//! whose advertisement the relay has, and `Federation` (which needs endorsements carried
//! in a signed request) admits none. An implicit grant never admits more than a request
//! from the same peer could have obtained.

use std::fmt;
use std::sync::Arc;

use mesh_core::{GrantLimits, MeshError, NodeId, Timestamp};

use crate::gate::AdvertSource;
use crate::grants::Grant;
use crate::policy::{AdmissionPolicy, Decision, Purpose, Query, min_limits};

/// What the relay needs to grant implicitly.
#[derive(Clone)]
pub struct Implicit {
    /// The relay's policy.
    pub policy: Arc<dyn AdmissionPolicy>,
    /// Where the relay looks advertisements up (its store).
    pub adverts: Arc<dyn AdvertSource>,
    /// The relay's caps: no grant gets more.
    pub caps: GrantLimits,
    /// How long an implicit grant lives (the relay's grant lifetime), seconds.
    pub ttl_secs: i64,
}

impl fmt::Debug for Implicit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Implicit")
            .field("policy", &self.policy)
            .field("caps", &self.caps)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Implicit {
    /// The implicit grant for `node` asking for `purpose` at `now`, or the policy's
    /// denial (its code; the detail says that no request was made).
    ///
    /// The grant lives [`Implicit::ttl_secs`], but no longer than the advertisement
    /// that admitted it: when the policy allows only because of the advertisement (the
    /// same question without it is denied), the grant expires with it.
    pub fn decide(
        &self,
        node: NodeId,
        purpose: Purpose,
        now: &Timestamp,
    ) -> Result<Grant, MeshError> {
        let advert = self.adverts.current(&node, now);
        let query = Query {
            node,
            purpose,
            advertisement: advert.as_ref(),
            endorsements: &[],
        };
        match self.policy.decide(&query, now) {
            Decision::Allow { limits } => {
                let mut expires_at = now.plus_secs(self.ttl_secs.max(1));
                if let Some(a) = &advert {
                    let without = Query {
                        advertisement: None,
                        ..query
                    };
                    let needs_advert =
                        matches!(self.policy.decide(&without, now), Decision::Deny { .. });
                    if needs_advert && a.expires_at() < &expires_at {
                        expires_at = a.expires_at().clone();
                    }
                }
                Ok(Grant {
                    ticket: format!("ig:{}", crate::random_hex(12)),
                    node,
                    purpose,
                    limits: min_limits(limits, self.caps),
                    issued_at: now.clone(),
                    expires_at,
                    implicit: true,
                })
            }
            Decision::Deny { code, reason } => Err(MeshError::new(
                code,
                format!("no grant, and the policy does not admit without a request: {reason}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::NoAdverts;
    use crate::policy::{Allowlist, AnyOf, Federation, Open, RequireAdvertisement};
    use mesh_core::{ErrorCode, NodeAdvertisement, NodeKeypair};
    use std::collections::HashMap;

    const CAPS: GrantLimits = GrantLimits {
        circuits: 8,
        circuit_bytes: 1 << 20,
        circuit_secs: 600,
    };
    const BIG: GrantLimits = GrantLimits {
        circuits: 100,
        circuit_bytes: 1 << 30,
        circuit_secs: 6000,
    };

    fn now() -> Timestamp {
        Timestamp::parse("2026-12-02T12:00:00Z").unwrap()
    }

    struct Adverts(HashMap<NodeId, NodeAdvertisement>);

    impl AdvertSource for Adverts {
        fn current(&self, node: &NodeId, now: &Timestamp) -> Option<NodeAdvertisement> {
            self.0.get(node).filter(|a| a.expires_at() > now).cloned()
        }
    }

    fn implicit(policy: impl AdmissionPolicy, adverts: impl AdvertSource) -> Implicit {
        Implicit {
            policy: Arc::new(policy),
            adverts: Arc::new(adverts),
            caps: CAPS,
            ttl_secs: 3600,
        }
    }

    fn advert(key: &NodeKeypair, ttl: i64) -> NodeAdvertisement {
        let addr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        mesh_advert::own::advert_for(key, &[addr], 1, &now(), ttl).unwrap()
    }

    #[test]
    fn open_grants_implicitly_with_the_policy_limits_clamped_to_the_caps() {
        let node = NodeKeypair::generate().node_id();
        let i = implicit(Open { limits: BIG }, NoAdverts);
        let g = i.decide(node, Purpose::Reservation, &now()).unwrap();
        assert!(g.implicit && g.ticket.starts_with("ig:"));
        assert_eq!(
            (g.node, g.purpose, g.limits),
            (node, Purpose::Reservation, CAPS)
        );
        assert_eq!(g.expires_at, now().plus_secs(3600));
        let c = i
            .decide(node, Purpose::Circuit { target: None }, &now())
            .unwrap();
        assert_eq!(c.purpose, Purpose::Circuit { target: None });
        assert_ne!(c.ticket, g.ticket);
    }

    #[test]
    fn allowlist_grants_listed_ids_only() {
        let (listed, other) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let i = implicit(
            Allowlist {
                nodes: [listed].into(),
                limits: CAPS,
            },
            NoAdverts,
        );
        assert!(i.decide(listed, Purpose::Reservation, &now()).is_ok());
        let e = i.decide(other, Purpose::Reservation, &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        assert!(e.detail.contains("allowlist"), "{e}");
    }

    #[test]
    fn federation_needs_a_request_and_refuses_with_its_code() {
        let node = NodeKeypair::generate().node_id();
        let i = implicit(
            Federation {
                ids: ["fed:a".to_owned()].into(),
                endorsers: [NodeKeypair::generate().node_id()].into(),
                limits: CAPS,
            },
            NoAdverts,
        );
        let e = i.decide(node, Purpose::Reservation, &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        assert!(e.detail.contains("federation endorsement"), "{e}");
    }

    #[test]
    fn advert_policy_uses_the_store_and_the_grant_ends_with_the_advert() {
        let (known, unknown) = (NodeKeypair::generate(), NodeKeypair::generate());
        let store = || Adverts([(known.node_id(), advert(&known, 600))].into());
        let i = implicit(RequireAdvertisement { limits: CAPS }, store());
        let g = i
            .decide(known.node_id(), Purpose::Reservation, &now())
            .unwrap();
        assert_eq!(g.expires_at, now().plus_secs(600));
        assert!(
            i.decide(unknown.node_id(), Purpose::Reservation, &now())
                .is_err()
        );
        // Expired in the store: refused.
        assert!(
            i.decide(known.node_id(), Purpose::Reservation, &now().plus_secs(601))
                .is_err()
        );
        // Allowed without the advert (allowlisted): the grant's own lifetime.
        let either = implicit(
            AnyOf(vec![
                Arc::new(Allowlist {
                    nodes: [known.node_id()].into(),
                    limits: CAPS,
                }),
                Arc::new(RequireAdvertisement { limits: CAPS }),
            ]),
            store(),
        );
        let g = either
            .decide(known.node_id(), Purpose::Reservation, &now())
            .unwrap();
        assert_eq!(g.expires_at, now().plus_secs(3600));
    }
}
