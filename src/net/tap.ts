// TEST HOOK, off unless COCOON_TEST_TAP_FILE is set: appends every byte a node reads from or writes to an
// HTTP/2 stream (headers, body, trailers, after TLS) to that file, so a test can prove what a hop saw.
// Used by the blind-proxy test (docs/e2ee.md); never enable it on a real node.
import fs from 'node:fs'
import type http2 from 'node:http2'

const TAP_ENV = 'COCOON_TEST_TAP_FILE'

let fd: number | undefined | null = null

function tapFd(): number | undefined {
  if (fd === null) {
    const file = process.env[TAP_ENV]
    fd = file ? fs.openSync(file, 'a') : undefined
  }
  return fd
}

/** Whether the tap is on (COCOON_TEST_TAP_FILE is set). */
export function tapEnabled(): boolean {
  return tapFd() !== undefined
}

function record(data: unknown): void {
  const f = tapFd()
  if (f === undefined || data === undefined || data === null) return
  const b = typeof data === 'string' ? Buffer.from(data) : Buffer.isBuffer(data) || data instanceof Uint8Array ? Buffer.from(data as Uint8Array) : Buffer.from(JSON.stringify(data))
  fs.writeSync(f, b)
}

/** Records everything read from and written to `stream`, including its headers and trailers. No-op when the tap is off. */
export function tapStream(stream: http2.Http2Stream, headers?: unknown): void {
  if (!tapEnabled()) return
  record(headers)
  const s = stream as unknown as Record<string, (...args: unknown[]) => unknown>
  for (const m of ['push', 'write', 'end'] as const) {
    const orig = s[m].bind(stream)
    s[m] = (chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk !== 'function') record(chunk)
      return orig(chunk, ...rest)
    }
  }
  for (const m of ['respond', 'sendTrailers'] as const) {
    const orig = s[m]?.bind(stream)
    if (orig) s[m] = (h: unknown, ...rest: unknown[]) => (record(h), orig(h, ...rest))
  }
  stream.on('response', (h) => record(h))
  stream.on('trailers', (h) => record(h))
}
