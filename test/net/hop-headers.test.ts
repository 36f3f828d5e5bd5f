// Routing data travels in hop headers set by the client node: the proxy routes, reserves and bills from them and
// never parses a body; the worker refuses a body that disagrees with them. Real proxy and worker over RA-TLS and
// HTTP/2 on loopback; the "client" here is a bare attested session the test drives by hand (so it can send what
// a real client node never would), and the backend is a FAKE at the inference seam.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import http2 from 'node:http2'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { handDrivenProxy, offchainBilling, policyFor, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { SimulatedEvidenceVerifier } from '../../src/tee/simulated.ts'
import { createPeerVerifier } from '../../src/tee/verify.ts'
import { dialAttested } from '../../src/net/attested.ts'
import { HEADERS, PATHS, PROTOCOL_VERSION } from '../../src/net/protocol.ts'
import { E2EE_CONTENT_TYPE, encodeRoute, encodeWrappedKeys, sealRequest } from '../../src/net/e2ee.ts'
import { wav } from '../helpers/speech.ts'
import type { Proxy } from '../../src/proxy/proxy.ts'
import type { ProxyBilling } from '../../src/payments/billing.ts'
import { checkUsage, ed25519PublicKey } from '../../src/net/usage.ts'
import type { Worker } from '../../src/worker/worker.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

let proxy: Proxy
let worker: Worker
let backend: FakeBackend
let session: http2.ClientHttp2Session
let clientPort: number
let workerPort: number
let verifyPeer: ReturnType<typeof createPeerVerifier>

let billing: ProxyBilling

before(async () => {
  billing = offchainBilling()
  const p = await startProxy({ billing })
  proxy = p.proxy
  clientPort = p.clientPort
  workerPort = p.workerPort
  stops.push(() => p.proxy.stop())
  backend = new FakeBackend({ chunks: 3 })
  worker = await startWorker(backend, [p.workerPort])
  stops.push(() => worker.stop())
  await waitFor(() => (proxy.stats() as any).workers.connected === 1, 'the worker to connect')
  // A bare attested client session: it speaks the hop protocol directly, as a (possibly hostile) client node could.
  const identity = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  const v = (verifyPeer = createPeerVerifier(await policyFor(), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 60_000 }))
  const { socket } = await dialAttested({ host: '127.0.0.1', port: p.clientPort, identity, verify: (der, role) => v(der, role), expectedRole: 'proxy' })
  session = http2.connect('https://proxy.cocoon', { createConnection: () => socket })
  session.on('error', () => {})
  stops.push(() => void session.destroy())
})

let n = 0
/** The hop headers a well-behaved client node sends for a chat request, with `over` applied (undefined removes one). */
function hop(over: Record<string, string | undefined> = {}): http2.OutgoingHttpHeaders {
  const h: Record<string, string | undefined> = {
    ':method': 'POST',
    ':path': '/v1/chat/completions',
    'content-type': 'application/json',
    [HEADERS.protocol]: String(PROTOCOL_VERSION),
    [HEADERS.requestId]: `hop-${++n}`,
    [HEADERS.model]: 'fake-model',
    [HEADERS.stream]: '0',
    [HEADERS.timeoutMs]: '20000',
    ...over,
  }
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k]
  return h as http2.OutgoingHttpHeaders
}

type Answer = { status: number; body: string; json: any; trailers: http2.IncomingHttpHeaders; retryAfter?: string }

/** Sends one request; when the proxy's error budget for this client is spent (429), waits as told and sends it again. */
async function send(headers: http2.OutgoingHttpHeaders, body: string | Buffer): Promise<Answer> {
  for (;;) {
    const r = await sendOnce(headers, body)
    if (r.status !== 429 || r.json?.error?.code !== 'too_many_requests') return r
    await new Promise((res) => setTimeout(res, Number(r.retryAfter ?? 1) * 1000))
  }
}

