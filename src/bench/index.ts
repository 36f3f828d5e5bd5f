// `cocoon bench`: protocol overhead, attested handshakes, inference and on-chain fees, direct and through the network, in one run.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { BENCH_PLANS, BENCH_RESULT_VERSION, DEFAULT_FEE_REPORT_FILE, DEFAULT_OUT_FILE, DEFAULT_SOAK_OUT_FILE, DEFAULT_SCALE_OUT_FILE, FAKE_CHUNK_BYTES, FAKE_CHUNK_COUNT, FAKE_CHUNK_DELAY_MS, FAKE_PROMPT_TOKENS, type BenchMode } from './constants.ts'
import { measureFees } from './fees.ts'
import { measureHandshakes } from './handshake.ts'
import { measureInference } from './inference.ts'
import { startBenchNetwork } from './network.ts'
import { measureOverhead } from './overhead.ts'
import { measureReceipts } from './receipts.ts'
import { benchWorkDir, rssMiB, spawnCocoon } from './procs.ts'
import { renderMarkdown } from './report.ts'
import { checkBenchResult, type BenchResult } from './schema.ts'
import { round } from './stats.ts'
import { sleep } from '../core/time.ts'

export { checkBenchResult, checkScaleResult, type BenchResult, type E2eeFigures, type ScaleResult, type ScaleFigures } from './schema.ts'
export { renderMarkdown, renderScaleMarkdown, BENCH_TARGETS } from './report.ts'
export { runScale, type ScaleOptions } from './scale.ts'
export { startFakeBackend, type FakeBackend, type FakeBackendOptions } from './fake-backend.ts'
export { BENCH_PLANS, type BenchMode, type BenchPlan } from './constants.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const FAKE_BACKEND_READY_MS = 30_000
/** Issue 12's scale for the receipt log's commit and proof costs. */
const RECEIPTS_AT_SCALE = 1_000_000

export interface BenchOptions {
  /** full (under 10 min on 2 cores), quick (under 2), smoke (seconds; for the test suite). Default full. */
  mode?: BenchMode
  /** The fake backend's answer: chunks (default 50), bytes per chunk (128), ms between chunks (0). */
  workload?: { chunks?: number; chunkBytes?: number; delayMs?: number }
  /** Devnet model spec. Default the devnet's (stories260K, found through COCOON_MODELS). */
  model?: string
  /** Run the devnet without its chain, so without payments. Default false. */
  noChain?: boolean
  /** TDX fixtures folder. Default COCOON_TDX_FIXTURES, else ../shared/fixtures/tdx beside the checkout. */
  tdxFixturesDir?: string
  /** Contract fee report. Default bench/results/contract-fees.json. */
  feeReportFile?: string
  /** Measure contract fees when the report is missing. Default true. */
  generateFeeReport?: boolean
  /** Where configs and logs of the network go. Default a fresh temporary folder, removed after a successful run. */
  workDir?: string
  /** Keep the work folder after a successful run. Default false. */
  keepWorkDir?: boolean
  /** Progress lines. Default: to stderr. */
  say?: (line: string) => void
}

