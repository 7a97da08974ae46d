// libmesh for the browser: identities (Ed25519, the same key as the libp2p peer id),
// node ids (`node:did:key:z…`), and the signing rule of every libmesh artifact:
//   signing input = <family> || 0x00 || deterministic CBOR (RFC 8949 4.2.1) of the
//   artifact without its unsigned fields; signature = Ed25519, base64url unpadded,
//   stored as {"alg": "ed25519", "value": …}.
// The same rule as tests/interop/js/node.mjs (Node's crypto there, @libp2p/crypto here),
// checked against the shared vectors in the browser test.
import { encode as cborEncode, decode as cborDecode, rfc8949EncodeOptions } from 'cborg'
import {
  generateKeyPair, generateKeyPairFromSeed, privateKeyFromProtobuf, privateKeyToProtobuf,
  publicKeyFromRaw
} from '@libp2p/crypto/keys'

export const NODE_ID_PREFIX = 'node:did:key:z'
const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
const enc = new TextEncoder()
// Caps on what a decoder accepts from a peer.
export const MAX_ARTIFACT_BYTES = 64 * 1024

export function hex (bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

export function fromHex (text) {
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error('not lowercase hex')
  const out = new Uint8Array(text.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16)
  return out
}

export function base64url (bytes) {
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

export function fromBase64url (text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url')
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4))
  const bytes = Uint8Array.from(s, (c) => c.charCodeAt(0))
  if (base64url(bytes) !== text) throw new Error('not canonical base64url')
  return bytes
}

function base58Encode (bytes) {
  let n = 0n
  for (const b of bytes) n = n * 256n + BigInt(b)
  let out = ''
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out
    n /= 58n
  }
  for (const b of bytes) {
    if (b !== 0) break
    out = '1' + out
  }
  return out
}

function base58Decode (text) {
  if (text.length > 64) throw new Error('base58 text too long')
  let n = 0n
  for (const ch of text) {
    const i = B58.indexOf(ch)
    if (i < 0) throw new Error(`not base58btc: ${JSON.stringify(ch)}`)
    n = n * 58n + BigInt(i)
  }
  const bytes = []
  while (n > 0n) {
    bytes.unshift(Number(n % 256n))
    n /= 256n
  }
  for (const ch of text) {
    if (ch !== '1') break
    bytes.unshift(0)
  }
  return Uint8Array.from(bytes)
}

/** `node:did:key:z` + base58btc(0xed 0x01 || raw Ed25519 public key). */
export function nodeIdOf (rawPublicKey) {
  return NODE_ID_PREFIX + base58Encode(Uint8Array.from([0xed, 0x01, ...rawPublicKey]))
}

/** The raw Ed25519 key a node id names (strict: one spelling only). */
export function keyOfNodeId (id) {
  if (typeof id !== 'string' || !id.startsWith(NODE_ID_PREFIX)) throw new Error(`not a node id: ${id}`)
  const bytes = base58Decode(id.slice(NODE_ID_PREFIX.length))
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) throw new Error(`not an Ed25519 did:key: ${id}`)
  const key = bytes.subarray(2)
  if (nodeIdOf(key) !== id) throw new Error(`not the canonical spelling: ${id}`)
  return key
}

/** Deterministic CBOR (shortest forms, definite lengths, keys sorted by their bytes). */
export function detCbor (value) {
  return cborEncode(value, rfc8949EncodeOptions)
}

/** Decodes one CBOR artifact (a map) from a peer, with a size cap. */
export function decodeArtifact (bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > MAX_ARTIFACT_BYTES) {
    throw new Error('artifact size out of bounds')
  }
  const value = cborDecode(bytes, { useMaps: false, rejectDuplicateMapKeys: true })
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a CBOR map')
  return value
}

/** `<family>` || 0x00 || deterministic CBOR of `doc` without `excluded`. */
export function signingInput (family, doc, excluded = ['signature']) {
  const unsigned = { ...doc }
  for (const f of excluded) delete unsigned[f]
  const body = detCbor(unsigned)
  const head = enc.encode(family)
  const out = new Uint8Array(head.length + 1 + body.length)
  out.set(head, 0)
  out.set(body, head.length + 1)
  return out
}

