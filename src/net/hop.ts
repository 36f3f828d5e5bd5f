// The hop layer: one router with one error edge for every node's server side (HTTP/2 hops, and the client
// node's HTTP/1 API), and one request helper, call(), for client -> proxy and proxy -> worker.
//
// Handlers take a typed request and return a Reply (or answer on the stream themselves, e.g. SSE) or throw.
// Whatever they throw becomes an OpenAI error at exactly one place, errorResponse(), through the writers
// below; the rest of the code never builds an error answer by hand.
import http2 from 'node:http2'
import type http from 'node:http'
import { Readable } from 'node:stream'
import type { Logger } from '../core/log.ts'
import { readBody, parseJsonObject } from './body.ts'
import { errorResponse, isExpectedError, MethodNotAllowedError, RouteNotFoundError, UpstreamError } from './errors.ts'
import { sendBody } from './h2.ts'
import { tapEnabled, tapStream } from './tap.ts'

const { NGHTTP2_NO_ERROR } = http2.constants

// ---------------------------------------------------------------------------------------------------------
// Replies and the writers: the only code that answers a request.

/** A whole answer a handler returns: status, body and headers, and optionally trailers (read when they are sent). */
export class Reply {
  constructor(
    readonly status: number,
    readonly body: string | Buffer,
    readonly headers: http2.OutgoingHttpHeaders,
    readonly trailers?: http2.OutgoingHttpHeaders | (() => http2.OutgoingHttpHeaders),
  ) {}
}

const JSON_HEADERS: http2.OutgoingHttpHeaders = Object.freeze({ 'content-type': 'application/json' }) as http2.OutgoingHttpHeaders

/** A JSON answer (200 unless told). */
export function json(body: unknown, status = 200, headers?: http2.OutgoingHttpHeaders): Reply {
  return new Reply(status, JSON.stringify(body), headers ? { 'content-type': 'application/json', ...headers } : JSON_HEADERS)
}

/** The OpenAI error answer for `err` (with Retry-After when the error knows when to retry). */
export function errorReply(err: unknown): Reply {
  const r = errorResponse(err)
  const e = err as { retryAfterSec?: number; allow?: readonly string[] }
  const headers: http2.OutgoingHttpHeaders = { 'content-type': 'application/json' }
  if (e?.retryAfterSec) headers['retry-after'] = String(e.retryAfterSec)
  if (r.status === 405 && e?.allow) headers.allow = e.allow.join(', ')
  return new Reply(r.status, JSON.stringify(r.body), headers)
}

/** Sends `reply` on an HTTP/2 stream; does nothing once the stream is gone or has answered. */
export function respond(stream: http2.ServerHttp2Stream, reply: Reply): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return
  // A body nobody reads would hold the stream open (and the sender blocked on flow control): drop it.
  if (!stream.readableEnded && stream.readableFlowing === null) stream.resume()
  const t = reply.trailers
  stream.respond(reply.status === 200 && reply.headers === JSON_HEADERS ? { ':status': 200, 'content-type': 'application/json' } : { ':status': reply.status, ...reply.headers }, t ? { waitForTrailers: true } : undefined)
  if (t) stream.once('wantTrailers', () => stream.sendTrailers(typeof t === 'function' ? t() : t))
  sendBody(stream, typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body)
}

/**
 * The error edge of an HTTP/2 stream. Before the headers: the OpenAI error JSON with its status (and the rest
 * of an unread request body dropped). After them: an SSE answer gets a final `data: {"error":…}` event and
 * ends (when `sse`); anything else is reset (RST_STREAM INTERNAL_ERROR), so it never looks complete.
 */
export function respondError(stream: http2.ServerHttp2Stream, err: unknown, sse = true): void {
  if (stream.destroyed || stream.closed) return
  if (!stream.headersSent) {
    if (!stream.readableEnded) stream.resume()
    return respond(stream, errorReply(err))
  }
  if (sse && !stream.writableEnded && isEventStream(stream.sentHeaders['content-type'])) {
    // An answer that asked for trailers must still send some, or the stream never ends.
    if (stream.listenerCount('wantTrailers') === 0) stream.once('wantTrailers', () => stream.sendTrailers({}))
    stream.end(sseError(err))
    return
  }
  // destroy(err), not close(code): close() first ends the writable side, and the peer would read a clean end.
  stream.destroy(err instanceof Error ? err : new Error(String(err)))
}

/** Sends `reply` on an HTTP/1 response. */
export function sendReply(res: http.ServerResponse, reply: Reply): void {
  if (res.headersSent || res.destroyed) return
  const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body
  res.writeHead(reply.status, { ...(reply.headers as http.OutgoingHttpHeaders), 'content-length': body.length })
  res.end(body)
}

