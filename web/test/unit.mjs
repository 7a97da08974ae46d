// Unit tests of the page's pure logic (signal frames, batches, answers, candidates,
// session hello and ack), run by Node: `node --test web/test/unit.mjs` (tests/browser.rs
// runs it too). The browser test checks the same code against meshd.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as lm from '../src/libmesh.js'
import * as sig from '../src/signal.js'
import * as session from '../src/session.js'
import { settleInitChannel } from '../src/init-channel.js'

const now = Date.parse('2026-11-21T12:00:00Z')
const [a, b, c] = await Promise.all([1, 2, 3].map((i) => lm.Identity.fromSeed(new Uint8Array(32).fill(i))))

async function rejects (promise, code) {
  await assert.rejects(promise, (err) => { assert.equal(err.code, code, err.message); return true })
}

test('a frame verifies for its recipient and nobody else', async () => {
  const { bytes } = await sig.frame(a, b.nodeId, 'candidate', 'corr:1', { addrs: ['/ip4/127.0.0.1/udp/5000'] }, now)
  const f = await sig.readFrame(bytes, b.nodeId, now + 1000)
  assert.equal(f.kind, 'candidate')
  assert.equal(f.from, a.nodeId)
  await rejects(sig.readFrame(bytes, c.nodeId, now), 'E_TRANSPORT_REJECTED')
  // Expired, from the future.
  await rejects(sig.readFrame(bytes, b.nodeId, now + 61_000), 'E_PROTO_INVALID')
  await rejects(sig.readFrame(bytes, b.nodeId, now - 31_000), 'E_PROTO_INVALID')
})

test('hosts may count hops, not change content', async () => {
  const { doc } = await sig.frame(a, b.nodeId, 'setup_payload', 'corr:1', { 'data/b64': btoa('v=0'), 'content-type': 'application/sdp' }, now)
  for (const hops of [1, 2]) await sig.readFrame(lm.detCbor({ ...doc, hops }), b.nodeId, now)
  await rejects(sig.readFrame(lm.detCbor({ ...doc, hops: 3 }), b.nodeId, now), 'E_TRANSPORT_REJECTED')
  await rejects(sig.readFrame(lm.detCbor({ ...doc, to: c.nodeId }), c.nodeId, now), 'E_SIG_INVALID')
  const payload = { ...doc.payload, 'data/b64': btoa('v=1') }
  await rejects(sig.readFrame(lm.detCbor({ ...doc, payload }), b.nodeId, now), 'E_SIG_INVALID')
})

test('malformed frames are refused with E_PROTO_INVALID', async () => {
  const bad = [
    ['candidate', { addrs: [] }],
    ['candidate', { addrs: Array.from({ length: 17 }, (_, i) => `/ip4/10.0.0.1/udp/${i + 1}`) }],
    ['setup_payload', { 'data/b64': '%%%' }],
    ['setup_payload', { 'data/b64': 'A'.repeat(sig.MAX_SETUP_B64 + 4) }],
    ['connect_reject', { 'reason/code': 'E_NOPE' }],
    ['gossip', {}]
  ]
  for (const [kind, payload] of bad) {
    const { bytes } = await sig.frame(a, b.nodeId, kind, 'corr:1', payload, now)
    await rejects(sig.readFrame(bytes, b.nodeId, now), 'E_PROTO_INVALID')
  }
  const { bytes } = await sig.frame(a, b.nodeId, 'connect_accept', 'corr:1', {}, now)
  // A non-deterministic encoding of the same frame (a longer head) is refused.
  const long = new Uint8Array([0xb8, bytes[0] & 0x1f, ...bytes.subarray(1)])
  await rejects(sig.readFrame(long, b.nodeId, now), 'E_PROTO_INVALID')
  await rejects(sig.readFrame(new Uint8Array([0xa1, 0x61]), b.nodeId, now), 'E_PROTO_INVALID')
})

