// The standard js-libp2p path between two pages, for tests/browser.rs: both load from a
// `meshd run --relay-server --admission open --web`, connect to it, and page B holds a
// circuit-relay v2 reservation on it (js-libp2p listens on `/p2p-circuit`; the relay
// admits it under an implicit grant); both join a swarm, and B's signed presence lists
// its `/p2p-circuit/webrtc` address. Page A dials that address: `/webrtc-signaling` over
// the circuit, then a direct WebRTC connection, pinged both ways.
// Usage: node web/test/relayed.mjs WEB_URL SWARM_NAME SCREENSHOT.png
// Prints one JSON line per step on stdout. Every wait is bounded.
import { emit, launch, traceLog, until as untilIn } from './launch.mjs'

const [webUrl, swarmName, shot] = process.argv.slice(2)
const STEP_MS = 60_000
const { browser, timer } = await launch()
const until = (page, fn, arg) => untilIn(page, fn, arg, STEP_MS)
// What each page's libp2p logs on the path under test; written to stderr on a failure.
const TRACE = 'libp2p:webrtc*,libp2p:webrtc*:trace,libp2p:circuit-relay*,libp2p:connection-manager*'
const dumps = []

try {
  const pages = []
  for (const name of ['a', 'b']) {
    const ctx = await browser.createBrowserContext()
    const page = await ctx.newPage()
    page.on('pageerror', (e) => process.stderr.write(`page ${name} error: ${e.message}\n`))
    dumps.push(await traceLog(page, name, TRACE, 2000))
    await page.goto(`${webUrl}/?ephemeral&via=ws`, { timeout: STEP_MS })
    await page.waitForFunction(() => window.mesh != null && window.meshReady != null, { timeout: STEP_MS })
    await page.evaluate(() => window.meshReady)
    pages.push(page)
  }
  const [a, b] = pages
  // B's reservation on meshd: a `/p2p-circuit/webrtc` address of its own.
  const circuit = await until(b, () => mesh.addrs().find((x) => x.includes('/p2p-circuit/webrtc')))
  const ids = await Promise.all(pages.map((p) => p.evaluate(() => ({ nodeId: mesh.nodeId, peerId: mesh.peerId }))))
  emit({ step: 'reserved', addr: circuit, pages: ids })

  const keys = await Promise.all(pages.map((p) => p.evaluate((n) => mesh.join(n), swarmName)))
  await until(a, ([key, id]) => mesh.members(key).includes(id), [keys[0], ids[1].nodeId])
  emit({ step: 'joined', key: keys[0] })

  const dial = await a.evaluate((id) => mesh.dialMember(id), ids[1].nodeId)
  const back = await b.evaluate(async (peer) => {
    const rtt = await mesh.node.services.ping.ping(mesh.node.getConnections().find((c) => c.remotePeer.toString() === peer && c.remoteAddr.toString().includes('/webrtc') && !c.remoteAddr.toString().includes('/p2p-circuit')).remotePeer, { signal: AbortSignal.timeout(20_000) })
    return { rtt, conns: mesh.peers().filter((p) => p.peer === peer) }
  }, ids[0].peerId)
  emit({ step: 'dialed', ...dial, back })

  await a.screenshot({ path: shot, fullPage: true })
  emit({ step: 'done', screenshot: shot })
} catch (err) {
  for (const dump of dumps) dump()
  emit({ step: 'error', message: String(err?.stack ?? err) })
  process.exitCode = 1
} finally {
  clearTimeout(timer)
  await browser.close()
}
