// `/mesh/signal/1.0.0` for the browser (behaviours/signal): signed `signal-frame.v1`
// frames, their checks, and the wire form of requests (one frame, or a CBOR array of
// 2..=64 frames' bytes) and answers ({"kind": "accepted"}, {"kind": "rejected",
// "error/code", "error/class", "detail"}, {"kind": "batch", "results"}). Pure logic:
// every check takes `nowMs`.
import * as lm from './libmesh.js'

export const SIGNAL_PROTOCOL = '/mesh/signal/1.0.0'
export const FRAME_FAMILY = 'signal-frame.v1'
// Hosts increment `hops`, which stays outside the signed payload.
const UNSIGNED = ['signature', 'hops']
export const KINDS = ['connect_request', 'connect_accept', 'connect_reject', 'candidate', 'setup_payload']
export const FRAME_TTL_SECS = 60
export const MAX_FRAME_TTL_SECS = 120
export const MAX_HOPS = 2
export const MAX_CANDIDATES = 16
export const MAX_SETUP_B64 = 22 * 1024
export const MAX_ID = 128
export const MAX_BATCH = 64
export const MAX_REQUEST = 1024 * 1024
export const MAX_ANSWER = 64 * 1024
const CLOCK_SKEW_MS = 30_000
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/

const CLASSES = {
  E_TRANSPORT_UNAVAILABLE: 'transport/unavailable',
  E_TRANSPORT_REJECTED: 'transport/rejected',
  E_SIG_INVALID: 'signature/invalid',
  E_HS_REPLAY: 'handshake/replay-suspected',
  E_HS_UNKNOWN_REF: 'handshake/unknown-ref',
  E_PROTO_INVALID: 'protocol/invalid-contract',
  E_PROTO_CAP_MISSING: 'protocol/capability-missing',
  E_ADV_EXPIRED: 'advertisement/expired',
  E_ADV_STALE_SEQ: 'advertisement/stale-sequence',
  E_SIG_UNKNOWN_SIGNER: 'signature/unknown-signer',
  E_PROTO_VERSION: 'protocol/version-mismatch'
}

/** An Error carrying a frozen code. */
export function meshError (code, detail) {
  const err = new Error(`${code}: ${detail}`)
  err.code = CLASSES[code] != null ? code : 'E_PROTO_INVALID'
  err.detail = detail
  return err
}

export function randomId (prefix) {
  return prefix + lm.hex(crypto.getRandomValues(new Uint8Array(12)))
}

/** A signed frame of `kind` from `identity` to `to` (bytes and the document). */
export async function frame (identity, to, kind, correlation, payload, nowMs = Date.now()) {
  const doc = await identity.sign(FRAME_FAMILY, {
    'schema/v': 1,
    'message/kind': FRAME_FAMILY,
    'frame/id': randomId('sf:'),
    kind,
    from: identity.nodeId,
    to,
    'correlation/id': correlation,
    'created-at': lm.rfc3339(nowMs),
    'expires-at': lm.rfc3339(nowMs + FRAME_TTL_SECS * 1000),
    payload
  }, UNSIGNED)
  return { bytes: lm.detCbor(doc), doc }
}

function base64Std (text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return false
  try { atob(text); return true } catch (_) { return false }
}

function checkPayload (kind, p) {
  if (p == null || typeof p !== 'object' || Array.isArray(p)) throw meshError('E_PROTO_INVALID', 'payload is not a map')
  if (kind === 'connect_reject') {
    if (CLASSES[p['reason/code']] == null) {
      throw meshError('E_PROTO_INVALID', 'reason/code is not a frozen code')
    }
  } else if (kind === 'candidate') {
    const a = p.addrs
    if (!Array.isArray(a) || a.length < 1 || a.length > MAX_CANDIDATES || !a.every((x) => typeof x === 'string' && x.startsWith('/'))) {
      throw meshError('E_PROTO_INVALID', `addrs: 1..=${MAX_CANDIDATES} multiaddrs`)
    }
  } else if (kind === 'setup_payload') {
    const d = p['data/b64']
    if (typeof d !== 'string' || d.length > MAX_SETUP_B64 || !base64Std(d)) {
      throw meshError('E_PROTO_INVALID', 'data/b64: base64 of at most 22 KiB')
    }
  }
}

