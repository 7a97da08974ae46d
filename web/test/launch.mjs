// What the browser drivers of tests/browser.rs share: headless Chromium (Debian's, or
// MESH_CHROMIUM) through puppeteer-core with loopback WebRTC allowed, one JSON line per
// step on stdout, a bound on the whole run, and a bounded poll inside a page.
import puppeteer from 'puppeteer-core'

export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

/** Starts Chromium; the process exits with 3 (after a `timeout` line) past `totalMs`. */
export async function launch ({ protocolTimeout = 90_000, totalMs = 240_000 } = {}) {
  const browser = await puppeteer.launch({
    executablePath: process.env.MESH_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    protocolTimeout,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      // Loopback ICE candidates instead of mDNS names.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      // Gather loopback candidates: meshd listens on 127.0.0.1 in the tests.
      '--allow-loopback-in-peer-connection'
    ]
  })
  const timer = setTimeout(() => { emit({ step: 'timeout' }); process.exit(3) }, totalMs)
  return { browser, timer }
}

/** Polls `fn(arg)` in the page every 100 ms until it returns something truthy. */
export async function until (page, fn, arg, timeout = 60_000) {
  return await page.waitForFunction(fn, { timeout, polling: 100 }, arg).then((h) => h.jsonValue())
}

/**
 * Keeps the page's last `keep` console lines, with js-libp2p's debug log on for
 * `namespaces` (its `debug` key in localStorage, set before the page's scripts run),
 * and returns a function that writes them to stderr: a failed run shows what the
 * page's libp2p did up to the failure. Call before `page.goto`.
 */
export async function traceLog (page, name, namespaces, keep = 400) {
  const lines = []
  await page.evaluateOnNewDocument((ns) => { localStorage.setItem('debug', ns) }, namespaces)
  page.on('console', (m) => {
    lines.push(`${new Date().toISOString()} page ${name} ${m.type()}: ${m.text().replaceAll('%c', '')}`)
    if (lines.length > keep) lines.shift()
  })
  return () => { for (const l of lines) process.stderr.write(l + '\n') }
}
