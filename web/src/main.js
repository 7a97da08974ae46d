// The libmesh browser node: a js-libp2p 3.x node (WebRTC-direct, WebRTC, WebSockets,
// the circuit-relay transport; noise, yamux, identify, ping, gossipsub) with a libmesh
// identity, that dials the `meshd` serving this page and joins discovery-key swarms
// with its own signed presences. `window.mesh` is its API (the UI and the browser test
// use it).
import { createLibp2p } from 'libp2p'
import { webRTC, webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import * as lm from './libmesh.js'
import * as session from './session.js'
import { Rtc, exchange } from './rtc.js'

// Bounds: swarms joined at once and members remembered per swarm (as meshd's
// defaults), chat lines kept per swarm, and the presence lifetime.
const MAX_SWARMS = 64
const MAX_MEMBERS = 1024
const MAX_CHAT = 200
const PRESENCE_TTL_SECS = 120
const MAX_CHAT_BYTES = 2048

const params = new URLSearchParams(location.search)
const storage = params.has('ephemeral') ? null : window.localStorage
const identity = await lm.Identity.load(storage)
const info = await (await fetch('/api/info', { cache: 'no-store' })).json()

// ICE servers for WebRTC between browsers: none unless `?stun=stun:host:port,…` names
// some (js-libp2p would otherwise ask public STUN servers of third parties).
const iceServers = (params.get('stun') ?? '').split(',').filter((u) => /^stuns?:[^\s]+$/.test(u)).slice(0, 4)
  .map((u) => ({ urls: [u] }))

const node = await createLibp2p({
  privateKey: identity.privateKey,
  addresses: { listen: ['/p2p-circuit', '/webrtc'] },
  transports: [webRTCDirect(), webRTC({ rtcConfiguration: { iceServers } }), webSockets(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  // The page dials what its own meshd tells it, which on a LAN or in a test is a
  // private address, and plain `ws://` next to an `http://` page.
  connectionGater: { denyDialMultiaddr: () => false },
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({ emitSelf: false, allowPublishToZeroTopicPeers: true })
  }
})

/** Joined swarms: key hex -> { name, seq, members: Map(nodeId -> presence), chat: [] } */
const swarms = new Map()
/** Peers (peer id strings) the page holds a libmesh session with: its signaling hosts. */
const sessions = new Set()
const MAX_SESSIONS = 8

const rtc = new Rtc({
  identity,
  iceServers,
  node,
  hosts: () => [...sessions],
  isMember: (id) => [...swarms.values()].some((s) => s.members.has(id)),
  onChange: () => render()
})
await rtc.start()

function chatTopic (key) { return `/libmesh/chat/1/${key}` }

function onMessage (evt) {
  const msg = evt.detail
  for (const [key, s] of swarms) {
    if (msg.topic === lm.swarmTopic(key)) {
      lm.readPresence(msg.data, key).then((p) => {
        // Gossipsub signs with the peer's key: the presence's signer must be the author.
        const author = msg.from?.publicKey?.raw
        if (author == null || lm.nodeIdOf(author) !== p['node/id']) return
        if (p.presence === 'leave') {
          s.members.delete(p['node/id'])
        } else {
          const old = s.members.get(p['node/id'])
          if (old != null && old['sequence/no'] >= p['sequence/no']) return
          if (old == null && s.members.size >= MAX_MEMBERS) return
          s.members.set(p['node/id'], p)
          const delay = p.presence === 'join' ? lm.answerJoin(s, p, s.members.size, Date.now()) : null
          if (delay != null) {
            setTimeout(() => {
              lm.answered(s, Date.now())
              announce(key, 'announce').catch(() => {})
            }, delay)
          }
        }
        render()
      }).catch(() => {})
    } else if (msg.topic === chatTopic(key) && msg.data.length <= MAX_CHAT_BYTES) {
      const author = msg.from?.publicKey?.raw
      if (author == null) return
      s.chat.push({ from: lm.nodeIdOf(author), text: new TextDecoder().decode(msg.data) })
      if (s.chat.length > MAX_CHAT) s.chat.shift()
      render()
    }
  }
}
node.services.pubsub.addEventListener('message', onMessage)

function ownAddrs () {
  return node.getMultiaddrs().map((a) => a.toString()).slice(0, 16)
}

async function announce (key, kind) {
  const s = swarms.get(key)
  if (s == null) return
  s.seq = Math.max(s.seq + 1, Date.now())
  const bytes = await lm.presence(identity, key, kind, s.seq, ownAddrs(), PRESENCE_TTL_SECS)
  await node.services.pubsub.publish(lm.swarmTopic(key), bytes)
}

const mesh = {
  identity,
  info,
  node,
  lm,
  nodeId: identity.nodeId,
  peerId: node.peerId.toString(),
  /** Dials `addr` and pings it: the connection's remote address and the RTT (ms). */
  async dial (addr) {
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(20_000) })
    const rtt = await node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(20_000) })
    render()
    return { remote: conn.remoteAddr.toString(), peer: conn.remotePeer.toString(), rtt }
  },
  peers () {
    return node.getConnections().map((c) => ({ peer: c.remotePeer.toString(), addr: c.remoteAddr.toString() }))
  },
  /** The protocols identify learned from `peer`. */
  async protocolsOf (peer) {
    const p = await node.peerStore.get(node.getConnections().find((c) => c.remotePeer.toString() === peer).remotePeer)
    return p.protocols
  },
  /** Joins the swarm named `name` (64 hex digits or any text): returns its key. */
  async join (name) {
    const key = await lm.swarmKey(name)
    if (!swarms.has(key)) {
      if (swarms.size >= MAX_SWARMS) throw new Error(`at most ${MAX_SWARMS} swarms`)
      swarms.set(key, { name, seq: 0, members: new Map(), chat: [], timer: null, joinedAt: null, lastAnswer: null, answerAt: null })
      node.services.pubsub.subscribe(lm.swarmTopic(key))
      node.services.pubsub.subscribe(chatTopic(key))
      const s = swarms.get(key)
      // `join` once a subscribed peer can take it (retried each second, 60 times at
      // most), then `announce` at half the lifetime.
      let tries = 0
      const tryJoin = async () => {
        tries++
        const peers = node.services.pubsub.getSubscribers(lm.swarmTopic(key))
        if (peers.length > 0) {
          await announce(key, 'join')
          s.joinedAt = Date.now()
          s.timer = setInterval(() => { announce(key, 'announce').catch(() => {}) }, PRESENCE_TTL_SECS * 500)
        } else if (tries < 60 && swarms.has(key)) {
          s.timer = setTimeout(() => { tryJoin().catch(() => {}) }, 1000)
        }
      }
      await tryJoin()
    }
    render()
    return key
  },
  /** `/mesh/session/1.0.0` with the connected `peer` (this page's hello, the peer's
   * verified ack): the peer then forwards signaling frames to this page. Returns the
   * capabilities the peer proved. */
  async session (peer) {
    const conn = node.getConnections().find((c) => c.remotePeer.toString() === peer)
    if (conn == null) throw new Error(`not connected to ${peer}`)
    if (!sessions.has(peer) && sessions.size >= MAX_SESSIONS) throw new Error(`at most ${MAX_SESSIONS} sessions`)
    const peerNode = lm.nodeIdOf(conn.remotePeer.publicKey.raw)
    const hello = await session.hello(identity, peerNode, session.transportProfile(conn.remoteAddr.toString()),
      await session.ephemeralSessionPub())
    const ad = await session.capabilities(identity)
    const stream = await conn.newStream(session.SESSION_PROTOCOL, { signal: AbortSignal.timeout(20_000) })
    const bytes = await exchange(stream, session.encodeHello(hello, ad), session.MAX_SESSION_MESSAGE)
    const { capabilities } = await session.readAck(bytes, hello, peerNode)
    sessions.add(peer)
    render()
    return capabilities
  },
  sessions () { return [...sessions] },
  /** Opens a WebRTC data channel to the member `nodeId`, signaled through meshd. */
  connectPeer (nodeId) { return rtc.connect(nodeId) },
  /** Sends `text` on the open data channel to `nodeId`. */
  say (nodeId, text) { rtc.say(nodeId, text) },
  channels () { return rtc.list() },
  /** The standard js-libp2p path: dials the member `nodeId` at a `/p2p-circuit/webrtc`
   * address from its signed presence (a reservation on a relay, `/webrtc-signaling`
   * over the circuit, then a direct WebRTC connection) and pings it. */
  async dialMember (nodeId) {
    const p = [...swarms.values()].map((s) => s.members.get(nodeId)).find((x) => x != null)
    if (p == null) throw new Error('not a member of a swarm joined here')
    const addrs = (p.addrs ?? []).filter((a) => typeof a === 'string' && a.includes('/p2p-circuit/webrtc'))
    if (addrs.length === 0) throw new Error('its presence lists no /p2p-circuit/webrtc address')
    const start = performance.now()
    const conn = await node.dial(addrs.map((a) => multiaddr(a)), { signal: AbortSignal.timeout(30_000) })
    const ms = performance.now() - start
    const rtt = await node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(20_000) })
    render()
    return { remote: conn.remoteAddr.toString(), peer: conn.remotePeer.toString(), limited: conn.limits != null, ms, rtt }
  },
  /** The addresses this page listens on (circuit reservations included). */
  addrs () { return ownAddrs() },
  /** The selected ICE candidate pair of the channel to `nodeId`. */
  channelPath (nodeId) { return rtc.path(nodeId) },
  async leave (name) {
    const key = await lm.swarmKey(name)
    const s = swarms.get(key)
    if (s == null) return false
    clearInterval(s.timer)
    clearTimeout(s.timer)
    await announce(key, 'leave').catch(() => {})
    node.services.pubsub.unsubscribe(lm.swarmTopic(key))
    node.services.pubsub.unsubscribe(chatTopic(key))
    swarms.delete(key)
    render()
    return true
  },
  members (key) {
    return [...(swarms.get(key)?.members.keys() ?? [])]
  },
  /** The chat lines of swarm `key`: [{from (node id), text}]. */
  chatLines (key) {
    return (swarms.get(key)?.chat ?? []).slice()
  },
  async chat (key, text) {
    const bytes = new TextEncoder().encode(String(text)).slice(0, MAX_CHAT_BYTES)
    await node.services.pubsub.publish(chatTopic(key), bytes)
    swarms.get(key)?.chat.push({ from: identity.nodeId, text: String(text) })
    render()
  }
}
window.mesh = mesh

