// The result of `cocoon bench`: a fixed JSON shape (version 1) so that runs can be compared, and its checker.
//
// A figure is null only when it could not be measured on this machine (no /proc, no TDX
// fixtures, no fee report); `notes` then says why. Units are in the field names.

export interface LoadFigures {
  /** Successful (2xx) responses per second. */
  rps: number
  /** Median and 99th percentile of the full response time, in ms. */
  p50Ms: number
  p99Ms: number
  /** Median time from sending the request to the first body byte, in ms. */
  ttfbP50Ms: number
}

/** CPU time per successful request, ms, of each process over the c30 load windows (null without /proc). */
export interface DirectCpu {
  backend: number | null
  loadGenerator: number | null
}
export interface NetworkCpu extends DirectCpu {
  client: number | null
  proxy: number | null
  worker: number | null
  /** client + proxy + worker: what the network adds per request. */
  stack: number | null
}

/** One side of the E2EE comparison: the network through a client node with E2EE on, or off. */
export interface E2eeSide {
  /** Concurrency `concurrency` (30): successful responses per second, median response time and time to first byte, ms. */
  rps: number
  p50Ms: number
  ttfbP50Ms: number
  /** Concurrency 1: median response time and median time to first byte (the first token's event), ms. */
  c1P50Ms: number
  c1TtfbP50Ms: number
  /** CPU time per successful request at concurrency `concurrency`, ms, of each node and their sum (null without /proc). */
  cpuPerRequestMs: { client: number | null; proxy: number | null; worker: number | null; stack: number | null }
}

/**
 * The added cost of end-to-end encryption (issue 13): the same load through the same proxy and worker, once
 * through the devnet's client node (E2EE on, the default) and once through a second client node with
 * `e2ee: "off"`, alternating in one run. `on` is the same runs as `overhead.network`.
 * Targets: ratioRps ≥ 0.95 and addedC1P50Ms ≤ 0.3.
 */
export interface E2eeFigures {
  concurrency: number
  on: E2eeSide
  off: E2eeSide
  /** on.rps / off.rps */
  ratioRps: number
  /** on.c1P50Ms - off.c1P50Ms */
  addedC1P50Ms: number
  /** on.c1TtfbP50Ms - off.c1TtfbP50Ms */
  addedC1TtfbP50Ms: number
  /** on.cpuPerRequestMs.stack - off.cpuPerRequestMs.stack (null if either is) */
  addedCpuPerRequestMs: number | null
}

export interface OpFees {
  /** Compute gas of the op's contract transactions. */
  gas: number
  /** Everything the op burnt, nanoTON. */
  feeNano: number
}

export interface BenchResult {
  version: 1
  /** ISO 8601, when the run started. */
  date: string
  machine: { cpus: number; memGiB: number; node: string }
  quick: boolean
  overhead: {
    concurrency: number
    direct: LoadFigures
    network: LoadFigures
    /** network.rps / direct.rps */
    ratioRps: number
    /** network.p50Ms - direct.p50Ms */
    addedP50Ms: number
    c1: { directP50Ms: number; networkP50Ms: number; addedP50Ms: number }
    /** Peak resident memory of each node process over its life up to the end of the load runs. */
    peakRssMiB: { client: number | null; proxy: number | null; worker: number | null }
    /** Resident memory of each process of the network once started, before any load (null: no /proc, or no chain). Target for the devnet supervisor: ≤ 60 MiB. */
    idleRssMiB: { supervisor: number | null; chain: number | null; client: number | null; proxy: number | null; worker: number | null }
    /** CPU time per request of each process at concurrency `concurrency`, from /proc/PID/stat over the load windows. */
    cpuPerRequestMs: { direct: DirectCpu; network: NetworkCpu }
  }
  /** End-to-end encryption on vs off, side by side (see E2eeFigures). */
  e2ee: E2eeFigures
  handshake: {
    simulated: { perSec: number; p50Ms: number }
    tdxCold: { p50Ms: number | null }
    tdxCached: { p50Ms: number | null }
  }
  inference: {
    directTokPerSec: number
    networkTokPerSec: number
    /** networkTokPerSec / directTokPerSec */
    ratio: number
    concurrent4: { directTokPerSec: number; networkTokPerSec: number }
  }
  /** One entry per contract operation ("client.charge", ...), plus the amortised cost per request. */
  fees: { [operation: string]: OpFees | number | null; perRequestAmortisedNano: number | null }
  /** The receipt log at `count` receipts (1,000,000 in full and quick runs): append, commit and proof costs. */
  receipts: {
    count: number
    /** Mean wall time of one append to the Merkle structure, µs. */
    appendUs: number
    /** CPU time of one state commit's receipt part (root + message), median and worst of 20, ms. */
    commitCpuMs: number
    commitCpuMaxMs: number
    /** Wall time to build and serialize one receipt's Merkle proof, ms. */
    proofP50Ms: number
    proofP99Ms: number
    /** Wall time to check one proof against the root, ms. */
    verifyP50Ms: number
    proofMaxBytes: number
    /** Rebuilding the structure from `count` stored receipt hashes (a proxy restart), ms. */
    rebuildMs: number
    /** Memory the structure holds, MiB. */
    memMiB: number
  }
  /** `cocoon bench --scale` only (see ScaleResult); absent from the other runs. */
  scale?: ScaleFigures
  /** Why a figure is null, and anything else a reader must know to interpret this run. */
  notes: string[]
}

