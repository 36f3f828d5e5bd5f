// Overload at the proxy: requests wait for a worker slot in a bounded queue, served in turn across clients; only a full
// queue (or too long a wait) answers 429 with Retry-After. Real RA-TLS and HTTP/2 on loopback; the backend is a FAKE.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import type { ProxyOptions } from '../../src/proxy/proxy.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

async function network(backend: FakeBackend, options: Partial<ProxyOptions>, slots = 8, clients = 2) {
  const p = await startProxy({ options })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort], { options: { maxActiveRequests: slots } })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const urls: string[] = []
  for (let i = 0; i < clients; i++) {
    const c = await startClient([p.clientPort])
    stops.push(() => c.client.stop())
    await waitFor(() => c.client.health().ok, 'client')
    urls.push(c.url)
  }
  return { proxy: p.proxy, worker: w, urls }
}

const stream = (url: string, i: number) =>
  fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', prompt: `p${i}`, max_tokens: 5, stream: true }) })

interface Outcome {
  client: number
  status: number
  retryAfter: string | null
  text: string
  doneAt: number
}

async function run(url: string, client: number, i: number): Promise<Outcome> {
  const res = await stream(url, i)
  const text = await res.text()
  return { client, status: res.status, retryAfter: res.headers.get('retry-after'), text, doneAt: performance.now() }
}

test('100 concurrent streams on 1 worker: each succeeds or gets 429 with Retry-After, none 502 or 503, fair between two clients', async () => {
  const backend = new FakeBackend({ chunks: 5, delayMs: 20 })
  const net = await network(backend, { queueDepth: 40, queueMaxWaitMs: 60_000 })
  const all = await Promise.all(Array.from({ length: 100 }, (_, i) => run(net.urls[i % 2], i % 2, i)))
  const bad = all.filter((o) => o.status !== 200 && o.status !== 429)
  assert.deepEqual(bad.map((o) => [o.status, o.text.slice(0, 200)]), [], 'only 200 and 429')
  const ok = all.filter((o) => o.status === 200)
  const limited = all.filter((o) => o.status === 429)
  for (const o of ok) assert.match(o.text, /"usage".*\n\ndata: \[DONE\]\n\n$/s, 'a served stream is complete')
  for (const o of limited) {
    assert.match(o.retryAfter ?? '', /^\d+$/, 'a 429 says when to retry')
    const j = JSON.parse(o.text)
    assert.equal(j.error.code, 'too_many_requests')
    assert.equal(j.error.type, 'rate_limit_error')
  }
  // 8 slots and 40 places in the queue: at least those were served, the rest refused at once.
  assert.ok(ok.length >= 48, `${ok.length} served`)
  const served = [0, 1].map((c) => ok.filter((o) => o.client === c).length)
  assert.ok(Math.abs(served[0] - served[1]) <= 6, `served per client: ${served}`)
  const ws = net.worker.stats() as any
  assert.equal(ws.requests.rejected, 0, 'the worker never had to refuse: slots are claimed with the choice')
  const q = (net.proxy.stats() as any).queue
  assert.equal(q.queued, 0)
  assert.equal(q.depth, 40)
  assert.ok(q.admittedAfterWait >= 40, JSON.stringify(q))
  assert.equal(q.rejectedFull, limited.length)
  const metrics = await net.proxy.registry.metrics()
  assert.match(metrics, /^cocoon_proxy_queue_waiting\{[^}]*\} 0$/m)
  assert.match(metrics, /^cocoon_proxy_queue_depth\{[^}]*\} 40$/m)
  assert.match(metrics, new RegExp(`^cocoon_proxy_queue_rejected_total\\{[^}]*why="full"[^}]*\\} ${limited.length}$`, 'm'))
})

test('a client that floods the queue does not starve one that comes later: slots go to clients in turn', async () => {
  const backend = new FakeBackend({ chunks: 5, delayMs: 40 })
  const net = await network(backend, { queueDepth: 200, queueMaxWaitMs: 60_000 }, 4)
  const a = Array.from({ length: 40 }, (_, i) => run(net.urls[0], 0, i))
  let peak = 0
  await waitFor(() => (peak = Math.max(peak, (net.proxy.stats() as any).queue.queued)) >= 24, 'client A to fill the queue').catch((e) => {
    throw new Error(`${e.message}; peak ${peak}`)
  })
  const b = Array.from({ length: 8 }, (_, i) => run(net.urls[1], 1, 100 + i))
  const all = (await Promise.all([...a, ...b])).sort((x, y) => x.doneAt - y.doneAt)
  assert.ok(all.every((o) => o.status === 200), JSON.stringify(all.filter((o) => o.status !== 200).map((o) => o.text.slice(0, 100))))
  const ranks = all.flatMap((o, i) => (o.client === 1 ? [i] : []))
  // First in, first out would finish B's 8 last (ranks 40-47). In turn, B's are done within the first ~30.
  assert.ok(Math.max(...ranks) < 32, `client B finished at ranks ${ranks}`)
  const q = (net.proxy.stats() as any).queue
  assert.equal(q.queued, 0)
})

test('with no room in the queue, a busy network answers 429 with Retry-After at once; a wait too long is a 429 too', async () => {
  const backend = new FakeBackend({ chunks: 10, delayMs: 100 })
  const net = await network(backend, { queueDepth: 0 }, 1, 1)
  const first = stream(net.urls[0], 0)
  await waitFor(() => (net.worker.stats() as any).activeRequests === 1, 'the only slot to be taken')
  const t0 = Date.now()
  const busy = await fetch(net.urls[0] + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'x' }] }) })
  assert.equal(busy.status, 429)
  assert.match(busy.headers.get('retry-after') ?? '', /^\d+$/)
  assert.equal(((await busy.json()) as any).error.code, 'too_many_requests')
  assert.ok(Date.now() - t0 < 900, 'answered without waiting for the slot')
  await (await first).text()

  const net2 = await network(new FakeBackend({ chunks: 10, delayMs: 100 }), { queueDepth: 10, queueMaxWaitMs: 300 }, 1, 1)
  const long = stream(net2.urls[0], 0)
  await waitFor(() => (net2.worker.stats() as any).activeRequests === 1, 'the only slot to be taken')
  const waited = await stream(net2.urls[0], 1)
  assert.equal(waited.status, 429)
  assert.match(waited.headers.get('retry-after') ?? '', /^\d+$/)
  assert.match(((await waited.json()) as any).error.message, /stayed busy/)
  await (await long).text()
  assert.equal((net2.proxy.stats() as any).queue.timedOut, 1)
})