/** A JSON answer on an HTTP/1 response. */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers?: http.OutgoingHttpHeaders): void {
  sendReply(res, json(body, status, headers as http2.OutgoingHttpHeaders))
}

/** The error edge of an HTTP/1 response: as respondError (an SSE answer ends with an error event, anything else is cut). */
export function sendError(res: http.ServerResponse, err: unknown, sse = true): void {
  if (res.destroyed || res.writableEnded) return
  if (!res.headersSent) return sendReply(res, errorReply(err))
  if (sse && isEventStream(res.getHeader('content-type'))) return void res.end(sseError(err))
  res.destroy()
}

function isEventStream(ct: unknown): boolean {
  return typeof ct === 'string' && ct.startsWith('text/event-stream')
}

function sseError(err: unknown): string {
  return `data: ${JSON.stringify(errorResponse(err).body)}\n\n`
}

// ---------------------------------------------------------------------------------------------------------
// The router.

/** A request as a handler sees it. `P` is what the server knows of the sender (e.g. its account). */
export class HopRequest<P = undefined> {
  private q: URLSearchParams | undefined
  constructor(
    readonly method: string,
    /** The path without its query. */
    readonly path: string,
    /** The query string without its `?`, '' when none. */
    readonly search: string,
    readonly headers: http2.IncomingHttpHeaders,
    /** The request body as it arrives (the HTTP/2 stream, or the HTTP/1 request). */
    readonly body: Readable,
    /** The sender, as the server's `peer()` names it. */
    readonly peer: P,
  ) {}

  get query(): URLSearchParams {
    return (this.q ??= new URLSearchParams(this.search))
  }

  /** The whole body; PayloadTooLargeError (413) past `limitBytes`. */
  read(limitBytes: number): Promise<Buffer> {
    const len = this.headers['content-length']
    return readBody(this.body, limitBytes, len === undefined ? undefined : Number(len))
  }

  /** The body as a JSON object; 413 past `limitBytes`, 400 when it is not one. */
  async json(limitBytes: number): Promise<Record<string, unknown>> {
    return parseJsonObject(await this.read(limitBytes))
  }
}

/** What a handler gives back: a Reply, or nothing when it answered on the stream itself. */
export type HopResult = Reply | void
/** A handler: `out` is the HTTP/2 stream (or HTTP/1 response) for answers it writes itself, such as SSE. */
export type Handler<P, O> = (req: HopRequest<P>, out: O) => HopResult | Promise<HopResult>
/**
 * Routes keyed `METHOD /path`: exact paths, or a prefix ending in `*` (`GET /v1/receipts/*` matches
 * `/v1/receipts` and everything under it). The query never takes part in matching; handlers read `req.query`.
 */
export type Routes<P, O> = Record<string, Handler<P, O>>

/** A compiled route table. Unknown paths throw RouteNotFoundError (404); a known path with another method, MethodNotAllowedError (405). */
export class Router<H> {
  private readonly exact = new Map<string, Map<string, H>>()
  private readonly prefixes: Array<{ prefix: string; methods: Map<string, H> }> = []

  constructor(routes: Record<string, H>) {
    for (const [key, h] of Object.entries(routes)) {
      const m = /^([A-Z]+) (\/\S*)$/.exec(key)
      if (!m) throw new Error(`bad route key '${key}': expected 'METHOD /path'`)
      const [, method, path] = m
      let methods: Map<string, H> | undefined
      if (path.endsWith('*')) {
        const prefix = path.slice(0, -1).replace(/\/$/, '')
        methods = this.prefixes.find((p) => p.prefix === prefix)?.methods
        if (!methods) this.prefixes.push({ prefix, methods: (methods = new Map()) })
      } else {
        methods = this.exact.get(path)
        if (!methods) this.exact.set(path, (methods = new Map()))
      }
      if (methods.has(method)) throw new Error(`route '${key}' is defined twice`)
      methods.set(method, h)
    }
    // Longest prefix first.
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length)
  }

  find(method: string, path: string): H {
    let methods = this.exact.get(path)
    if (!methods) {
      for (const p of this.prefixes) {
        if (path === p.prefix || (path.startsWith(p.prefix) && path.charCodeAt(p.prefix.length) === 47 /* / */)) {
          methods = p.methods
          break
        }
      }
    }
    if (!methods) throw new RouteNotFoundError(method, path)
    const h = methods.get(method)
    if (h === undefined) throw new MethodNotAllowedError(method, path, [...methods.keys()])
    return h
  }
}

export interface ServeOptions<P, O> {
  /** Where handlers' unexpected errors are logged (expected ones, 4xx and the like, are not). */
  log: Logger
  /** What the server knows of the sender of this request (e.g. its account); given to handlers as `req.peer`. */
  peer?: (out: O) => P
  /** Runs before routing, for every request (rate limits, test taps); throws to refuse. */
  before?: (req: HopRequest<P>, out: O) => void
  /** An SSE answer that fails after its headers ends with an error event (true), or is reset like any other (false). Default true. */
  sseErrors?: boolean
}

