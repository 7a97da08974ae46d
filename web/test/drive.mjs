// Drives the browser node in headless Chromium (puppeteer-core, Debian's chromium) for
// tests/browser.rs. Usage:
//   node web/test/drive.mjs WEB_URL SHARED_DIR SWARM_NAME SCREENSHOT.png
// Prints one JSON line per step on stdout; after the `joined` line it takes commands on
// stdin (chat both ways with meshd, see below; the Rust test checks `meshd swarm
// members` meanwhile), then takes the screenshot and exits. Every wait is bounded.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { emit, launch } from './launch.mjs'

const [webUrl, sharedDir, swarmName, screenshot] = process.argv.slice(2)
const STEP_MS = 30_000
const { browser, timer } = await launch({ protocolTimeout: 60_000 })
try {
  const page = await browser.newPage()
  page.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`page: ${m.text()}\n`) })
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`))
  const loadStart = Date.now()
  await page.goto(`${webUrl}/?ephemeral&noconnect`, { timeout: STEP_MS })
  await page.waitForFunction(() => window.mesh != null, { timeout: STEP_MS })
  const me = await page.evaluate(() => ({ nodeId: mesh.nodeId, peerId: mesh.peerId, info: mesh.info }))
  emit({ step: 'loaded', ms: Date.now() - loadStart, ...me })

  // The shared signing vectors, byte-exact, in the browser.
  const vectors = JSON.parse(await readFile(join(sharedDir, 'vectors', 'signing.json'), 'utf8'))
  const fixtures = {}
  for (const a of vectors.artifacts) {
    fixtures[a.fixture] = JSON.parse(await readFile(join(sharedDir, a.fixture), 'utf8'))
  }
  const results = await page.evaluate((v, f) => mesh.lm.checkVectors(v, f), vectors, fixtures)
  emit({ step: 'vectors', results })

  // Dial meshd over WebSocket, then (after hanging up) over WebRTC-direct: connect
  // time, ping and what identify learned.
  for (const [kind, addrs] of [['ws', me.info.ws], ['webrtc-direct', me.info.webrtc_direct]]) {
    const out = await page.evaluate(async (addr, peer) => {
      const start = performance.now()
      const r = await mesh.dial(addr)
      const ms = performance.now() - start
      // Identify runs right after the connection opens; wait (bounded) for it.
      let protocols = []
      for (let i = 0; i < 100 && !protocols.includes('/ipfs/id/1.0.0'); i++) {
        protocols = await mesh.protocolsOf(peer).catch(() => [])
        if (!protocols.includes('/ipfs/id/1.0.0')) await new Promise((resolve) => setTimeout(resolve, 100))
      }
      return { ...r, ms, protocols }
    }, addrs[0], me.info.peer_id)
    emit({ step: 'dial', kind, ...out })
    if (kind === 'ws') {
      await page.evaluate((peer) => Promise.all(mesh.node.getConnections()
        .filter((c) => c.remotePeer.toString() === peer).map((c) => c.close())), me.info.peer_id)
      await page.evaluate(async (peer) => {
        for (let i = 0; i < 50 && mesh.peers().some((p) => p.peer === peer); i++) {
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }, me.info.peer_id)
    }
  }

  // Join the swarm; meshd (a member) answers the join with its announce.
  const joinStart = Date.now()
  const key = await page.evaluate((name) => mesh.join(name), swarmName)
  const members = await page.evaluate(async (key, meshd) => {
    for (let i = 0; i < 200 && !mesh.members(key).includes(meshd); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    return mesh.members(key)
  }, key, me.info.node_id)
  emit({ step: 'joined', key, members, ms: Date.now() - joinStart })

  // Commands from the test, one JSON line each, until `done` (bounded by the overall
  // timer): {"cmd": "chat", "text"} publishes on the swarm's chat topic; {"cmd":
  // "wait-chat", "text", "from", "ms"} waits up to `ms` for that chat line from the node
  // `from`; {"cmd": "done"} takes the screenshot and ends.
  const rl = createInterface({ input: process.stdin })
  const lines = rl[Symbol.asyncIterator]()
  for (;;) {
    const { value, done } = await lines.next()
    if (done) break
    const cmd = JSON.parse(value)
    if (cmd.cmd === 'done') break
    if (cmd.cmd === 'chat') {
      await page.evaluate((key, text) => mesh.chat(key, text), key, cmd.text)
      emit({ step: 'chat-sent', text: cmd.text })
    } else if (cmd.cmd === 'wait-chat') {
      const found = await page.waitForFunction((key, text, from) => mesh.chatLines(key).some((c) => c.text === text && c.from === from),
        { timeout: Math.min(Number(cmd.ms ?? 1000), STEP_MS), polling: 100 }, key, cmd.text, cmd.from)
        .then(() => true, () => false)
      emit({ step: 'chat-received', text: cmd.text, from: cmd.from, found })
    } else {
      emit({ step: 'error', message: `unknown command ${value}` })
    }
  }
  rl.close()
  await page.screenshot({ path: screenshot, fullPage: true })
  emit({ step: 'done', screenshot })
} catch (err) {
  emit({ step: 'error', message: String(err?.stack ?? err) })
  process.exitCode = 1
} finally {
  clearTimeout(timer)
  await browser.close()
}