test('batches split, answers round-trip', async () => {
  const f1 = (await sig.frame(a, b.nodeId, 'connect_accept', 'corr:1', {}, now)).bytes
  const f2 = (await sig.frame(a, b.nodeId, 'connect_accept', 'corr:2', {}, now)).bytes
  assert.deepEqual(sig.split(f1), [f1])
  assert.deepEqual(sig.split(lm.detCbor([f1, f2])), [f1, f2])
  assert.throws(() => sig.split(lm.detCbor([f1])), (e) => e.code === 'E_PROTO_INVALID')
  assert.throws(() => sig.split(lm.detCbor(Array(65).fill(f1))), (e) => e.code === 'E_PROTO_INVALID')
  assert.throws(() => sig.split(lm.detCbor(['text', f1])), (e) => e.code === 'E_PROTO_INVALID')
  assert.throws(() => sig.split(new Uint8Array([1])), (e) => e.code === 'E_PROTO_INVALID')
  sig.readAnswer(sig.encodeAnswer([null], false))
  assert.throws(() => sig.readAnswer(sig.encodeAnswer([sig.meshError('E_HS_REPLAY', 'seen')], false)),
    (e) => e.code === 'E_HS_REPLAY')
  const batch = lm.decodeArtifact(sig.encodeAnswer([null, sig.meshError('E_SIG_INVALID', 'x')], true))
  assert.equal(batch.kind, 'batch')
  assert.equal(batch.results[1]['error/class'], 'signature/invalid')
})

test('duplicates are remembered until they expire, within a cap', async () => {
  const seen = new sig.Seen(2)
  const frames = []
  for (let i = 0; i < 3; i++) frames.push((await sig.frame(a, b.nodeId, 'connect_accept', `c${i}`, {}, now)).doc)
  seen.add(frames[0], now)
  assert.ok(seen.has(frames[0], now))
  assert.ok(!seen.has(frames[0], now + 61_000))
  seen.add(frames[1], now)
  seen.add(frames[2], now)
  assert.ok(seen.until.size <= 2)
  assert.ok(seen.has(frames[2], now))
})

test('ICE candidates travel as multiaddrs', () => {
  const line = 'candidate:842163049 1 udp 1677729535 127.0.0.1 54321 typ host generation 0 ufrag abcd'
  assert.equal(sig.candidateToMultiaddr(line), '/ip4/127.0.0.1/udp/54321')
  assert.equal(sig.candidateToMultiaddr('candidate:1 1 udp 1 ::1 5000 typ host'), '/ip6/::1/udp/5000')
  assert.equal(sig.candidateToMultiaddr('candidate:1 1 udp 1 f00.local 5000 typ host'), '/dns/f00.local/udp/5000')
  assert.equal(sig.candidateToMultiaddr('candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active'), null)
  assert.equal(sig.candidateToMultiaddr('candidate:1 2 udp 1 127.0.0.1 9 typ host'), null)
  assert.equal(sig.multiaddrToCandidate('/ip4/127.0.0.1/udp/54321', 0),
    `candidate:1 1 udp ${126 * 2 ** 24 + 65535 * 256 + 255} 127.0.0.1 54321 typ host`)
  assert.equal(sig.multiaddrToCandidate('/ip4/127.0.0.1/tcp/1', 0), null)
  assert.equal(sig.multiaddrToCandidate('/ip4/127.0.0.1/udp/0', 0), null)
})

test('a hello is signed without its framing; an ack is checked', async () => {
  const pub = lm.base64url(new Uint8Array(32).fill(9))
  const hello = await session.hello(a, b.nodeId, 'ws', pub, now)
  assert.ok(await lm.verify(session.HANDSHAKE_FAMILY, hello, a.nodeId, ['signature', 'protocol/version', 'transport/profile']))
  assert.ok(await lm.verify(session.HANDSHAKE_FAMILY, { ...hello, 'transport/profile': 'tcp' }, a.nodeId,
    ['signature', 'protocol/version', 'transport/profile']))
  const ackDoc = (of) => b.sign(session.HANDSHAKE_FAMILY, {
    ...hello, 'handshake/id': 'hs:2', 'handshake/mode': 'ack', 'ack/of-handshake-id': of,
    'sender/node-id': b.nodeId, 'recipient/node-id': a.nodeId, 'key/public': b.nodeId.slice(13)
  }, ['signature', 'protocol/version', 'transport/profile'])
  const ad = await session.capabilities(b, now)
  const ack = await ackDoc(hello['handshake/id'])
  const answer = (hs, caps = ad) => lm.detCbor({ kind: 'ack', handshake: JSON.parse(JSON.stringify(hs)), advertisement: caps })
  const ok = await session.readAck(answer(ack), hello, b.nodeId, now)
  assert.deepEqual(ok.capabilities, ['core/messaging'])
  await rejects(session.readAck(answer(await ackDoc('hs:other')), hello, b.nodeId, now), 'E_HS_UNKNOWN_REF')
  await rejects(session.readAck(answer(ack), hello, c.nodeId, now), 'E_SIG_UNKNOWN_SIGNER')
  await rejects(session.readAck(answer({ ...ack, nonce: 'nonce:x' }), hello, b.nodeId, now), 'E_SIG_INVALID')
  await rejects(session.readAck(answer(ack), hello, b.nodeId, now + 31_000), 'E_HS_REPLAY')
  await rejects(session.readAck(answer(ack, await session.capabilities(c, now)), hello, b.nodeId, now), 'E_SIG_UNKNOWN_SIGNER')
  await rejects(session.readAck(lm.detCbor({ kind: 'rejected', 'error/code': 'E_TRANSPORT_REJECTED', detail: 'full' }),
    hello, b.nodeId, now), 'E_TRANSPORT_REJECTED')
  assert.equal(session.transportProfile('/ip4/127.0.0.1/tcp/1/ws/p2p/x'), 'ws')
  assert.equal(session.transportProfile('/dns4/h/tcp/443/tls/sni/h/ws'), 'wss')
  assert.equal(session.transportProfile('/ip4/127.0.0.1/udp/1/webrtc-direct/certhash/u'), 'tcp')
})

