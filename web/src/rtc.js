// Browser <-> browser over WebRTC, signaled the specifications' way: `signal-frame.v1`
// frames on `/mesh/signal/1.0.0` through the page's meshd as the signaling host (it
// forwards frames between its session peers). The initiator sends `connect_request`
// (purpose `webrtc`), the responder answers `connect_accept` (or `connect_reject` with a
// frozen code), then each side sends its SDP (offer, answer) as a `setup_payload`
// (`content-type: application/sdp`) and its ICE candidates as `candidate` frames
// (each candidate's transport address as a multiaddr). The data channel `libmesh`
// opens directly between the two browsers.
//
// Bounds: correlations held at once, frames per correlation, a deadline for the channel
// to open, frames taken per delivering peer per minute, frame ids remembered.
import * as sig from './signal.js'

export const MAX_CORRELATIONS = 16
export const MAX_FRAMES = 64
export const OPEN_DEADLINE_MS = 60_000
export const PEER_FRAMES_PER_MINUTE = 600
const MAX_MESSAGES = 200
const MAX_MESSAGE_BYTES = 16 * 1024

async function readToEnd (stream, cap) {
  const chunks = []
  let n = 0
  for await (const chunk of stream) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    n += bytes.length
    if (n > cap) {
      stream.abort(new Error('over the size cap'))
      throw sig.meshError('E_PROTO_INVALID', `more than ${cap} bytes`)
    }
    chunks.push(bytes)
  }
  const out = new Uint8Array(n)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

/** Writes `bytes`, closes the writable end and reads the answer to its end (at most
 * `cap` bytes). The reader is attached first: an answer that comes back while the
 * writable end is closing would otherwise be dropped with the stream. */
export async function exchange (stream, bytes, cap) {
  const answer = readToEnd(stream, cap)
  answer.catch(() => {})
  if (!stream.send(bytes)) await stream.onDrain()
  // Not awaited: over WebRTC, js-libp2p waits for a FIN_ACK that rust-libp2p's WebRTC
  // does not send (the close then fails on its timeout); the FIN itself goes at once.
  stream.close().catch(() => {})
  return await answer
}

function b64 (text) {
  const bytes = new TextEncoder().encode(text)
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

function unb64 (text) {
  return new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)))
}

export class Rtc {
  /**
   * @param {object} o
   * @param o.identity the page's libmesh identity
   * @param o.node the js-libp2p node
   * @param o.hosts () => peer ids (strings) the page holds a libmesh session with
   * @param o.isMember (nodeId) => whether it is a verified member of a swarm joined here
   * @param o.onChange () => void, after anything a user would see changed
   * @param o.iceServers RTCIceServer[] (none by default: loopback and LAN)
   */
  constructor ({ identity, node, hosts, isMember, onChange, iceServers }) {
    this.identity = identity
    this.iceServers = iceServers ?? []
    this.node = node
    this.hosts = hosts
    this.isMember = isMember
    this.onChange = onChange ?? (() => {})
    this.corrs = new Map()
    this.seen = new sig.Seen()
    this.rate = new Map()
    this.refused = 0
  }

  async start () {
    await this.node.handle(sig.SIGNAL_PROTOCOL, (stream, connection) => {
      this.onStream(stream, connection).catch(() => stream.abort(new Error('signal stream failed')))
    }, { maxInboundStreams: 8 })
  }

  /** The channels and their state, for the page and the test. */
  list () {
    return [...this.corrs.values()].map((c) => ({
      correlation: c.id, peer: c.peer, role: c.role, state: c.state,
      messages: c.messages.slice(), openMs: c.openMs ?? null, error: c.error ?? null
    }))
  }

