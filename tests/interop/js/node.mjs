// A js-libp2p node for libmesh's interop tests, driven over stdin/stdout.
//
// It listens on loopback only (TCP and WebSocket, port 0), runs identify, ping,
// gossipsub (signed messages, StrictSign) and two Kademlia DHTs in server mode:
// `/ipfs/kad/1.0.0` (service `ipfs`) and `/mesh/kad/1.0.0` (service `mesh`). It has no
// bootstrap list, no mDNS and no peer discovery: it only knows the peers it is told
// about, so it never reaches beyond this machine.
//
// Protocol: the first stdout line is
//   {"event":"ready","peerId":"...","addrs":["/ip4/127.0.0.1/tcp/.../p2p/..."]}
// then every stdin line is a JSON command {"id":..,"cmd":"..",...} answered by one line
//   {"id":..,"ok":true,...} or {"id":..,"ok":false,"error":".."}
// Other stdout lines are events: {"event":"message",...}, {"event":"identify",...}.
// Commands: dial, hangup, ping, identify, peers, kad-put, kad-get, kad-find-peer, kad-add-peer,
// subscribe, publish, addrs, listen, admission, sign-artifact, relay-reservations, perf (see
// `handlers` below); it serves `/perf/1.0.0` (perf.mjs). Every command is bounded by
// `timeoutMs` (default 20 s). The node exits when
// stdin closes.
//
// Arguments: `--relay-client` adds the circuit relay v2 transport (dial `/p2p-circuit`
// addresses, `listen` on `<relay>/p2p-circuit`); `--relay-server` adds a circuit relay
// v2 server (`circuitRelayServer`, js-libp2p's default limits).
//
// `admission` speaks libmesh's `/mesh/relay-admission/1.0.0` as an independent client:
// it builds a `relay-admission-request.v1`, signs it with this node's libp2p Ed25519 key
// (signing input = family name, 0x00, deterministic CBOR of the artifact without
// `signature`), sends its deterministic CBOR, and checks the answer: a denial map, or a
// `relay-admission-grant.v1` whose signature it verifies (node:crypto) against the key
// inside the grant's `relay/node-id`, which must be the relay's peer id.

