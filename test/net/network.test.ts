// Protocol behaviour of client -> proxy -> worker over real RA-TLS and HTTP/2 on loopback, with a FAKE backend at the seam.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { policyFor, readSse, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'

const stops: Array<() => Promise<void>> = []
after(async () => {
  for (const s of stops.reverse()) await s().catch(() => {})
})

async function network(backends: FakeBackend[], opts: { clientOptions?: object } = {}) {
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  const workers = []
  for (const b of backends) {
    const w = await startWorker(b, [p.workerPort])
    stops.push(() => w.stop())
    workers.push(w)
  }
  await waitFor(() => (p.proxy.stats() as any).workers.connected === backends.length, 'workers to connect')
  const c = await startClient([p.clientPort], { options: opts.clientOptions })
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client to connect')
  return { proxy: p.proxy, workers, client: c.client, url: c.url, proxyPorts: p }
}

const post = (url: string, path: string, body: unknown, signal?: AbortSignal) =>
  fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), signal })

test('a non-streamed chat answer comes back with exact usage, and the proxy meters the signed usage', async () => {
  const b = new FakeBackend({ chunks: 3 })
  const net = await network([b])
  const res = await post(net.url, '/v1/chat/completions', { model: 'fake-model', messages: [{ role: 'user', content: 'hello there friend' }] })
  assert.equal(res.status, 200)
  const j = (await res.json()) as any
  assert.equal(j.object, 'chat.completion')
  assert.equal(j.choices[0].message.content, 'tok0 tok1 tok2 ')
  assert.equal(j.choices[0].message.role, 'assistant')
  // Off-chain prices: 1000 nanoTON per adjusted token, multipliers 1.0x for prompt and completion.
  assert.deepEqual(j.usage, {
    prompt_tokens: 3,
    completion_tokens: 3,
    total_tokens: 6,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
    cost: 6000,
    cost_details: { currency: 'nanoTON', adjusted_tokens: 6, coefficient: 1000, price_per_token_nano: 1000 },
    receipt_id: res.headers.get('x-cocoon-receipt-id'),
  })
  assert.match(j.usage.receipt_id, /^[0-9a-f]{32}$/, 'the answer names its receipt')
  const ps = net.proxy.stats() as any
  assert.deepEqual(ps.tokens, { prompt: 3, cached: 0, completion: 3, reasoning: 0 })
  assert.equal(ps.workers.list[0].served, 1)
})

test('a streamed completion arrives as SSE chunks, then a usage chunk, then [DONE]', async () => {
  const b = new FakeBackend({ chunks: 4 })
  const net = await network([b])
  const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'once upon', stream: true })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
  const events = await readSse(res)
  assert.equal(events.at(-1), '[DONE]')
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e))
  assert.equal(chunks.length, 5)
  assert.equal(chunks.slice(0, 4).map((c) => c.choices[0].text).join(''), 'tok0 tok1 tok2 tok3 ')
  assert.deepEqual(chunks[4].choices, [])
  assert.equal(chunks[4].id, chunks[0].id)
  assert.equal(chunks[4].usage.completion_tokens, 4)
  assert.equal(chunks[4].usage.prompt_tokens, 2)
  assert.equal(chunks[4].usage.cost, 6000, 'the streamed answer is billed, and the cost is in its usage chunk')
  await waitFor(() => (net.proxy.stats() as any).tokens.completion === 4, 'proxy to meter the stream')
})

test('the client strips its control fields and forwards the request id', async () => {
  const b = new FakeBackend()
  const net = await network([b])
  const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x', max_coefficient: 2000, timeout: 30, request_id: 'req-123', max_tokens: 2 })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('x-request-id'), 'req-123')
  const seen = b.seen.at(-1)!
  assert.equal(seen.requestId, 'req-123')
  for (const f of ['max_coefficient', 'timeout', 'request_id']) assert.equal(f in seen.body, false, `${f} reached the backend`)
  assert.equal(seen.maxTokens, 2)
  const j = (await res.json()) as any
  assert.equal(j.usage.completion_tokens, 2, 'max_tokens is enforced')
})

