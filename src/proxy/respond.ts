// The proxy's HTTP/2 answer writers: a JSON body, a raw body (with trailers read when they are sent), an OpenAI error.
import type http2 from 'node:http2'
import { errorResponse } from '../net/errors.ts'

export function respond(stream: http2.ServerHttp2Stream, status: number, body: unknown, extra: http2.OutgoingHttpHeaders = {}): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return
  stream.respond({ ':status': status, 'content-type': 'application/json', ...extra })
  stream.end(JSON.stringify(body))
}

export function respondRaw(stream: http2.ServerHttp2Stream, status: number, ct: string, body: Buffer, trailers?: () => http2.OutgoingHttpHeaders): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return
  stream.respond({ ':status': status, 'content-type': ct }, trailers ? { waitForTrailers: true } : undefined)
  if (trailers) stream.once('wantTrailers', () => stream.sendTrailers(trailers()))
  stream.end(body)
}

export function respondError(stream: http2.ServerHttp2Stream, err: unknown): void {
  const r = errorResponse(err)
  const retryAfter = (err as { retryAfterSec?: number }).retryAfterSec
  respond(stream, r.status, r.body, retryAfter ? { 'retry-after': String(retryAfter) } : {})
}
