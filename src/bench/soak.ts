// `cocoon bench --soak MINUTES`: 100 concurrent streams through the network for MINUTES, the openai-backed
// worker restarted every minute, the resident memory of every process sampled every 10 s, and the slope of
// each after the warm-up. A node that keeps state per request or per link it no longer needs shows a slope.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BENCH_UPSTREAM_MODEL, FAKE_CHUNK_BYTES, FAKE_CHUNK_COUNT } from './constants.ts'
import { runLoad, type LoadRun } from './load.ts'
import { startBenchNetwork } from './network.ts'
import { overheadRequestBody } from './overhead.ts'
import { benchWorkDir, rssMiB, spawnCocoon } from './procs.ts'
import { round } from './stats.ts'

export const SOAK_CONCURRENCY = 100
export const SOAK_SAMPLE_INTERVAL_SEC = 10
export const SOAK_WORKER_RESTART_SEC = 60
/** The target: resident memory flat after the warm-up, at most this many MiB per minute. */
export const SOAK_MAX_SLOPE_MIB_PER_MIN = 1
/**
 * Paid into the client node's wallet each minute: 100 streams spend a few TON a minute, more than the devnet's
 * 20 TON last, and a client out of funds gets 402s that the soak would count as failures of the network.
 */
export const SOAK_CLIENT_FUNDING_PER_MIN_NANO = 20n * 1_000_000_000n
const FAKE_BACKEND_READY_MS = 30_000

export interface SoakResult {
  version: 1
  kind: 'soak'
  date: string
  machine: { cpus: number; memGiB: number; node: string }
  minutes: number
  concurrency: number
  workerRestarts: number
  /** Samples before this second are the warm-up, left out of the slopes. */
  warmupSec: number
  /** Resident memory (VmRSS) of each process, MiB, every SOAK_SAMPLE_INTERVAL_SEC; null when it could not be read. */
  samples: Array<{ tSec: number; rssMiB: Record<string, number | null> }>
  /** Least-squares slope of each process's memory after the warm-up, MiB per minute; null with fewer than 3 samples. */
  slopeMiBPerMin: Record<string, number | null>
  targetMaxSlopeMiBPerMin: number
  /** `failedByStatus`: the non-2xx answers by HTTP status (503 while the worker restarts; a 402 would be the client out of funds). */
  requests: { ok: number; failed: number; errors: number; failedByStatus?: Record<string, number> }
  notes: string[]
}

