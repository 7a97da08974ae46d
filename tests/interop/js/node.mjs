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
// subscribe, publish (see `handlers` below). Every command is bounded by `timeoutMs`
// (default 20 s). The node exits when stdin closes.

import { createInterface } from 'node:readline'
import { decode as cborDecode } from 'cborg'

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
    return target.getComponents().find((c) => c.name === 'p2p')?.value ?? target.toString()
  }
  return String(target)
}

const node = await createLibp2p({
  addresses: {
    listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws']
  },
  transports: [tcp(), webSockets()],
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
    })
  }
})

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

const handlers = {
  async dial (cmd, signal) {
    const conn = await node.dial(target(cmd), { signal })
    return { peer: conn.remotePeer.toString(), remoteAddr: conn.remoteAddr.toString() }
  },

  async hangup (cmd, signal) {
    await node.hangUp(peerIdFromString(cmd.peer), { signal })
    return { connections: connectionsTo(cmd.peer) }
  },

  async ping (cmd, signal) {
    const to = target(cmd)
    const rtt = await node.services.ping.ping(to, { signal })
    const peer = cmd.peer ?? to.getComponents?.().find((c) => c.name === 'p2p')?.value
    return { rtt, connections: peer == null ? [] : connectionsTo(peer) }
  },

  async identify (cmd, signal) {
    const peer = peerIdFromString(cmd.peer)
    let conn = node.getConnections(peer).find((c) => c.status === 'open')
    if (conn == null) conn = await node.dial(peer, { signal })
    const r = await node.services.identify.identify(conn, { signal })
    return {
      peer: r.peerId.toString(),
      protocols: r.protocols,
      agentVersion: r.agentVersion ?? null,
      protocolVersion: r.protocolVersion ?? null,
      listenAddrs: r.listenAddrs.map(String),
      observedAddr: r.observedAddr?.toString() ?? null,
      connections: connectionsTo(cmd.peer)
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
