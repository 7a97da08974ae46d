// Bundles the browser node into dist/ (app.js, index.html): `npm run build`.
// The output is not committed; `meshd run --web ADDR` serves dist/ (--web-root).
import { build } from 'esbuild'
import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, 'dist')
await mkdir(out, { recursive: true })
const started = Date.now()
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome120',
  minify: true,
  sourcemap: false,
  logLevel: 'warning'
})
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'))
console.log(`web/dist built in ${Date.now() - started} ms`)