// --- the page ------------------------------------------------------------------------

const $ = (id) => document.getElementById(id)

function render () {
  $('me').textContent = identity.nodeId
  $('meshd').textContent = `${info.node_id}`
  $('peers').replaceChildren(...mesh.peers().map((p) => {
    const li = document.createElement('li')
    li.textContent = `${p.peer} via ${p.addr}`
    return li
  }))
  $('swarms').replaceChildren(...[...swarms].map(([key, s]) => {
    const div = document.createElement('div')
    const h = document.createElement('h3')
    h.textContent = `${s.name} (${key.slice(0, 12)}…): ${s.members.size} other member(s)`
    const ul = document.createElement('ul')
    ul.replaceChildren(...[...s.members.keys()].map((m) => {
      const li = document.createElement('li')
      li.textContent = `${m} `
      if (m !== info.node_id) {
        const b = document.createElement('button')
        b.textContent = 'open a data channel'
        b.addEventListener('click', () => {
          mesh.connectPeer(m).then((r) => status(`data channel to …${m.slice(-8)} open in ${Math.round(r.ms)} ms`),
            (err) => status(err.message))
        })
        li.append(b)
      }
      return li
    }))
    const log = document.createElement('pre')
    log.textContent = s.chat.map((c) => `${c.from.slice(-8)}: ${c.text}`).join('\n')
    const input = document.createElement('input')
    input.placeholder = 'say something'
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && input.value !== '') {
        mesh.chat(key, input.value).catch((err) => status(err.message))
        input.value = ''
      }
    })
    div.append(h, ul, log, input)
    return div
  }))
  $('sessions').textContent = sessions.size === 0 ? 'none' : [...sessions].join(', ')
  $('channels').replaceChildren(...rtc.list().map((c) => {
    const div = document.createElement('div')
    const h = document.createElement('h3')
    h.textContent = `…${c.peer.slice(-8)} (${c.role}): ${c.state}${c.openMs != null ? `, open in ${Math.round(c.openMs)} ms` : ''}${c.error != null ? ` (${c.error})` : ''}`
    const log = document.createElement('pre')
    log.textContent = c.messages.map((m) => `${m.from.slice(-8)}: ${m.text}`).join('\n')
    div.append(h, log)
    if (c.state === 'open') {
      const input = document.createElement('input')
      input.placeholder = 'say something directly'
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && input.value !== '') {
          try { mesh.say(c.peer, input.value) } catch (err) { status(err.message) }
          input.value = ''
        }
      })
      div.append(input)
    }
    return div
  }))
}