function sendOnce(headers: http2.OutgoingHttpHeaders, body: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers)
    let status = 0
    let text = ''
    let trailers: http2.IncomingHttpHeaders = {}
    let retryAfter: string | undefined
    s.on('response', (h) => {
      status = Number(h[':status'])
      retryAfter = h['retry-after'] as string | undefined
    })
    s.on('trailers', (t) => (trailers = t))
    s.setEncoding('utf8')
    s.on('data', (d) => (text += d))
    s.on('end', () => {
      let json: any
      try {
        json = JSON.parse(text)
      } catch {}
      resolve({ status, body: text, json, trailers, retryAfter })
    })
    s.on('error', reject)
    s.end(body)
  })
}

const chat = (over: Record<string, unknown> = {}) => JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hello there' }], ...over })

test('a request with well-formed hop headers is routed, run and billed', async () => {
  const r = await send(hop({ [HEADERS.maxTokens]: '2' }), chat({ max_tokens: 2 }))
  assert.equal(r.status, 200, r.body)
  assert.equal(r.json.choices[0].message.content, 'tok0 tok1 ')
  assert.equal(typeof r.trailers[HEADERS.charged], 'string', 'the answer is billed')
  // The proxy passes on what the worker signed and what it cost; the client node writes them into the app's answer.
  assert.equal(typeof r.trailers[HEADERS.usage], 'string')
  assert.deepEqual(JSON.parse(r.trailers[HEADERS.cost] as string), { nano: '4000', adjusted_tokens: '4', coefficient: 1000, price_per_token_nano: '1000' })
  assert.equal(r.json.usage.cost, undefined, 'the proxy did not rewrite the answer body')
  // The ledger keeps the worker's signed usage with the receipt, and it verifies against the worker's attested key.
  const kept = billing.ledger.receipt(Number(r.trailers[HEADERS.receiptIndex]))!.signedUsage!
  assert.equal(kept.json, r.trailers[HEADERS.usage])
  assert.equal(kept.usage.completionTokens, 2)
  assert.equal(kept.signer, Buffer.from((worker as any).deps.identity.current().publicKey).toString('hex'))
  assert.ok((await checkUsage(kept.json, kept.signature, ed25519PublicKey(Buffer.from(kept.signer, 'hex')), kept.usage.requestId)).ok)
})

test('a request_id already in flight from the same client session gets 409 from the proxy itself', async () => {
  // A client node refuses an app's duplicate itself; a client node that sends one anyway meets the proxy's own check.
  const id = `dup-${++n}`
  const body = chat({ max_tokens: 2 })
  const first = session.request(hop({ [HEADERS.requestId]: id, [HEADERS.maxTokens]: '2' }))
  let firstStatus = 0
  first.on('response', (h) => (firstStatus = Number(h[':status'])))
  first.resume()
  const firstDone = new Promise((resolve) => first.on('close', resolve))
  // Its body not finished yet: the request is in flight at the proxy.
  first.write(body.slice(0, 10))
  await new Promise((resolve) => setTimeout(resolve, 100))
  const dup = await sendOnce(hop({ [HEADERS.requestId]: id, [HEADERS.maxTokens]: '2' }), body)
  assert.equal(dup.status, 409, dup.body)
  assert.equal(dup.json.error.code, 'duplicate_request_id')
  first.end(body.slice(10))
  await firstDone
  assert.equal(firstStatus, 200, 'the first is served')
})

test('the proxy never parses a body: one that is not JSON is forwarded on the header model, and the worker refuses it with 400', async () => {
  const ran = backend.seen.length
  const before = (worker.stats() as any).requests.requests
  const r = await send(hop(), 'this is not JSON {')
  assert.equal(r.status, 400, r.body)
  assert.equal(r.json.error.type, 'invalid_request_error')
  assert.match(r.json.error.message, /not valid JSON/)
  // It reached the worker (the proxy parsed nothing to refuse it on), and nothing was run.
  assert.ok((worker.stats() as any).requests.requests > before, 'the worker received the request')
  assert.equal(backend.seen.length, ran, 'the backend ran nothing')
  assert.equal(r.trailers[HEADERS.charged], undefined, 'nothing was billed')
})

