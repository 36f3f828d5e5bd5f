// The hop layer over real attested TLS 1.3 + HTTP/2 on loopback: serve()'s routing and its one error edge, body
// limits, and call()'s status, headers, body, trailers, abort and a peer that dies mid-answer.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import http2 from 'node:http2'
import type tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { listenAttested, dialAttested, type PeerVerifier } from '../../src/net/attested.ts'
import { H2_OPTIONS } from '../../src/net/h2.ts'
import { call, json, Reply, serve, serveHttp, respondError, type Routes } from '../../src/net/hop.ts'
import { readBody } from '../../src/net/body.ts'
import {
  ConflictError,
  InvalidRequestError,
  ModelNotFoundError,
  NoWorkerAvailableError,
  PayloadTooLargeError,
  RequestTimeoutError,
  TooManyRequestsError,
  UnfundedClientError,
  UpstreamError,
  WorkerBusyError,
} from '../../src/net/errors.ts'
import { createIdentity, createPeerVerifier, devnetPolicy, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/index.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { createLogger } from '../../src/core/log.ts'

const logged: string[] = []
const log = createLogger({}, 'warn', (line) => (logged.push(line), process.env.HOP_DEBUG && console.error(line)))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** What the server saw of each stream: how it closed. */
const serverStreams = new Map<string, http2.ServerHttp2Stream>()

const routes: Routes<string, http2.ServerHttp2Stream> = {
  'GET /v1/models': (req) => json({ object: 'list', peer: req.peer }),
  'GET /cocoon/v1/workers': (req) => {
    const model = req.query.get('model')
    if (!model) throw new InvalidRequestError("'model' is required", 'model')
    return json({ model })
  },
  'POST /echo': async (req) => new Reply(201, await req.read(1024), { 'content-type': 'application/octet-stream', 'x-echo': 'yes' }, () => ({ 'x-sum': 'done' })),
  'POST /json': async (req) => json(await req.json(64)),
  'GET /v1/receipts/*': (req) => json({ path: req.path }),
  'POST /throw': (req) => {
    const which = req.query.get('e')
    const errors: Record<string, Error> = {
      invalid: new InvalidRequestError('bad field', 'field'),
      model: new ModelNotFoundError('nope'),
      large: new PayloadTooLargeError(10),
      busy: new TooManyRequestsError('slow down', 7),
      unfunded: new UnfundedClientError(),
      conflict: new ConflictError('there is no channel to close'),
      noworker: new NoWorkerAvailableError('none'),
      timeout: new RequestTimeoutError(5),
      upstream: new UpstreamError('worker broke'),
      workerbusy: new WorkerBusyError(3),
      secret: new Error('database password is hunter2'),
    }
    throw errors[which ?? ''] ?? new Error('unknown')
  },
  'POST /sse-then-fail': async (req, stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/event-stream' })
    stream.write('data: {"x":1}\n\n')
    await sleep(20)
    throw new UpstreamError('broke mid-answer')
  },
  'POST /json-then-fail': async (req, stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/json' })
    stream.write('{"partial":')
    await sleep(20)
    throw new Error('broke mid-answer')
  },
  'GET /slow': async (req, stream) => {
    serverStreams.set(String(req.headers['x-tag']), stream)
    stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true })
    stream.write('first ')
    await new Promise((r) => stream.once('close', r))
  },
  'GET /die': (req, stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' })
    stream.write('half an ans')
    // The whole connection goes away, as when the serving process dies.
    setTimeout(() => sockets.at(-1)!.destroy(), 30)
  },
  'GET /never': async (req, stream) => {
    serverStreams.set(String(req.headers['x-tag']), stream)
    await new Promise((r) => stream.once('close', r))
  },
}

const sockets: tls.TLSSocket[] = []
let server: tls.Server
let session: http2.ClientHttp2Session
let port: number
let verify: PeerVerifier
let clientIdentity: Awaited<ReturnType<typeof createIdentity>>

