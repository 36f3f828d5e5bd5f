// HTTP/2 session settings shared by every hop, sized to the body limit, and a body writer that respects flow control.
import type http2 from 'node:http2'
import type { Writable } from 'node:stream'
import { MAX_BODY_BYTES } from './protocol.ts'

/** How much of a body is handed to HTTP/2 at a time; the next slice waits until this one is taken. */
export const BODY_SLICE_BYTES = 64 * 1024
/** Per-stream flow-control window we advertise: a large body flows without a round trip per 64 KiB. */
export const STREAM_WINDOW_BYTES = 1024 * 1024
/** Session-wide receive window: a few large bodies at full speed, the rest of the session unaffected. */
export const SESSION_WINDOW_BYTES = 4 * MAX_BODY_BYTES
/**
 * nghttp2's memory cap per session, in MB. It covers headers and data queued on both sides; above it
 * the session is torn down with ENHANCE_YOUR_CALM, taking every request on it along. Bodies are written
 * in slices under flow control, so the real use stays small; the cap is sized well above what several
 * concurrent bodies at the limit could ever hold.
 */
export const SESSION_MEMORY_MB = Math.ceil((8 * MAX_BODY_BYTES) / (1024 * 1024))

/** Options for http2.connect and http2.createServer on every hop. */
export const H2_OPTIONS = {
  maxSessionMemory: SESSION_MEMORY_MB,
  settings: { initialWindowSize: STREAM_WINDOW_BYTES, maxConcurrentStreams: 1000 },
} satisfies http2.SessionOptions

/** Opens the session-wide receive window once the session is up (the SETTINGS frame cannot carry it). */
export function tuneSession(session: http2.Http2Session): void {
  const apply = () => {
    try {
      session.setLocalWindowSize(SESSION_WINDOW_BYTES)
    } catch {
      // The session closed first.
    }
  }
  if (session.connecting) session.once('connect', apply)
  else apply()
}

/**
 * Writes `body` and ends the stream, one slice at a time: the next slice is written only when the stream
 * has taken the last, so a large body never sits whole in the session's send queue.
 */
export function sendBody(stream: Writable, body: Buffer): void {
  if (body.length <= BODY_SLICE_BYTES) {
    stream.end(body)
    return
  }
  let offset = 0
  const next = () => {
    while (offset < body.length) {
      if (stream.destroyed || stream.writableEnded) return
      const slice = body.subarray(offset, Math.min(offset + BODY_SLICE_BYTES, body.length))
      offset += slice.length
      if (!stream.write(slice)) return void stream.once('drain', next)
    }
    stream.end()
  }
  next()
}