import { createPrivateKey, createPublicKey, randomBytes, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto'
import { createInterface } from 'node:readline'
import { decode as cborDecode, encode as cborEncode, rfc8949EncodeOptions } from 'cborg'
import { PERF_PROTOCOL, runPerf, servePerf } from './perf.mjs'

const ARGS = new Set(process.argv.slice(2))
for (const a of ARGS) {
  if (a !== '--relay-client' && a !== '--relay-server') {
    throw new Error(`unknown argument ${a} (--relay-client, --relay-server)`)
  }
}
const RELAY_CLIENT = ARGS.has('--relay-client')
const RELAY_SERVER = ARGS.has('--relay-server')

// js-libp2p 3 wants Node 22. On Node 20 two things are missing.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
if (typeof globalThis.WebSocket !== 'function') {
  const { WebSocket } = await import('ws')
  globalThis.WebSocket = WebSocket
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { webSockets } = await import('@libp2p/websockets')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { gossipsub } = await import('@libp2p/gossipsub')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')
const relayV2 = (RELAY_CLIENT || RELAY_SERVER) ? await import('@libp2p/circuit-relay-v2') : null

const DEFAULT_TIMEOUT_MS = 20_000
const ADVERT_PREFIX = '/mesh/adv/'

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function cborMap (value) {
  if (!(value instanceof Uint8Array) || value.length === 0) {
    throw new Error('empty record value')
  }
  const decoded = cborDecode(value, { useMaps: true })
  if (!(decoded instanceof Map)) {
    throw new Error('record value is not a CBOR map')
  }
  return decoded
}

// Records under `/mesh/...`: the value must be a CBOR map; an advertisement
// (`/mesh/adv/<node-id>`) must name the node of its key. Signatures are checked by
// the Rust side.
function validateMesh (key, value) {
  const map = cborMap(value)
  const keyText = new TextDecoder().decode(key)
  if (keyText.startsWith(ADVERT_PREFIX)) {
    const node = keyText.slice(ADVERT_PREFIX.length)
    if (map.get('node/id') !== node) {
      throw new Error('advertisement does not name the node of its key')
    }
  }
}

// The advertisement with the highest `sequence/no` wins; unreadable ones lose.
function selectMesh (_key, records) {
  let best = 0
  let bestSeq = -1n
  records.forEach((value, i) => {
    try {
      const seq = BigInt(cborMap(value).get('sequence/no') ?? 0)
      if (seq > bestSeq) {
        best = i
        bestSeq = seq
      }
    } catch {}
  })
  return best
}

function dht (protocol, name) {
  return kadDHT({
    protocol,
    clientMode: false,
    // Tests run on loopback: keep private addresses (the default mapper drops them).
    peerInfoMapper: passthroughMapper,
    validators: { mesh: validateMesh },
    selectors: { mesh: selectMesh },
    logPrefix: `libp2p:dht-${name}`,
    datastorePrefix: `/dht-${name}`,
    metricsPrefix: `libp2p_dht_${name}`
  })
}

// Each kad-dht pings a new contact before adding it to its routing table, so with two
// DHTs (and test pings) several pings to one peer run at once. js-libp2p allows only one
// outbound ping stream per connection by default (raised above), and rust-libp2p's ping
// serves only one inbound ping stream per connection: a second one replaces the first,
// which then fails, and that DHT leaves the peer out of its routing table. So pings to
// one peer are run one after another.
function serializedPing (init) {
  return (components) => {
    const service = ping(init)(components)
    const inner = service.ping.bind(service)
    const tails = new Map()
    service.ping = (target, options) => {
      const key = peerKey(target)
      const run = (tails.get(key) ?? Promise.resolve()).then(() => inner(target, options))
      const tail = run.then(() => {}, () => {})
      tails.set(key, tail)
      void tail.then(() => { if (tails.get(key) === tail) tails.delete(key) })
      return run
    }
    return service
  }
}

function peerKey (target) {
  if (Array.isArray(target)) target = target[0]
  if (typeof target?.getComponents === 'function') {
    return lastPeer(target) ?? target.toString()
  }
  return String(target)
}

// The peer a multiaddr leads to: its last `/p2p/` (for `<relay>/p2p-circuit/p2p/<peer>`,
// the peer behind the relay).
function lastPeer (ma) {
  return ma.getComponents().findLast((c) => c.name === 'p2p')?.value
}

// --- libmesh artifacts: did:key node ids, deterministic CBOR, Ed25519 -----------------

const ADMISSION_PROTOCOL = '/mesh/relay-admission/1.0.0'
const REQUEST_FAMILY = 'relay-admission-request.v1'
const GRANT_FAMILY = 'relay-admission-grant.v1'
const MAX_ARTIFACT_BYTES = 64 * 1024
const NODE_ID_PREFIX = 'node:did:key:z'
const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
// DER prefixes of raw Ed25519 keys (RFC 8410): SubjectPublicKeyInfo, PKCS #8.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

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

// `node:did:key:z` + base58btc(0xed 0x01 || key).
function nodeIdOf (rawPublicKey) {
  return NODE_ID_PREFIX + base58Encode(Uint8Array.from([0xed, 0x01, ...rawPublicKey]))
}

// The raw Ed25519 key a node id names; strict (prefix, multicodec, length, one spelling).
function keyOfNodeId (id) {
  if (typeof id !== 'string' || !id.startsWith(NODE_ID_PREFIX)) {
    throw new Error(`not a node id: ${id}`)
  }
  const bytes = base58Decode(id.slice(NODE_ID_PREFIX.length))
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw new Error(`not an Ed25519 did:key: ${id}`)
  }
  const key = bytes.subarray(2)
  if (nodeIdOf(key) !== id) throw new Error(`not the canonical spelling: ${id}`)
  return key
}

function nodeIdOfPeer (peerId) {
  const raw = peerId.publicKey?.raw
  if (peerId.type !== 'Ed25519' || raw == null) {
    throw new Error(`${peerId} is not an Ed25519 peer id`)
  }
  return nodeIdOf(raw)
}

// Deterministic CBOR (RFC 8949 section 4.2.1: shortest heads and floats, definite
// lengths, map keys sorted by their encoded bytes).
function detCbor (value) {
  return cborEncode(value, rfc8949EncodeOptions)
}

// `<family>` || 0x00 || deterministic CBOR of the artifact without `signature` (and
// whatever else the family leaves out).
function signingInput (family, artifact, excluded = ['signature']) {
  const unsigned = new Map(artifact instanceof Map ? artifact : Object.entries(artifact))
  for (const field of excluded) unsigned.delete(field)
  return Buffer.concat([Buffer.from(family, 'utf8'), Buffer.from([0]), detCbor(unsigned)])
}

function ed25519Verify (rawPublicKey, data, signature) {
  const key = createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, rawPublicKey]),
    format: 'der',
    type: 'spki'
  })
  return cryptoVerify(null, data, key, signature)
}

