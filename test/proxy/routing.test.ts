// Routing by measured quality (src/proxy/routing.ts): hard gates, the cost formula from EMAs of time to first
// token and tokens/s, success rate and load, the coefficient under the client's cap, the circuit breaker, and
// prefix affinity by rendezvous hashing salted per client. Fakes: sessions are plain objects (the seam next door).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import {
  AFFINITY_SLACK, BREAKER_OPEN_MS, BREAKER_THRESHOLD, PRIOR_TTFT_MS, RELIABILITY_PRIOR_SCORE, RELIABILITY_PRIOR_SUCCESS, recordOutcome, reliabilityScore, routingCost, selectWorker, setReliability, WorkerPool, type WorkerConn,
} from '../../src/proxy/routing.ts'
import { buildReliabilityRecord } from '../../src/payments/receipts/reliability.ts'
import type { ReceiptFields } from '../../src/payments/receipts/receipt.ts'
import { prng, type Prng } from '../helpers/prng.ts'

function worker(id: string, o: { model?: string; coefficient?: number; capacity?: number; active?: number } = {}): WorkerConn {
  return {
    id,
    session: { closed: false, destroyed: false } as any,
    peer: {} as any,
    key: {} as any,
    account: id,
    info: { protocol: 1, model: { id: o.model ?? 'm', hash: '' }, coefficient: o.coefficient ?? 1000, maxActiveRequests: o.capacity ?? 4, maxTokensCap: 1024 } as any,
    remote: id,
    connectedAt: 0,
    active: o.active ?? 0,
    avgMs: 1000,
    failRate: 0,
    served: 0,
    failed: 0,
    tokens: { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 },
  }
}

const none = new Set<string>()
const pick = (ws: WorkerConn[], opts = {}, max = 10_000) => {
  const s = selectWorker(ws, 'm', max, none, opts)
  return 'conn' in s ? s.conn.id : s.reason
}

/** Feeds `n` measured answers: `ttftMs` to the first token, then `tps` tokens/s for 101 tokens. */
function measure(c: WorkerConn, n: number, ttftMs: number, tps: number, now = 0) {
  for (let i = 0; i < n; i++) recordOutcome(c, true, ttftMs + (100 / tps) * 1000, { ttftMs, completionTokens: 101 }, now)
}