test('the proxy routes on the header, not the body: a body naming an unknown model still reaches the worker, which refuses the mismatch', async () => {
  const before = (worker.stats() as any).requests.requests
  const r = await send(hop(), chat({ model: 'no-such-model' }))
  // The old proxy read the body's model and answered 404 (no worker serves it) without asking a worker.
  assert.ok((worker.stats() as any).requests.requests > before, 'the worker received the request')
  assert.equal(r.status, 404, r.body)
  const r2 = await send(hop({ [HEADERS.model]: 'no-such-model' }), chat())
  assert.equal(r2.status, 404, 'the header model is what the proxy routes on')
  assert.equal(r2.json.error.code, 'model_not_found')
})

test('the worker refuses a body whose model, stream or max_tokens disagrees with the hop headers', async () => {
  const ran = backend.seen.length
  // The model is checked as the worker's own first (404 above); a body that differs from a header naming the worker's model:
  const cases: Array<[Record<string, string | undefined>, string, string]> = [
    [{ [HEADERS.stream]: '1' }, chat({ stream: false }), 'stream'],
    [{ [HEADERS.stream]: '0' }, chat({ stream: true }), 'stream'],
    [{ [HEADERS.maxTokens]: '2' }, chat({ max_tokens: 500 }), 'max_tokens'],
    [{ [HEADERS.maxTokens]: '500' }, chat({ max_tokens: 2 }), 'max_tokens'],
    [{ [HEADERS.maxTokens]: '2' }, chat(), 'max_tokens'],
    [{}, chat({ max_completion_tokens: 7 }), 'max_tokens'],
  ]
  for (const [over, body, param] of cases) {
    const r = await send(hop(over), body)
    assert.equal(r.status, 400, `${JSON.stringify(over)} ${body}: ${r.body}`)
    assert.equal(r.json.error.param, param)
    assert.match(r.json.error.message, /disagrees/)
    assert.equal(r.trailers[HEADERS.charged], undefined, 'nothing was billed')
  }
  assert.equal(backend.seen.length, ran, 'the backend ran none of them')
  // Agreeing max_completion_tokens (it wins over max_tokens, as at the worker) is served.
  const ok = await send(hop({ [HEADERS.maxTokens]: '1' }), chat({ max_completion_tokens: 1, max_tokens: 9 }))
  assert.equal(ok.status, 200, ok.body)
})