// The signature of a decoded artifact (a Map) as 64 bytes; canonical base64url only.
function signatureOf (artifact) {
  const sig = artifact.get('signature')
  if (!(sig instanceof Map) || sig.get('alg') !== 'ed25519' || typeof sig.get('value') !== 'string') {
    throw new Error('artifact has no ed25519 signature')
  }
  const value = sig.get('value')
  const bytes = Buffer.from(value, 'base64url')
  if (bytes.length !== 64 || bytes.toString('base64url') !== value) {
    throw new Error('signature value is not canonical base64url of 64 bytes')
  }
  return bytes
}

function toJson (value) {
  if (value instanceof Map) {
    return Object.fromEntries([...value].map(([k, v]) => [k, toJson(v)]))
  }
  if (Array.isArray(value)) return value.map(toJson)
  if (typeof value === 'bigint') return value.toString()
  return value
}

// RFC 3339 UTC with `Z`, whole seconds.
function nowRfc3339 () {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')
}

async function readToEnd (stream, cap) {
  const chunks = []
  let n = 0
  for await (const chunk of stream) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    n += bytes.length
    if (n > cap) {
      stream.abort(new Error('answer over the size cap'))
      throw new Error(`answer over ${cap} bytes`)
    }
    chunks.push(bytes)
  }
  return Buffer.concat(chunks)
}

// Checks a grant answer: deterministic encoding, family, signer = the relay, the
// signature, and that it answers our request. Returns the decoded grant.
function verifyGrant (bytes, relayPeer, request) {
  const grant = cborDecode(bytes, { useMaps: true })
  if (!(grant instanceof Map)) throw new Error('grant is not a CBOR map')
  if (!Buffer.from(detCbor(grant)).equals(bytes)) {
    throw new Error('grant is not deterministic CBOR')
  }
  if (grant.get('schema/v') !== 1 || grant.get('message/kind') !== GRANT_FAMILY) {
    throw new Error(`not a ${GRANT_FAMILY}`)
  }
  const relayKey = keyOfNodeId(grant.get('relay/node-id'))
  const peerKey = relayPeer.publicKey?.raw
  if (peerKey == null || !Buffer.from(peerKey).equals(Buffer.from(relayKey))) {
    throw new Error(`grant signed for ${grant.get('relay/node-id')}, not by the relay ${relayPeer}`)
  }
  const signature = signatureOf(grant)
  if (!ed25519Verify(relayKey, signingInput(GRANT_FAMILY, grant), signature)) {
    throw new Error('grant signature does not verify')
  }
  // The same check must refuse a grant altered after signing, or a flipped signature.
  const altered = new Map(grant)
  altered.set('purpose', grant.get('purpose') === 'circuit' ? 'reservation' : 'circuit')
  const flipped = Buffer.from(signature)
  flipped[0] ^= 1
  if (ed25519Verify(relayKey, signingInput(GRANT_FAMILY, altered), signature) ||
      ed25519Verify(relayKey, signingInput(GRANT_FAMILY, grant), flipped)) {
    throw new Error('verification accepts altered grants')
  }
  if (grant.get('node/id') !== request['node/id'] ||
      grant.get('request/nonce') !== request.nonce ||
      grant.get('purpose') !== request.purpose) {
    throw new Error('grant does not answer our request')
  }
  if (!(Date.parse(grant.get('expires-at')) > Date.now())) {
    throw new Error('grant already expired')
  }
  return grant
}