/** A libmesh identity: its libp2p private key, node id and raw public key. */
export class Identity {
  constructor (privateKey) {
    if (privateKey.type !== 'Ed25519') throw new Error('libmesh identities are Ed25519')
    this.privateKey = privateKey
    this.publicKey = privateKey.publicKey.raw
    this.nodeId = nodeIdOf(this.publicKey)
  }

  static async generate () { return new Identity(await generateKeyPair('Ed25519')) }
  static async fromSeed (seed) { return new Identity(await generateKeyPairFromSeed('Ed25519', seed)) }
  static fromBytes (bytes) { return new Identity(privateKeyFromProtobuf(bytes)) }
  toBytes () { return privateKeyToProtobuf(this.privateKey) }

  /** Loads the identity kept in `storage` (localStorage) under `name`, or makes one. */
  static async load (storage, name = 'libmesh-identity') {
    const kept = storage?.getItem(name)
    if (kept != null) {
      try { return Identity.fromBytes(fromBase64url(kept)) } catch (_) { /* replaced below */ }
    }
    const id = await Identity.generate()
    storage?.setItem(name, base64url(id.toBytes()))
    return id
  }

  /** `doc` signed as `family` (returns a new object with `signature`). */
  async sign (family, doc, excluded = ['signature']) {
    const input = signingInput(family, doc, excluded)
    const sig = await this.privateKey.sign(input)
    return { ...doc, signature: { alg: 'ed25519', value: base64url(sig) } }
  }
}

/** Whether `doc` carries a valid signature of the key `signerNodeId` names. */
export async function verify (family, doc, signerNodeId, excluded = ['signature']) {
  const sig = doc?.signature
  if (sig == null || sig.alg !== 'ed25519' || typeof sig.value !== 'string') return false
  let bytes
  let key
  try {
    bytes = fromBase64url(sig.value)
    key = publicKeyFromRaw(keyOfNodeId(signerNodeId))
  } catch (_) {
    return false
  }
  if (bytes.length !== 64) return false
  return await key.verify(signingInput(family, doc, excluded), bytes)
}

/** Runs the shared vectors (`signing.json` with its fixtures) and reports each check. */
export async function checkVectors (vectors, fixtures) {
  const results = []
  for (const v of vectors.identities) {
    const id = await Identity.fromSeed(fromHex(v.secret_key_hex))
    results.push({ what: `identity ${v.node_id}`, ok: hex(id.publicKey) === v.public_key_hex && id.nodeId === v.node_id })
  }
  for (const a of vectors.artifacts) {
    const doc = fixtures[a.fixture]
    const id = await Identity.fromSeed(fromHex(a.signer_secret_key_hex))
    const input = hex(signingInput(a.domain, doc, a.excluded_fields))
    const signed = await id.sign(a.domain, doc, a.excluded_fields)
    const ok = input === a.signing_input_hex &&
      signed.signature.value === a.signature_base64url &&
      doc.signature?.value === a.signature_base64url &&
      await verify(a.domain, doc, id.nodeId, a.excluded_fields)
    // A flipped byte of the signed document must not verify.
    const tampered = { ...doc, 'schema/v': (doc['schema/v'] ?? 0) + 1 }
    const refuses = !(await verify(a.domain, tampered, id.nodeId, a.excluded_fields))
    results.push({ what: `${a.domain} ${a.fixture}`, ok: ok && refuses })
  }
  return results
}

// --- swarms --------------------------------------------------------------------------

export const PRESENCE_FAMILY = 'swarm-presence.v1'
const NAME_DOMAIN = enc.encode('libmesh/swarm-name/v1\0')

/** The 32-byte discovery key of a swarm: 64 hex digits as is, other text hashed. */
export async function swarmKey (text) {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return text.toLowerCase()
  const name = enc.encode(text)
  const buf = new Uint8Array(NAME_DOMAIN.length + name.length)
  buf.set(NAME_DOMAIN, 0)
  buf.set(name, NAME_DOMAIN.length)
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', buf)))
}