before(async () => {
  const provider = new SimulatedEvidenceProvider(await simulatedImageHash(''))
  const proxy = await createIdentity({ role: 'proxy', provider, configHash: '00'.repeat(32) })
  // The dialling side is attested as a worker (the devnet policy lists proxy and worker images; the roles do not matter here).
  clientIdentity = await createIdentity({ role: 'worker', provider, configHash: '00'.repeat(32), modelId: 'm', modelHash: 'ab'.repeat(32) })
  const real = createPeerVerifier(devnetPolicy([await simulatedImageHash('')]), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 0 })
  verify = (d, r) => real(d, r)
  const h2 = http2.createServer(H2_OPTIONS)
  const accounts = new WeakMap<http2.Http2Session, string>()
  h2.on('session', (s: http2.ServerHttp2Session) => accounts.set(s, 'client-a'))
  h2.on('stream', serve(routes, { log, peer: (stream) => accounts.get(stream.session!) ?? 'unknown' }))
  server = await listenAttested({
    host: '127.0.0.1',
    port: 0,
    identity: fixedIdentity(proxy),
    verify,
    expectedRole: 'worker',
    log,
    onPeer: ({ socket }) => {
      sockets.push(socket)
      h2.emit('connection', socket)
    },
  })
  port = (server.address() as AddressInfo).port
  session = await connect()
})

after(() => {
  session.destroy()
  for (const s of sockets) s.destroy()
  server.close()
})

async function connect(): Promise<http2.ClientHttp2Session> {
  const { socket } = await dialAttested({ host: '127.0.0.1', port, identity: clientIdentity, verify, expectedRole: 'proxy' })
  const s = http2.connect('https://proxy.cocoon', { ...H2_OPTIONS, createConnection: () => socket })
  s.on('error', () => {})
  return s
}

async function callJson(path: string, opts: Parameters<typeof call>[2] = {}) {
  const r = await call(session, path, opts)
  return { status: r.status, headers: r.headers, json: JSON.parse((await readBody(r.body, 1 << 20)).toString()) }
}

test('routes by method and exact path; handlers see the peer the server names', async () => {
  const r = await callJson('/v1/models')
  assert.equal(r.status, 200)
  assert.equal(r.headers['content-type'], 'application/json')
  assert.deepEqual(r.json, { object: 'list', peer: 'client-a' })
})

test('an unknown path is a 404 and a known path with the wrong method a 405 (with Allow), both OpenAI JSON', async () => {
  const a = await callJson('/v1/nothing-here', { method: 'POST', body: Buffer.from('{}') })
  assert.equal(a.status, 404)
  assert.deepEqual(Object.keys(a.json.error).sort(), ['code', 'message', 'param', 'type'])
  assert.equal(a.json.error.code, 'not_found')
  assert.equal(a.json.error.type, 'invalid_request_error')
  const b = await callJson('/v1/models', { method: 'POST', body: Buffer.from('{}') })
  assert.equal(b.status, 405)
  assert.equal(b.json.error.code, 'method_not_allowed')
  assert.equal(b.headers.allow, 'GET')
})

test('query routes: the query does not take part in matching, and handlers read it', async () => {
  const r = await callJson('/cocoon/v1/workers?model=tiny%2Fm')
  assert.equal(r.status, 200)
  assert.deepEqual(r.json, { model: 'tiny/m' })
  const missing = await callJson('/cocoon/v1/workers')
  assert.equal(missing.status, 400)
  assert.equal(missing.json.error.param, 'model')
})

test('prefix routes match the prefix and everything under it, not a longer sibling', async () => {
  assert.deepEqual((await callJson('/v1/receipts/abc?x=1')).json, { path: '/v1/receipts/abc' })
  assert.deepEqual((await callJson('/v1/receipts')).json, { path: '/v1/receipts' })
  assert.equal((await callJson('/v1/receiptsXYZ')).status, 404)
})

test('the error edge: each error class becomes its status, type and code', async () => {
  const cases: Array<[string, number, string, string]> = [
    ['invalid', 400, 'invalid_request_error', 'invalid_request'],
    ['model', 404, 'invalid_request_error', 'model_not_found'],
    ['large', 413, 'invalid_request_error', 'request_too_large'],
    ['busy', 429, 'rate_limit_error', 'too_many_requests'],
    ['unfunded', 402, 'insufficient_quota', 'insufficient_quota'],
    ['conflict', 409, 'invalid_request_error', 'conflict'],
    ['noworker', 503, 'service_unavailable', 'no_worker_available'],
    ['timeout', 504, 'timeout_error', 'timeout'],
    ['upstream', 502, 'api_error', 'upstream_error'],
    ['workerbusy', 503, 'service_unavailable', 'worker_busy'],
  ]
  for (const [e, status, type, code] of cases) {
    const r = await callJson(`/throw?e=${e}`, { body: Buffer.alloc(0) })
    assert.equal(r.status, status, e)
    assert.equal(r.json.error.type, type, e)
    assert.equal(r.json.error.code, code, e)
  }
  const busy = await callJson('/throw?e=busy', { body: Buffer.alloc(0) })
  assert.equal(busy.headers['retry-after'], '7')
  // A conflict says what the conflict is, not a generic message.
  assert.equal((await callJson('/throw?e=conflict', { body: Buffer.alloc(0) })).json.error.message, 'there is no channel to close')
  assert.equal((await callJson('/throw?e=invalid', { body: Buffer.alloc(0) })).json.error.param, 'field')
})