/** Runs every benchmark and returns the result (it does not print or write it). */
export async function runBenchmarks(o: BenchOptions = {}): Promise<BenchResult> {
  const mode = o.mode ?? 'full'
  const plan = BENCH_PLANS[mode]
  const say = o.say ?? ((line: string) => process.stderr.write(`[bench] ${line}\n`))
  const date = new Date().toISOString()
  const { workDir, logDir } = benchWorkDir(o.workDir, 'cocoon-bench-')
  const notes: string[] = []
  if (mode === 'smoke') notes.push('smoke run: runs of a few seconds, only to check the harness; the figures mean little')

  const w = { chunks: o.workload?.chunks ?? FAKE_CHUNK_COUNT, chunkBytes: o.workload?.chunkBytes ?? FAKE_CHUNK_BYTES, delayMs: o.workload?.delayMs ?? FAKE_CHUNK_DELAY_MS }
  if (w.chunks !== FAKE_CHUNK_COUNT || w.chunkBytes !== FAKE_CHUNK_BYTES || w.delayMs !== FAKE_CHUNK_DELAY_MS) {
    notes.push(`workload: ${w.chunks} chunks of ${w.chunkBytes} B, ${w.delayMs} ms apart (not the default ${FAKE_CHUNK_COUNT} x ${FAKE_CHUNK_BYTES} B, ${FAKE_CHUNK_DELAY_MS} ms)`)
  }
  say(`starting the fake backend (${w.chunks} chunks of ${w.chunkBytes} B, ${w.delayMs} ms apart)`)
  const backendArgs = ['bench', 'fake-backend', '--chunks', String(w.chunks), '--chunk-bytes', String(w.chunkBytes), '--delay-ms', String(w.delayMs)]
  const backend = spawnCocoon('fake-backend', backendArgs, path.join(logDir, 'fake-backend.log'))
  let ok = false
  try {
    const backendUrl = (await backend.waitForLine(/^\{"url":"([^"]+)"\}$/m, FAKE_BACKEND_READY_MS))[1]
    const network = await startBenchNetwork({ backendUrl, dir: workDir, model: o.model, noChain: o.noChain, say })
    let overhead: BenchResult['overhead']
    let e2ee: BenchResult['e2ee']
    let inference: BenchResult['inference']
    try {
      notes.push(
        network.hasChain
          ? 'network: the devnet ran with its chain, so payments (admission, billing, settlement) were in the measured path'
          : 'network: the devnet ran no chain, so the measured path had metering (signed usage) but no payments',
      )
      const ov = await measureOverhead({
        directUrl: backendUrl,
        networkUrl: network.clientUrl,
        plainUrl: network.plainClientUrl,
        model: network.upstreamModel,
        chunks: w.chunks,
        plan,
        pids: { ...network.pids, backend: backend.pid },
        idleRssMiB: await idleRss(network.processes(), network.pids.worker, plan.idleSettleSec, say),
        receiptBacklog: () => network.receiptBacklog(),
        say,
      })
      overhead = ov.overhead
      e2ee = ov.e2ee
      notes.push(...ov.notes)
      const inf = await measureInference({ clientUrl: network.clientUrl, modelId: network.llama.modelId, backend: network.llama.backend, plan, say })
      inference = inf.inference
      notes.push(...inf.notes)
    } finally {
      say('stopping the network')
      await network.stop()
    }
    await backend.stop()

    const hs = await measureHandshakes({ plan, tdxFixturesDir: o.tdxFixturesDir ?? process.env.COCOON_TDX_FIXTURES ?? path.resolve(ROOT, '..', 'shared', 'fixtures', 'tdx'), say })
    notes.push(...hs.notes)
    const fees = await measureFees({
      reportFile: o.feeReportFile ?? DEFAULT_FEE_REPORT_FILE,
      generate: o.generateFeeReport ?? true,
      request: { promptTokens: FAKE_PROMPT_TOKENS, completionTokens: w.chunks },
      say,
    })
    notes.push(...fees.notes)
    const rc = measureReceipts({ count: mode === 'smoke' ? 20_000 : RECEIPTS_AT_SCALE, proofs: mode === 'smoke' ? 50 : 1000, say })
    notes.push(...rc.notes)
    ok = true
    return {
      version: BENCH_RESULT_VERSION,
      date,
      machine: { cpus: os.cpus().length, memGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version },
      quick: mode !== 'full',
      overhead,
      e2ee,
      handshake: hs.handshake,
      inference,
      fees: fees.fees,
      receipts: rc.receipts,
      notes,
    }
  } finally {
    await backend.stop()
    if (ok && !o.keepWorkDir && !o.workDir) fs.rmSync(workDir, { recursive: true, force: true })
    else say(`configs and logs kept in ${workDir}`)
  }
}

/** Writes `result` as JSON to `file`, creating its folder. */
export function writeResult(file: string, result: BenchResult): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true })
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
}

/**
 * The command line: `cocoon bench [--quick] [--out FILE] [--chunks N] [--chunk-bytes B]
 * [--chunk-delay-ms D] [--model SPEC] [--no-chain] [--tdx-fixtures DIR] [--fee-report FILE] [--keep]`,
 * `cocoon bench --scale [--workers N] [--streams N] [--out FILE] [--keep]` (scale.ts), `cocoon bench --soak MINUTES [--out FILE] [--keep]`
 * (soak.ts), or
 * `cocoon bench fake-backend [...]` / `cocoon bench scale-workers [...]` to run a helper process alone.
 */
