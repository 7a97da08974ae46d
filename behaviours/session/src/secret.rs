//! The session secret both ends of a handshake derive.
//!
//! Each side sends a fresh X25519 key in `session/pub`. The secret mixes three
//! Diffie-Hellman terms, so it is fresh per handshake and bound to both node identities
//! (the Ed25519 node keys in their X25519 form):
//!
//! - `ee` = initiator ephemeral × responder ephemeral,
//! - `es` = initiator ephemeral × responder identity,
//! - `se` = initiator identity × responder ephemeral,
//!
//! then `HKDF-SHA256(salt = "libmesh/session/v1", ikm = ee || es || se,
//! info = hello id || 0x00 || ack id || 0x00 || initiator node id || 0x00 || responder node id)`.
//! A term that comes out all zero (a small-order public key) is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use mesh_core::{MeshError, MeshResult, NodeId, NodeKeypair};
use rand_core::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

const SALT: &[u8] = b"libmesh/session/v1";

/// A per-handshake X25519 key.
pub struct EphemeralKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl EphemeralKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(secret.as_mut_slice());
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        EphemeralKey { secret, public }
    }

    /// The public key as `session/pub` (raw unpadded base64url, 43 characters).
    pub fn session_pub(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public)
    }
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EphemeralKey({})", self.session_pub())
    }
}

/// Decodes a `session/pub` value.
pub fn parse_session_pub(text: &str) -> MeshResult<[u8; 32]> {
    let mut out = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(32) if text.len() == 43 => Ok(out),
        _ => Err(MeshError::invalid(
            "session/pub is not unpadded base64url of 32 bytes",
        )),
    }
}

/// Which side of the handshake this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the hello.
    Initiator,
    /// Answered with the ack.
    Responder,
}

/// The secret a session is bound to.
pub struct SessionSecret(Zeroizing<[u8; 32]>);

impl SessionSecret {
    /// The 32 secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for SessionSecret {
    fn eq(&self, other: &Self) -> bool {
        // Not secret-dependent timing in practice (tests and diagnostics only).
        self.0.as_slice() == other.0.as_slice()
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

fn dh(secret: &[u8; 32], public: &[u8; 32]) -> MeshResult<[u8; 32]> {
    checked(MontgomeryPoint(*public).mul_clamped(*secret).to_bytes())
}

/// X25519 with a peer key already in Edwards form: the u-coordinate of
/// `[clamp(secret)] P` is what the Montgomery ladder computes for `P`'s u-coordinate
/// (`-P` has the same one), with the faster constant-time Edwards scalar multiplication.
fn dh_edwards(secret: &[u8; 32], point: &EdwardsPoint) -> MeshResult<[u8; 32]> {
    checked(point.mul_clamped(*secret).to_montgomery().to_bytes())
}

/// A peer's X25519 key (`session/pub`) with its Edwards form when it has one (a point
/// of the curve, not of its twist), so that the two terms with it share the conversion.
struct PeerPub<'a> {
    bytes: &'a [u8; 32],
    edwards: Option<EdwardsPoint>,
}

impl<'a> PeerPub<'a> {
    fn new(bytes: &'a [u8; 32]) -> Self {
        PeerPub {
            bytes,
            edwards: MontgomeryPoint(*bytes).to_edwards(0),
        }
    }

    fn dh(&self, secret: &[u8; 32]) -> MeshResult<[u8; 32]> {
        match &self.edwards {
            Some(p) => dh_edwards(secret, p),
            None => dh(secret, self.bytes),
        }
    }
}

fn checked(shared: [u8; 32]) -> MeshResult<[u8; 32]> {
    if shared == [0u8; 32] {
        return Err(MeshError::invalid(
            "session key agreement with a small-order key",
        ));
    }
    Ok(shared)
}

/// Everything one side knows when deriving.
#[derive(Debug)]
pub struct Transcript<'a> {
    /// The hello's `handshake/id`.
    pub hello_id: &'a str,
    /// The ack's `handshake/id`.
    pub ack_id: &'a str,
    /// The initiator's node id.
    pub initiator: NodeId,
    /// The responder's node id.
    pub responder: NodeId,
}

/// The term of a handshake that needs only this side's ephemeral key and the peer's
/// identity (known from the connection's `PeerId` before any message): `es` on the
/// initiator, `se` on the responder. Computing it ahead (while the network round trip is
/// in flight) takes one of the three X25519 operations off the critical path.
pub struct IdentityTerm {
    peer: NodeId,
    /// Outer error: the peer's key has no X25519 form; inner: the term is all zero.
    term: MeshResult<MeshResult<Zeroizing<[u8; 32]>>>,
}

impl IdentityTerm {
    /// Computes `mine` × the X25519 form of `peer`'s identity key.
    pub fn compute(mine: &EphemeralKey, peer: NodeId) -> Self {
        let term = peer
            .fingerprint()
            .verifying_key()
            .map_err(|e| MeshError::from(e).context("peer identity"))
            .map(|k| dh_edwards(&mine.secret, &k.to_edwards()).map(Zeroizing::new));
        IdentityTerm { peer, term }
    }