/**
 * The `scale` section: one proxy, `workers` simulated workers (one process, each with its own attested
 * session and a FAKE backend, in speed tiers), `streams` concurrent streaming requests through it.
 */
export interface ScaleFigures {
  workers: number
  /** Streams opened at once in the measured wave. */
  streams: number
  /** Attested client sessions the streams were spread over. */
  clientSessions: number
  /** Slots each worker advertises (maxActiveRequests). */
  workerSlots: number
  /** Chunks of each answer. */
  chunks: number
  /** Time to connect every worker (identities, attested handshakes, worker info), s. */
  connectSec: number
  /** The machine's 1-minute load average at the end of the measured wave (wall-time figures suffer when it exceeds the CPUs). */
  loadAvg1m: number
  /** Streams of the measured wave that ended with a complete answer, and the rest. */
  succeeded: number
  failed: number
  /** Wall time of the measured wave, from the first stream opened to the last one ended, s. */
  wallSec: number
  /** selectWorker wall time in the proxy process, µs, over its newest decisions (up to 65,536). Target: ≤ 50 µs. */
  routing: { decisions: number; workers: number; p50Us: number; p99Us: number; maxUs: number }
  /** Proxy RSS added per idle worker session, KiB (null without /proc). Target: ≤ 100 KiB. */
  idleSessionKiB: number | null
  /** Proxy CPU time per successful request over the measured wave, ms (null without /proc). */
  proxyCpuPerRequestMs: number | null
  proxyPeakRssMiB: number | null
  /** Per speed tier: its pause before each chunk, its workers, and the measured wave's requests it served. */
  tiers: Array<{ name: string; chunkDelayMs: number; workers: number; requests: number }>
  /** Share of the measured wave's requests that the fastest tier served (0..1), and its share of the workers. */
  fastestTierShare: number
  fastestTierWorkerShare: number
}

/** What `cocoon bench --scale` writes: the common head, the `scale` section, the notes. */
export type ScaleResult = Pick<BenchResult, 'version' | 'date' | 'machine' | 'notes'> & { scale: ScaleFigures }

/** Tolerance for the derived figures, which are computed from the rounded ones. */
const RATIO_TOLERANCE = 0.002
const MS_TOLERANCE = 0.002

/**
 * Checks that `r` has every field of BenchResult with the right type, and that the derived
 * figures agree with the ones they are derived from. Returns the problems found (none: valid).
 */
