//! Building and checking the session artifacts: hello and ack (`peer-handshake.v1`) and
//! the node's `capability-advertisement.v1` with self-issued passports.
//!
//! A self-issued passport is a `capability-passport.v1` document signed by the node key
//! (signing input `capability-passport.v1` || 0x00 || CBOR without `signature`, as for
//! every family). The receiver accepts a capability only when its passport names the
//! advertising node as subject and issuer, names the same capability, is unexpired and
//! verifies; `core/messaging` must be among the accepted ones.

use mesh_core::artifact::{
    Artifact, SignedBytes, read_signature, signature_value, signing_input, verify_all_strict,
};
use mesh_core::families::CORE_MESSAGING;
use mesh_core::{
    CapabilityAdvertisement, ErrorCode, MeshError, MeshResult, NodeId, NodeKeypair, PeerHandshake,
    Timestamp,
};
use serde_json::{Map, Value, json};

use crate::secret::EphemeralKey;

/// The family name of self-issued passports.
pub const PASSPORT_FAMILY: &str = "capability-passport.v1";

/// Message families a libmesh node speaks.
pub const MESSAGES_SUPPORTED: &[&str] = &[
    "peer-handshake.v1",
    "capability-advertisement.v1",
    "signal-marker-envelope.v1",
];

fn id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("{prefix}:{}", hex_lower(&b))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a hello or ack carries besides the identities.
#[derive(Debug, Clone)]
pub struct HandshakeParams<'a> {
    /// `capabilities/offered`.
    pub offered: &'a [&'a str],
    /// `transport/profile` (framing, unsigned): `tcp`, `quic`, `ws` or `wss`.
    pub transport: &'a str,
    /// `session/intent`.
    pub intent: &'a str,
}

fn handshake(
    key: &NodeKeypair,
    eph: &EphemeralKey,
    recipient: Option<NodeId>,
    ack_of: Option<&str>,
    p: &HandshakeParams<'_>,
    now: &Timestamp,
) -> MeshResult<PeerHandshake> {
    let mut doc = Map::new();
    doc.insert("schema/v".into(), 1.into());
    doc.insert("handshake/id".into(), id("hs").into());
    doc.insert(
        "handshake/mode".into(),
        if ack_of.is_some() { "ack" } else { "hello" }.into(),
    );
    if let Some(of) = ack_of {
        doc.insert("ack/of-handshake-id".into(), of.into());
    }
    doc.insert("ts".into(), now.as_str().into());
    doc.insert("sender/node-id".into(), key.node_id().to_string().into());
    if let Some(r) = recipient {
        doc.insert("recipient/node-id".into(), r.to_string().into());
    }
    doc.insert("key/alg".into(), "ed25519".into());
    doc.insert("key/public".into(), key.fingerprint().to_string().into());
    doc.insert("session/pub".into(), eph.session_pub().into());
    doc.insert(
        "protocol/version".into(),
        mesh_core::PROTOCOL_VERSION.into(),
    );
    doc.insert("transport/profile".into(), p.transport.into());
    doc.insert("session/intent".into(), p.intent.into());
    doc.insert("nonce".into(), id("nonce").into());
    doc.insert("capabilities/offered".into(), json!(p.offered));
    PeerHandshake::sign(doc, key)
}

/// A signed hello to `recipient`.
pub fn build_hello(
    key: &NodeKeypair,
    eph: &EphemeralKey,
    recipient: NodeId,
    p: &HandshakeParams<'_>,
    now: &Timestamp,
) -> MeshResult<PeerHandshake> {
    handshake(key, eph, Some(recipient), None, p, now)
}

/// A signed ack of `hello`.
pub fn build_ack(
    key: &NodeKeypair,
    eph: &EphemeralKey,
    hello: &PeerHandshake,
    p: &HandshakeParams<'_>,
    now: &Timestamp,
) -> MeshResult<PeerHandshake> {
    handshake(
        key,
        eph,
        Some(hello.sender()),
        Some(hello.handshake_id()),
        p,
        now,
    )
}

