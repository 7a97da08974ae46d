// `/mesh/session/1.0.0` for the browser, the initiator's side (the page dials its meshd):
// a signed `peer-handshake.v1` hello with the page's `capability-advertisement.v1`
// (self-issued `capability-passport.v1` passports, `core/messaging` among them), and
// the checks of the ack that answers it. One request per stream, each a deterministic
// CBOR map: {"kind": "hello"|"ack", "handshake", "advertisement"} or {"kind": "rejected",
// "error/code", "error/class", "detail"} (behaviours/session/src/protocol.rs).
//
// The page sends a real X25519 `session/pub` (WebCrypto) but does not derive the session
// secret: nothing in libmesh uses it on the wire yet (README, "Browsers", decisions).
import * as lm from './libmesh.js'

export const SESSION_PROTOCOL = '/mesh/session/1.0.0'
export const HANDSHAKE_FAMILY = 'peer-handshake.v1'
export const CAPS_FAMILY = 'capability-advertisement.v1'
export const PASSPORT_FAMILY = 'capability-passport.v1'
export const PROTOCOL_VERSION = '0.1.0-mvp'
// Framing fields outside a handshake's signing input.
const HANDSHAKE_UNSIGNED = ['signature', 'protocol/version', 'transport/profile']
export const MAX_SESSION_MESSAGE = 64 * 1024 + 1024
export const CLOCK_SKEW_MS = 30_000
const PASSPORT_TTL_SECS = 3600
// What the page offers and speaks (the enum of `transport/profiles` has no WebRTC value).
const CAPABILITIES = ['core/messaging']
const TRANSPORTS = ['wss', 'ws']
const MESSAGES = ['peer-handshake.v1', 'capability-advertisement.v1', 'signal-marker-envelope.v1']

function randomHex (n) {
  return lm.hex(crypto.getRandomValues(new Uint8Array(n)))
}

/** The `transport/profile` of a connection's address, as meshd derives it (module
 * docs of behaviours/session/src/transport.rs): `/webrtc-direct` has no value and is
 * reported as `tcp`. */
export function transportProfile (addr) {
  const parts = String(addr).split('/p2p-circuit')[0]
  if (/\/quic(-v1)?(\/|$)/.test(parts)) return 'quic'
  if (/\/wss(\/|$)/.test(parts) || /\/tls(\/sni\/[^/]+)?\/ws(\/|$)/.test(parts)) return 'wss'
  if (/\/ws(\/|$)/.test(parts)) return 'ws'
  return 'tcp'
}

/** A fresh X25519 key: its `session/pub` (unpadded base64url of the raw key). */
export async function ephemeralSessionPub () {
  const key = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits'])
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', key.publicKey))
  return lm.base64url(raw)
}

/** The page's signed capability advertisement (plain object). */
export async function capabilities (identity, nowMs = Date.now()) {
  const now = lm.rfc3339(nowMs)
  const expires = lm.rfc3339(nowMs + PASSPORT_TTL_SECS * 1000)
  const participant = 'participant:' + identity.nodeId.slice('node:'.length)
  const presented = []
  for (const cap of CAPABILITIES) {
    const passport = await identity.sign(PASSPORT_FAMILY, {
      schema: PASSPORT_FAMILY,
      passport_id: `passport:${randomHex(12)}`,
      node_id: identity.nodeId,
      capability_id: cap,
      scope: { 'protocol/version': PROTOCOL_VERSION },
      issued_at: now,
      expires_at: expires,
      'issuer/participant_id': participant,
      'issuer/node_id': identity.nodeId,
      revocation_ref: null
    })
    presented.push({ 'capability/id': cap, 'wire/name': cap, 'assertion/kind': 'self-issued-passport', passport })
  }
  return await identity.sign(CAPS_FAMILY, {
    'schema/v': 1,
    'advertisement/id': `caps:${randomHex(12)}`,
    'node/id': identity.nodeId,
    'published-at': now,
    'protocol/version': PROTOCOL_VERSION,
    'transport/profiles': TRANSPORTS,
    'capabilities/core': CAPABILITIES,
    'capabilities/presented': presented,
    'messages/supported': MESSAGES
  })
}