test('an unknown error becomes a 500 that leaks nothing, and is logged', async () => {
  logged.length = 0
  const r = await callJson('/throw?e=secret', { body: Buffer.alloc(0) })
  assert.equal(r.status, 500)
  assert.equal(r.json.error.code, 'internal_error')
  assert.doesNotMatch(JSON.stringify(r.json), /hunter2/)
  assert.ok(logged.some((l) => l.includes('request handler failed')), 'the edge logs what it hid')
  logged.length = 0
  await callJson('/throw?e=invalid', { body: Buffer.alloc(0) })
  assert.equal(logged.length, 0, 'expected errors are not logged as failures')
})

test('body limits: a body over the route limit is a 413; a bad JSON body a 400', async () => {
  const big = await callJson('/echo', { body: Buffer.alloc(4096, 1) })
  assert.equal(big.status, 413)
  assert.equal(big.json.error.code, 'request_too_large')
  assert.equal((await callJson('/json', { body: Buffer.from('{"a":') })).status, 400)
  assert.equal((await callJson('/json', { body: Buffer.from(JSON.stringify({ a: 'x'.repeat(100) })) })).status, 413)
  assert.deepEqual((await callJson('/json', { body: Buffer.from('{"a":1}') })).json, { a: 1 })
})

test('call(): status, headers, the body as a stream, and the trailers', async () => {
  const r = await call(session, '/echo', { body: Buffer.from('ping'), headers: { 'x-anything': '1' } })
  assert.equal(r.status, 201)
  assert.equal(r.headers['x-echo'], 'yes')
  assert.equal((await r.read(100)).toString(), 'ping')
  assert.equal((await r.trailers)['x-sum'], 'done')
  // An answer longer than the reader's limit is the peer's fault: an UpstreamError, not a 413 of the request.
  const long = await call(session, '/echo', { body: Buffer.alloc(900) })
  await assert.rejects(long.read(100), (e: Error) => e.name === 'UpstreamError')
  // An answer without trailers: the promise gives {} once the body ended.
  const m = await call(session, '/v1/models')
  await readBody(m.body, 1000)
  assert.deepEqual({ ...(await m.trailers) }, {})
})

test('call() sends a large body under flow control, intact', async () => {
  const h2 = http2.createServer(H2_OPTIONS)
  // A second, plain route table: an echo with a big limit.
  h2.on('stream', serve({ 'POST /big': async (req) => new Reply(200, await req.read(8 << 20), { 'content-type': 'application/octet-stream' }) }, { log }))
  const s = await new Promise<http2.ClientHttp2Session>((resolve) => {
    h2.listen(0, '127.0.0.1', () => resolve(http2.connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`, H2_OPTIONS)))
  })
  try {
    const body = Buffer.alloc(3 << 20)
    for (let i = 0; i < body.length; i++) body[i] = i % 251
    const r = await call(s, '/big', { body })
    assert.equal(r.status, 200)
    assert.ok((await readBody(r.body, 8 << 20)).equals(body))
  } finally {
    s.destroy()
    h2.close()
  }
})

test('an error after the headers of an SSE answer ends it with an error event', async () => {
  const r = await call(session, '/sse-then-fail', { body: Buffer.alloc(0) })
  assert.equal(r.status, 200)
  const text = (await readBody(r.body, 10_000)).toString()
  assert.match(text, /^data: \{"x":1\}\n\n/)
  assert.match(text, /data: \{"error":\{"message":"broke mid-answer","type":"api_error","code":"upstream_error"/)
  await r.trailers
})

test('an error after the headers of any other answer resets the stream: it never reads as complete', async () => {
  const r = await call(session, '/json-then-fail', { body: Buffer.alloc(0) })
  assert.equal(r.status, 200)
  await assert.rejects(readBody(r.body, 10_000))
  await assert.rejects(r.trailers)
  assert.equal(r.body.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR)
})

test('respondError before the headers drops the unread body and answers', async () => {
  const h2 = http2.createServer(H2_OPTIONS)
  h2.on('stream', (stream) => respondError(stream, new InvalidRequestError('no thanks')))
  const s = await new Promise<http2.ClientHttp2Session>((resolve) => h2.listen(0, '127.0.0.1', () => resolve(http2.connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`, H2_OPTIONS))))
  try {
    const r = await call(s, '/anything', { body: Buffer.alloc(2 << 20) })
    assert.equal(r.status, 400)
    assert.equal(JSON.parse((await readBody(r.body, 1000)).toString()).error.message, 'no thanks')
  } finally {
    s.destroy()
    h2.close()
  }
})