/// The node's capability advertisement for `capabilities` (`core/messaging` is always
/// included), each with a self-issued passport valid for `ttl_secs`.
pub fn build_capabilities(
    key: &NodeKeypair,
    capabilities: &[&str],
    transports: &[&str],
    now: &Timestamp,
    ttl_secs: i64,
) -> MeshResult<CapabilityAdvertisement> {
    let mut caps: Vec<&str> = vec![CORE_MESSAGING];
    caps.extend(capabilities.iter().filter(|c| **c != CORE_MESSAGING));
    let node = key.node_id().to_string();
    let participant = key.participant_id().to_string();
    let expires = now.plus_secs(ttl_secs);
    let presented: Vec<Value> = caps
        .iter()
        .map(|cap| {
            let mut passport = json!({
                "schema": PASSPORT_FAMILY,
                "passport_id": id("passport"),
                "node_id": node,
                "capability_id": cap,
                "scope": {"protocol/version": mesh_core::PROTOCOL_VERSION},
                "issued_at": now.as_str(),
                "expires_at": expires.as_str(),
                "issuer/participant_id": participant,
                "issuer/node_id": node,
                "revocation_ref": null,
            });
            let map = passport.as_object().cloned().unwrap_or_default();
            let input = signing_input(PASSPORT_FAMILY, &["signature"], &map);
            passport["signature"] = signature_value(&key.sign(&input));
            json!({
                "capability/id": cap,
                "wire/name": cap,
                "assertion/kind": "self-issued-passport",
                "passport": passport,
            })
        })
        .collect();
    let doc = json!({
        "schema/v": 1,
        "advertisement/id": id("caps"),
        "node/id": node,
        "published-at": now.as_str(),
        "protocol/version": mesh_core::PROTOCOL_VERSION,
        "transport/profiles": transports,
        "capabilities/core": caps,
        "capabilities/presented": presented,
        "messages/supported": MESSAGES_SUPPORTED,
    });
    let Value::Object(map) = doc else {
        return Err(MeshError::invalid("capability document is not an object"));
    };
    CapabilityAdvertisement::sign(map, key)
}

/// Checks a peer's (already signature-verified) capability advertisement: it must be
/// `peer`'s, and each listed capability is accepted only with a matching, unexpired,
/// validly signed self-issued passport. Returns the accepted capabilities;
/// `core/messaging` missing among them is `E_PROTO_CAP_MISSING`.
pub fn accept_capabilities(
    ad: &CapabilityAdvertisement,
    peer: &NodeId,
    now: &Timestamp,
) -> MeshResult<Vec<String>> {
    accept(ad, peer, now, false)
}

/// The most capabilities of a peer's advertisement that a session reads: the first
/// this many of `capabilities/core` have their passports checked, the rest are passed
/// over (neither accepted nor reported unproven). The family sets no bound; without
/// this one a hello of 64 KiB carried some 300 passports, each a signature to verify.
pub const MAX_CAPABILITIES: usize = 32;

/// The capabilities of `ad` that a session reads: the first [`MAX_CAPABILITIES`].
fn considered(ad: &CapabilityAdvertisement) -> &[String] {
    let all = ad.capabilities();
    &all[..all.len().min(MAX_CAPABILITIES)]
}

/// The capabilities `ad` lists that were not accepted (no matching, unexpired,
/// verifying passport), at most 32 of at most 256 bytes each.
pub(crate) fn unproven(ad: &CapabilityAdvertisement, accepted: &[String]) -> Vec<String> {
    considered(ad)
        .iter()
        .filter(|c| !accepted.contains(c) && !c.is_empty() && c.len() <= 256)
        .take(32)
        .cloned()
        .collect()
}

/// The passport an advertisement presents for `cap`: the first `capabilities/presented`
/// entry with that wire name and a self-issued passport object.
fn presented_passport<'a>(presented: &'a [Value], cap: &str) -> Option<&'a Map<String, Value>> {
    presented
        .iter()
        .find(|p| {
            p.get("wire/name").and_then(Value::as_str) == Some(cap)
                && p.get("assertion/kind").and_then(Value::as_str) == Some("self-issued-passport")
        })
        .and_then(|e| e.get("passport"))
        .and_then(Value::as_object)
}