export function checkBenchResult(r: unknown): string[] {
  const problems: string[] = []
  const at = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), r)
  const num = (path: string, nullable = false) => {
    const v = at(path)
    if (v === null && nullable) return
    if (typeof v !== 'number' || !Number.isFinite(v)) problems.push(`${path} must be a finite number${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`)
  }
  if (at('version') !== 1) problems.push('version must be 1')
  const date = at('date')
  if (typeof date !== 'string' || Number.isNaN(Date.parse(date))) problems.push('date must be an ISO 8601 string')
  for (const k of ['cpus', 'memGiB']) num(`machine.${k}`)
  if (typeof at('machine.node') !== 'string') problems.push('machine.node must be a string')
  if (typeof at('quick') !== 'boolean') problems.push('quick must be a boolean')

  num('overhead.concurrency')
  for (const side of ['direct', 'network']) for (const k of ['rps', 'p50Ms', 'p99Ms', 'ttfbP50Ms']) num(`overhead.${side}.${k}`)
  for (const k of ['ratioRps', 'addedP50Ms', 'c1.directP50Ms', 'c1.networkP50Ms', 'c1.addedP50Ms']) num(`overhead.${k}`)
  for (const k of ['client', 'proxy', 'worker']) num(`overhead.peakRssMiB.${k}`, true)
  for (const k of ['supervisor', 'chain', 'client', 'proxy', 'worker']) num(`overhead.idleRssMiB.${k}`, true)
  for (const k of ['backend', 'loadGenerator']) num(`overhead.cpuPerRequestMs.direct.${k}`, true)
  for (const k of ['client', 'proxy', 'worker', 'stack', 'backend', 'loadGenerator']) num(`overhead.cpuPerRequestMs.network.${k}`, true)

  num('e2ee.concurrency')
  for (const side of ['on', 'off']) {
    for (const k of ['rps', 'p50Ms', 'ttfbP50Ms', 'c1P50Ms', 'c1TtfbP50Ms']) num(`e2ee.${side}.${k}`)
    for (const k of ['client', 'proxy', 'worker', 'stack']) num(`e2ee.${side}.cpuPerRequestMs.${k}`, true)
  }
  for (const k of ['ratioRps', 'addedC1P50Ms', 'addedC1TtfbP50Ms']) num(`e2ee.${k}`)
  num('e2ee.addedCpuPerRequestMs', true)

  num('handshake.simulated.perSec')
  num('handshake.simulated.p50Ms')
  num('handshake.tdxCold.p50Ms', true)
  num('handshake.tdxCached.p50Ms', true)

  for (const k of ['directTokPerSec', 'networkTokPerSec', 'ratio', 'concurrent4.directTokPerSec', 'concurrent4.networkTokPerSec']) num(`inference.${k}`)

  const fees = at('fees')
  if (!fees || typeof fees !== 'object') problems.push('fees must be an object')
  else {
    if (!('perRequestAmortisedNano' in fees)) problems.push('fees.perRequestAmortisedNano is missing')
    num('fees.perRequestAmortisedNano', true)
    // Operation names contain dots ("client.charge"), so they are not looked up by path.
    for (const [op, v] of Object.entries(fees)) {
      if (op === 'perRequestAmortisedNano' || v === null) continue
      for (const k of ['gas', 'feeNano']) {
        const x = (v as Record<string, unknown> | undefined)?.[k]
        if (typeof x !== 'number' || !Number.isFinite(x)) problems.push(`fees["${op}"].${k} must be a finite number, got ${JSON.stringify(x)}`)
      }
    }
  }
  for (const k of ['count', 'appendUs', 'commitCpuMs', 'commitCpuMaxMs', 'proofP50Ms', 'proofP99Ms', 'verifyP50Ms', 'proofMaxBytes', 'rebuildMs', 'memMiB']) num(`receipts.${k}`)
  const notes = at('notes')
  if (!Array.isArray(notes) || !notes.every((n) => typeof n === 'string')) problems.push('notes must be an array of strings')
  if (at('scale') !== undefined) problems.push(...checkScaleFigures(at('scale')))
  if (problems.length > 0) return problems

  const b = r as BenchResult
  const near = (a: number, e: number, tol: number) => Math.abs(a - e) <= tol * Math.max(1, Math.abs(e))
  const o = b.overhead
  if (!near(o.ratioRps, o.network.rps / o.direct.rps, RATIO_TOLERANCE)) problems.push(`overhead.ratioRps ${o.ratioRps} is not network.rps/direct.rps = ${o.network.rps / o.direct.rps}`)
  if (!near(o.addedP50Ms, o.network.p50Ms - o.direct.p50Ms, MS_TOLERANCE)) problems.push(`overhead.addedP50Ms ${o.addedP50Ms} is not network.p50Ms - direct.p50Ms`)
  if (!near(o.c1.addedP50Ms, o.c1.networkP50Ms - o.c1.directP50Ms, MS_TOLERANCE)) problems.push('overhead.c1.addedP50Ms is not networkP50Ms - directP50Ms')
  const cpu = o.cpuPerRequestMs.network
  if (cpu.stack !== null && cpu.client !== null && cpu.proxy !== null && cpu.worker !== null && !near(cpu.stack, cpu.client + cpu.proxy + cpu.worker, MS_TOLERANCE)) {
    problems.push('overhead.cpuPerRequestMs.network.stack is not client + proxy + worker')
  }
  const e = b.e2ee
  if (!near(e.ratioRps, e.on.rps / e.off.rps, RATIO_TOLERANCE)) problems.push(`e2ee.ratioRps ${e.ratioRps} is not on.rps/off.rps = ${e.on.rps / e.off.rps}`)
  if (!near(e.addedC1P50Ms, e.on.c1P50Ms - e.off.c1P50Ms, MS_TOLERANCE)) problems.push('e2ee.addedC1P50Ms is not on.c1P50Ms - off.c1P50Ms')
  if (!near(e.addedC1TtfbP50Ms, e.on.c1TtfbP50Ms - e.off.c1TtfbP50Ms, MS_TOLERANCE)) problems.push('e2ee.addedC1TtfbP50Ms is not on.c1TtfbP50Ms - off.c1TtfbP50Ms')
  for (const side of [e.on, e.off]) {
    const c = side.cpuPerRequestMs
    if (c.stack !== null && c.client !== null && c.proxy !== null && c.worker !== null && !near(c.stack, c.client + c.proxy + c.worker, MS_TOLERANCE)) problems.push('an e2ee cpuPerRequestMs.stack is not client + proxy + worker')
    if (side.rps <= 0) problems.push('an e2ee requests/s figure is not positive')
  }
  const stacks = [e.on.cpuPerRequestMs.stack, e.off.cpuPerRequestMs.stack]
  if (stacks.every((x) => x !== null) ? e.addedCpuPerRequestMs === null || !near(e.addedCpuPerRequestMs, stacks[0]! - stacks[1]!, MS_TOLERANCE) : e.addedCpuPerRequestMs !== null) {
    problems.push('e2ee.addedCpuPerRequestMs is not on.cpuPerRequestMs.stack - off.cpuPerRequestMs.stack')
  }
  const inf = b.inference
  if (!near(inf.ratio, inf.networkTokPerSec / inf.directTokPerSec, RATIO_TOLERANCE)) problems.push('inference.ratio is not networkTokPerSec / directTokPerSec')
  for (const side of [o.direct, o.network]) {
    if (side.p99Ms < side.p50Ms) problems.push('a p99 is below its p50')
    if (side.rps <= 0) problems.push('a requests/s figure is not positive')
  }
  return problems
}