function status (text) { $('status').textContent = text }

$('join').addEventListener('submit', (e) => {
  e.preventDefault()
  mesh.join($('swarm').value).catch((err) => status(err.message))
})
node.addEventListener('connection:open', render)
node.addEventListener('connection:close', (e) => {
  const peer = e.detail.remotePeer.toString()
  if (!node.getConnections().some((c) => c.remotePeer.toString() === peer)) sessions.delete(peer)
  render()
})

// Connect to the serving meshd: WebRTC-direct first, WebSocket otherwise (`?via=ws`:
// WebSocket first; a circuit-relay reservation needs it, see the README).
async function connect () {
  const order = params.get('via') === 'ws' ? [...info.ws, ...info.webrtc_direct] : [...info.webrtc_direct, ...info.ws]
  for (const addr of order) {
    try {
      const r = await mesh.dial(addr)
      const how = `${addr.includes('webrtc') ? 'WebRTC-direct' : 'WebSocket'} (ping ${r.rtt} ms)`
      status(`connected to meshd over ${how}`)
      await mesh.session(r.peer)
      status(`connected to meshd over ${how}, libmesh session up`)
      return
    } catch (err) {
      status(`${addr}: ${err.message}`)
    }
  }
}
render()
window.meshReady = params.has('noconnect') ? Promise.resolve() : connect()
document.body.dataset.ready = '1'