export function swarmTopic (keyHex) { return `/libmesh/swarm/1/${keyHex}` }

export function rfc3339 (ms) { return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z') }

/** A signed `swarm-presence.v1` (`join`, `announce` or `leave`) as CBOR. */
export async function presence (identity, keyHex, kind, sequence, addrs, ttlSecs, nowMs = Date.now()) {
  const doc = {
    'schema/v': 1,
    'message/kind': PRESENCE_FAMILY,
    'swarm/key': keyHex,
    'node/id': identity.nodeId,
    presence: kind,
    'sequence/no': sequence,
    addrs: addrs.slice(0, 16),
    'created-at': rfc3339(nowMs),
    'expires-at': rfc3339(nowMs + ttlSecs * 1000)
  }
  return detCbor(await identity.sign(PRESENCE_FAMILY, doc))
}

/** A verified presence from `bytes`, or an Error saying why not. */
export async function readPresence (bytes, keyHex, nowMs = Date.now()) {
  const doc = decodeArtifact(bytes)
  if (doc['message/kind'] !== PRESENCE_FAMILY || doc['schema/v'] !== 1) throw new Error('not a swarm-presence.v1')
  if (doc['swarm/key'] !== keyHex) throw new Error('presence for another swarm')
  if (!['join', 'announce', 'leave'].includes(doc.presence)) throw new Error('bad presence kind')
  if (!(await verify(PRESENCE_FAMILY, doc, doc['node/id']))) throw new Error('bad signature')
  const expires = Date.parse(doc['expires-at'])
  if (!(expires > nowMs)) throw new Error('expired')
  return doc
}

/** How long after its own join a member counts as forming the swarm (the nodes' `SETTLED_SECS`). */
export const SETTLED_MS = 10_000

/** Between two answers to joins while the swarm forms (the nodes' `answer_gap_secs`):
 * a second per 25 members, within 2..10 s. */
export function answerGapMs (members) {
  return Math.min(10, Math.max(2, Math.ceil(members / 25))) * 1000
}

/** Between two answers to plain joins once settled (the nodes' `plain_answer_gap_secs`):
 * a second per 4 members, within 2..120 s. */
export function plainAnswerGapMs (members) {
  return Math.min(120, Math.max(2, Math.ceil(members / 4))) * 1000
}

/**
 * When a member answers `join` (a verified presence) with an announce, as the nodes
 * do: in ms from `nowMs` (0: now), or null (not at all). Once the member is settled
 * (`SETTLED_MS` after its own join went out, `state.joinedAt`), a join that fetches the
 * table (`table/fetch: true`) gets no answer (the newcomer got every member from a
 * node's table); otherwise answers are at least a gap apart (`answerGapMs` while
 * forming or not yet joined, `plainAnswerGapMs` once settled), and one answer scheduled
 * for the end of the gap serves every join that comes within it (null for those). A
 * stream of fresh-key joins made every member announce to the whole swarm once each.
 * The caller sends the announce after the delay, then calls `answered`.
 */
export function answerJoin (state, join, members, nowMs) {
  const settled = state.joinedAt != null && nowMs - state.joinedAt >= SETTLED_MS
  if (settled && join['table/fetch'] === true) return null
  if (state.answerAt != null) return null
  const gap = settled ? plainAnswerGapMs(members) : answerGapMs(members)
  const at = state.lastAnswer == null ? nowMs : Math.max(nowMs, state.lastAnswer + gap)
  state.answerAt = at
  return at - nowMs
}

/** The announce `answerJoin` scheduled went out at `nowMs`. */
export function answered (state, nowMs) {
  state.lastAnswer = nowMs
  state.answerAt = null
}

/** Decodes one CBOR item of any type from a peer (callers check the size first). */
export function decodeAny (bytes) {
  return cborDecode(bytes, { useMaps: false, rejectDuplicateMapKeys: true })
}