/** An RTCDataChannel as far as the init channel's end needs one. */
class FakeChannel extends EventTarget {
  constructor () { super(); this.readyState = 'connecting'; this.closes = 0 }
  set (state) { this.readyState = state; this.dispatchEvent(new Event(state === 'closed' ? 'close' : state)) }
  close () { this.closes++; if (this.readyState !== 'closed') this.readyState = 'closing' }
}

test('a WebRTC dial gets past an init channel the remote closed before it opened here', async () => {
  // Closed before the peer connection was up (1 dial in 30 on loopback): js-libp2p
  // waited for an `open` that never came.
  const gone = new FakeChannel()
  gone.readyState = 'closed'
  assert.deepEqual(await settleInitChannel(gone, { waitMs: 5_000 }), ['closed'])
  assert.equal(gone.closes, 0)
  // The remote's reset came first: `close` without `open`.
  const early = new FakeChannel()
  setTimeout(() => early.set('closed'), 10)
  assert.deepEqual(await settleInitChannel(early, { waitMs: 5_000 }), ['connecting', 'closed'])
  assert.equal(early.closes, 0)
  // The usual order: open, our close, then `close`.
  const usual = new FakeChannel()
  setTimeout(() => usual.set('open'), 10)
  const settled = settleInitChannel(usual, { waitMs: 5_000 })
  setTimeout(() => usual.set('closed'), 30)
  assert.deepEqual(await settled, ['connecting', 'open', 'closed'])
  assert.equal(usual.closes, 1)
  // Neither event: bounded, closed, and the dial goes on.
  const stuck = new FakeChannel()
  const started = Date.now()
  assert.deepEqual(await settleInitChannel(stuck, { waitMs: 50 }), ['connecting', 'connecting', 'closing'])
  assert.ok(Date.now() - started < 2_000)
  assert.equal(stuck.closes, 1)
  // The dial's own abort still ends it with its reason.
  const ctl = new AbortController()
  const aborted = settleInitChannel(new FakeChannel(), { signal: ctl.signal, waitMs: 5_000 })
  ctl.abort(new Error('dial aborted'))
  await assert.rejects(aborted, /dial aborted/)
})

test('a member answers joins as the nodes do', () => {
  const fetching = { presence: 'join', 'table/fetch': true }
  const plain = { presence: 'join' }
  const st = { joinedAt: null, lastAnswer: null, answerAt: null }
  // Not joined yet (or forming): the first join at once, then one answer per gap that
  // serves every join within it.
  assert.equal(lm.answerJoin(st, fetching, 200, now), 0)
  assert.equal(lm.answerJoin(st, plain, 200, now), null, 'already scheduled')
  lm.answered(st, now)
  assert.equal(lm.answerGapMs(200), 8_000)
  assert.equal(lm.answerJoin(st, plain, 200, now + 1_000), 7_000)
  assert.equal(lm.answerJoin(st, fetching, 200, now + 2_000), null)
  lm.answered(st, now + 8_000)
  // Settled: a join that fetches the table gets no answer, a plain one the long gap.
  st.joinedAt = now
  const later = now + 60_000
  assert.equal(lm.answerJoin(st, fetching, 200, later), null, 'the newcomer has the table')
  assert.equal(lm.answerJoin(st, plain, 200, later), 0)
  lm.answered(st, later)
  assert.equal(lm.plainAnswerGapMs(200), 50_000)
  assert.equal(lm.answerJoin(st, plain, 200, later + 1_000), 49_000, 'deferred, not dropped')
  assert.equal(lm.answerJoin(st, plain, 200, later + 2_000), null)
  assert.equal(lm.plainAnswerGapMs(1), 2_000)
  assert.equal(lm.plainAnswerGapMs(10_000), 120_000)
  assert.equal(lm.answerGapMs(10_000), 10_000)
})