test('the worker refuses a request from a proxy that did not send the routing headers', async () => {
  // A FAKE proxy driven by hand: the real proxy always sends them, but a worker must not run what nobody routed.
  const fake = await handDrivenProxy('ab'.repeat(32))
  stops.push(() => fake.close())
  const b = new FakeBackend()
  const w = await startWorker(b, [fake.port])
  stops.push(() => w.stop())
  await waitFor(() => fake.connected(), 'the worker to dial the fake proxy')
  const base = { ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json', [HEADERS.requestId]: 'w-1', [HEADERS.exchange]: 'x-1' }
  const cases: Array<[Record<string, string>, string]> = [
    [{}, 'model'],
    [{ [HEADERS.model]: 'fake-model' }, 'stream'],
    [{ [HEADERS.model]: 'fake-model', [HEADERS.stream]: '0' }, 'max_tokens'],
  ]
  for (const [h, param] of cases) {
    const r = await fake.request({ ...base, ...h, [HEADERS.exchange]: `x-${++n}` }, chat())
    assert.equal(r.status, 400, r.body)
    assert.equal(JSON.parse(r.body).error.param, param)
  }
  assert.equal(b.seen.length, 0, 'the backend ran nothing')
  const ok = await fake.request({ ...base, [HEADERS.model]: 'fake-model', [HEADERS.stream]: '0', [HEADERS.maxTokens]: '1024', [HEADERS.exchange]: `x-${++n}` }, chat())
  assert.equal(ok.status, 200, ok.body)
})

test('the proxy validates every hop header like outside input, before any worker sees the request', async () => {
  const before = (worker.stats() as any).requests.requests
  const huge = '9'.repeat(5000)
  const cases: Array<[Record<string, string | undefined>, string]> = [
    [{ [HEADERS.model]: undefined }, 'model'],
    [{ [HEADERS.model]: '' }, 'model'],
    [{ [HEADERS.model]: 'has space' }, 'model'],
    [{ [HEADERS.model]: 'm'.repeat(257) }, 'model'],
    [{ [HEADERS.stream]: undefined }, 'stream'],
    [{ [HEADERS.stream]: 'true' }, 'stream'],
    [{ [HEADERS.stream]: '2' }, 'stream'],
    [{ [HEADERS.maxTokens]: 'ten' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '-5' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '0' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '1.5' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '1e3' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: 'Infinity' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: 'NaN' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '0x10' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '' }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: huge }, 'max_tokens'],
    [{ [HEADERS.maxTokens]: '99999999999999999' }, 'max_tokens'],
    [{ [HEADERS.maxCoefficient]: '-1' }, 'max_coefficient'],
    [{ [HEADERS.maxCoefficient]: huge }, 'max_coefficient'],
    [{ [HEADERS.maxCoefficient]: '+1000' }, 'max_coefficient'],
    [{ [HEADERS.timeoutMs]: '0' }, 'timeout'],
    [{ [HEADERS.timeoutMs]: 'soon' }, 'timeout'],
    [{ [HEADERS.timeoutMs]: String(3601 * 1000) }, 'timeout'],
    [{ [HEADERS.prefixKey]: 'NOT-HEX' }, 'prefix_key'],
    [{ [HEADERS.cacheScope]: 'NOT-HEX' }, 'cache_scope'],
    [{ [HEADERS.cacheScope]: 'ab'.repeat(8) }, 'cache_scope'],
    [{ [HEADERS.cacheScope]: 'AB'.repeat(16) }, 'cache_scope'],
    [{ [HEADERS.cacheScope]: huge }, 'cache_scope'],
    [{ [HEADERS.requestId]: 'bad id with spaces' }, 'request_id'],
    [{ [HEADERS.requestId]: 'r'.repeat(129) }, 'request_id'],
    [{ [HEADERS.salt]: 'not-a-salt' }, 'salt'],
    [{ [HEADERS.protocol]: '1' }, 'protocol'],
  ]
  for (const [over, param] of cases) {
    const r = await send(hop(over), chat())
    assert.equal(r.status, 400, `${JSON.stringify(over).slice(0, 80)}: ${r.body}`)
    assert.equal(r.json.error.type, 'invalid_request_error')
    assert.equal(r.json.error.param, param, JSON.stringify(over).slice(0, 80))
    assert.ok(r.body.length < 1000, 'the error echoes a bounded amount')
  }
  assert.equal((worker.stats() as any).requests.requests, before, 'no malformed request reached the worker')
})

test('the reservation comes from the header max_tokens and the body length, capped at the worker cap', async () => {
  // The body asks for far more than the cap; header and body agree. The worker clamps to its cap, so does the proxy's header.
  const r = await send(hop({ [HEADERS.maxTokens]: '1000000' }), chat({ max_tokens: 1_000_000 }))
  assert.equal(r.status, 200, r.body)
})

test('a real client node sets the hop headers itself (model, stream, max_tokens) from the app body', async () => {
  const c = await startClient([clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'the client to connect')
  const res = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chat({ max_completion_tokens: 2, stream: true }) })
  assert.equal(res.status, 200)
  const text = await res.text()
  assert.match(text, /tok1/)
  assert.doesNotMatch(text, /tok2/, 'the reserved max_tokens held')
  // A model id no header can carry is refused at the client node, with OpenAI's error shape.
  const bad = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chat({ model: 'bad\nmodel' }) })
  assert.equal(bad.status, 400)
  assert.equal(((await bad.json()) as any).error.param, 'model')
})

