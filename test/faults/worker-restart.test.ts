// A model whose only worker restarts: while it is away, its requests get 503 no_worker_available with Retry-After
// (which the openai SDK and apps retry), not 404 model_not_found; those 503s do not spend the client's error budget,
// so the client is served at once when the worker is back. A model never served stays a 404. Real RA-TLS and HTTP/2
// on loopback, with and without end-to-end encryption; the backend is a FAKE.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { CLIENT_ERROR_BURST } from '../../src/net/error-budget.ts'
import { MODEL_GONE_RETRY_AFTER_SEC, RecentModels, RECENT_MODEL_MS } from '../../src/proxy/recent-models.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

const post = (url: string, model: string) =>
  fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: 'x', max_tokens: 5 }) })

for (const e2ee of ['required', 'off'] as const) {
  test(`E2EE ${e2ee}: while a model's only worker restarts its requests get 503 with Retry-After, and the client is not slowed down for them`, async () => {
    const backend = new FakeBackend({ chunks: 3 })
    const p = await startProxy()
    stops.push(() => p.proxy.stop())
    const connected = () => (p.proxy.stats() as any).workers.connected as number
    let w = await startWorker(backend, [p.workerPort])
    stops.push(() => w.stop())
    await waitFor(() => connected() === 1, 'worker')
    const c = await startClient([p.clientPort], { options: { e2ee } })
    stops.push(() => c.client.stop())
    await waitFor(() => c.client.health().ok, 'client')
    const model = backend.model.id
    assert.equal((await post(c.url, model)).status, 200)

    await w.stop()
    await waitFor(() => connected() === 0, 'worker gone')
    // More requests than the client's error budget allows errors in a burst: 404s would have it slowed with 429s.
    for (let i = 0; i < CLIENT_ERROR_BURST + 10; i++) {
      const r = await post(c.url, model)
      const body = (await r.json()) as any
      assert.equal(r.status, 503, `request ${i}: ${JSON.stringify(body)}`)
      assert.equal(body.error.code, 'no_worker_available')
      assert.equal(r.headers.get('retry-after'), String(MODEL_GONE_RETRY_AFTER_SEC))
    }
    // A model no worker ever served here is still a 404.
    const unknown = await post(c.url, 'no-such-model')
    assert.equal(unknown.status, 404)
    assert.equal(((await unknown.json()) as any).error.code, 'model_not_found')

    w = await startWorker(backend, [p.workerPort])
    stops.push(() => w.stop())
    await waitFor(() => connected() === 1, 'worker back')
    const back = await post(c.url, model)
    assert.equal(back.status, 200, JSON.stringify(await back.json()))
    assert.equal((p.proxy.stats() as any).clients.rateLimited, 0)
  })
}

test('a model is remembered for RECENT_MODEL_MS after its last worker left, then it is unknown again', () => {
  let now = 1_000_000
  const recent = new RecentModels(() => now)
  assert.equal(recent.secondsSinceLeft('m'), undefined)
  recent.workerLeft('m')
  now += 5_000
  assert.equal(recent.secondsSinceLeft('m'), 5)
  now += RECENT_MODEL_MS
  assert.equal(recent.secondsSinceLeft('m'), undefined)
})