/** A verified frame for `me` from its wire bytes, or throws an Error with a code. */
export async function readFrame (bytes, me, nowMs = Date.now()) {
  let f
  try {
    f = lm.decodeArtifact(bytes)
  } catch (err) {
    throw meshError('E_PROTO_INVALID', `signal-frame.v1: ${err.message}`)
  }
  if (!equalBytes(lm.detCbor(f), bytes)) throw meshError('E_PROTO_INVALID', 'signal-frame.v1: not deterministic CBOR')
  if (f['schema/v'] !== 1 || f['message/kind'] !== FRAME_FAMILY) throw meshError('E_PROTO_INVALID', 'not a signal-frame.v1')
  const id = f['frame/id']
  const corr = f['correlation/id']
  if (typeof id !== 'string' || id.length < 1 || id.length > MAX_ID) throw meshError('E_PROTO_INVALID', 'frame/id')
  if (typeof corr !== 'string' || corr.length < 1 || corr.length > MAX_ID) throw meshError('E_PROTO_INVALID', 'correlation/id')
  if (!KINDS.includes(f.kind)) throw meshError('E_PROTO_INVALID', 'unknown kind')
  try {
    lm.keyOfNodeId(f.from)
    lm.keyOfNodeId(f.to)
  } catch (err) {
    throw meshError('E_PROTO_INVALID', err.message)
  }
  if (f.from === f.to) throw meshError('E_PROTO_INVALID', 'to must differ from from')
  const hops = f.hops ?? 0
  if (!Number.isInteger(hops) || hops < 0 || hops > MAX_HOPS) throw meshError('E_TRANSPORT_REJECTED', `hops over ${MAX_HOPS}`)
  if (!RFC3339.test(f['created-at'] ?? '') || !RFC3339.test(f['expires-at'] ?? '')) throw meshError('E_PROTO_INVALID', 'timestamps')
  const created = Date.parse(f['created-at'])
  const expires = Date.parse(f['expires-at'])
  const ttl = (expires - created) / 1000
  if (!(ttl >= 1 && ttl <= MAX_FRAME_TTL_SECS)) throw meshError('E_PROTO_INVALID', 'expires-at must be 1..=120 s after created-at')
  checkPayload(f.kind, f.payload)
  if (!(await lm.verify(FRAME_FAMILY, f, f.from, UNSIGNED))) throw meshError('E_SIG_INVALID', 'signal-frame.v1 signature')
  if (created > nowMs + CLOCK_SKEW_MS) throw meshError('E_PROTO_INVALID', 'created-at in the future')
  if (expires <= nowMs) throw meshError('E_PROTO_INVALID', 'expired')
  if (f.to !== me) throw meshError('E_TRANSPORT_REJECTED', 'this node is not a signaling host')
  return f
}

