// HTTP/2 sessions sized to the body limit: large bodies flow under flow control, and one request can never reset the
// session that every other request shares. Real RA-TLS and HTTP/2 on loopback; the backend is a FAKE.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

test('two ~7.5 MB bodies at once with 60 small requests: every small request succeeds, and so do the large ones', async () => {
  const backend = new FakeBackend({ chunks: 3, delayMs: 5 })
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort], { options: { maxActiveRequests: 64 } })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const post = (path: string, body: unknown) => fetch(c.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  // Under the 8 MiB limit, but together far above HTTP/2's default session memory (10 MB).
  const big = 'word '.repeat(1_500_000)
  const large = [0, 1].map(() => post('/v1/completions', { model: 'fake-model', prompt: big, max_tokens: 2 }))
  const small = Array.from({ length: 60 }, (_, i) =>
    i % 3 === 0 ? fetch(c.url + '/v1/models') : post(i % 2 ? '/v1/chat/completions' : '/v1/completions', i % 2 ? { model: 'fake-model', messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 3 } : { model: 'fake-model', prompt: `hi ${i}`, max_tokens: 3, stream: i % 4 === 0 }),
  )
  const smallRes = await Promise.all(small)
  const smallText = await Promise.all(smallRes.map((r) => r.text()))
  const failed = smallRes.map((r, i) => [r.status, smallText[i].slice(0, 200)] as const).filter(([s]) => s !== 200)
  assert.deepEqual(failed, [], `${failed.length} of 60 small requests failed`)
  const largeRes = await Promise.all(large)
  for (const r of largeRes) {
    const j = (await r.json()) as any
    assert.equal(r.status, 200, JSON.stringify(j).slice(0, 300))
    assert.equal(j.usage.prompt_tokens, 1_500_000)
  }
  assert.equal(c.client.health().ok, true)
})