/// [`accept_capabilities`]; with `passports_verified` the passport signatures are known
/// to verify against the advertisement's node key (see [`verify_set`]) and are not
/// checked again.
pub(crate) fn accept(
    ad: &CapabilityAdvertisement,
    peer: &NodeId,
    now: &Timestamp,
    passports_verified: bool,
) -> MeshResult<Vec<String>> {
    if ad.node_id() != *peer {
        return Err(MeshError::new(
            ErrorCode::SigUnknownSigner,
            "capability advertisement of another node than the session peer",
        ));
    }
    let key = peer
        .fingerprint()
        .verifying_key()
        .map_err(|e| MeshError::from(e).context("peer key"))?;
    let node = peer.to_string();
    let presented = ad
        .as_map()
        .get("capabilities/presented")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut accepted = Vec::new();
    for cap in considered(ad) {
        let Some(passport) = presented_passport(presented, cap) else {
            continue;
        };
        let text = |k: &str| passport.get(k).and_then(Value::as_str);
        let matches = text("node_id") == Some(node.as_str())
            && text("issuer/node_id") == Some(node.as_str())
            && text("capability_id") == Some(cap.as_str());
        if !matches {
            return Err(MeshError::invalid(format!(
                "passport for `{cap}` does not match the node or capability"
            )));
        }
        let unexpired = text("expires_at")
            .and_then(|t| Timestamp::parse(t).ok())
            .is_some_and(|t| &t >= now);
        if !unexpired {
            continue;
        }
        if !passports_verified {
            let sig =
                read_signature(passport).map_err(|e| e.context(format!("passport for `{cap}`")))?;
            let input = signing_input(PASSPORT_FAMILY, &["signature"], passport);
            key.verify_strict(&input, &sig).map_err(|_| {
                MeshError::new(
                    ErrorCode::SigInvalid,
                    format!("passport for `{cap}` does not verify"),
                )
            })?;
        }
        accepted.push(cap.clone());
    }
    if !accepted.iter().any(|c| c == CORE_MESSAGING) {
        return Err(MeshError::new(
            ErrorCode::ProtoCapMissing,
            "no valid self-issued passport for core/messaging",
        ));
    }
    Ok(accepted)
}