/** The HTTP/2 router: the listener for a server's (or a served session's) 'stream' events. */
export function serve<P = undefined>(routes: Routes<P, http2.ServerHttp2Stream>, opts: ServeOptions<P, http2.ServerHttp2Stream>): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void {
  const router = new Router(routes)
  const sse = opts.sseErrors ?? true
  const edge = (stream: http2.ServerHttp2Stream, err: unknown) => {
    if (!isExpectedError(err)) opts.log.error('request handler failed', { error: err })
    respondError(stream, err, sse)
  }
  return (stream, headers) => {
    // A peer that resets its stream must not take the process with it.
    stream.on('error', noop)
    const raw = String(headers[':path'] ?? '')
    const q = raw.indexOf('?')
    const req = new HopRequest<P>(String(headers[':method']), q < 0 ? raw : raw.slice(0, q), q < 0 ? '' : raw.slice(q + 1), headers, stream, opts.peer ? opts.peer(stream) : (undefined as P))
    dispatch(router, req, stream, opts.before, respond, edge)
  }
}

/** The HTTP/1 router (the client node's OpenAI API): the same route tables and the same error edge over node:http. */
export function serveHttp<P = undefined>(routes: Routes<P, http.ServerResponse>, opts: ServeOptions<P, http.ServerResponse>): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const router = new Router(routes)
  const sse = opts.sseErrors ?? true
  const edge = (res: http.ServerResponse, err: unknown) => {
    if (!isExpectedError(err)) opts.log.error('request failed', { error: err })
    // An unread body is read and dropped, so the answer is not cut off; past a body limit, the connection is not kept.
    if (!res.headersSent && !res.req.complete) {
      if ((err as Error)?.name === 'PayloadTooLargeError') res.setHeader('connection', 'close')
      res.req.resume()
    }
    sendError(res, err, sse)
  }
  return (r, res) => {
    const raw = r.url ?? '/'
    const q = raw.indexOf('?')
    const req = new HopRequest<P>(r.method ?? 'GET', q < 0 ? raw : raw.slice(0, q), q < 0 ? '' : raw.slice(q + 1), r.headers as http2.IncomingHttpHeaders, r, opts.peer ? opts.peer(res) : (undefined as P))
    dispatch(router, req, res, opts.before, sendReply, edge)
  }
}

function dispatch<P, O>(router: Router<Handler<P, O>>, req: HopRequest<P>, out: O, before: ((req: HopRequest<P>, out: O) => void) | undefined, write: (out: O, r: Reply) => void, edge: (out: O, err: unknown) => void): void {
  let result: HopResult | Promise<HopResult>
  try {
    before?.(req, out)
    result = router.find(req.method, req.path)(req, out)
  } catch (err) {
    return edge(out, err)
  }
  if (result instanceof Reply) write(out, result)
  else if (result instanceof Promise)
    result.then(
      (r) => r instanceof Reply && write(out, r),
      (err) => edge(out, err),
    )
}

function noop(): void {}

// ---------------------------------------------------------------------------------------------------------
// call(): one request to the peer of a session.

export interface CallOptions {
  /** Default: POST with a body, GET without. */
  method?: 'GET' | 'POST'
  headers?: http2.OutgoingHttpHeaders
  /** Sent under flow control, a slice at a time (sendBody); absent: no body. */
  body?: Buffer
  /** Aborting resets the stream (RST_STREAM CANCEL): before the answer, call() rejects; after, the body stream errors. */
  signal?: AbortSignal
}

export interface CallResponse {
  status: number
  headers: http2.IncomingHttpHeaders
  /**
   * The answer's body: the HTTP/2 stream itself. It ends ('end') only when the peer ended it; a stream
   * reset, a peer that went away or an abort make it error or close without 'end' (readBody, pipeline and
   * async iteration all reject then).
   */
  body: http2.ClientHttp2Stream
  /** The trailers ({} when none); rejects with UpstreamError when the answer did not end cleanly. */
  trailers: Promise<http2.IncomingHttpHeaders>
  /** The whole body; rejects with UpstreamError when it is cut off or longer than `limitBytes` (the peer's fault, never the request's). */
  read(limitBytes: number): Promise<Buffer>
}

/**
 * Sends one request to the peer of `session` and resolves at its response headers. Rejects on anything
 * before them: the session is gone, the peer reset the stream, or `signal` aborted (with the abort's error).
 */
