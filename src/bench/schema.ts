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
    /** CPU time per request of each process at concurrency `concurrency`, from /proc/PID/stat over the load windows. */
    cpuPerRequestMs: { direct: DirectCpu; network: NetworkCpu }
  }
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
  /** Why a figure is null, and anything else a reader must know to interpret this run. */
  notes: string[]
}

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
  for (const k of ['backend', 'loadGenerator']) num(`overhead.cpuPerRequestMs.direct.${k}`, true)
  for (const k of ['client', 'proxy', 'worker', 'stack', 'backend', 'loadGenerator']) num(`overhead.cpuPerRequestMs.network.${k}`, true)

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
  const inf = b.inference
  if (!near(inf.ratio, inf.networkTokPerSec / inf.directTokPerSec, RATIO_TOLERANCE)) problems.push('inference.ratio is not networkTokPerSec / directTokPerSec')
  for (const side of [o.direct, o.network]) {
    if (side.p99Ms < side.p50Ms) problems.push('a p99 is below its p50')
    if (side.rps <= 0) problems.push('a requests/s figure is not positive')
  }
  return problems
}