export async function runBench(args: string[]): Promise<void> {
  if (args[0] === 'fake-backend') {
    const { runFakeBackendCommand } = await import('./fake-backend.ts')
    return runFakeBackendCommand(args.slice(1))
  }
  if (args[0] === 'scale-workers') {
    const { runScaleWorkersCommand } = await import('./scale-workers.ts')
    return runScaleWorkersCommand(args.slice(1))
  }

  const { values } = parseArgs({
    args,
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string', default: DEFAULT_OUT_FILE },
      chunks: { type: 'string' },
      'chunk-bytes': { type: 'string' },
      'chunk-delay-ms': { type: 'string' },
      model: { type: 'string' },
      'no-chain': { type: 'boolean', default: false },
      'tdx-fixtures': { type: 'string' },
      'fee-report': { type: 'string' },
      keep: { type: 'boolean', default: false },
      soak: { type: 'string' },
      scale: { type: 'boolean', default: false },
      workers: { type: 'string' },
      streams: { type: 'string' },
    },
    strict: true,
  })
  // Children get SIGTERM from the exit hook in procs.ts; the devnet then stops its own nodes.
  process.once('SIGINT', () => process.exit(130))
  process.once('SIGTERM', () => process.exit(143))
  const started = Date.now()
  if (!values.scale && (values.workers !== undefined || values.streams !== undefined)) throw Object.assign(new Error('--workers and --streams go with --scale'), { name: 'UsageError' })
  if (values.scale) {
    const { runScale } = await import('./scale.ts')
    const { renderScaleMarkdown } = await import('./report.ts')
    const { checkScaleResult } = await import('./schema.ts')
    const result = await runScale({ workers: intOption('workers', values.workers, 1), streams: intOption('streams', values.streams, 1), keepWorkDir: values.keep })
    const out = values.out === DEFAULT_OUT_FILE ? DEFAULT_SCALE_OUT_FILE : values.out!
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true })
    fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
    process.stdout.write(renderScaleMarkdown(result))
    process.stdout.write(`\nWrote ${out} (${Math.round((Date.now() - started) / 1000)} s).\n`)
    const problems = checkScaleResult(result)
    if (problems.length > 0) {
      process.stderr.write(`cocoon bench --scale: the result does not match its schema:\n${problems.map((p) => `  ${p}`).join('\n')}\n`)
      process.exitCode = 1
    }
    return
  }
  if (values.soak !== undefined) {
    const minutes = intOption('soak', values.soak, 1)!
    const { runSoak, renderSoakMarkdown } = await import('./soak.ts')
    const soak = await runSoak({ minutes, model: values.model, noChain: values['no-chain'], keepWorkDir: values.keep })
    const out = values.out === DEFAULT_OUT_FILE ? DEFAULT_SOAK_OUT_FILE : values.out!
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true })
    fs.writeFileSync(out, JSON.stringify(soak, null, 2) + '\n')
    process.stdout.write(renderSoakMarkdown(soak))
    process.stdout.write(`\nWrote ${out} (${Math.round((Date.now() - started) / 1000)} s).\n`)
    return
  }
  const result = await runBenchmarks({
    mode: values.quick ? 'quick' : 'full',
    workload: { chunks: intOption('chunks', values.chunks, 1), chunkBytes: intOption('chunk-bytes', values['chunk-bytes'], 1), delayMs: intOption('chunk-delay-ms', values['chunk-delay-ms'], 0) },
    model: values.model,
    noChain: values['no-chain'],
    tdxFixturesDir: values['tdx-fixtures'],
    feeReportFile: values['fee-report'],
    keepWorkDir: values.keep,
  })
  writeResult(values.out!, result)
  process.stdout.write(renderMarkdown(result))
  process.stdout.write(`\nWrote ${values.out} (${Math.round((Date.now() - started) / 1000)} s).\n`)
  const problems = checkBenchResult(result)
  if (problems.length > 0) {
    process.stderr.write(`cocoon bench: the result does not match its schema:\n${problems.map((p) => `  ${p}`).join('\n')}\n`)
    process.exitCode = 1
  }
}

function intOption(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw Object.assign(new Error(`--${name} must be an integer >= ${min}`), { name: 'UsageError' })
  return n
}

/**
 * Resident memory of the network's supervisor, chain and nodes (the worker: the one the load runs through), MiB,
 * after `settleSec` of quiet: the smallest of one read a second over the last half of that time.
 */
async function idleRss(procs: Record<string, number | null>, worker: number, settleSec: number, say: (line: string) => void): Promise<BenchResult['overhead']['idleRssMiB']> {
  say(`idle memory: letting the network settle for ${settleSec} s`)
  const pids = { supervisor: procs.supervisor, chain: procs.chain, client: procs.client, proxy: procs.proxy, worker }
  const least: Partial<Record<keyof typeof pids, number>> = {}
  await sleep((settleSec * 1000) / 2)
  for (let i = 0, reads = Math.max(1, Math.round(settleSec / 2)); i < reads; i++) {
    if (i > 0) await sleep(1000)
    for (const [k, pid] of Object.entries(pids) as Array<[keyof typeof pids, number | null | undefined]>) {
      const v = pid ? rssMiB(pid) : null
      if (v !== null) least[k] = Math.min(v, least[k] ?? Infinity)
    }
  }
  const at = (k: keyof typeof pids) => (least[k] === undefined ? null : round(least[k], 1))
  return { supervisor: at('supervisor'), chain: at('chain'), client: at('client'), proxy: at('proxy'), worker: at('worker') }
}