export function call(session: http2.ClientHttp2Session, path: string, opts: CallOptions = {}): Promise<CallResponse> {
  return new Promise((resolve, reject) => {
    const body = opts.body
    const headers: http2.OutgoingHttpHeaders = { ...opts.headers, ':method': opts.method ?? (body === undefined ? 'GET' : 'POST'), ':path': path }
    let stream: http2.ClientHttp2Stream
    try {
      // The signal is node's own: on abort it resets the stream with CANCEL and errors it with an AbortError.
      stream = session.request(headers, { endStream: body === undefined, signal: opts.signal })
    } catch (err) {
      return reject(err)
    }
    if (tapEnabled()) tapStream(stream, headers)
    stream.push = pushUnlessCut
    // The listeners are shared functions that find the call's state on the stream: no closures per call.
    ;(stream as CallStream)[PENDING] = new PendingCall(stream, resolve, reject)
    stream.on('error', onCallError)
    stream.once('response', onCallResponse)
    stream.once('trailers', onCallTrailers)
    stream.once('end', onCallEnd)
    stream.once('close', onCallClose)
    if (body !== undefined) sendBody(stream, body)
  })
}

const PENDING = Symbol('cocoon.call')
type CallStream = http2.ClientHttp2Stream & { [PENDING]: PendingCall }
const NO_TRAILERS: http2.IncomingHttpHeaders = Object.freeze({}) as http2.IncomingHttpHeaders

function onCallError(this: CallStream, err: Error): void {
  this[PENDING].fail(err)
}
function onCallResponse(this: CallStream, h: http2.IncomingHttpHeaders): void {
  this[PENDING].respond(h)
}
function onCallTrailers(this: CallStream, t: http2.IncomingHttpHeaders): void {
  this[PENDING].end(t)
}
function onCallEnd(this: CallStream): void {
  this[PENDING].end(NO_TRAILERS)
}
function onCallClose(this: CallStream): void {
  this[PENDING].closed()
}

/** One call: until its response, what call() resolves; then the CallResponse itself (its trailers promise is made only when asked for). */
class PendingCall implements CallResponse {
  status = 0
  headers: http2.IncomingHttpHeaders = NO_TRAILERS
  /** 0 waiting for the trailers, 1 ended (value holds the trailers), 2 failed (value holds the error). */
  private state = 0
  private value: http2.IncomingHttpHeaders | Error | undefined
  private promise?: Promise<http2.IncomingHttpHeaders>
  private settle?: { resolve: (t: http2.IncomingHttpHeaders) => void; reject: (err: Error) => void }
  private responded = false

  constructor(
    readonly body: http2.ClientHttp2Stream,
    private resolveCall: ((r: CallResponse) => void) | undefined,
    private rejectCall: ((err: unknown) => void) | undefined,
  ) {}

  get trailers(): Promise<http2.IncomingHttpHeaders> {
    if (!this.promise) {
      if (this.state === 1) this.promise = Promise.resolve(this.value as http2.IncomingHttpHeaders)
      else if (this.state === 2) this.promise = Promise.reject(this.value as Error)
      else this.promise = new Promise((resolve, reject) => (this.settle = { resolve, reject }))
      // Callers that only read the body need not await the trailers.
      this.promise.catch(noop)
    }
    return this.promise
  }

  read(limitBytes: number): Promise<Buffer> {
    return readBody(this.body, limitBytes).catch((err: Error) => {
      throw new UpstreamError(err.name === 'PayloadTooLargeError' ? `the peer's answer exceeds ${limitBytes} bytes` : `the peer's answer was cut off`)
    })
  }

  respond(headers: http2.IncomingHttpHeaders): void {
    this.responded = true
    this.status = Number(headers[':status'])
    this.headers = headers
    const resolve = this.resolveCall!
    this.resolveCall = this.rejectCall = undefined
    resolve(this)
  }

  end(trailers: http2.IncomingHttpHeaders): void {
    if (this.state !== 0 || !this.responded) return
    this.state = 1
    this.value = trailers
    this.settle?.resolve(trailers)
  }

  fail(err: Error): void {
    if (!this.responded) return this.rejectCall?.(err)
    if (this.state !== 0) return
    this.state = 2
    this.value = err
    this.settle?.reject(err)
  }

  closed(): void {
    if (this.state !== 0) return
    this.fail(new UpstreamError(`the peer's answer was cut off (stream closed, code ${this.body.rstCode ?? 'none'})`))
  }
}

/**
 * Stands in for a call stream's push(): node ends the readable side of a stream that closes without END_STREAM
 * (the peer's session went away, or a RST_STREAM CANCEL) just as of one that finished, so a reader could take
 * a cut answer for a whole one. Such a stream closes without 'end' instead.
 */
function pushUnlessCut(this: http2.ClientHttp2Stream, chunk: unknown, encoding?: BufferEncoding): boolean {
  if (chunk === null && this.destroyed && !this.errored && this.rstCode !== undefined && this.rstCode !== NGHTTP2_NO_ERROR) return false
  return Readable.prototype.push.call(this, chunk, encoding)
}
