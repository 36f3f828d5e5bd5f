// Routing decision time in a loop, outside the proxy (docs/benchmarks.md, "Scale run"): 1,000 workers in three
// speed tiers like `cocoon bench --scale`, 16 slots each, about half the slots in flight, answers recorded as they
// finish, one of 100 prefix keys per request. The same decisions run over a plain array (a full scan) and over a
// WorkerPool (src/proxy/routing.ts); it prints the median, p99 and worst wall time of each, in µs.
//
//   node --import tsx scripts/routing-probe.ts [--workers 1000] [--decisions 60000] [--no-affinity]
//
// Workers are plain objects (no sessions, no TLS): this measures selection alone, in a small heap.
import { parseArgs } from 'node:util'
import os from 'node:os'
import { recordOutcome, selectWorker, WorkerPool, type WorkerConn } from '../src/proxy/routing.ts'

const { values } = parseArgs({ options: { workers: { type: 'string', default: '1000' }, decisions: { type: 'string', default: '60000' }, 'no-affinity': { type: 'boolean', default: false } } })
const workers = Number(values.workers)
const decisions = Number(values.decisions)
const TIER_MS = [20, 80, 320]
const SLOTS = 16

function worker(i: number): WorkerConn {
  return {
    id: `w${i}`, session: { closed: false, destroyed: false } as WorkerConn['session'], peer: {} as WorkerConn['peer'], key: {} as WorkerConn['key'], account: `w${i}`,
    info: { protocol: 1, model: { id: 'm', hash: '' }, coefficient: 1000, maxActiveRequests: SLOTS, maxTokensCap: 1024 } as unknown as WorkerConn['info'],
    remote: '', connectedAt: 0, active: 0, avgMs: 1000, failRate: 0, served: 0, failed: 0, tokens: { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 },
  }
}

/** One answer of worker i, its speed from its tier with noise. */
function answer(w: WorkerConn, i: number, rand: () => number): void {
  const chunkMs = TIER_MS[i % 3] * (1 + rand() * 2)
  recordOutcome(w, true, chunkMs * 8, { ttftMs: chunkMs, completionTokens: 8 })
}

function run(kind: 'scan' | 'pool'): number[] {
  let seed = 1
  const rand = () => ((seed = (Math.imul(seed, 48271) >>> 0) % 2147483647) / 2147483647)
  const list = Array.from({ length: workers }, (_, i) => worker(i))
  const pool = new WorkerPool()
  for (const w of list) pool.set(w.id, w)
  for (let round = 0; round < 2; round++) list.forEach((w, i) => answer(w, i, rand))
  const source = kind === 'scan' ? list : pool
  const none = new Set<string>()
  const running: WorkerConn[] = []
  const times: number[] = []
  for (let d = 0; d < decisions; d++) {
    const affinity = values['no-affinity'] ? undefined : { prefixKey: `p${d % 100}`, client: `c${d % 10}` }
    const t0 = performance.now()
    const s = selectWorker(source, 'm', 10_000, none, { affinity })
    times.push((performance.now() - t0) * 1000)
    if (!('conn' in s)) continue
    s.conn.active++
    running.push(s.conn)
    // About half the slots stay in flight; a random one finishes.
    while (running.length > (workers * SLOTS) / 2) {
      const j = Math.floor(rand() * running.length)
      const w = running[j]
      running[j] = running[running.length - 1]
      running.pop()
      w.active--
      answer(w, Number(w.id.slice(1)), rand)
    }
  }
  return times.slice(decisions / 2).sort((a, b) => a - b)
}

console.log(`${workers} workers, ${decisions} decisions (the second half timed), prefix affinity ${values['no-affinity'] ? 'off' : 'on'}; load average ${os.loadavg()[0].toFixed(2)} on ${os.cpus().length} CPUs`)
for (const kind of ['scan', 'pool'] as const) {
  const t = run(kind)
  const at = (p: number) => t[Math.min(t.length - 1, Math.ceil(p * t.length) - 1)].toFixed(1)
  console.log(`${kind === 'scan' ? 'full scan ' : 'WorkerPool'}  p50 ${at(0.5)} µs  p99 ${at(0.99)} µs  max ${at(1)} µs`)
}