// Hands out libp2p's components (the node key, the transport manager) to the commands.
let components = null
function grabComponents () {
  return (c) => {
    components = c
    return {}
  }
}

const transports = [tcp(), webSockets()]
if (RELAY_CLIENT) transports.push(relayV2.circuitRelayTransport())
const extraServices = RELAY_SERVER ? { relay: relayV2.circuitRelayServer() } : {}

const node = await createLibp2p({
  addresses: {
    listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws']
  },
  transports,
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify({ agentVersion: 'libmesh-js-interop/0.0.0' }),
    ping: serializedPing({ maxInboundStreams: 8, maxOutboundStreams: 8 }),
    ipfs: dht('/ipfs/kad/1.0.0', 'ipfs'),
    mesh: dht('/mesh/kad/1.0.0', 'mesh'),
    pubsub: gossipsub({
      globalSignaturePolicy: 'StrictSign',
      emitSelf: false,
      allowPublishToZeroTopicPeers: false
    }),
    components: grabComponents(),
    ...extraServices
  }
})

// `/perf/1.0.0` server (see perf.mjs); a few streams per connection at once.
await node.handle(PERF_PROTOCOL, (stream) => {
  servePerf(stream, AbortSignal.timeout(600_000)).catch((err) => {
    process.stderr.write(`perf stream failed: ${err?.message ?? err}\n`)
  })
}, { maxInboundStreams: 4 })

node.addEventListener('peer:identify', (evt) => {
  const r = evt.detail
  emit({
    event: 'identify',
    peer: r.peerId.toString(),
    protocols: r.protocols,
    agentVersion: r.agentVersion ?? null,
    protocolVersion: r.protocolVersion ?? null,
    listenAddrs: r.listenAddrs.map(String)
  })
})

node.services.pubsub.addEventListener('message', (evt) => {
  const m = evt.detail
  emit({
    event: 'message',
    topic: m.topic,
    from: m.type === 'signed' ? m.from.toString() : null,
    signed: m.type === 'signed',
    dataB64: Buffer.from(m.data).toString('base64')
  })
})

function dhtOf (cmd) {
  const name = cmd.dht ?? 'mesh'
  const service = node.services[name]
  if ((name !== 'ipfs' && name !== 'mesh') || service == null) {
    throw new Error(`unknown dht "${name}" (ipfs or mesh)`)
  }
  return service
}

function target (cmd) {
  if (cmd.addr != null) return multiaddr(cmd.addr)
  if (cmd.peer != null) return peerIdFromString(cmd.peer)
  throw new Error('need addr or peer')
}

const utf8 = (s) => new TextEncoder().encode(s)

// The remote addresses of the open connections to `peer` (a string), so a test can
// tell which transport a ping or identify used.
function connectionsTo (peer) {
  return node.getConnections(peerIdFromString(peer))
    .filter((c) => c.status === 'open')
    .map((c) => c.remoteAddr.toString())
}