test('call(): aborting before the answer rejects and resets the stream at the server with CANCEL', async () => {
  const ac = new AbortController()
  const p = call(session, '/never', { headers: { 'x-tag': 'a1' }, signal: ac.signal })
  await waitFor(() => serverStreams.has('a1'))
  const seen = serverStreams.get('a1')!
  ac.abort(new Error('the app went away'))
  await assert.rejects(p, (e: Error) => e.name === 'AbortError')
  if (!seen.closed) await once(seen, 'close')
  assert.equal(seen.rstCode, http2.constants.NGHTTP2_CANCEL)
})

test('call(): aborting mid-body errors the body and resets the stream at the server with CANCEL', async () => {
  const ac = new AbortController()
  const r = await call(session, '/slow', { headers: { 'x-tag': 'a2' }, signal: ac.signal })
  const reading = readBody(r.body, 1000)
  await waitFor(() => serverStreams.has('a2'))
  const seen = serverStreams.get('a2')!
  ac.abort()
  await assert.rejects(reading)
  await assert.rejects(r.trailers)
  if (!seen.closed) await once(seen, 'close')
  assert.equal(seen.rstCode, http2.constants.NGHTTP2_CANCEL)
})

test('call(): an already aborted signal rejects without an answer', async () => {
  await assert.rejects(call(session, '/v1/models', { signal: AbortSignal.abort() }), (e: Error) => e.name === 'AbortError')
})

test('call(): a server that dies mid-body makes the body fail, not end', async () => {
  const s = await connect()
  try {
    const r = await call(s, '/die')
    assert.equal(r.status, 200)
    let ended = false
    r.body.once('end', () => (ended = true))
    await assert.rejects(r.read(1000), (e: Error) => e.name === 'UpstreamError' && /cut off/.test(e.message))
    await assert.rejects(r.trailers, (e: Error) => e.name === 'UpstreamError')
    assert.equal(ended, false, 'a cut answer never ends as if whole')
    // And a call on the dead session rejects before any answer.
    await assert.rejects(call(s, '/v1/models'))
  } finally {
    s.destroy()
  }
})

test('serveHttp: the same route table and error edge over HTTP/1', async () => {
  const h1 = http.createServer(
    serveHttp(
      {
        'GET /v1/models': () => json({ object: 'list' }),
        'POST /v1/chat/completions': async (req) => json(await req.json(32)),
        'GET /v1/busy': () => {
          throw new TooManyRequestsError('later', 3)
        },
      },
      { log },
    ),
  )
  await new Promise<void>((r) => h1.listen(0, '127.0.0.1', () => r()))
  const base = `http://127.0.0.1:${(h1.address() as AddressInfo).port}`
  try {
    assert.deepEqual(await (await fetch(`${base}/v1/models?x=1`)).json(), { object: 'list' })
    const wrong = await fetch(`${base}/v1/models`, { method: 'POST', body: '{}' })
    assert.equal(wrong.status, 405)
    assert.equal(((await wrong.json()) as any).error.code, 'method_not_allowed')
    const none = await fetch(`${base}/nope`)
    assert.equal(none.status, 404)
    const big = await fetch(`${base}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ x: 'y'.repeat(100) }) })
    assert.equal(big.status, 413)
    assert.equal(((await big.json()) as any).error.code, 'request_too_large')
    const busy = await fetch(`${base}/v1/busy`)
    assert.equal(busy.status, 429)
    assert.equal(busy.headers.get('retry-after'), '3')
  } finally {
    h1.close()
  }
})

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await sleep(10)
  }
}
