// Browser <-> browser through libmesh signaling, for tests/browser.rs. Two pages
// (`?ephemeral`, each in its own browser context with its own identity) load from one
// `meshd run --web`, connect to it and hold a libmesh session with it, join the same
// swarm; page A opens a WebRTC data channel to page B with the SDP and ICE candidates
// carried as `signal-frame.v1` frames through meshd; one message goes each way.
// Usage: node web/test/b2b.mjs WEB_URL SWARM_NAME SCREENSHOT_PREFIX
// Prints one JSON line per step on stdout. Every wait is bounded.
import { emit, launch, until as untilIn } from './launch.mjs'

const [webUrl, swarmName, shotPrefix] = process.argv.slice(2)
const STEP_MS = 60_000
const { browser, timer } = await launch()
const until = (page, fn, arg) => untilIn(page, fn, arg, STEP_MS)

try {
  const pages = []
  for (const name of ['a', 'b']) {
    const ctx = await browser.createBrowserContext()
    const page = await ctx.newPage()
    page.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`page ${name}: ${m.text()}\n`) })
    page.on('pageerror', (e) => process.stderr.write(`page ${name} error: ${e.message}\n`))
    await page.goto(`${webUrl}/?ephemeral`, { timeout: STEP_MS })
    await page.waitForFunction(() => window.mesh != null && window.meshReady != null, { timeout: STEP_MS })
    await page.evaluate(() => window.meshReady)
    pages.push(page)
  }
  const [a, b] = pages
  const ids = []
  for (const page of pages) {
    ids.push(await page.evaluate(() => ({
      nodeId: mesh.nodeId, peerId: mesh.peerId, sessions: mesh.sessions(), meshd: mesh.info.peer_id, peers: mesh.peers(),
      status: document.getElementById('status').textContent
    })))
  }
  emit({ step: 'sessions', pages: ids, info: await a.evaluate(() => mesh.info) })

  // Both join; each waits (bounded) until it holds the other's verified presence.
  const joinStart = Date.now()
  const keys = await Promise.all(pages.map((p) => p.evaluate((n) => mesh.join(n), swarmName)))
  for (const [page, other] of [[a, ids[1].nodeId], [b, ids[0].nodeId]]) {
    await until(page, ([key, id]) => mesh.members(key).includes(id), [keys[0], other])
  }
  const joinedMs = Date.now() - joinStart
  emit({ step: 'joined', key: keys[0], keys, ms: joinedMs })

  // A opens the channel to B through meshd's signaling.
  const open = await a.evaluate(async (id) => {
    const start = performance.now()
    const r = await mesh.connectPeer(id)
    return { ...r, ms: performance.now() - start }
  }, ids[1].nodeId)
  const joinToOpenMs = Date.now() - joinStart
  const bSide = await until(b, (id) => mesh.channels().find((c) => c.peer === id && c.state === 'open'), ids[0].nodeId)
  const path = await a.evaluate((id) => mesh.channelPath(id), ids[1].nodeId)
  emit({ step: 'open', ...open, joinToOpenMs, responder: bSide, path })

  // One message each way over the data channel.
  await a.evaluate((id) => mesh.say(id, 'hello from page A'), ids[1].nodeId)
  await b.evaluate((id) => mesh.say(id, 'hello from page B'), ids[0].nodeId)
  const gotB = await until(b, (id) => mesh.channels().find((c) => c.peer === id)?.messages.find((m) => m.from === id), ids[0].nodeId)
  const gotA = await until(a, (id) => mesh.channels().find((c) => c.peer === id)?.messages.find((m) => m.from === id), ids[1].nodeId)
  emit({ step: 'messages', a: gotA, b: gotB })

  const shots = []
  for (const [i, page] of pages.entries()) {
    const path = `${shotPrefix}-${'ab'[i]}.png`
    await page.screenshot({ path, fullPage: true })
    shots.push(path)
  }
  emit({ step: 'done', screenshots: shots })
} catch (err) {
  emit({ step: 'error', message: String(err?.stack ?? err) })
  process.exitCode = 1
} finally {
  clearTimeout(timer)
  await browser.close()
}