    /// Whether the term came out usable (a valid, not small-order peer key).
    pub fn is_ok(&self) -> bool {
        matches!(self.term, Ok(Ok(_)))
    }

    /// Whether the term was computed for `peer`.
    pub fn is_for(&self, peer: &NodeId) -> bool {
        self.peer == *peer
    }
}

impl std::fmt::Debug for IdentityTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityTerm({})", self.peer)
    }
}

/// Derives the session secret. `me` and `mine` are this node's identity and
/// ephemeral key; `peer_session_pub` is the other side's `session/pub` bytes.
pub fn derive(
    role: Role,
    me: &NodeKeypair,
    mine: &EphemeralKey,
    peer_session_pub: &[u8; 32],
    t: &Transcript<'_>,
) -> MeshResult<SessionSecret> {
    let peer = match role {
        Role::Initiator => t.responder,
        Role::Responder => t.initiator,
    };
    derive_with(
        role,
        me,
        mine,
        &IdentityTerm::compute(mine, peer),
        peer_session_pub,
        t,
    )
}

/// [`derive()`] with the identity term computed ahead; `term` must come from `mine` and
/// the transcript's peer (otherwise `E_PROTO_INVALID`). Same result and same errors.
pub fn derive_with(
    role: Role,
    me: &NodeKeypair,
    mine: &EphemeralKey,
    term: &IdentityTerm,
    peer_session_pub: &[u8; 32],
    t: &Transcript<'_>,
) -> MeshResult<SessionSecret> {
    let peer = match role {
        Role::Initiator => t.responder,
        Role::Responder => t.initiator,
    };
    if !term.is_for(&peer) {
        return Err(MeshError::invalid(
            "session key agreement: identity term of another peer",
        ));
    }
    // The same checks in the same order as computing every term here.
    let identity_term = term.term.as_ref().map_err(Clone::clone)?;
    let my_identity = me.x25519_secret();
    let peer_pub = PeerPub::new(peer_session_pub);
    let ee = Zeroizing::new(peer_pub.dh(&mine.secret)?);
    let (es, se) = match role {
        Role::Initiator => {
            let es = identity_term.clone()?;
            (es, Zeroizing::new(peer_pub.dh(&my_identity)?))
        }
        Role::Responder => {
            let es = Zeroizing::new(peer_pub.dh(&my_identity)?);
            (es, identity_term.clone()?)
        }
    };
    let mut ikm = Zeroizing::new([0u8; 96]);
    ikm[..32].copy_from_slice(ee.as_slice());
    ikm[32..64].copy_from_slice(es.as_slice());
    ikm[64..].copy_from_slice(se.as_slice());
    let info = [
        t.hello_id.as_bytes(),
        &[0],
        t.ack_id.as_bytes(),
        &[0],
        t.initiator.to_string().as_bytes(),
        &[0],
        t.responder.to_string().as_bytes(),
    ]
    .concat();
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SALT), ikm.as_slice())
        .expand(&info, okm.as_mut_slice())
        .map_err(|_| MeshError::invalid("HKDF output length"))?;
    Ok(SessionSecret(okm))
}

/// Whether an X25519 public key (its u-coordinate, high bit ignored as X25519 does) is
/// of small order on the curve or its twist, i.e. whether every Diffie-Hellman term with
/// it comes out all zero. Lets a side know before sending its ack that the terms it
/// computes afterwards cannot fail.
pub fn is_small_order(public: &[u8; 32]) -> bool {
    let mut u = *public;
    u[31] &= 0x7f;
    SMALL_ORDER_U.contains(&u)
}

