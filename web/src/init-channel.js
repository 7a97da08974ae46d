// The end of js-libp2p's WebRTC dial (`/p2p-circuit/webrtc`), mended. @libp2p/webrtc
// 6.0.33's initiator (private-to-private/initiate-connection.js) waits for its `init`
// data channel to fire `open`, then closes it and waits for `close`. The recipient's
// muxer closes the init channel the moment it arrives, and Chromium sometimes takes the
// remote's stream reset before the open acknowledgement: the channel goes from
// `connecting` to `closed` without `open` (or stays `connecting`), and the dial hangs
// until its 6 s address timeout: 1 dial in 8 to 16 between two pages on loopback, and
// the test of that path failed in CI. build.mjs puts this function in place of those
// two waits.

/** Resolves on the first of `names` that `target` fires; rejects when `signal` aborts. */
export function nextEvent (target, names, signal) {
  return new Promise((resolve, reject) => {
    const done = (fn, arg) => {
      for (const n of names) target.removeEventListener(n, onEvent)
      signal?.removeEventListener('abort', onAbort)
      fn(arg)
    }
    const onEvent = (evt) => done(resolve, evt)
    const onAbort = () => done(reject, signal.reason)
    if (signal?.aborted === true) return reject(signal.reason)
    for (const n of names) target.addEventListener(n, onEvent)
    signal?.addEventListener('abort', onAbort)
  })
}

/** How long each of the two waits may take before the dial goes on without it. */
export const INIT_CHANNEL_WAIT_MS = 1500

/**
 * Waits until the init channel opened or was closed by the remote, then closes it and
 * waits for `close` (so its id is not reused before both sides saw it closed), as
 * js-libp2p does, but without waiting for an `open` that a closed channel never fires,
 * and each wait bounded: the peer connection is up by now, and a channel that neither
 * opens nor closes (seen once in 8 to 16 dials) only holds its id, which the browser
 * does not hand to a new channel until it is closed. Returns the states it saw.
 */
export async function settleInitChannel (channel, { signal, log, waitMs = INIT_CHANNEL_WAIT_MS } = {}) {
  const seen = [channel.readyState]
  const bounded = async (names) => {
    const limit = new AbortController()
    const timer = setTimeout(() => limit.abort(), waitMs)
    const both = signal == null ? limit.signal : AbortSignal.any([signal, limit.signal])
    try {
      await nextEvent(channel, names, both)
    } catch (err) {
      if (signal?.aborted === true) throw err
      log?.trace?.('init channel still %s after %d ms, going on', channel.readyState, waitMs)
    } finally {
      clearTimeout(timer)
    }
    seen.push(channel.readyState)
  }
  if (channel.readyState === 'connecting') await bounded(['open', 'close'])
  if (channel.readyState !== 'closed') {
    channel.close()
    if (channel.readyState !== 'closed') await bounded(['close'])
  }
  log?.trace?.('init channel: %s', seen.join(' -> '))
  return seen
}