/** A signed hello to `recipient` (a node id) over `transport`. */
export async function hello (identity, recipient, transport, sessionPub, nowMs = Date.now()) {
  const doc = {
    'schema/v': 1,
    'handshake/id': `hs:${randomHex(12)}`,
    'handshake/mode': 'hello',
    ts: lm.rfc3339(nowMs),
    'sender/node-id': identity.nodeId,
    'recipient/node-id': recipient,
    'key/alg': 'ed25519',
    'key/public': identity.nodeId.slice('node:did:key:'.length),
    'session/pub': sessionPub,
    'protocol/version': PROTOCOL_VERSION,
    'transport/profile': transport,
    'session/intent': 'peer-connect',
    nonce: `nonce:${randomHex(12)}`,
    'capabilities/offered': []
  }
  return await identity.sign(HANDSHAKE_FAMILY, doc, HANDSHAKE_UNSIGNED)
}

/** The request bytes of a hello. */
export function encodeHello (handshake, advertisement) {
  return lm.detCbor({ kind: 'hello', handshake, advertisement })
}

function rejected (code, detail) {
  const err = new Error(`${code}: ${detail}`)
  err.code = code
  return err
}

/** Checks the answer to our `hello` from `peerNodeId`: returns {ack, capabilities}
 * (the capabilities the peer proved with a passport) or throws an Error with `code`. */
export async function readAck (bytes, helloDoc, peerNodeId, nowMs = Date.now()) {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > MAX_SESSION_MESSAGE) {
    throw rejected('E_PROTO_INVALID', 'session answer size out of bounds')
  }
  const m = lm.decodeArtifact(bytes)
  if (m.kind === 'rejected') throw rejected(String(m['error/code']), String(m.detail ?? ''))
  if (m.kind !== 'ack') throw rejected('E_PROTO_INVALID', `unexpected answer ${m.kind}`)
  const ack = m.handshake
  const ad = m.advertisement
  if (ack == null || typeof ack !== 'object') throw rejected('E_PROTO_INVALID', 'no handshake')
  if (ad == null || typeof ad !== 'object') throw rejected('E_PROTO_CAP_MISSING', 'no capability advertisement')
  if (ack['schema/v'] !== 1 || ack['handshake/mode'] !== 'ack') throw rejected('E_PROTO_INVALID', 'not an ack')
  if (ack['ack/of-handshake-id'] !== helloDoc['handshake/id']) throw rejected('E_HS_UNKNOWN_REF', 'ack of another hello')
  if (ack['sender/node-id'] !== peerNodeId) throw rejected('E_SIG_UNKNOWN_SIGNER', 'ack from another node')
  if (ack['recipient/node-id'] != null && ack['recipient/node-id'] !== helloDoc['sender/node-id']) {
    throw rejected('E_PROTO_INVALID', 'ack to another node')
  }
  if (!(await lm.verify(HANDSHAKE_FAMILY, ack, peerNodeId, HANDSHAKE_UNSIGNED))) {
    throw rejected('E_SIG_INVALID', 'ack signature')
  }
  const ts = Date.parse(ack.ts)
  if (!(Math.abs(ts - nowMs) <= CLOCK_SKEW_MS)) throw rejected('E_HS_REPLAY', 'ack ts outside +-30 s')
  if (ad['node/id'] !== peerNodeId) throw rejected('E_SIG_UNKNOWN_SIGNER', 'advertisement of another node')
  if (!(await lm.verify(CAPS_FAMILY, ad, peerNodeId))) throw rejected('E_SIG_INVALID', 'advertisement signature')
  const proved = []
  const presented = Array.isArray(ad['capabilities/presented']) ? ad['capabilities/presented'] : []
  for (const cap of Array.isArray(ad['capabilities/core']) ? ad['capabilities/core'].slice(0, 64) : []) {
    const entry = presented.find((p) => p?.['wire/name'] === cap && p?.['assertion/kind'] === 'self-issued-passport')
    const passport = entry?.passport
    if (passport == null || passport.node_id !== peerNodeId || passport['issuer/node_id'] !== peerNodeId ||
      passport.capability_id !== cap || !(Date.parse(passport.expires_at) >= nowMs)) continue
    if (await lm.verify(PASSPORT_FAMILY, passport, peerNodeId)) proved.push(cap)
  }
  if (!proved.includes('core/messaging')) throw rejected('E_PROTO_CAP_MISSING', 'no passport for core/messaging')
  return { ack, capabilities: proved }
}