describe('routing by measured quality', () => {
  it('keeps the hard gates: model, coefficient cap (with the lowest it could get), capacity, already tried', () => {
    const a = worker('a', { coefficient: 3000 })
    assert.equal(pick([a], {}, 2000), 'coefficient')
    assert.deepEqual(selectWorker([a], 'm', 2000, none), { reason: 'coefficient', minCoefficient: 3000 })
    assert.equal(pick([a], {}, 2000) && selectWorker([a], 'other', 9999, none).hasOwnProperty('reason') && (selectWorker([a], 'other', 9999, none) as any).reason, 'model_not_found')
    const full = worker('f', { capacity: 1, active: 1 })
    assert.equal(pick([full]), 'busy')
    assert.equal((selectWorker([worker('t')], 'm', 9999, new Set(['t'])) as any).reason, 'exhausted')
  })

  it('learns time to first token and tokens per second as moving averages, and prefers the faster worker', () => {
    const slow = worker('slow')
    const fast = worker('fast')
    measure(slow, 5, 400, 10)
    measure(fast, 5, 100, 50)
    assert.ok(Math.abs(fast.quality!.ttftMs! - 100) < 1e-9)
    assert.ok(Math.abs(fast.quality!.tokensPerSec! - 50) < 1e-6)
    assert.equal(pick([slow, fast]), 'fast')
    // An unmeasured worker is priced at the priors.
    assert.equal(worker('new').quality, undefined)
    assert.ok(routingCost(worker('new')) > routingCost(fast))
    assert.equal(worker('x').quality?.ttftMs ?? PRIOR_TTFT_MS, PRIOR_TTFT_MS)
  })

  it('weighs load against capacity and the success rate', () => {
    const a = worker('a', { capacity: 4, active: 3 })
    const b = worker('b', { capacity: 4, active: 0 })
    assert.equal(pick([a, b]), 'b')
    const flaky = worker('flaky')
    const steady = worker('steady')
    measure(flaky, 3, 100, 50)
    measure(steady, 3, 120, 45)
    recordOutcome(flaky, false)
    recordOutcome(flaky, true, 2100, { ttftMs: 100, completionTokens: 101 })
    assert.ok(flaky.quality!.successRate < 1)
    assert.equal(pick([flaky, steady]), 'steady')
  })

  it('combines quality with the coefficient: a dearer worker must be proportionally faster', () => {
    const cheap = worker('cheap', { coefficient: 1000 })
    const dear = worker('dear', { coefficient: 2000 })
    measure(cheap, 3, 200, 20)
    measure(dear, 3, 200, 30)
    assert.equal(pick([cheap, dear]), 'cheap')
    measure(dear, 20, 20, 200)
    assert.equal(pick([cheap, dear]), 'dear')
    assert.equal(pick([cheap, dear], {}, 1500), 'cheap', 'the cap still excludes the dearer one')
  })

  it('opens the circuit breaker after consecutive failures, half-opens for one trial, and re-opens for longer', () => {
    const w = worker('w')
    const other = worker('other')
    measure(w, 3, 50, 100)
    measure(other, 3, 300, 10)
    for (let i = 0; i < BREAKER_THRESHOLD; i++) recordOutcome(w, false, undefined, {}, 1_000)
    assert.equal(w.quality!.breaker.state, 'open')
    assert.equal(pick([w, other], { now: 1_000 + BREAKER_OPEN_MS - 1 }), 'other')
    assert.equal(pick([w], { now: 1_000 + BREAKER_OPEN_MS - 1 }), 'busy')
    // Time is up: one trial goes through, a second is held back while it runs.
    assert.equal(pick([w, other], { now: 1_000 + BREAKER_OPEN_MS }), 'w')
    assert.equal(w.quality!.breaker.state, 'half-open')
    assert.equal(pick([w, other], { now: 1_000 + BREAKER_OPEN_MS + 1 }), 'other')
    recordOutcome(w, false, undefined, {}, 1_000 + BREAKER_OPEN_MS + 2)
    assert.equal(w.quality!.breaker.state, 'open')
    assert.equal(w.quality!.breaker.openMs, 2 * BREAKER_OPEN_MS)
    // After the longer wait, a successful trial closes it.
    const later = 1_000 + 3 * BREAKER_OPEN_MS + 10
    assert.equal(pick([w, other], { now: later }), 'w')
    recordOutcome(w, true, 1000, { ttftMs: 50, completionTokens: 101 }, later)
    assert.equal(w.quality!.breaker.state, 'closed')
  })

  it('sends one client’s repeated prefix to the same near-best worker, spreads prefixes, and salts per client', () => {
    const ws = ['w1', 'w2', 'w3', 'w4'].map((id) => worker(id))
    for (const w of ws) measure(w, 3, 100, 50)
    const first = pick(ws, { affinity: { prefixKey: 'p-1', client: 'alice' } })
    for (let i = 0; i < 5; i++) assert.equal(pick(ws, { affinity: { prefixKey: 'p-1', client: 'alice' } }), first)
    const spread = new Set(Array.from({ length: 40 }, (_, i) => pick(ws, { affinity: { prefixKey: `p-${i}`, client: 'alice' } })))
    assert.ok(spread.size >= 3, `prefixes spread over ${spread.size} workers`)
    // The same prefix key from another client lands independently: over many keys, the two clients disagree often.
    let differ = 0
    for (let i = 0; i < 40; i++) {
      if (pick(ws, { affinity: { prefixKey: `k-${i}`, client: 'alice' } }) !== pick(ws, { affinity: { prefixKey: `k-${i}`, client: 'mallory' } })) differ++
    }
    assert.ok(differ >= 15, `clients disagreed on ${differ} of 40 keys`)
  })

  it('never lets affinity pick a worker much worse than the best', () => {
    const good = worker('good')
    const bad = worker('bad')
    measure(good, 5, 100, 50)
    measure(bad, 5, 100 * (1 + AFFINITY_SLACK) * 4, 10)
    for (let i = 0; i < 30; i++) assert.equal(pick([good, bad], { affinity: { prefixKey: `p-${i}`, client: 'c' } }), 'good')
  })

  it('the reliability score: a prior for new workers, rising with successes, falling with failures, slow first tokens and absence', () => {
    assert.equal(reliabilityScore(), RELIABILITY_PRIOR_SCORE)
    const base = { requests: 200, successes: 200, cancelled: 0, p50_ttft_ms: PRIOR_TTFT_MS, uptime: 1 }
    const perfect = reliabilityScore(base)
    assert.ok(perfect > RELIABILITY_PRIOR_SCORE, 'a long clean record beats the prior')
    assert.ok(reliabilityScore({ ...base, successes: 150 }) < RELIABILITY_PRIOR_SCORE, 'a poor record falls below the prior')
    assert.ok(reliabilityScore({ ...base, p50_ttft_ms: 2000 }) < perfect)
    assert.ok(reliabilityScore({ ...base, uptime: 0.5 }) < perfect)
    // Cancellations are the app's doing, not held against the worker.
    assert.equal(reliabilityScore({ ...base, requests: 300, cancelled: 100 }), perfect)
    // One request does not move a new worker far from the prior, either way.
    const one = { requests: 1, cancelled: 0, p50_ttft_ms: null, uptime: null }
    assert.ok(Math.abs(reliabilityScore({ ...one, successes: 0 }) - RELIABILITY_PRIOR_SCORE) / RELIABILITY_PRIOR_SCORE < RELIABILITY_PRIOR_SUCCESS / 10)
  })

  it('steers routing share by the committed record: the reliable worker gets the largest share, the flaky one the least', () => {
    // Records derived from receipts, as the proxy commits them: same speed, different success.
    const fields = (key: number, ok: number, failed: number): ReceiptFields[] =>
      Array.from({ length: ok + failed }, (_, i) => ({
        workerKey: Buffer.alloc(32, key), modelId: 'm', signer: 'worker', finishReason: i < ok ? 'stop' : 'error',
        startedAtMs: 1000, firstTokenAtMs: 1200, endedAtMs: 3200, completionTokens: 41,
      }) as unknown as ReceiptFields)
    const record = buildReliabilityRecord({
      proxyKey: '00', seqno: 1, receipts: { from: 0, to: 1000 }, uptimeWindow: { startMs: 0, endMs: 1 },
      fields: [...fields(1, 495, 5), ...fields(2, 300, 200)],
    })
    const [rel, flk] = record.workers
    assert.equal(rel.successes, 495)
    assert.equal(flk.successes, 300)
    assert.equal(rel.p50_ttft_ms, 200)
    const reliable = worker('reliable', { capacity: 8 })
    const newcomer = worker('newcomer', { capacity: 8 })
    const flaky = worker('flaky', { capacity: 8 })
    reliable.reliability = reliabilityScore(rel)
    flaky.reliability = reliabilityScore(flk)
    // Identical live measurements, so only the record differs.
    for (const w of [reliable, newcomer, flaky]) measure(w, 5, 200, 20)
    const ws = [flaky, newcomer, reliable]
    const share = new Map<string, number>(ws.map((w) => [w.id, 0]))
    const running: WorkerConn[] = []
    for (let i = 0; i < 3000; i++) {
      const s = selectWorker(ws, 'm', 10_000, none)
      assert.ok('conn' in s)
      s.conn.active++
      running.push(s.conn)
      share.set(s.conn.id, share.get(s.conn.id)! + 1)
      // Twelve requests in flight at a time: the oldest finishes.
      if (running.length > 12) running.shift()!.active--
    }
    const [r, n, f] = ['reliable', 'newcomer', 'flaky'].map((id) => share.get(id)!)
    assert.ok(r > n && n > f, `shares reliable ${r}, newcomer ${n}, flaky ${f}`)
    assert.ok(f > 0, 'the flaky worker still gets some traffic (load spreads it)')
  })
})