  /** The addresses of the selected ICE candidate pair of the open channel to `peer`. */
  async path (peer) {
    const c = [...this.corrs.values()].find((x) => x.peer === peer && x.state === 'open')
    if (c == null) return null
    const stats = await c.pc.getStats()
    let pair = null
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId != null) pair = stats.get(s.selectedCandidatePairId)
    })
    if (pair == null) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s })
    if (pair == null) return null
    const at = (id) => {
      const x = stats.get(id)
      return x == null ? null : { address: x.address ?? x.ip, port: x.port, protocol: x.protocol, type: x.candidateType }
    }
    return { local: at(pair.localCandidateId), remote: at(pair.remoteCandidateId) }
  }

  // --- sending ----------------------------------------------------------------------

  /** Sends one frame through the first signaling host; throws the host's refusal. */
  async sendFrame (c, kind, payload) {
    if (c.sent + c.received >= MAX_FRAMES) throw sig.meshError('E_TRANSPORT_REJECTED', 'frame budget of the correlation spent')
    c.sent++
    const { bytes } = await sig.frame(this.identity, c.peer, kind, c.id, payload)
    const host = this.node.getConnections().map((x) => x.remotePeer).find((p) => this.hosts().includes(p.toString()))
    if (host == null) throw sig.meshError('E_TRANSPORT_UNAVAILABLE', 'no signaling host with a session')
    const stream = await this.node.dialProtocol(host, sig.SIGNAL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    sig.readAnswer(await exchange(stream, bytes, sig.MAX_ANSWER))
  }

  /** Frames of one correlation leave one after another, in order. */
  queue (c, kind, payload) {
    c.chain = c.chain.then(() => this.sendFrame(c, kind, payload)).catch((err) => this.fail(c, err))
    return c.chain
  }

  // --- correlations -----------------------------------------------------------------

  newCorrelation (peer, id, role) {
    const live = [...this.corrs.values()].filter((c) => c.state !== 'closed')
    if (live.length >= MAX_CORRELATIONS) throw sig.meshError('E_TRANSPORT_REJECTED', `at most ${MAX_CORRELATIONS} correlations`)
    for (const [k, c] of this.corrs) {
      if (this.corrs.size < 4 * MAX_CORRELATIONS) break
      if (c.state === 'closed') this.corrs.delete(k)
    }
    const c = {
      id, peer, role, state: 'requested', sent: 0, received: 0, pc: null, channel: null,
      remoteSet: false, pending: [], messages: [], chain: Promise.resolve(), started: performance.now()
    }
    c.timer = setTimeout(() => {
      if (c.state !== 'open') this.fail(c, sig.meshError('E_TRANSPORT_UNAVAILABLE', 'the data channel did not open in time'))
    }, OPEN_DEADLINE_MS)
    this.corrs.set(`${peer} ${id}`, c)
    return c
  }

  fail (c, err) {
    if (c.state === 'closed') return
    c.error = String(err?.message ?? err)
    c.state = 'closed'
    clearTimeout(c.timer)
    c.pc?.close()
    c.reject?.(err)
    this.onChange()
  }

  peerConnection (c) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers })
    c.pc = pc
    pc.onicecandidate = (e) => {
      const ma = e.candidate != null ? sig.candidateToMultiaddr(e.candidate.candidate) : null
      if (ma != null) this.queue(c, 'candidate', { addrs: [ma] })
    }
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') this.fail(c, sig.meshError('E_TRANSPORT_UNAVAILABLE', 'ICE failed'))
    }
    return pc
  }

  wire (c, channel) {
    c.channel = channel
    channel.onopen = () => {
      c.state = 'open'
      c.openMs = performance.now() - c.started
      clearTimeout(c.timer)
      c.resolve?.({ correlation: c.id, peer: c.peer, ms: c.openMs })
      this.onChange()
    }
    channel.onmessage = (e) => {
      if (typeof e.data !== 'string' || e.data.length > MAX_MESSAGE_BYTES) return
      c.messages.push({ from: c.peer, text: e.data })
      if (c.messages.length > MAX_MESSAGES) c.messages.shift()
      this.onChange()
    }
    channel.onclose = () => { if (c.state === 'open') { c.state = 'closed'; this.onChange() } }
    if (channel.readyState === 'open') channel.onopen()
  }

  /** Opens a data channel to `peer` (a node id, a member of a swarm joined here). */
  connect (peer) {
    if (peer === this.identity.nodeId) return Promise.reject(sig.meshError('E_PROTO_INVALID', 'that is this page'))
    if (!this.isMember(peer)) return Promise.reject(sig.meshError('E_TRANSPORT_REJECTED', 'not a member of a swarm joined here'))
    let c
    try {
      c = this.newCorrelation(peer, sig.randomId('corr:'), 'initiator')
    } catch (err) {
      return Promise.reject(err)
    }
    const opened = new Promise((resolve, reject) => { c.resolve = resolve; c.reject = reject })
    this.queue(c, 'connect_request', { purpose: 'webrtc' })
    this.onChange()
    return opened
  }

  /** Sends `text` on the open channel to `peer`. */
  say (peer, text) {
    const c = [...this.corrs.values()].find((x) => x.peer === peer && x.state === 'open')
    if (c == null) throw sig.meshError('E_TRANSPORT_UNAVAILABLE', 'no open channel to that node')
    const t = String(text).slice(0, MAX_MESSAGE_BYTES)
    c.channel.send(t)
    c.messages.push({ from: this.identity.nodeId, text: t })
    if (c.messages.length > MAX_MESSAGES) c.messages.shift()
    this.onChange()
  }

  // --- receiving --------------------------------------------------------------------

  /** Frames taken from `peer` in the current minute: false once over the allowance. */
  allowance (peer, nowMs) {
    let r = this.rate.get(peer)
    if (r == null || nowMs - r.since >= 60_000) {
      if (this.rate.size >= 256) this.rate.clear()
      r = { since: nowMs, n: 0 }
      this.rate.set(peer, r)
    }
    r.n++
    return r.n <= PEER_FRAMES_PER_MINUTE
  }

  async onStream (stream, connection) {
    const via = connection.remotePeer.toString()
    let answer
    try {
      // Frames come only from the page's signaling hosts (peers it holds a session with).
      if (!this.hosts().includes(via)) throw sig.meshError('E_TRANSPORT_REJECTED', 'not a signaling host of this page')
      const items = sig.split(await readToEnd(stream, sig.MAX_REQUEST))
      const results = []
      for (const item of items) {
        if (!this.allowance(via, Date.now())) {
          results.push(sig.meshError('E_TRANSPORT_REJECTED', 'too many frames from this peer; retry after 60 s'))
          continue
        }
        results.push(await this.take(item).then(() => null, (err) => err))
      }
      answer = sig.encodeAnswer(results, items.length > 1)
    } catch (err) {
      answer = sig.encodeAnswer([err], false)
    }
    if (!stream.send(answer)) await stream.onDrain()
    stream.close().catch(() => {})
  }

  async take (bytes) {
    const now = Date.now()
    const f = await sig.readFrame(bytes, this.identity.nodeId, now)
    if (this.seen.has(f, now)) throw sig.meshError('E_HS_REPLAY', `frame ${f['frame/id']} seen before`)
    const key = `${f.from} ${f['correlation/id']}`
    let c = this.corrs.get(key)
    if (f.kind === 'connect_request') {
      if (c != null) throw sig.meshError('E_HS_REPLAY', 'correlation already open')
      this.seen.add(f, now)
      this.answerRequest(f)
      return
    }
    if (c == null || c.state === 'closed') throw sig.meshError('E_HS_UNKNOWN_REF', `no open correlation ${f['correlation/id']}`)
    if (c.sent + c.received >= MAX_FRAMES) throw sig.meshError('E_TRANSPORT_REJECTED', 'frame budget of the correlation spent')
    c.received++
    this.seen.add(f, now)
    switch (f.kind) {
      case 'connect_accept':
        if (c.role !== 'initiator' || c.state !== 'requested') throw sig.meshError('E_PROTO_INVALID', 'unexpected accept')
        c.state = 'accepted'
        this.offer(c).catch((err) => this.fail(c, err))
        break
      case 'connect_reject':
        if (c.role !== 'initiator') throw sig.meshError('E_PROTO_INVALID', 'unexpected reject')
        this.fail(c, sig.meshError(f.payload['reason/code'], `refused: ${f.payload.reason ?? ''}`))
        break
      case 'setup_payload':
        if (f.payload['content-type'] !== 'application/sdp') throw sig.meshError('E_PROTO_INVALID', 'expected application/sdp')
        this.description(c, unb64(f.payload['data/b64'])).catch((err) => this.fail(c, err))
        break
      case 'candidate':
        f.payload.addrs.forEach((ma, i) => {
          const line = sig.multiaddrToCandidate(ma, c.received * sig.MAX_CANDIDATES + i)
          if (line == null) return
          if (c.remoteSet) c.pc.addIceCandidate({ candidate: line, sdpMLineIndex: 0 }).catch(() => {})
          else if (c.pending.length < MAX_FRAMES * sig.MAX_CANDIDATES) c.pending.push(line)
        })
        break
    }
    this.onChange()
  }

  /** A request: accepted from verified members of a swarm joined here, else refused. */
  answerRequest (f) {
    const refuse = (code, reason) => {
      const c = { id: f['correlation/id'], peer: f.from, sent: 0, received: 1, chain: Promise.resolve(), state: 'closed' }
      this.refused++
      this.queue(c, 'connect_reject', { 'reason/code': code, reason })
    }
    if (f.payload.purpose !== 'webrtc') return refuse('E_PROTO_CAP_MISSING', 'this page answers only purpose webrtc')
    if (!this.isMember(f.from)) return refuse('E_TRANSPORT_REJECTED', 'not a member of a swarm joined here')
    let c
    try {
      c = this.newCorrelation(f.from, f['correlation/id'], 'responder')
    } catch (err) {
      return refuse('E_TRANSPORT_REJECTED', err.detail ?? err.message)
    }
    c.received = 1
    const pc = this.peerConnection(c)
    pc.ondatachannel = (e) => this.wire(c, e.channel)
    c.state = 'accepted'
    this.queue(c, 'connect_accept', {})
    this.onChange()
  }

  async offer (c) {
    const pc = this.peerConnection(c)
    this.wire(c, pc.createDataChannel('libmesh'))
    await pc.setLocalDescription(await pc.createOffer())
    await this.queue(c, 'setup_payload', { 'data/b64': b64(pc.localDescription.sdp), 'content-type': 'application/sdp' })
  }

  async description (c, sdp) {
    if (c.described || c.pc == null) throw sig.meshError('E_PROTO_INVALID', 'an unexpected description')
    c.described = true
    const type = c.role === 'initiator' ? 'answer' : 'offer'
    await c.pc.setRemoteDescription({ type, sdp })
    c.remoteSet = true
    for (const line of c.pending.splice(0)) await c.pc.addIceCandidate({ candidate: line, sdpMLineIndex: 0 }).catch(() => {})
    if (type === 'offer') {
      await c.pc.setLocalDescription(await c.pc.createAnswer())
      await this.queue(c, 'setup_payload', { 'data/b64': b64(c.pc.localDescription.sdp), 'content-type': 'application/sdp' })
    }
  }
}