test('bad requests get OpenAI errors with the right status', async () => {
  const net = await network([new FakeBackend()])
  const cases: Array<[string, unknown, number, string | null, string | null]> = [
    ['/v1/chat/completions', '{"model": "fake-model", "messages": [', 400, 'invalid_request', null],
    ['/v1/chat/completions', '[1,2]', 400, 'invalid_request', null],
    ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }, 400, 'invalid_request', 'model'],
    ['/v1/chat/completions', { model: 'fake-model' }, 400, 'invalid_request', 'messages'],
    ['/v1/chat/completions', { model: 'fake-model', messages: [{ role: 'user', content: 'x' }], temperature: 9 }, 400, 'invalid_request', 'temperature'],
    ['/v1/completions', { model: 'fake-model', prompt: 'x', max_tokens: -1 }, 400, 'invalid_request', 'max_tokens'],
    ['/v1/completions', { model: 'fake-model', prompt: 'x', timeout: 'soon' }, 400, 'invalid_request', 'timeout'],
    ['/v1/completions', { model: 'no-such-model', prompt: 'x' }, 404, 'model_not_found', 'model'],
    ['/v1/completions', { model: 'fake-model', prompt: 'x', max_coefficient: 500 }, 503, 'no_worker_available', null],
  ]
  for (const [path, body, status, code, param] of cases) {
    const res = await post(net.url, path, body)
    const j = (await res.json()) as any
    assert.equal(res.status, status, `${JSON.stringify(body)} -> ${res.status} ${JSON.stringify(j)}`)
    assert.equal(j.error.code, code, JSON.stringify(j))
    assert.equal(typeof j.error.message, 'string')
    assert.equal(typeof j.error.type, 'string')
    if (param) assert.equal(j.error.param, param, JSON.stringify(j))
  }
  const big = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x'.repeat(9 * 1024 * 1024) })
  assert.equal(big.status, 413)
  assert.equal(((await big.json()) as any).error.code, 'request_too_large')
  const unknown = await fetch(net.url + '/v1/rerank', { method: 'POST', body: '{}' })
  assert.equal(unknown.status, 404)
  // A model that does not serve an endpoint is a 400 that says so.
  const notServed = await post(net.url, '/v1/embeddings', { model: 'fake-model', input: 'x' })
  assert.equal(notServed.status, 400)
  assert.match(((await notServed.json()) as any).error.message, /not served at \/v1\/embeddings/)
})

test('/v1/models lists the models the connected workers serve', async () => {
  const net = await network([new FakeBackend(), new FakeBackend({ modelId: 'other-model' })])
  const res = await fetch(net.url + '/v1/models')
  const j = (await res.json()) as any
  assert.equal(j.object, 'list')
  assert.deepEqual(j.data.map((m: any) => m.id), ['fake-model', 'other-model'])
  assert.equal(j.data[0].object, 'model')
  assert.equal(j.data[0].workers.length, 1)
})

test('a timeout gives 504', async () => {
  const net = await network([new FakeBackend({ firstDelayMs: 5_000 })])
  const t0 = Date.now()
  const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x', timeout: 0.5 })
  assert.equal(res.status, 504)
  assert.equal(((await res.json()) as any).error.code, 'timeout')
  assert.ok(Date.now() - t0 < 3_000)
})