/** A FAKE backend serving embeddings and transcriptions, counting what it ran. */
class FakeUnaryBackend extends FakeBackend {
  ran = 0
  constructor() {
    super({ modelId: 'fake-unary' })
    ;(this.model as { capabilities?: readonly string[] }).capabilities = ['embeddings', 'transcriptions']
  }
  async embed(req: { input: unknown[] }): Promise<{ vectors: number[][]; promptTokens: number }> {
    this.ran++
    return { vectors: req.input.map(() => [1, 0]), promptTokens: req.input.length }
  }
  async transcribe(): Promise<{ text: string; language: string; segments: [] }> {
    this.ran++
    return { text: 'fake transcript', language: 'en', segments: [] }
  }
}

test('a sealed embeddings or transcription body that disagrees with its route is refused by the worker, runs nothing and bills nothing', async () => {
  const fake = new FakeUnaryBackend()
  const w = await startWorker(fake, [workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (proxy.stats() as any).workers.connected === 2, 'the unary worker to connect')
  // The worker's HPKE key, from its certificate as the proxy lists it, verified here as a client node would.
  const list = await new Promise<any>((resolve, reject) => {
    const s = session.request({ ':method': 'GET', ':path': `${PATHS.workers}?model=fake-unary` })
    let text = ''
    s.setEncoding('utf8')
    s.on('data', (d) => (text += d))
    s.on('end', () => resolve({ json: JSON.parse(text) }))
    s.on('error', reject)
  })
  const peer = await verifyPeer(Buffer.from(list.json.workers[0].certificate, 'base64'), 'worker')
  const key = peer.claims.hpkeKey!
  const sealedSend = async (path: string, plain: Buffer, routeModel: string) => {
    const requestId = `sealed-${++n}`
    const route = encodeRoute({ v: 1, path, model: routeModel, stream: false, requestId, maxCoefficient: 4000 })
    const sealed = await sealRequest(plain, route, [key])
    return send(
      hop({ ':path': path, 'content-type': E2EE_CONTENT_TYPE, [HEADERS.requestId]: requestId, [HEADERS.model]: routeModel, [HEADERS.maxCoefficient]: '4000', [HEADERS.e2eeRoute]: route, [HEADERS.e2eeKeys]: encodeWrappedKeys(sealed.keys) }),
      sealed.body,
    )
  }
  const form = async (model: string) => {
    const f = new FormData()
    f.set('model', model)
    f.set('file', new Blob([new Uint8Array(wav({ rate: 8000, bits: 16, dataBytes: 16000 }))]), 'a.wav')
    return Buffer.from(await new Response(f).arrayBuffer())
  }
  const opened = () => (w.stats() as any).e2ee
  // Agreeing bodies are run (so what follows fails for the disagreement alone), answered sealed and billed.
  const ok = await sealedSend(PATHS.embeddings, Buffer.from(JSON.stringify({ model: 'fake-unary', input: 'hi' })), 'fake-unary')
  assert.equal(ok.status, 200, ok.body)
  assert.equal(typeof ok.trailers[HEADERS.charged], 'string')
  const okForm = await sealedSend(PATHS.transcriptions, await form('fake-unary'), 'fake-unary')
  assert.equal(okForm.status, 200, okForm.body)
  assert.equal(fake.ran, 2)
  assert.equal(opened().opened, 2)
  // The body names another model than the route the proxy routed and reserved by, or is not a form at all. (Three
  // cases: after three failures in a row the proxy's breaker for this worker opens and it stops forwarding.)
  for (const [path, body] of [
    [PATHS.embeddings, Buffer.from(JSON.stringify({ model: 'other-model', input: 'hi' }))],
    [PATHS.transcriptions, await form('other-model')],
    [PATHS.transcriptions, Buffer.from(JSON.stringify({ model: 'fake-unary' }))],
  ] as const) {
    const r = await sealedSend(path, body, 'fake-unary')
    assert.ok(r.status === 502 || r.status === 503, `${path}: ${r.status} ${r.body}`)
    assert.equal(r.trailers[HEADERS.charged], undefined, 'nothing was billed')
  }
  assert.equal(fake.ran, 2, 'the backend ran nothing more')
  assert.equal(opened().refused, 3, 'each was refused by the worker after it opened it')
})