// An open connection whose remote address is exactly `ma` (with its `/p2p/`), or a
// new one dialed with `force` (a circuit even when a direct connection exists). A
// forced dial still joins a dial to the same peer already in progress (a DHT's, say),
// which may end in another address: then it dials again, a few times at most.
async function connectionOver (ma, signal) {
  const peer = peerIdFromString(lastPeer(ma))
  const open = () => node.getConnections(peer).find((c) => c.status === 'open' && c.remoteAddr.equals(ma))
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = open()
    if (existing != null) return existing
    const conn = await node.dial(ma, { signal, force: true })
    if (conn.remoteAddr.equals(ma)) return conn
  }
  const existing = open()
  if (existing != null) return existing
  throw new Error(`no connection over ${ma}`)
}

// One `/ipfs/ping/1.0.0` round trip over `conn` (also a limited one, such as a relay
// circuit): 32 random bytes out, the same 32 back. Milliseconds.
async function pingOver (conn, signal) {
  const stream = await conn.newStream('/ipfs/ping/1.0.0', { signal, runOnLimitedConnection: true })
  const onAbort = () => stream.abort(new Error('ping timed out'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const data = randomBytes(32)
    const start = Date.now()
    stream.send(data)
    await stream.close({ signal })
    const back = await readToEnd(stream, 32)
    if (!back.equals(data)) throw new Error('ping answered with other bytes')
    return Date.now() - start
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

const handlers = {
  // One `/perf/1.0.0` run against `addr`/`peer`: `upload` bytes up, `download` down;
  // `capFrames: false` sends js-yamux's own (large) frames.
  async perf (cmd, signal) {
    const stream = await node.dialProtocol(target(cmd), PERF_PROTOCOL, { signal })
    const cap = cmd.capFrames !== false
    return runPerf(stream, Number(cmd.upload ?? 0), Number(cmd.download ?? 0), signal, cap)
  },

  async dial (cmd, signal) {
    const conn = await node.dial(target(cmd), { signal })
    return { peer: conn.remotePeer.toString(), remoteAddr: conn.remoteAddr.toString() }
  },

  async hangup (cmd, signal) {
    await node.hangUp(peerIdFromString(cmd.peer), { signal })
    return { connections: connectionsTo(cmd.peer) }
  },

  // {addr | peer}: pings over the connection libp2p picks (an open one if any).
  // {addr, force: true}: over a connection to exactly `addr` (a circuit even when a
  // direct connection exists; see `connectionOver`); `via` is its remote address.
  async ping (cmd, signal) {
    const to = target(cmd)
    const peer = cmd.peer ?? (typeof to.getComponents === 'function' ? lastPeer(to) : undefined)
    if (cmd.force === true) {
      const conn = await connectionOver(to, signal)
      const rtt = await pingOver(conn, signal)
      return { rtt, via: conn.remoteAddr.toString(), limited: conn.limits != null, connections: connectionsTo(conn.remotePeer.toString()) }
    }
    const rtt = await node.services.ping.ping(to, { signal })
    return { rtt, connections: peer == null ? [] : connectionsTo(peer) }
  },

  // {peer}: identifies over an open connection (dialing one if none). {addr, force:
  // true}: over a connection to exactly `addr` (`connectionOver`); `via` is its remote
  // address.
  async identify (cmd, signal) {
    let conn
    if (cmd.force === true) {
      conn = await connectionOver(multiaddr(cmd.addr), signal)
    } else {
      const peer = peerIdFromString(cmd.peer)
      conn = node.getConnections(peer).find((c) => c.status === 'open')
      if (conn == null) conn = await node.dial(peer, { signal })
    }
    const r = await node.services.identify.identify(conn, { signal })
    return {
      peer: r.peerId.toString(),
      protocols: r.protocols,
      agentVersion: r.agentVersion ?? null,
      protocolVersion: r.protocolVersion ?? null,
      listenAddrs: r.listenAddrs.map(String),
      observedAddr: r.observedAddr?.toString() ?? null,
      via: conn.remoteAddr.toString(),
      connections: connectionsTo(r.peerId.toString())
    }
  },

  async peers () {
    return { peers: node.getPeers().map(String) }
  },

  async 'kad-put' (cmd, signal) {
    const d = dhtOf(cmd)
    const value = Buffer.from(cmd.valueB64, 'base64')
    const stored = []
    const errors = []
    for await (const ev of d.put(utf8(cmd.key), value, { signal })) {
      if (ev.name === 'PEER_RESPONSE' && ev.messageName === 'PUT_VALUE') stored.push(ev.from.toString())
      if (ev.name === 'QUERY_ERROR') errors.push(String(ev.error?.message ?? ev.error))
    }
    return { storedAt: [...new Set(stored)], errors }
  },

  async 'kad-get' (cmd, signal) {
    const d = dhtOf(cmd)
    // `get` yields the local copy and every answer as PEER_RESPONSE events carrying a
    // record, then the best value last.
    let found = null
    const sources = new Set()
    for await (const ev of d.get(utf8(cmd.key), { signal })) {
      if (ev.name === 'PEER_RESPONSE' && ev.record != null) sources.add(ev.from.toString())
      if (ev.name === 'VALUE') {
        found = { valueB64: Buffer.from(ev.value).toString('base64'), from: ev.from.toString() }
      }
    }
    if (found == null) throw new Error('not found')
    return { ...found, sources: [...sources] }
  },

  async 'kad-find-peer' (cmd, signal) {
    const d = dhtOf(cmd)
    const wanted = peerIdFromString(cmd.peer)
    for await (const ev of d.findPeer(wanted, { signal })) {
      if (ev.name === 'FINAL_PEER' && ev.peer.id.equals(wanted)) {
        return {
          peer: ev.peer.id.toString(),
          addrs: ev.peer.multiaddrs.map(String),
          from: ev.from.toString()
        }
      }
    }
    throw new Error('peer not found')
  },

  async 'kad-add-peer' (cmd, signal) {
    const d = dhtOf(cmd)
    const peer = peerIdFromString(cmd.peer)
    await node.peerStore.merge(peer, { multiaddrs: (cmd.addrs ?? []).map((a) => multiaddr(a)) }, { signal })
    await d.routingTable.add(peer, { signal })
    // `add` pings the peer first and quietly leaves it out if that fails.
    if (await d.routingTable.find(peer, { signal }) == null) {
      throw new Error('peer not added to the routing table (ping failed?)')
    }
    return { routingTableSize: d.routingTable.size }
  },

  async subscribe (cmd) {
    node.services.pubsub.subscribe(cmd.topic)
    return { topics: node.services.pubsub.getTopics() }
  },

  async publish (cmd) {
    const r = await node.services.pubsub.publish(cmd.topic, Buffer.from(cmd.dataB64 ?? '', 'base64'))
    return { recipients: r.recipients.map(String) }
  },

  async addrs () {
    return { addrs: node.getMultiaddrs().map(String) }
  },

  // Listens on `addr` at runtime (`<relay>/p2p-circuit`: a reservation on that relay).
  async listen (cmd, signal) {
    const listening = components.transportManager.listen([multiaddr(cmd.addr)])
    const aborted = new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => reject(new Error(`listen on ${cmd.addr} timed out`)), { once: true })
    })
    await Promise.race([listening, aborted])
    return { addrs: node.getMultiaddrs().map(String) }
  },

  // Signs `doc` (a JSON artifact) as `family` with the Ed25519 secret `secretKeyHex`,
  // leaving out `excluded`: {signingInputHex, signature (base64url), nodeId}. For the
  // byte-exact vectors of shared/vectors/signing.json.
  async 'sign-artifact' (cmd) {
    const secret = Buffer.from(cmd.secretKeyHex, 'hex')
    if (secret.length !== 32) throw new Error('secretKeyHex must be 32 bytes')
    const key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, secret]), format: 'der', type: 'pkcs8' })
    const raw = createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(ED25519_SPKI_PREFIX.length)
    const input = signingInput(cmd.family, cmd.doc, cmd.excluded ?? ['signature'])
    const signature = cryptoSign(null, input, key)
    if (!ed25519Verify(raw, input, signature)) throw new Error('own signature does not verify')
    return {
      signingInputHex: input.toString('hex'),
      signature: signature.toString('base64url'),
      nodeId: nodeIdOf(raw)
    }
  },

  // The reservations a `--relay-server` node holds: [{peer, addr, expiry}].
  async 'relay-reservations' () {
    if (node.services.relay == null) throw new Error('not a relay server (--relay-server)')
    const held = []
    for (const [peer, r] of node.services.relay.reservations.entries()) {
      held.push({ peer: peer.toString(), addr: r.addr?.toString() ?? null, expire: r.expire?.toISOString?.() ?? null })
    }
    return { reservations: held }
  },

  // One `/mesh/relay-admission/1.0.0` round: {relay (peer id), addr?, purpose
  // ("reservation" | "circuit"), target? (peer id, circuits)}. Answers
  // {granted: true, grant, grantB64, requestB64} after verifying the grant, or
  // {granted: false, denied: {error/code, error/class, detail}, requestB64}.
  async admission (cmd, signal) {
    const relay = peerIdFromString(cmd.relay)
    const purpose = cmd.purpose ?? 'reservation'
    const request = {
      'schema/v': 1,
      'message/kind': REQUEST_FAMILY,
      'node/id': nodeIdOfPeer(node.peerId),
      'relay/node-id': nodeIdOfPeer(relay),
      purpose,
      nonce: randomBytes(16).toString('base64url'),
      ts: nowRfc3339()
    }
    if (cmd.target != null) request['target/node-id'] = nodeIdOfPeer(peerIdFromString(cmd.target))
    const signature = await components.privateKey.sign(signingInput(REQUEST_FAMILY, request))
    request.signature = { alg: 'ed25519', value: Buffer.from(signature).toString('base64url') }
    const requestBytes = detCbor(request)

    const stream = await node.dialProtocol(cmd.addr != null ? multiaddr(cmd.addr) : relay, ADMISSION_PROTOCOL, { signal })
    const onAbort = () => stream.abort(new Error('admission timed out'))
    signal.addEventListener('abort', onAbort, { once: true })
    let answer
    try {
      if (!stream.send(requestBytes)) await stream.onDrain({ signal })
      await stream.close({ signal })
      answer = await readToEnd(stream, MAX_ARTIFACT_BYTES)
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
    const requestB64 = Buffer.from(requestBytes).toString('base64')
    const decoded = cborDecode(answer, { useMaps: true })
    if (decoded instanceof Map && decoded.get('kind') === 'denied') {
      return { granted: false, denied: toJson(decoded), requestB64 }
    }
    const grant = verifyGrant(answer, relay, request)
    return { granted: true, grant: toJson(grant), grantB64: answer.toString('base64'), requestB64 }
  }
}

async function handle (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    emit({ id: null, ok: false, error: `bad JSON: ${err.message}` })
    return
  }
  const id = cmd.id ?? null
  const handler = handlers[cmd.cmd]
  if (handler == null) {
    emit({ id, ok: false, error: `unknown command "${cmd.cmd}"` })
    return
  }
  const signal = AbortSignal.timeout(Number(cmd.timeoutMs ?? DEFAULT_TIMEOUT_MS))
  try {
    const result = await handler(cmd, signal)
    emit({ id, ok: true, ...result })
  } catch (err) {
    emit({ id, ok: false, error: String(err?.message ?? err) })
  }
}

async function shutdown (code) {
  const timer = setTimeout(() => process.exit(code), 3_000)
  timer.unref()
  try { await node.stop() } catch {}
  process.exit(code)
}

process.on('SIGTERM', () => { void shutdown(0) })
process.on('SIGINT', () => { void shutdown(0) })

emit({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(String)
})

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  if (line.trim() !== '') void handle(line)
})
rl.on('close', () => { void shutdown(0) })