/// The u-coordinates of the small-order points of Curve25519 and its twist (0, 1, -1 and
/// the two of order 8) and the non-canonical encodings p and p + 1 of 0 and 1.
static SMALL_ORDER_U: std::sync::LazyLock<Vec<[u8; 32]>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
        .iter()
        .map(|p| p.to_montgomery().to_bytes())
        .collect();
    let mut p = [0xffu8; 32];
    p[31] = 0x7f;
    for low in [0xec, 0xed, 0xee] {
        p[0] = low; // p - 1, p, p + 1
        v.push(p);
    }
    v.sort_unstable();
    v.dedup();
    v
});

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (NodeKeypair, NodeKeypair) {
        (NodeKeypair::generate(), NodeKeypair::generate())
    }

    fn both(
        a: &NodeKeypair,
        b: &NodeKeypair,
        ea: &EphemeralKey,
        eb: &EphemeralKey,
        hello: &str,
    ) -> (SessionSecret, SessionSecret) {
        let t = Transcript {
            hello_id: hello,
            ack_id: "hs:ack",
            initiator: a.node_id(),
            responder: b.node_id(),
        };
        let pa = parse_session_pub(&ea.session_pub()).unwrap();
        let pb = parse_session_pub(&eb.session_pub()).unwrap();
        (
            derive(Role::Initiator, a, ea, &pb, &t).unwrap(),
            derive(Role::Responder, b, eb, &pa, &t).unwrap(),
        )
    }

    #[test]
    fn both_sides_agree_and_each_handshake_differs() {
        let (a, b) = pair();
        let (ea, eb) = (EphemeralKey::generate(), EphemeralKey::generate());
        let (sa, sb) = both(&a, &b, &ea, &eb, "hs:1");
        assert_eq!(sa, sb);
        let (ea2, eb2) = (EphemeralKey::generate(), EphemeralKey::generate());
        let (sa2, sb2) = both(&a, &b, &ea2, &eb2, "hs:2");
        assert_eq!(sa2, sb2);
        assert_ne!(sa, sa2, "fresh ephemerals give a fresh secret");
        // Same ephemerals, other transcript: other secret.
        let (sa3, _) = both(&a, &b, &ea, &eb, "hs:3");
        assert_ne!(sa, sa3);
    }

    #[test]
    fn an_impostor_without_the_identity_key_derives_something_else() {
        let (a, b) = pair();
        let mallory = NodeKeypair::generate();
        let (ea, eb) = (EphemeralKey::generate(), EphemeralKey::generate());
        let t = Transcript {
            hello_id: "h",
            ack_id: "a",
            initiator: a.node_id(),
            responder: b.node_id(),
        };
        let pb = parse_session_pub(&eb.session_pub()).unwrap();
        let pa = parse_session_pub(&ea.session_pub()).unwrap();
        let real = derive(Role::Initiator, &a, &ea, &pb, &t).unwrap();
        // Mallory answers as `b` with its own identity key.
        let fake = derive(Role::Responder, &mallory, &eb, &pa, &t).unwrap();
        assert_ne!(real, fake);
    }

    #[test]
    fn edwards_terms_equal_the_montgomery_ladder() {
        for i in 0u8..32 {
            let secret = [i.wrapping_mul(37).wrapping_add(5); 32];
            let e = EphemeralKey::generate();
            let p = e.public;
            let edwards = PeerPub::new(&p);
            assert!(edwards.edwards.is_some());
            assert_eq!(edwards.dh(&secret).unwrap(), dh(&secret, &p).unwrap());
            // An identity key in its Ed25519 form.
            let k = NodeKeypair::generate();
            let x = k.fingerprint().x25519_public().unwrap();
            let ed = k.fingerprint().verifying_key().unwrap().to_edwards();
            assert_eq!(dh_edwards(&secret, &ed).unwrap(), dh(&secret, &x).unwrap());
        }
        // Twist points have no Edwards form and take the ladder.
        let mut twist = [0u8; 32];
        twist[0] = 2;
        let pp = PeerPub::new(&twist);
        if pp.edwards.is_none() {
            assert_eq!(pp.dh(&[9u8; 32]).ok(), dh(&[9u8; 32], &twist).ok());
        }
        // Small-order keys give the all-zero term both ways, and are refused.
        for u in SMALL_ORDER_U.iter() {
            assert!(is_small_order(u));
            assert!(dh(&[9u8; 32], u).is_err(), "{u:?}");
            assert!(PeerPub::new(u).dh(&[9u8; 32]).is_err(), "{u:?}");
            let mut high = *u;
            high[31] |= 0x80;
            assert!(is_small_order(&high));
        }
        assert!(!is_small_order(&EphemeralKey::generate().public));
    }

    #[test]
    fn terms_computed_ahead_give_the_same_secret() {
        let (a, b) = pair();
        let (ea, eb) = (EphemeralKey::generate(), EphemeralKey::generate());
        let t = Transcript {
            hello_id: "h",
            ack_id: "a",
            initiator: a.node_id(),
            responder: b.node_id(),
        };
        let (pa, pb) = (ea.public, eb.public);
        let ta = IdentityTerm::compute(&ea, b.node_id());
        let tb = IdentityTerm::compute(&eb, a.node_id());
        assert!(ta.is_ok() && ta.is_for(&b.node_id()));
        let sa = derive_with(Role::Initiator, &a, &ea, &ta, &pb, &t).unwrap();
        let sb = derive_with(Role::Responder, &b, &eb, &tb, &pa, &t).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa, derive(Role::Initiator, &a, &ea, &pb, &t).unwrap());
        // A term for another peer is refused.
        assert!(derive_with(Role::Initiator, &a, &ea, &tb, &pb, &t).is_err());
    }

    #[test]
    fn small_order_and_malformed_keys_are_refused() {
        let (a, b) = pair();
        let ea = EphemeralKey::generate();
        let t = Transcript {
            hello_id: "h",
            ack_id: "a",
            initiator: a.node_id(),
            responder: b.node_id(),
        };
        assert!(derive(Role::Initiator, &a, &ea, &[0u8; 32], &t).is_err());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(derive(Role::Initiator, &a, &ea, &one, &t).is_err());
        assert!(parse_session_pub("short").is_err());
        assert!(parse_session_pub(&format!("{}=", ea.session_pub())).is_err());
        assert_eq!(ea.session_pub().len(), 43);
    }
}