describe('WorkerPool: candidates found without a full scan', () => {
  /** One random worker, drawn from `r`; the same draws give an identical worker. */
  function randomWorker(r: Prng, id: string): WorkerConn {
    const capacity = 1 + r.int(8)
    const w = worker(id, { model: r.next() < 0.85 ? 'm' : 'other', coefficient: r.pick([500, 1000, 1000, 1000, 1500, 2000, 3000]), capacity, active: r.int(capacity + 1) })
    if (r.next() < 0.2) w.info.model.endpoints = ['/v1/chat/completions']
    if (r.next() < 0.05) (w.session as any).closed = true
    w.served = r.int(3)
    w.hpkeKeys = new Set([`k${r.int(40)}`])
    // Some stay at the priors (exact ties in cost), some are measured, a few fail until their breaker opens.
    const kind = r.next()
    if (kind < 0.3) return w
    measure(w, 1 + r.int(5), 50 + r.int(8) * 50, 5 + r.int(6) * 10)
    if (kind > 0.9) for (let i = 0; i < BREAKER_THRESHOLD; i++) recordOutcome(w, false, undefined, {}, r.int(20_000))
    else if (kind > 0.8) recordOutcome(w, false)
    if (r.next() < 0.5) setReliability(w, 0.3 + r.int(7) / 10)
    return w
  }

  const describeSel = (s: ReturnType<typeof selectWorker>) => ('conn' in s ? `conn ${s.conn.id}` : `${s.reason}${s.minCoefficient !== undefined ? ` ${s.minCoefficient}` : ''}`)

  it('picks the same worker (or gives the same reason) as a full scan, over randomized worker sets and changes (fixed seed)', () => {
    let decisions = 0
    let chosen = 0
    for (let set = 0; set < 60; set++) {
      const size = 1 + prng(set).int(set < 10 ? 6 : 400)
      // Two identical sets from the same seed: one scanned in full (an array), one in a WorkerPool.
      const make = () => {
        const r = prng(1_000 + set)
        return Array.from({ length: size }, (_, i) => randomWorker(r, `w${i}`))
      }
      const scanned = make()
      const pool = new WorkerPool()
      for (const w of make()) pool.set(w.id, w)
      const ops = prng(2_000 + set)
      let now = 10_000
      let added = size
      for (let step = 0; step < 150; step++) {
        now += ops.int(3_000)
        const ids = scanned.map((w) => w.id)
        const exclude = new Set(ids.filter(() => ops.next() < 0.1))
        const keys = ops.next() < 0.2 ? [`k${ops.int(40)}`, `k${ops.int(40)}`] : undefined
        const only = keys ? new Set(scanned.filter((w) => keys.some((k) => w.hpkeKeys!.has(k))).map((w) => w.id)) : undefined
        if (keys) assert.deepEqual([...pool.recipients(keys)].sort(), [...only!].sort(), 'recipients by HPKE key')
        const opts = {
          now,
          path: ops.next() < 0.3 ? ops.pick(['/v1/chat/completions', '/v1/completions', '/v1/embeddings']) : undefined,
          affinity: ops.next() < 0.6 ? { prefixKey: `p${ops.int(20)}`, client: ops.pick(['alice', 'bob']) } : undefined,
          only,
        }
        const model = ops.next() < 0.9 ? 'm' : ops.pick(['other', 'none'])
        const max = ops.pick([400, 1000, 2000, 10_000])
        const full = selectWorker(scanned, model, max, exclude, opts)
        const fast = selectWorker(pool, model, max, exclude, opts)
        assert.equal(describeSel(fast), describeSel(full), `set ${set} (${size} workers), step ${step}`)
        decisions++
        // The same change to both sets: claim the chosen slot, finish or fail answers, re-score, leave, join.
        const twin = (id: string) => [scanned.find((w) => w.id === id)!, pool.get(id)!] as const
        if ('conn' in full) {
          chosen++
          for (const w of twin(full.conn.id)) w.active++
        }
        const busy = scanned.filter((w) => w.active > 0)
        if (busy.length > 0 && ops.next() < 0.7) {
          const id = ops.pick(busy).id
          const ok = ops.next() < 0.85
          const ttft = 20 + ops.int(10) * 40
          for (const w of twin(id)) {
            w.active--
            recordOutcome(w, ok, ttft + 500, { ttftMs: ttft, completionTokens: 50 }, now)
          }
        }
        if (ops.next() < 0.1) {
          // A burst of answers between two decisions: many workers re-placed at once.
          for (let k = ops.int(60); k > 0; k--) {
            const id = ops.pick(ids)
            const ok = ops.next() < 0.9
            const ttft = 20 + ops.int(10) * 40
            for (const w of twin(id)) recordOutcome(w, ok, ttft + 300, { ttftMs: ttft, completionTokens: 30 }, now)
          }
        }
        if (ops.next() < 0.1) {
          const id = ops.pick(ids)
          const score = ops.next()
          for (const w of twin(id)) setReliability(w, score)
        }
        if (ops.next() < 0.05 && scanned.length > 1) {
          const id = ops.pick(ids)
          scanned.splice(scanned.findIndex((w) => w.id === id), 1)
          pool.delete(id)
        }
        if (ops.next() < 0.05) {
          const id = `w${added++}`
          const r1 = prng(added)
          const r2 = prng(added)
          scanned.push(randomWorker(r1, id))
          pool.set(id, randomWorker(r2, id))
        }
      }
      assert.deepEqual([...pool.values()].map((w) => w.id), scanned.map((w) => w.id), 'the pool iterates in connection order')
    }
    assert.ok(chosen > decisions / 3 && chosen < decisions, `a mix of choices (${chosen}) and refusals (${decisions - chosen}) in ${decisions} decisions`)
  })

  it('visits only the workers that could win: a decision among 1,000 reads a few of them, not all', () => {
    const pool = new WorkerPool()
    let reads = 0
    for (let i = 0; i < 1_000; i++) {
      const w = worker(`w${i}`, { capacity: 16 })
      // Counts how often routing reads this worker's in-flight count (once per worker visited).
      Object.defineProperty(w, 'active', { get: () => (reads++, 0) })
      // Speeds in 10 tiers, each twice as fast as the one below, a hair apart within a tier (no exact ties):
      // only the fastest tier (a tenth of the workers) is within AFFINITY_SLACK of the best.
      measure(w, 3, 10, 10 * 2 ** (i % 10) * (1 + i * 1e-6))
      pool.set(w.id, w)
    }
    const fastest = [...pool.values()].filter((w) => w.quality!.tokensPerSec! > 5000)
    reads = 0
    const s = selectWorker(pool, 'm', 10_000, none)
    assert.ok('conn' in s && fastest.includes(s.conn))
    assert.ok(reads < 10, `without affinity only the best few are visited (${reads})`)
    reads = 0
    const a = selectWorker(pool, 'm', 10_000, none, { affinity: { prefixKey: 'p', client: 'c' } })
    assert.ok('conn' in a && fastest.includes(a.conn))
    assert.ok(reads <= 101, `with affinity only the near-best are visited (${reads})`)
    // A changed worker is re-placed: the slowest, measured fast now, wins.
    const slow = pool.get('w0')!
    for (let i = 0; i < 30; i++) recordOutcome(slow, true, 5 + 10, { ttftMs: 5, completionTokens: 101 })
    const after = selectWorker(pool, 'm', 10_000, none)
    assert.ok('conn' in after && after.conn.id === 'w0')
  })
})
