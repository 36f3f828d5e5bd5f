// Fair admission (src/proxy/admission.ts): when the queue is full, a client is measured by what it holds,
// its worker slots and its places in the queue together. Fakes: worker sessions are plain objects (the seam
// next door); the queue, routing and selection are the real ones.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AdmissionQueue } from '../../src/proxy/admission.ts'
import type { WorkerConn } from '../../src/proxy/routing.ts'

function worker(capacity: number): WorkerConn {
  return {
    id: 'w', session: { closed: false, destroyed: false } as any, peer: {} as any, key: {} as any, account: 'w',
    info: { protocol: 1, model: { id: 'm', hash: '' }, coefficient: 1000, maxActiveRequests: capacity, maxTokensCap: 1024 } as any,
    remote: 'w', connectedAt: 0, active: 0, avgMs: 1000, failRate: 0, served: 0, failed: 0,
    tokens: { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 },
  }
}

const want = (client: string) => ({ client, model: 'm', maxCoefficient: 10_000, exclude: new Set<string>() })

test('a client that took every free slot first does not also keep an equal share of the full queue', async () => {
  const w = worker(4)
  const q = new AdmissionQueue(() => [w], { depth: 4, maxWaitMs: 60_000 })
  const signal = new AbortController().signal
  const outcome: Record<string, string[]> = { a: [], b: [] }
  const track = (c: string, p: Promise<WorkerConn>) => p.then(() => outcome[c].push('served'), (e) => outcome[c].push(e.constructor.name))
  const pending: Promise<unknown>[] = []
  // Client a arrives first: its 4 requests take the 4 slots, 2 more wait; then b's requests come.
  for (let i = 0; i < 6; i++) pending.push(track('a', q.claim(want('a'), signal)))
  for (let i = 0; i < 4; i++) pending.push(track('b', q.claim(want('b'), signal)))
  await new Promise((r) => setImmediate(r))
  // a holds 4 slots: b's arrivals take the places of a's waiters until the holdings are within one.
  assert.deepEqual(q.stats().byClient, { b: 4 })
  assert.equal(outcome.a.filter((o) => o === 'TooManyRequestsError').length, 2)
  // Slots given back go to b's waiters.
  for (let i = 0; i < 4; i++) q.release(w, 'a')
  await Promise.all(pending)
  assert.deepEqual(outcome.b, ['served', 'served', 'served', 'served'])
  assert.equal(q.stats().queued, 0)
  for (let i = 0; i < 4; i++) q.release(w, 'b')
  assert.equal(w.active, 0)
})

test('a client alone keeps the whole queue, and one more than the depth is refused', async () => {
  const w = worker(1)
  const q = new AdmissionQueue(() => [w], { depth: 2, maxWaitMs: 60_000 })
  const signal = new AbortController().signal
  await q.claim(want('a'), signal)
  const waiting = [q.claim(want('a'), signal), q.claim(want('a'), signal)]
  await assert.rejects(q.claim(want('a'), signal), /queue is full/)
  q.release(w, 'a')
  await waiting[0]
  q.release(w, 'a')
  await waiting[1]
  q.release(w, 'a')
  assert.equal(w.active, 0)
})
