//! `node-advertisement.v1`: a node's signed endpoints, with libmesh's transport set.

use multiaddr::{Multiaddr, Protocol};
use serde_json::{Map, Value};

use crate::artifact::fields::{Fields, TRANSPORTS, enum_check};
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// Prefix of an endpoint URL that carries a multiaddr.
pub const MULTIADDR_URL_PREFIX: &str = "multiaddr:";

/// Longest `advertisement/id`, bytes of UTF-8 (the node's own ids are about 80).
pub const MAX_ADVERTISEMENT_ID: usize = 256;

/// Largest `policy_annotations` object, bytes of its deterministic CBOR encoding.
pub const MAX_POLICY_ANNOTATIONS_BYTES: usize = 4096;

/// One advertised endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `endpoint/url`: `wss://…`, `ws://…` or `multiaddr:/…`.
    pub url: String,
    /// `endpoint/transport`: `wss`, `ws`, `tcp` or `quic`.
    pub transport: String,
    /// `endpoint/role`: `listener` or `relay`.
    pub role: String,
    /// `endpoint/priority`: lower is preferred.
    pub priority: u64,
}

impl Endpoint {
    /// The multiaddr of a `multiaddr:` endpoint.
    pub fn multiaddr(&self) -> Option<Multiaddr> {
        self.url.strip_prefix(MULTIADDR_URL_PREFIX)?.parse().ok()
    }

    /// Whether this is a relay (`/p2p-circuit`) endpoint.
    pub fn is_relay(&self) -> bool {
        self.role == "relay"
    }
}

/// A structurally valid `node-advertisement.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAdvertisement {
    doc: Map<String, Value>,
    node_id: NodeId,
    sequence_no: u64,
    advertised_at: Timestamp,
    expires_at: Timestamp,
}

impl NodeAdvertisement {
    /// The advertised node.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// `sequence/no`.
    pub fn sequence_no(&self) -> u64 {
        self.sequence_no
    }

    /// `advertised-at`.
    pub fn advertised_at(&self) -> &Timestamp {
        &self.advertised_at
    }

    /// `expires-at`.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }

    /// The endpoints, in document order (built from the validated document on each call).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let text = |e: &Value, k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        self.doc
            .get("endpoints")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|e| Endpoint {
                        url: text(e, "endpoint/url"),
                        transport: text(e, "endpoint/transport"),
                        role: text(e, "endpoint/role"),
                        priority: e
                            .get("endpoint/priority")
                            .and_then(Value::as_u64)
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `advertisement/id`.
    pub fn advertisement_id(&self) -> &str {
        self.doc
            .get("advertisement/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Checks that `url` fits `transport` and `role` (libmesh endpoint extension).
fn check_endpoint_url(url: &str, transport: &str, role: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URL contains whitespace or control characters".into());
    }
    if let Some(ma) = url.strip_prefix(MULTIADDR_URL_PREFIX) {
        let addr: Multiaddr = ma.parse().map_err(|e| format!("bad multiaddr: {e}"))?;
        let has = |pred: fn(&Protocol<'_>) -> bool| addr.iter().any(|p| pred(&p));
        let fits = match transport {
            "quic" => has(|p| matches!(p, Protocol::QuicV1)),
            "wss" => {
                has(|p| matches!(p, Protocol::Wss(_)))
                    || (has(|p| matches!(p, Protocol::Tls))
                        && has(|p| matches!(p, Protocol::Ws(_))))
            }
            "ws" => has(|p| matches!(p, Protocol::Ws(_))) && !has(|p| matches!(p, Protocol::Tls)),
            "webrtc-direct" => {
                has(|p| matches!(p, Protocol::WebRTCDirect))
                    && has(|p| matches!(p, Protocol::Certhash(_)))
            }
            _ => {
                has(|p| matches!(p, Protocol::Tcp(_)))
                    && !has(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
            }
        };
        if !fits {
            return Err(format!("multiaddr does not carry transport `{transport}`"));
        }
        let circuit = has(|p| matches!(p, Protocol::P2pCircuit));
        if circuit != (role == "relay") {
            return Err("role `relay` goes with /p2p-circuit addresses and only with them".into());
        }
        return Ok(());
    }
    let scheme = match transport {
        "wss" => "wss://",
        "ws" => "ws://",
        other => return Err(format!("a `{other}` endpoint needs a `multiaddr:` URL")),
    };
    match url.strip_prefix(scheme) {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(format!(
            "a `{transport}` endpoint needs a `{scheme}host…` URL"
        )),
    }
}

impl Artifact for NodeAdvertisement {
    const FAMILY: &'static str = "node-advertisement.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        let id = f.str("advertisement/id")?;
        if id.len() > MAX_ADVERTISEMENT_ID {
            return Err(f.err(
                "advertisement/id",
                &format!(
                    "is {} bytes, over the {MAX_ADVERTISEMENT_ID}-byte maximum",
                    id.len()
                ),
            ));
        }
        let node_id = f.node_id("node/id")?;
        let sequence_no = f.u64("sequence/no")?;
        let advertised_at = f.timestamp("advertised-at")?;
        let expires_at = f.timestamp("expires-at")?;
        if expires_at < advertised_at {
            return Err(f.err("expires-at", "is before advertised-at"));
        }
        f.key_matches("node/id")?;
        f.opt_str("federation/id")?;
        if let Some(s) = f.opt_object("succession")? {
            s.node_id("successor/node-id")?;
            s.opt_str("proof/current")?;
            s.opt_str("proof/successor")?;
        }
        let items = f.array("endpoints", 1)?;
        for (i, item) in items.iter().enumerate() {
            let e = f.item("endpoints", i, item)?;
            let url = e.str("endpoint/url")?;
            let transport = e.one_of("endpoint/transport", TRANSPORTS)?;
            let role = e.one_of("endpoint/role", &["listener", "relay"])?;
            e.u64("endpoint/priority")?;
            check_endpoint_url(url, transport, role).map_err(|p| e.err("endpoint/url", &p))?;
        }
        f.check_string_array("transports/supported", 1, true, enum_check(TRANSPORTS))?;
        f.signature_shape(true)?;
        if f.opt_object("policy_annotations")?.is_some()
            && let Some(annotations) = doc.get("policy_annotations")
        {
            let size = crate::cbor::encode(annotations).len();
            if size > MAX_POLICY_ANNOTATIONS_BYTES {
                return Err(f.err(
                    "policy_annotations",
                    &format!(
                        "encodes to {size} bytes, over the {MAX_POLICY_ANNOTATIONS_BYTES}-byte maximum"
                    ),
                ));
            }
        }
        Ok(NodeAdvertisement {
            doc,
            node_id,
            sequence_no,
            advertised_at,
            expires_at,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.node_id.fingerprint())
    }

    /// Past `expires-at` is `E_ADV_EXPIRED`; `advertised-at` more than 30 s ahead of `now`
    /// is `E_PROTO_INVALID`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        if now > &self.expires_at {
            return Err(MeshError::new(
                ErrorCode::AdvExpired,
                format!(
                    "{}: expired at {} (now {now})",
                    Self::FAMILY,
                    self.expires_at
                ),
            ));
        }
        not_in_future(Self::FAMILY, "advertised-at", &self.advertised_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::check_endpoint_url;

    #[test]
    fn endpoint_urls_must_fit_transport_and_role() {
        let peer = "12D3KooWSfMx5BpXVMrzyfMGHVLQe6UWNWX13ZBPLDmVoAKZ4oun";
        let quic = format!("multiaddr:/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}");
        let relay = format!("multiaddr:/ip4/127.0.0.1/tcp/4001/p2p/{peer}/p2p-circuit");
        let webrtc = "multiaddr:/ip4/127.0.0.1/udp/4004/webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g";
        for (url, transport, role) in [
            ("wss://node.example/peer", "wss", "listener"),
            ("ws://127.0.0.1:4002", "ws", "listener"),
            ("wss://relay.example", "wss", "relay"),
            (quic.as_str(), "quic", "listener"),
            ("multiaddr:/ip4/127.0.0.1/tcp/4001", "tcp", "listener"),
            (relay.as_str(), "tcp", "relay"),
            ("multiaddr:/ip4/127.0.0.1/tcp/443/tls/ws", "wss", "listener"),
            (webrtc, "webrtc-direct", "listener"),
        ] {
            assert_eq!(check_endpoint_url(url, transport, role), Ok(()), "{url}");
        }
        for (url, transport, role) in [
            ("https://node.example", "wss", "listener"),
            ("wss://", "wss", "listener"),
            ("wss://a b", "wss", "listener"),
            (quic.as_str(), "tcp", "listener"),
            ("multiaddr:/ip4/127.0.0.1/tcp/4001", "tcp", "relay"),
            (relay.as_str(), "tcp", "listener"),
            ("multiaddr:not-an-addr", "tcp", "listener"),
            ("tcp://127.0.0.1:4001", "tcp", "listener"),
            ("multiaddr:/ip4/127.0.0.1/tcp/4002/ws", "tcp", "listener"),
            (webrtc, "tcp", "listener"),
            (webrtc, "quic", "listener"),
            (
                "multiaddr:/ip4/127.0.0.1/udp/4004/webrtc-direct",
                "webrtc-direct",
                "listener",
            ),
            (
                "multiaddr:/ip4/127.0.0.1/tcp/4001",
                "webrtc-direct",
                "listener",
            ),
            ("webrtc-direct://127.0.0.1", "webrtc-direct", "listener"),
        ] {
            assert!(check_endpoint_url(url, transport, role).is_err(), "{url}");
        }
    }
}