export interface SoakOptions {
  minutes: number
  /** Where configs and logs go. Default a fresh temporary folder, removed after a successful run. */
  workDir?: string
  /** Keep the temporary folder (configs and every node's log) after a successful run too. */
  keepWorkDir?: boolean
  model?: string
  noChain?: boolean
  say?: (line: string) => void
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const say = o.say ?? ((line: string) => process.stderr.write(`[soak] ${line}\n`))
  const date = new Date().toISOString()
  const { workDir, logDir } = benchWorkDir(o.workDir, 'cocoon-soak-')
  const notes: string[] = []
  const backend = spawnCocoon('fake-backend', ['bench', 'fake-backend'], path.join(logDir, 'fake-backend.log'))
  let ok = false
  try {
    const backendUrl = (await backend.waitForLine(/^\{"url":"([^"]+)"\}$/m, FAKE_BACKEND_READY_MS))[1]
    const network = await startBenchNetwork({ backendUrl, dir: workDir, model: o.model, noChain: o.noChain, say })
    const samples: SoakResult['samples'] = []
    let restarts = 0
    let load: LoadRun
    try {
      const t0 = Date.now()
      const sample = () => {
        const rss: Record<string, number | null> = {}
        for (const [name, pid] of Object.entries({ ...network.processes(), 'fake-backend': backend.pid })) {
          const v = pid === null ? null : rssMiB(pid)
          rss[name] = v === null ? null : round(v, 1)
        }
        samples.push({ tSec: Math.round((Date.now() - t0) / 1000), rssMiB: rss })
      }
      sample()
      const sampler = setInterval(sample, SOAK_SAMPLE_INTERVAL_SEC * 1000)
      let restarting: Promise<unknown> = Promise.resolve()
      const restarter = setInterval(() => {
        restarting = restarting.then(async () => {
          say(`restarting the worker (${restarts + 1})`)
          await network.fundClient(SOAK_CLIENT_FUNDING_PER_MIN_NANO)
          await network.restartWorker()
          restarts++
        }).catch((err: Error) => notes.push(`a worker restart failed: ${err.message}`))
      }, SOAK_WORKER_RESTART_SEC * 1000)
      say(`${SOAK_CONCURRENCY} concurrent streams for ${o.minutes} min; a worker restart every ${SOAK_WORKER_RESTART_SEC} s; memory every ${SOAK_SAMPLE_INTERVAL_SEC} s`)
      try {
        load = await runLoad({ url: `${network.clientUrl}/v1/chat/completions`, body: overheadRequestBody(BENCH_UPSTREAM_MODEL, FAKE_CHUNK_COUNT), connections: SOAK_CONCURRENCY, durationSec: o.minutes * 60 })
      } finally {
        clearInterval(sampler)
        clearInterval(restarter)
        await restarting
      }
      sample()
    } finally {
      say('stopping the network')
      await network.stop()
    }
    const warmupSec = Math.min(120, Math.round((o.minutes * 60) / 3))
    const slopeMiBPerMin: Record<string, number | null> = {}
    for (const name of Object.keys(samples[0].rssMiB)) {
      const pts = samples.filter((s) => s.tSec >= warmupSec && s.rssMiB[name] !== null).map((s) => [s.tSec / 60, s.rssMiB[name]!] as const)
      slopeMiBPerMin[name] = pts.length < 3 ? null : round(slope(pts), 3)
    }
    notes.push(`workload: the fake backend's ${FAKE_CHUNK_COUNT} chunks of ${FAKE_CHUNK_BYTES} B per answer, streamed`)
    notes.push('worker-openai is the worker restarted every minute: its slope spans several processes, so it says least; the other nodes live through every restart')
    if (load.failed + load.errors > 0) notes.push(`${load.failed} non-2xx answers and ${load.errors} errors, expected while the only worker of the model restarts`)
    ok = true
    return {
      version: 1,
      kind: 'soak',
      date,
      machine: { cpus: os.cpus().length, memGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version },
      minutes: o.minutes,
      concurrency: SOAK_CONCURRENCY,
      workerRestarts: restarts,
      warmupSec,
      samples,
      slopeMiBPerMin,
      targetMaxSlopeMiBPerMin: SOAK_MAX_SLOPE_MIB_PER_MIN,
      requests: { ok: load.ok, failed: load.failed, errors: load.errors, failedByStatus: load.failedByStatus },
      notes,
    }
  } finally {
    await backend.stop()
    if (ok && !o.workDir && !o.keepWorkDir) fs.rmSync(workDir, { recursive: true, force: true })
    else say(`configs and logs kept in ${workDir}`)
  }
}

/** Least-squares slope of y over x. */
export function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length
  const mx = points.reduce((a, p) => a + p[0], 0) / n
  const my = points.reduce((a, p) => a + p[1], 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of points) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

export function renderSoakMarkdown(r: SoakResult): string {
  const names = Object.keys(r.slopeMiBPerMin)
  const lines = [
    `Cocoon soak, ${r.date}: ${r.minutes} min, ${r.concurrency} concurrent streams, ${r.workerRestarts} worker restarts; ${r.machine.cpus} CPUs, Node ${r.machine.node}`,
    '',
    `| Process | RSS first, MiB | RSS last, MiB | Slope after ${r.warmupSec} s, MiB/min | ≤ ${r.targetMaxSlopeMiBPerMin} MiB/min |`,
    '|---|---:|---:|---:|---|',
  ]
  const first = r.samples[0]?.rssMiB ?? {}
  const last = r.samples.at(-1)?.rssMiB ?? {}
  const f = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? 'n/a' : v.toFixed(d))
  for (const n of names) {
    const s = r.slopeMiBPerMin[n]
    lines.push(`| ${n} | ${f(first[n])} | ${f(last[n])} | ${f(s, 3)} | ${s === null ? 'n/a' : s <= r.targetMaxSlopeMiBPerMin ? 'yes' : 'no'} |`)
  }
  const byStatus = Object.entries(r.requests.failedByStatus ?? {}).map(([s, n]) => `${n} × ${s}`).join(', ')
  lines.push('', `Requests: ${r.requests.ok} complete, ${r.requests.failed} non-2xx${byStatus ? ` (${byStatus})` : ''}, ${r.requests.errors} errors.`, '')
  for (const n of r.notes) lines.push(`- ${n}`)
  return lines.join('\n') + '\n'
}