/// Checks in one pass (`verify_all_strict`) every signature a peer's artifact set carries: its
/// handshake artifact (by its `sender/node-id`), its capability advertisement (by its
/// `node/id`) and every passport that capability acceptance could check (by the
/// advertisement's node). `true` means all of them verify with `verify_strict`'s accept
/// set; `false` means something did not verify or could not be read, and the caller
/// checks one by one, which names the culprit with its code.
pub fn verify_set(hs: &PeerHandshake, ad: &CapabilityAdvertisement) -> bool {
    let node = ad.node_id();
    let presented = ad
        .as_map()
        .get("capabilities/presented")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let passports: Vec<&Map<String, Value>> = considered(ad)
        .iter()
        .filter_map(|cap| presented_passport(presented, cap))
        .collect();
    let mut inputs = Vec::with_capacity(2 + passports.len());
    let mut signers = Vec::with_capacity(2 + passports.len());
    let mut sigs = Vec::with_capacity(2 + passports.len());
    let (Some(hs_signer), Some(ad_signer)) = (hs.signer(), ad.signer()) else {
        return false;
    };
    for (signer, doc, input) in [
        (hs_signer, hs.as_map(), hs.signing_input()),
        (ad_signer, ad.as_map(), ad.signing_input()),
    ] {
        let Ok(sig) = read_signature(doc) else {
            return false;
        };
        inputs.push(input);
        signers.push(signer);
        sigs.push(sig);
    }
    for passport in passports {
        let Ok(sig) = read_signature(passport) else {
            return false;
        };
        inputs.push(signing_input(PASSPORT_FAMILY, &["signature"], passport));
        signers.push(*node.fingerprint());
        sigs.push(sig);
    }
    // The handshake artifact (first) is fresh each time; the capability advertisement and
    // its passports come again unchanged in every hello and ack of the peer, so their
    // successes are remembered and not verified again.
    let items: Vec<SignedBytes<'_>> = inputs
        .iter()
        .zip(signers)
        .zip(sigs)
        .enumerate()
        .map(|(i, ((input, signer), signature))| SignedBytes {
            signer,
            message: input,
            signature,
            remember: i > 0,
        })
        .collect();
    verify_all_strict(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ReplayConfig, ReplayGuard};
    use crate::secret::{Role, Transcript, derive, parse_session_pub};

    fn now() -> Timestamp {
        Timestamp::parse("2026-03-23T18:10:00Z").unwrap()
    }

    const P: HandshakeParams<'static> = HandshakeParams {
        offered: &["core/messaging", "core/discovery"],
        transport: "tcp",
        intent: "peer-connect",
    };

    #[test]
    fn hello_ack_round_with_replay_guard_and_shared_secret() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let (ea, eb) = (EphemeralKey::generate(), EphemeralKey::generate());
        let mut ga = ReplayGuard::new(ReplayConfig::default(), mesh_core::PROTOCOL_VERSION);
        let mut gb = ReplayGuard::new(ReplayConfig::default(), mesh_core::PROTOCOL_VERSION);

        let hello = build_hello(&a, &ea, b.node_id(), &P, &now()).unwrap();
        ga.hello_sent(hello.handshake_id(), b.node_id(), &now())
            .unwrap();
        let hello = PeerHandshake::verify_cbor(&hello.to_cbor(), &now()).unwrap();
        gb.check_incoming(&hello, &now()).unwrap();
        let ack = build_ack(&b, &eb, &hello, &P, &now()).unwrap();
        let ack = PeerHandshake::verify_cbor(&ack.to_cbor(), &now()).unwrap();
        assert_eq!(ack.ack_of(), Some(hello.handshake_id()));
        assert!(ga.check_incoming(&ack, &now()).unwrap().is_some());

        let t = Transcript {
            hello_id: hello.handshake_id(),
            ack_id: ack.handshake_id(),
            initiator: a.node_id(),
            responder: b.node_id(),
        };
        let sa = derive(
            Role::Initiator,
            &a,
            &ea,
            &parse_session_pub(ack.session_pub()).unwrap(),
            &t,
        )
        .unwrap();
        let sb = derive(
            Role::Responder,
            &b,
            &eb,
            &parse_session_pub(hello.session_pub()).unwrap(),
            &t,
        )
        .unwrap();
        assert_eq!(sa, sb);
        // The same hello again is a replay.
        assert_eq!(
            gb.check_incoming(&hello, &now()).unwrap_err().code,
            ErrorCode::HsReplay
        );
    }

    #[test]
    fn capabilities_with_real_passports_are_accepted() {
        let a = NodeKeypair::generate();
        let ad = build_capabilities(
            &a,
            &["core/discovery", "core/keepalive"],
            &["tcp", "quic"],
            &now(),
            300,
        )
        .unwrap();
        let ad = CapabilityAdvertisement::verify_cbor(&ad.to_cbor(), &now()).unwrap();
        let caps = accept_capabilities(&ad, &a.node_id(), &now()).unwrap();
        assert_eq!(caps, ["core/messaging", "core/discovery", "core/keepalive"]);
        // Someone else's advertisement on this session: unknown signer.
        let b = NodeKeypair::generate();
        assert_eq!(
            accept_capabilities(&ad, &b.node_id(), &now())
                .unwrap_err()
                .code,
            ErrorCode::SigUnknownSigner
        );
        // Expired passports count as absent: core/messaging missing.
        let later = now().plus_secs(301);
        assert_eq!(
            accept_capabilities(&ad, &a.node_id(), &later)
                .unwrap_err()
                .code,
            ErrorCode::ProtoCapMissing
        );
    }

    #[test]
    fn forged_or_mismatched_passports_are_refused() {
        let a = NodeKeypair::generate();
        let good = build_capabilities(&a, &[], &["tcp"], &now(), 300).unwrap();
        // Re-sign the advertisement after changing the passport's capability id.
        let mut doc = good.as_map().clone();
        doc["capabilities/presented"][0]["passport"]["capability_id"] = "core/relay".into();
        let bad = CapabilityAdvertisement::sign(doc, &a).unwrap();
        assert_eq!(
            accept_capabilities(&bad, &a.node_id(), &now())
                .unwrap_err()
                .code,
            ErrorCode::ProtoInvalid
        );
        // A passport signed by another key.
        let other = NodeKeypair::generate();
        let mut doc = good.as_map().clone();
        let mut passport = doc["capabilities/presented"][0]["passport"]
            .as_object()
            .unwrap()
            .clone();
        passport.remove("signature");
        let input = signing_input(PASSPORT_FAMILY, &["signature"], &passport);
        doc["capabilities/presented"][0]["passport"]["signature"] =
            signature_value(&other.sign(&input));
        let forged = CapabilityAdvertisement::sign(doc, &a).unwrap();
        assert_eq!(
            accept_capabilities(&forged, &a.node_id(), &now())
                .unwrap_err()
                .code,
            ErrorCode::SigInvalid
        );
    }
}