/** Checks a `cocoon bench --scale` result: the common head, every field of `scale`, and that its counts add up. */
export function checkScaleResult(r: unknown): string[] {
  const o = (r && typeof r === 'object' ? r : {}) as Record<string, unknown>
  const problems: string[] = []
  if (o.version !== 1) problems.push('version must be 1')
  if (typeof o.date !== 'string' || Number.isNaN(Date.parse(o.date))) problems.push('date must be an ISO 8601 string')
  const m = o.machine as Record<string, unknown> | undefined
  if (!m || typeof m.cpus !== 'number' || typeof m.memGiB !== 'number' || typeof m.node !== 'string') problems.push('machine must have cpus, memGiB and node')
  if (!Array.isArray(o.notes) || !o.notes.every((n) => typeof n === 'string')) problems.push('notes must be an array of strings')
  problems.push(...checkScaleFigures(o.scale))
  return problems
}

function checkScaleFigures(v: unknown): string[] {
  const problems: string[] = []
  if (!v || typeof v !== 'object') return ['scale must be an object']
  const s = v as Record<string, unknown>
  const num = (path: string, nullable = false) => {
    const x = path.split('.').reduce<unknown>((a, k) => (a && typeof a === 'object' ? (a as Record<string, unknown>)[k] : undefined), s)
    if (x === null && nullable) return
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) problems.push(`scale.${path} must be a non-negative number${nullable ? ' or null' : ''}, got ${JSON.stringify(x)}`)
  }
  for (const k of ['workers', 'streams', 'clientSessions', 'workerSlots', 'chunks', 'connectSec', 'loadAvg1m', 'succeeded', 'failed', 'wallSec', 'fastestTierShare', 'fastestTierWorkerShare']) num(k)
  for (const k of ['decisions', 'workers', 'p50Us', 'p99Us', 'maxUs']) num(`routing.${k}`)
  for (const k of ['idleSessionKiB', 'proxyCpuPerRequestMs', 'proxyPeakRssMiB']) num(k, true)
  const tiers = s.tiers
  if (!Array.isArray(tiers) || tiers.length === 0) problems.push('scale.tiers must be a non-empty array')
  else
    tiers.forEach((t: Record<string, unknown>, i) => {
      if (typeof t?.name !== 'string') problems.push(`scale.tiers[${i}].name must be a string`)
      for (const k of ['chunkDelayMs', 'workers', 'requests']) if (typeof t?.[k] !== 'number' || (t[k] as number) < 0) problems.push(`scale.tiers[${i}].${k} must be a non-negative number`)
    })
  if (problems.length > 0) return problems
  const f = v as ScaleFigures
  if (f.succeeded + f.failed !== f.streams) problems.push('scale.succeeded + scale.failed is not scale.streams')
  if (f.tiers.reduce((n, t) => n + t.workers, 0) !== f.workers) problems.push('the tiers\' workers do not add up to scale.workers')
  if (f.fastestTierShare > 1 || f.fastestTierWorkerShare > 1) problems.push('a share is above 1')
  if (f.routing.p99Us < f.routing.p50Us || f.routing.maxUs < f.routing.p99Us) problems.push('scale.routing percentiles are out of order')
  return problems
}