function equalBytes (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** The frames' bytes of a request body: one frame, or the items of a batch. */
export function split (body) {
  if (!(body instanceof Uint8Array) || body.length === 0 || body.length > MAX_REQUEST) {
    throw meshError('E_PROTO_INVALID', '/mesh/signal: request size out of bounds')
  }
  const major = body[0] >> 5
  if (major === 5) {
    if (body.length > lm.MAX_ARTIFACT_BYTES) throw meshError('E_PROTO_INVALID', '/mesh/signal: frame over the size cap')
    return [body]
  }
  if (major !== 4) throw meshError('E_PROTO_INVALID', '/mesh/signal: not a frame or a batch')
  let items
  try {
    items = lm.decodeAny(body)
  } catch (err) {
    throw meshError('E_PROTO_INVALID', `/mesh/signal: malformed batch: ${err.message}`)
  }
  if (!Array.isArray(items) || items.length < 2 || items.length > MAX_BATCH ||
    !items.every((i) => i instanceof Uint8Array && i.length <= lm.MAX_ARTIFACT_BYTES)) {
    throw meshError('E_PROTO_INVALID', `/mesh/signal: a batch holds 2..=${MAX_BATCH} frames' bytes`)
  }
  if (!equalBytes(lm.detCbor(items), body)) throw meshError('E_PROTO_INVALID', '/mesh/signal: batch heads not canonical')
  return items
}

function answerValue (err) {
  if (err == null) return { kind: 'accepted' }
  const code = CLASSES[err.code] != null ? err.code : 'E_PROTO_INVALID'
  return { kind: 'rejected', 'error/code': code, 'error/class': CLASSES[code], detail: String(err.detail ?? err.message).slice(0, 512) }
}

/** The answer to a request: `results` holds null (accepted) or an Error per frame. */
export function encodeAnswer (results, batch) {
  if (!batch) return lm.detCbor(answerValue(results[0]))
  return lm.detCbor({ kind: 'batch', results: results.map(answerValue) })
}

/** Reads the answer to a one-frame request: throws the refusal as an Error with a code. */
export function readAnswer (bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > MAX_ANSWER) {
    throw meshError('E_PROTO_INVALID', '/mesh/signal: answer size out of bounds')
  }
  const v = lm.decodeArtifact(bytes)
  if (v.kind === 'accepted') return
  if (v.kind === 'rejected') throw meshError(String(v['error/code']), String(v.detail ?? ''))
  throw meshError('E_PROTO_INVALID', '/mesh/signal: unknown answer')
}

/** Remembers frames taken (from, frame id) until they expire: at most `cap`. */
export class Seen {
  constructor (cap = 4096) {
    this.cap = cap
    this.until = new Map()
  }

  has (f, nowMs) {
    const t = this.until.get(`${f.from} ${f['frame/id']}`)
    return t != null && t > nowMs
  }

  add (f, nowMs) {
    for (const [k, t] of this.until) {
      if (this.until.size < this.cap && t > nowMs) break
      this.until.delete(k)
    }
    this.until.set(`${f.from} ${f['frame/id']}`, Date.parse(f['expires-at']))
  }
}

// --- ICE candidates as multiaddrs ----------------------------------------------------

/** The transport address of an ICE candidate line as a multiaddr (`/ip4|ip6|dns/…/udp/…`),
 * or null (TCP candidates, other components). */
export function candidateToMultiaddr (line) {
  const m = /^(?:a=)?candidate:\S+ (\d+) (\S+) \d+ (\S+) (\d+) typ \S+/i.exec(String(line))
  if (m == null || m[1] !== '1' || m[2].toLowerCase() !== 'udp') return null
  const [addr, port] = [m[3], Number(m[4])]
  if (!(port > 0 && port < 65536)) return null
  if (/^\d+\.\d+\.\d+\.\d+$/.test(addr)) return `/ip4/${addr}/udp/${port}`
  if (addr.includes(':')) return `/ip6/${addr}/udp/${port}`
  if (/^[A-Za-z0-9.-]{1,253}$/.test(addr)) return `/dns/${addr}/udp/${port}`
  return null
}

/** The ICE candidate line for the `i`-th address of a `candidate` frame (a host-type
 * candidate of component 1, priorities falling with `i`), or null. */
export function multiaddrToCandidate (ma, i) {
  const m = /^\/(ip4|ip6|dns|dns4|dns6)\/([^/]+)\/udp\/(\d+)$/.exec(String(ma))
  if (m == null) return null
  const port = Number(m[3])
  if (!(port > 0 && port < 65536)) return null
  const priority = 126 * 2 ** 24 + (65535 - i) * 2 ** 8 + 255
  return `candidate:${i + 1} 1 udp ${priority} ${m[2]} ${port} typ host`
}
