// Bundles the browser node into dist/ (app.js, index.html): `npm run build`.
// The output is not committed; `meshd run --web ADDR` serves dist/ (--web-root).
import { build } from 'esbuild'
import { copyFile, mkdir, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, 'dist')
await mkdir(out, { recursive: true })
const started = Date.now()

// @libp2p/webrtc 6.0.33 waits for an `open` event that its init channel may never fire
// (src/init-channel.js says when); this puts `settleInitChannel` in place of that wait.
// The build fails if the code to replace is not there verbatim (another version).
const INIT_WAIT = `        if (channel.readyState !== 'open') {
            log.trace('wait for init channel to open');
            await pEvent(channel, 'open', {
                signal
            });
        }
        log.trace('closing init channel');
        channel.close();
        // wait for init channel to close before proceeding, otherwise the channel
        // id can be reused before both sides have seen the channel close
        log.trace('waiting for init channel to close');
        await pEvent(channel, 'close', {
            signal
        });
`
const mendInitChannel = {
  name: 'mend-webrtc-init-channel',
  setup (b) {
    b.onLoad({ filter: /@libp2p[\\/]webrtc[\\/]dist[\\/]src[\\/]private-to-private[\\/]initiate-connection\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8')
      if (text.split(INIT_WAIT).length !== 2) {
        throw new Error(`${args.path}: the init channel wait to replace is not there (a new @libp2p/webrtc?); see web/src/init-channel.js`)
      }
      const helper = JSON.stringify(join(here, 'src', 'init-channel.js'))
      const mended = `import { settleInitChannel } from ${helper};\n` +
        text.replace(INIT_WAIT, '        await settleInitChannel(channel, { signal, log });\n')
      return { contents: mended, loader: 'js' }
    })
  }
}
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome120',
  minify: true,
  sourcemap: false,
  logLevel: 'warning',
  plugins: [mendInitChannel]
})
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'))
console.log(`web/dist built in ${Date.now() - started} ms`)
