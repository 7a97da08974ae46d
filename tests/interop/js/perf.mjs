// The libp2p perf protocol (`/perf/1.0.0`, libp2p/specs perf/perf.md) for the interop
// node: `@libp2p/perf` is not published for js-libp2p 3.x, so this is the protocol as
// the spec and rust-libp2p's `libp2p-perf` have it.
//
// The client opens a stream, writes the number of bytes it wants back (u64, big
// endian), then its upload, and closes its write side; the server reads the eight
// bytes and everything after them to the end, then writes the bytes asked for and
// closes. Timing matches libmesh's `perf::client`: the upload runs from the first byte
// written until the answer begins (its first bytes, or its end when nothing was asked),
// the download from the answer's first bytes to its end.

export const PERF_PROTOCOL = '/perf/1.0.0'
// Writes and reads in 64 KiB pieces, as libmesh's perf does.
const BUFFER = 64 * 1024
// A server never sends more than this in one answer (a bound, not a feature).
const MAX_ANSWER = 16 * 1024 * 1024 * 1024

const ZEROS = new Uint8Array(BUFFER)

// js-libp2p's yamux (@chainsafe/libp2p-yamux 8) sets a stream's largest data frame to
// its whole send window on every window update, ignoring its own `maxMessageSize`
// (64 KiB). rust-yamux 0.14 (rust-libp2p 0.57) grows the window of a fast stream past
// 1 MiB and closes the whole connection on a frame body over 1 MiB
// (`FrameTooLarge`), so an upload from js to rust dies after a few MiB. Until yamux is
// fixed, keep this stream's frames at 64 KiB (frames of rust-libp2p are 16 KiB).
// (libmesh itself keeps every stream window at or under 1 MiB, `src/node/muxer.rs`, so
// stock js peers are safe with it; other rust-libp2p peers may not be.)
export function capFrames (stream, max = BUFFER) {
  if (!('maxMessageSize' in stream)) return
  let value = Math.min(stream.maxMessageSize, max)
  Object.defineProperty(stream, 'maxMessageSize', {
    configurable: true,
    get: () => value,
    set: (v) => { value = Math.min(v, max) }
  })
}

function bytesOf (chunk) {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

async function write (stream, bytes, signal) {
  if (!stream.send(bytes)) await stream.onDrain({ signal })
}

async function writeZeros (stream, n, signal) {
  let left = n
  while (left > 0) {
    const k = Math.min(left, BUFFER)
    await write(stream, k === BUFFER ? ZEROS : ZEROS.subarray(0, k), signal)
    left -= k
  }
}

// Serves one inbound perf stream. Returns the bytes received and sent.
export async function servePerf (stream, signal) {
  capFrames(stream)
  const header = new Uint8Array(8)
  let have = 0
  let received = 0
  for await (const chunk of stream) {
    const bytes = bytesOf(chunk)
    let at = 0
    if (have < 8) {
      const take = Math.min(8 - have, bytes.length)
      header.set(bytes.subarray(0, take), have)
      have += take
      at = take
    }
    received += bytes.length - at
  }
  if (have < 8) {
    stream.abort(new Error('perf: the stream ended before the 8-byte size'))
    throw new Error('perf: short header')
  }
  const wanted = new DataView(header.buffer).getBigUint64(0, false)
  if (wanted > BigInt(MAX_ANSWER)) {
    stream.abort(new Error('perf: asked for more than the server sends'))
    throw new Error(`perf: asked for ${wanted} bytes`)
  }
  const sent = Number(wanted)
  await writeZeros(stream, sent, signal)
  await stream.close({ signal })
  return { received, sent }
}

// One perf run over `stream`: uploads `upload` bytes, downloads `download`.
// Returns bytes moved and milliseconds (fractional) per direction.
// `cap = false` leaves js-yamux's frame sizes as they are (what a stock js-libp2p peer
// sends).
export async function runPerf (stream, upload, download, signal, cap = true) {
  if (cap) capFrames(stream)
  const onAbort = () => stream.abort(new Error('perf timed out'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const start = performance.now()
    // Read from the start: js-libp2p 3 streams emit their data as events, and what
    // arrives before a reader is attached is not kept for it.
    let uploadMs = null
    let downloadStart = 0
    let downloaded = 0
    const reading = (async () => {
      for await (const chunk of stream) {
        if (uploadMs == null) {
          uploadMs = performance.now() - start
          downloadStart = performance.now()
        }
        downloaded += bytesOf(chunk).length
      }
    })()
    reading.catch(() => {})
    const header = new Uint8Array(8)
    new DataView(header.buffer).setBigUint64(0, BigInt(download), false)
    await write(stream, header, signal)
    await writeZeros(stream, upload, signal)
    await stream.close({ signal })
    await reading
    const end = performance.now()
    if (uploadMs == null) {
      uploadMs = end - start
      downloadStart = end
    }
    return { uploaded: upload, downloaded, uploadMs, downloadMs: end - downloadStart }
  } catch (err) {
    // A stream's 'close' event with an error, rethrown as that error.
    if (err instanceof Event) throw new Error(`stream ${err.type}: ${err.error?.message ?? JSON.stringify(Object.keys(err))} ${String(err.error ?? "")}`)
    throw err
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
