// Protocol overhead: the same streaming load against the fake backend directly and through client → proxy → worker,
// and the cost of end-to-end encryption: the same network through a second client node with E2EE off.
import { type BenchPlan, FAKE_CHUNK_COUNT, OVERHEAD_CONCURRENCY } from './constants.ts'
import { LoadFailedError, runLoad, type LoadRun } from './load.ts'
import { cpuTimeMs, peakRssMiB } from './procs.ts'
import type { BenchResult, E2eeFigures, E2eeSide, LoadFigures } from './schema.ts'
import { median, round } from './stats.ts'

export interface OverheadOptions {
  /** Root of the fake backend (direct), of the client node (network, E2EE on) and of the client node with E2EE off. */
  directUrl: string
  networkUrl: string
  plainUrl: string
  /** The model id the network routes to the fake backend. */
  model: string
  /** Content chunks of the fake backend's answer (its --chunks). */
  chunks: number
  plan: BenchPlan
  /** The nodes of the network, and the fake backend both sides share. */
  pids: { client: number | null; proxy: number | null; worker: number; backend: number | null; plainClient: number | null }
  /** The network's resident memory once started, before any load (BenchResult's overhead.idleRssMiB). */
  idleRssMiB: BenchResult['overhead']['idleRssMiB']
  /** Receipts not yet proven to their client node and worker (null: none get proven, e.g. without a chain). */
  receiptBacklog?: () => Promise<number | null>
  say: (line: string) => void
}

/** How long the bench waits after a network run for its receipts to be proven to the client nodes and the worker. */
export const RECEIPT_DRAIN_MAX_MS = 60_000

/**
 * Waits until every receipt answered so far is proven (a commit, then each party's check of its proof), or
 * RECEIPT_DRAIN_MAX_MS. Returns the backlog left: 0, or what was still unproven at the limit (null: not known).
 */