test('retries on another worker when the first fails before the first byte', async () => {
  const bad = new FakeBackend({ failBeforeFirst: 500 })
  const good = new FakeBackend()
  // The failing worker connects first, so it wins the tie for the first request.
  const net = await network([bad])
  const w = await startWorker(good, [net.proxyPorts.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (net.proxy.stats() as any).workers.connected === 2, 'the second worker')
  for (let i = 0; i < 4; i++) {
    const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x' })
    assert.equal(res.status, 200)
    await res.json()
  }
  assert.equal(good.completed, 4)
  assert.equal(bad.seen.length, 1, 'the failing worker was tried once, then avoided')
  assert.equal((net.proxy.stats() as any).requests.retries, 1)
})

test('cancelling a request stops the generation on the worker', async () => {
  const b = new FakeBackend({ chunks: 1000, delayMs: 10 })
  const net = await network([b])
  const ac = new AbortController()
  const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x', stream: true, max_tokens: 1000 }, ac.signal)
  const reader = res.body!.getReader()
  await reader.read()
  ac.abort()
  await waitFor(() => b.aborted === 1, 'the backend to see the abort', 5_000)
  await waitFor(() => (net.workers[0].stats() as any).requests.cancelled === 1, 'worker stats to count the cancel')
  assert.equal(b.completed, 0)
  await waitFor(() => (net.proxy.stats() as any).requests.cancelled === 1, 'proxy stats to count the cancel')
})

test('a worker dying mid-stream ends the stream with an error event, not a hang', async () => {
  const b = new FakeBackend({ chunks: 1000, delayMs: 10 })
  const net = await network([b])
  const res = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: 'x', stream: true, max_tokens: 1000 })
  const reader = res.body!.getReader()
  await reader.read()
  // Simulate the worker process vanishing: drop its sockets.
  await net.workers[0].stop()
  let text = ''
  const dec = new TextDecoder()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    text += dec.decode(value)
  }
  const last = text.trim().split('\n\n').at(-1)!
  assert.match(last, /^data: \{"error"/)
  assert.equal(JSON.parse(last.slice(6)).error.code, 'upstream_error')
})

test('a worker whose image hash is not allowed is never used', async () => {
  const policy = await policyFor({ workerTags: [''] })
  const p = await startProxy({ policy })
  stops.push(() => p.proxy.stop())
  const evil = new FakeBackend()
  const w = await startWorker(evil, [p.workerPort], { imageTag: 'unlisted-build' })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.refused >= 1, 'the proxy to refuse the worker')
  assert.equal((p.proxy.stats() as any).workers.connected, 0)
  const good = new FakeBackend()
  const w2 = await startWorker(good, [p.workerPort])
  stops.push(() => w2.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'the allowed worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client to connect')
  for (let i = 0; i < 3; i++) {
    const res = await post(c.url, '/v1/completions', { model: 'fake-model', prompt: 'x' })
    assert.equal(res.status, 200)
    await res.json()
  }
  assert.equal(evil.seen.length, 0)
  assert.equal(good.completed, 3)
})

test('a client refuses a proxy whose image is not allowed, and reports it', async () => {
  const p = await startProxy({ imageTag: 'rogue-proxy' })
  stops.push(() => p.proxy.stop())
  const c = await startClient([p.clientPort], { policy: await policyFor({ proxyTags: [''] }) })
  stops.push(() => c.client.stop())
  await waitFor(() => (c.client.stats() as any).proxies[0].state === 'refused', 'the client to refuse the proxy')
  assert.match((c.client.stats() as any).proxies[0].lastError, /image/)
  const res = await post(c.url, '/v1/completions', { model: 'fake-model', prompt: 'x' })
  assert.equal(res.status, 503)
})

test('the client fails over to the next proxy when one is down', async () => {
  const b = new FakeBackend()
  const p1 = await startProxy()
  const p2 = await startProxy()
  stops.push(() => p1.proxy.stop(), () => p2.proxy.stop())
  const w = await startWorker(b, [p1.workerPort, p2.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p1.proxy.stats() as any).workers.connected === 1 && (p2.proxy.stats() as any).workers.connected === 1, 'worker on both proxies')
  const c = await startClient([p1.clientPort, p2.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => (c.client.health() as any).connectedProxies === 2, 'both proxies')
  await p1.proxy.stop()
  for (let i = 0; i < 3; i++) {
    const res = await post(c.url, '/v1/completions', { model: 'fake-model', prompt: 'x' })
    assert.equal(res.status, 200, await res.clone().text())
    await res.json()
  }
  assert.equal(b.completed, 3)
})