export async function drainReceipts(backlog: (() => Promise<number | null>) | undefined): Promise<number | null> {
  if (!backlog) return null
  const end = Date.now() + RECEIPT_DRAIN_MAX_MS
  for (;;) {
    const left = await backlog()
    if (left === null || left === 0 || Date.now() >= end) return left
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** direct: the fake backend; network: through the network, E2EE on (the default); plain: the same network, E2EE off. */
type Target = 'direct' | 'network' | 'plain'
const TARGETS: readonly Target[] = ['direct', 'network', 'plain']
const LABEL: Record<Target, string> = { direct: 'direct', network: 'network (E2EE on)', plain: 'network (E2EE off)' }
/** The x-cocoon-e2ee header each network target's answers must carry, so each side is measured doing what it claims. */
const E2EE_MODE: Record<Target, string | undefined> = { direct: undefined, network: 'on', plain: 'off' }

/** The request of every run: a streamed chat completion of the fake backend's full answer. */
export function overheadRequestBody(model: string, chunks = FAKE_CHUNK_COUNT): string {
  return JSON.stringify({
    model,
    messages: [{ role: 'user', content: 'Tell me a story' }],
    max_tokens: chunks,
    stream: true,
    stream_options: { include_usage: true },
  })
}

export async function measureOverhead(o: OverheadOptions): Promise<{ overhead: BenchResult['overhead']; e2ee: E2eeFigures; notes: string[] }> {
  const notes: string[] = []
  if (o.receiptBacklog) notes.push(`overhead: the network's CPU per request includes proving each answer's receipt to its client node and worker; after each network run the bench waits, CPU window open, until they are proven (at most ${RECEIPT_DRAIN_MAX_MS / 1000} s)`)
  const url = (t: Target) => `${{ direct: o.directUrl, network: o.networkUrl, plain: o.plainUrl }[t]}/v1/chat/completions`
  const body = overheadRequestBody(o.model, o.chunks)
  for (const t of TARGETS) await checkAnswer(url(t), body, t, o.chunks)

  const runs: Record<Target, LoadRun[]> = { direct: [], network: [], plain: [] }
  const { plainClient, ...networkPids } = o.pids
  const cpu = {
    direct: new CpuMeter({ backend: o.pids.backend, loadGenerator: process.pid }),
    network: new CpuMeter({ ...networkPids, loadGenerator: process.pid }),
    plain: new CpuMeter({ ...networkPids, client: plainClient, loadGenerator: process.pid }),
  }
  const c1: Record<Target, LoadRun[]> = { direct: [], network: [], plain: [] }
  const load = async (t: Target, connections: number, durationSec: number) => {
    let r: LoadRun
    try {
      r = await runLoad({ url: url(t), body, connections, durationSec })
    } catch (err) {
      if (!(err instanceof LoadFailedError)) throw err
      throw new LoadFailedError(err.url, err.failed, err.errors, `${LABEL[t]} at concurrency ${connections}; one answer now: ${await sampleAnswer(url(t), body)}`)
    }
    if (r.failed > 0 || r.errors > 0) notes.push(`overhead ${LABEL[t]} at concurrency ${connections}: ${r.failed} non-2xx responses and ${r.errors} errors besides ${r.ok} successes`)
    return r
  }
  for (const t of TARGETS) {
    if (o.plan.warmupSec <= 0) break
    o.say(`overhead: warming up ${t}`)
    await load(t, OVERHEAD_CONCURRENCY, o.plan.warmupSec)
  }
  // Alternate the order each round, so slow drift of a shared machine hits every side alike.
  const order = (n: number): Target[] => (n % 2 === 0 ? [...TARGETS] : [...TARGETS].reverse())
  for (let i = 0; i < o.plan.rounds; i++) {
    for (const t of order(i)) {
      o.say(`overhead: ${LABEL[t]}, concurrency ${OVERHEAD_CONCURRENCY}, ${o.plan.loadSec}s (round ${i + 1}/${o.plan.rounds})`)
      const before = cpu[t].sample()
      const r = await load(t, OVERHEAD_CONCURRENCY, o.plan.loadSec)
      // Proving each answer's receipt to its client node and worker is part of serving it: it happens after the
      // next commit, so the CPU window stays open until the run's receipts are proven (and the next run starts quiet).
      if (t !== 'direct') {
        const left = await drainReceipts(o.receiptBacklog)
        if (left) notes.push(`overhead ${LABEL[t]} round ${i + 1}: ${left} receipts were still unproven ${RECEIPT_DRAIN_MAX_MS / 1000} s after the run`)
      }
      cpu[t].add(before, r.ok)
      runs[t].push(r)
    }
  }
  for (let i = 0; i < o.plan.rounds; i++) {
    for (const t of order(i)) {
      o.say(`overhead: ${LABEL[t]}, concurrency 1, ${o.plan.c1Sec}s (round ${i + 1}/${o.plan.rounds})`)
      c1[t].push(await load(t, 1, o.plan.c1Sec))
      if (t !== 'direct') await drainReceipts(o.receiptBacklog)
    }
  }
  const peak = { client: rss(o.pids.client), proxy: rss(o.pids.proxy), worker: rss(o.pids.worker) }
  if (Object.values(peak).some((v) => v === null)) notes.push('peak RSS needs /proc (Linux); missing figures are null')

  const direct = figures(runs.direct)
  const network = figures(runs.network)
  const c1Direct = round(median(c1.direct.map((r) => r.p50Ms)), 3)
  const c1Network = round(median(c1.network.map((r) => r.p50Ms)), 3)
  const side = (t: 'network' | 'plain'): E2eeSide => {
    const f = t === 'network' ? network : figures(runs.plain)
    return {
      rps: f.rps,
      p50Ms: f.p50Ms,
      ttfbP50Ms: f.ttfbP50Ms,
      c1P50Ms: round(median(c1[t].map((r) => r.p50Ms)), 3),
      c1TtfbP50Ms: round(median(c1[t].map((r) => r.ttfbP50Ms)), 3),
      cpuPerRequestMs: stackCpu(cpu[t]),
    }
  }
  const on = side('network')
  const off = side('plain')
  const e2ee: E2eeFigures = {
    concurrency: OVERHEAD_CONCURRENCY,
    on,
    off,
    ratioRps: round(on.rps / off.rps, 3),
    addedC1P50Ms: round(on.c1P50Ms - off.c1P50Ms, 3),
    addedC1TtfbP50Ms: round(on.c1TtfbP50Ms - off.c1TtfbP50Ms, 3),
    addedCpuPerRequestMs: on.cpuPerRequestMs.stack === null || off.cpuPerRequestMs.stack === null ? null : round(on.cpuPerRequestMs.stack - off.cpuPerRequestMs.stack, 3),
  }
  return {
    e2ee,
    overhead: {
      concurrency: OVERHEAD_CONCURRENCY,
      direct,
      network,
      ratioRps: round(network.rps / direct.rps, 3),
      addedP50Ms: round(network.p50Ms - direct.p50Ms, 3),
      c1: { directP50Ms: c1Direct, networkP50Ms: c1Network, addedP50Ms: round(c1Network - c1Direct, 3) },
      peakRssMiB: peak,
      idleRssMiB: o.idleRssMiB,
      cpuPerRequestMs: { direct: cpu.direct.perRequest(['backend', 'loadGenerator']), network: networkCpu(cpu.network) },
    },
    notes,
  }
}

type CpuRole = 'client' | 'proxy' | 'worker' | 'backend' | 'loadGenerator'

/** CPU time of a set of processes summed over the load windows, per successful request. */
class CpuMeter {
  private readonly usedMs: Partial<Record<CpuRole, number>> = {}
  private requests = 0
  private readonly missing = new Set<CpuRole>()

  constructor(private readonly pids: Partial<Record<CpuRole, number | null>>) {}

  sample(): Partial<Record<CpuRole, number | null>> {
    const out: Partial<Record<CpuRole, number | null>> = {}
    for (const [role, pid] of Object.entries(this.pids) as Array<[CpuRole, number | null]>) out[role] = pid === null ? null : cpuTimeMs(pid)
    return out
  }

  add(before: Partial<Record<CpuRole, number | null>>, requests: number): void {
    const after = this.sample()
    for (const role of Object.keys(this.pids) as CpuRole[]) {
      const a = before[role]
      const b = after[role]
      if (a === null || a === undefined || b === null || b === undefined) this.missing.add(role)
      else this.usedMs[role] = (this.usedMs[role] ?? 0) + (b - a)
    }
    this.requests += requests
  }

  perRequest<K extends CpuRole>(roles: K[]): Record<K, number | null> {
    const out = {} as Record<K, number | null>
    for (const role of roles) {
      const used = this.usedMs[role]
      out[role] = used === undefined || this.missing.has(role) || this.requests === 0 ? null : round(used / this.requests, 3)
    }
    return out
  }
}

/** CPU per request of the three nodes and their sum. */
function stackCpu(m: CpuMeter): E2eeSide['cpuPerRequestMs'] {
  const c = m.perRequest(['client', 'proxy', 'worker'])
  return { ...c, stack: c.client === null || c.proxy === null || c.worker === null ? null : round(c.client + c.proxy + c.worker, 3) }
}

function networkCpu(m: CpuMeter): BenchResult['overhead']['cpuPerRequestMs']['network'] {
  const c = m.perRequest(['client', 'proxy', 'worker', 'backend', 'loadGenerator'])
  const stack = c.client === null || c.proxy === null || c.worker === null ? null : round(c.client + c.proxy + c.worker, 3)
  return { ...c, stack }
}

/** Medians over the rounds, rounded: requests/s to 0.1, times to the microsecond. */
function figures(runs: LoadRun[]): LoadFigures {
  return {
    rps: round(median(runs.map((r) => r.rps)), 1),
    p50Ms: round(median(runs.map((r) => r.p50Ms)), 3),
    p99Ms: round(median(runs.map((r) => r.p99Ms)), 3),
    ttfbP50Ms: round(median(runs.map((r) => r.ttfbP50Ms)), 3),
  }
}

function rss(pid: number | null): number | null {
  if (pid === null) return null
  const v = peakRssMiB(pid)
  return v === null ? null : round(v, 1)
}

/** One request before the load: the answer must be complete, so both sides are measured doing the same work. */
async function checkAnswer(url: string, body: string, target: Target, chunks: number): Promise<void> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(30_000) })
  const mode = E2EE_MODE[target]
  if (mode !== undefined && res.headers.get('x-cocoon-e2ee') !== mode) {
    throw new Error(`the ${target} answer was served with end-to-end encryption ${res.headers.get('x-cocoon-e2ee') ?? '(no x-cocoon-e2ee header)'}, not ${mode}`)
  }
  const text = await res.text()
  const events = text.split('\n\n').filter((e) => e.startsWith('data: '))
  const content = events.filter((e) => e.includes('"content"')).length
  if (res.status !== 200 || content !== chunks || !events.some((e) => e.includes('"usage"')) || events.at(-1) !== 'data: [DONE]') {
    throw new Error(`the ${target} answer is not the fake backend's full answer (HTTP ${res.status}, ${content} content chunks): ${text.slice(0, 300)}`)
  }
}

/** Status and the start of the body of one answer, to say why a load failed. */
async function sampleAnswer(url: string, body: string): Promise<string> {
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) })
    return `HTTP ${res.status} ${(await res.text()).slice(0, 300)}`
  } catch (err) {
    return `no answer (${(err as Error).message})`
  }
}
