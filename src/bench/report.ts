// Renders a bench result as Markdown tables: the figures side by side, the targets, the fees, the notes.
import { OVERHEAD_CONCURRENCY } from './constants.ts'
import type { BenchResult, OpFees, ScaleResult } from './schema.ts'

/** The targets of issue 6; goals to compare against, never test assertions. */
export const BENCH_TARGETS = {
  minRatioRps: 0.5,
  maxAddedP50MsAtC1: 2,
  maxTdxCachedHandshakeMs: 5,
  minInferenceRatio: 0.9,
  /** Issue 12: at 1,000,000 receipts. */
  maxReceiptCommitCpuMs: 1000,
  maxReceiptProofMs: 50,
  /** Issue 14, at 1,000 workers: selectWorker time in the proxy (median and p99), and proxy memory per idle worker session. */
  maxRoutingUs: 50,
  maxIdleSessionKiB: 100,
  /** Issue 13: E2EE on vs off, throughput ratio and added p50 at concurrency 1. */
  minE2eeRatioRps: 0.95,
  maxE2eeAddedC1P50Ms: 0.3,
  /** Issue 10: the devnet supervisor's resident memory, started and idle. */
  maxSupervisorIdleRssMiB: 60,
}

const fmt = (v: number | null | undefined, digits = 1): string => (v === null || v === undefined ? 'n/a' : v.toFixed(digits))
const signed = (v: number, digits = 2): string => `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`

export function renderMarkdown(r: BenchResult): string {
  const o = r.overhead
  const inf = r.inference
  const h = r.handshake
  const lines: string[] = []
  lines.push(`Cocoon bench, ${r.date}, ${r.quick ? 'quick' : 'full'} run; ${r.machine.cpus} CPUs, ${fmt(r.machine.memGiB)} GiB, Node ${r.machine.node}`)
  lines.push('')
  lines.push('| Measure | Direct | Network | Network vs direct |')
  lines.push('|---|---:|---:|---:|')
  lines.push(`| Requests/s, concurrency ${o.concurrency} | ${fmt(o.direct.rps)} | ${fmt(o.network.rps)} | ×${o.ratioRps.toFixed(3)} |`)
  lines.push(`| p50 latency, ms, c${o.concurrency} | ${fmt(o.direct.p50Ms, 2)} | ${fmt(o.network.p50Ms, 2)} | ${signed(o.addedP50Ms)} ms |`)
  lines.push(`| p99 latency, ms, c${o.concurrency} | ${fmt(o.direct.p99Ms, 2)} | ${fmt(o.network.p99Ms, 2)} | ${signed(o.network.p99Ms - o.direct.p99Ms)} ms |`)
  lines.push(`| p50 time to first byte, ms, c${o.concurrency} | ${fmt(o.direct.ttfbP50Ms, 2)} | ${fmt(o.network.ttfbP50Ms, 2)} | ${signed(o.network.ttfbP50Ms - o.direct.ttfbP50Ms)} ms |`)
  lines.push(`| p50 latency, ms, concurrency 1 | ${fmt(o.c1.directP50Ms, 3)} | ${fmt(o.c1.networkP50Ms, 3)} | ${signed(o.c1.addedP50Ms, 3)} ms |`)
  lines.push(`| Inference tok/s, 1 stream | ${fmt(inf.directTokPerSec)} | ${fmt(inf.networkTokPerSec)} | ×${inf.ratio.toFixed(3)} |`)
  const c4 = inf.concurrent4
  lines.push(`| Inference tok/s, 4 streams | ${fmt(c4.directTokPerSec)} | ${fmt(c4.networkTokPerSec)} | ×${(c4.networkTokPerSec / c4.directTokPerSec).toFixed(3)} |`)
  lines.push('')
  lines.push('| Process | Idle RSS, MiB (started, before load) | Peak RSS, MiB |')
  lines.push('|---|---:|---:|')
  for (const k of ['supervisor', 'chain'] as const) lines.push(`| ${k === 'supervisor' ? 'devnet supervisor' : k} | ${fmt(o.idleRssMiB[k])} | |`)
  for (const k of ['client', 'proxy', 'worker'] as const) lines.push(`| ${k} | ${fmt(o.idleRssMiB[k])} | ${fmt(o.peakRssMiB[k])} |`)
  lines.push('')
  const cpu = o.cpuPerRequestMs
  lines.push(`| Process | CPU ms per request, direct, c${o.concurrency} | CPU ms per request, network, c${o.concurrency} |`)
  lines.push('|---|---:|---:|')
  for (const k of ['client', 'proxy', 'worker'] as const) lines.push(`| ${k} node | | ${fmt(cpu.network[k], 3)} |`)
  lines.push(`| stack (client + proxy + worker) | | ${fmt(cpu.network.stack, 3)} |`)
  lines.push(`| backend (fake) | ${fmt(cpu.direct.backend, 3)} | ${fmt(cpu.network.backend, 3)} |`)
  lines.push(`| load generator | ${fmt(cpu.direct.loadGenerator, 3)} | ${fmt(cpu.network.loadGenerator, 3)} |`)
  lines.push('')
  const e = r.e2ee
  lines.push(`| End-to-end encryption (same proxy and worker) | E2EE off | E2EE on | On vs off |`)
  lines.push('|---|---:|---:|---:|')
  lines.push(`| Requests/s, concurrency ${e.concurrency} | ${fmt(e.off.rps)} | ${fmt(e.on.rps)} | ×${e.ratioRps.toFixed(3)} |`)
  lines.push(`| p50 latency, ms, c${e.concurrency} | ${fmt(e.off.p50Ms, 2)} | ${fmt(e.on.p50Ms, 2)} | ${signed(e.on.p50Ms - e.off.p50Ms)} ms |`)
  lines.push(`| p50 time to first byte, ms, c${e.concurrency} | ${fmt(e.off.ttfbP50Ms, 2)} | ${fmt(e.on.ttfbP50Ms, 2)} | ${signed(e.on.ttfbP50Ms - e.off.ttfbP50Ms)} ms |`)
  lines.push(`| p50 latency, ms, concurrency 1 | ${fmt(e.off.c1P50Ms, 3)} | ${fmt(e.on.c1P50Ms, 3)} | ${signed(e.addedC1P50Ms, 3)} ms |`)
  lines.push(`| p50 time to first byte, ms, concurrency 1 | ${fmt(e.off.c1TtfbP50Ms, 3)} | ${fmt(e.on.c1TtfbP50Ms, 3)} | ${signed(e.addedC1TtfbP50Ms, 3)} ms |`)
  for (const k of ['client', 'proxy', 'worker', 'stack'] as const) {
    const on = e.on.cpuPerRequestMs[k]
    const off = e.off.cpuPerRequestMs[k]
    lines.push(`| CPU ms per request, ${k === 'stack' ? 'stack (client + proxy + worker)' : `${k} node`}, c${e.concurrency} | ${fmt(off, 3)} | ${fmt(on, 3)} | ${on === null || off === null ? 'n/a' : `${signed(on - off, 3)} ms`} |`)
  }
  lines.push('')
  lines.push('| Attested handshake | p50, ms | per second |')
  lines.push('|---|---:|---:|')
  lines.push(`| simulated evidence | ${fmt(h.simulated.p50Ms, 2)} | ${fmt(h.simulated.perSec)} |`)
  lines.push(`| TDX, cold verification | ${fmt(h.tdxCold.p50Ms, 2)} | |`)
  lines.push(`| TDX, cached verdict | ${fmt(h.tdxCached.p50Ms, 2)} | |`)
  lines.push('')
  lines.push('| Target | Goal | Result | Met |')
  lines.push('|---|---|---:|---|')
  const met = (ok: boolean | null) => (ok === null ? 'n/a' : ok ? 'yes' : 'no')
  const t = BENCH_TARGETS
  lines.push(`| ratioRps (c${OVERHEAD_CONCURRENCY}) | ≥ ${t.minRatioRps} | ${o.ratioRps.toFixed(3)} | ${met(o.ratioRps >= t.minRatioRps)} |`)
  lines.push(`| added p50 at concurrency 1 | ≤ ${t.maxAddedP50MsAtC1} ms | ${o.c1.addedP50Ms.toFixed(3)} ms | ${met(o.c1.addedP50Ms <= t.maxAddedP50MsAtC1)} |`)
  lines.push(`| E2EE on/off requests/s (c${e.concurrency}) | ≥ ${t.minE2eeRatioRps} | ${e.ratioRps.toFixed(3)} | ${met(e.ratioRps >= t.minE2eeRatioRps)} |`)
  lines.push(`| E2EE added p50 at concurrency 1 | ≤ ${t.maxE2eeAddedC1P50Ms} ms | ${e.addedC1P50Ms.toFixed(3)} ms | ${met(e.addedC1P50Ms <= t.maxE2eeAddedC1P50Ms)} |`)
  const sup = o.idleRssMiB.supervisor
  lines.push(`| devnet supervisor, idle RSS | ≤ ${t.maxSupervisorIdleRssMiB} MiB | ${fmt(sup)} MiB | ${met(sup === null ? null : sup <= t.maxSupervisorIdleRssMiB)} |`)
  const cached = h.tdxCached.p50Ms
  lines.push(`| cached TDX handshake | ≤ ${t.maxTdxCachedHandshakeMs} ms | ${fmt(cached, 2)} ms | ${met(cached === null ? null : cached <= t.maxTdxCachedHandshakeMs)} |`)
  lines.push(`| inference ratio | ≥ ${t.minInferenceRatio} | ${inf.ratio.toFixed(3)} | ${met(inf.ratio >= t.minInferenceRatio)} |`)
  const rc = r.receipts
  lines.push(`| receipt commit CPU at ${rc.count} receipts (worst) | ≤ ${t.maxReceiptCommitCpuMs} ms | ${fmt(rc.commitCpuMaxMs, 3)} ms | ${met(rc.commitCpuMaxMs <= t.maxReceiptCommitCpuMs)} |`)
  lines.push(`| receipt proof at ${rc.count} receipts (p99) | ≤ ${t.maxReceiptProofMs} ms | ${fmt(rc.proofP99Ms, 3)} ms | ${met(rc.proofP99Ms <= t.maxReceiptProofMs)} |`)
  lines.push('')
  lines.push(`| Receipt log, ${rc.count} receipts | |`)
  lines.push('|---|---:|')
  lines.push(`| append, µs each | ${fmt(rc.appendUs, 3)} |`)
  lines.push(`| commit (root + message), CPU ms, median / worst | ${fmt(rc.commitCpuMs, 3)} / ${fmt(rc.commitCpuMaxMs, 3)} |`)
  lines.push(`| proof, ms, p50 / p99 | ${fmt(rc.proofP50Ms, 3)} / ${fmt(rc.proofP99Ms, 3)} |`)
  lines.push(`| proof check, ms, p50 | ${fmt(rc.verifyP50Ms, 3)} |`)
  lines.push(`| largest proof, bytes | ${rc.proofMaxBytes} |`)
  lines.push(`| rebuild on restart, ms | ${fmt(rc.rebuildMs)} |`)
  lines.push(`| memory, MiB | ${fmt(rc.memMiB)} |`)
  lines.push('')
  const ops = Object.entries(r.fees).filter((e): e is [string, OpFees] => e[0] !== 'perRequestAmortisedNano' && e[1] !== null && typeof e[1] === 'object')
  if (ops.length > 0) {
    lines.push('| Contract operation | Gas | Fee, nanoTON |')
    lines.push('|---|---:|---:|')
    for (const [op, c] of ops) lines.push(`| ${op} | ${c.gas} | ${c.feeNano} |`)
    lines.push('')
  }
  lines.push(`Amortised on-chain cost per request: ${r.fees.perRequestAmortisedNano === null ? 'n/a' : `${r.fees.perRequestAmortisedNano} nanoTON`}`)
  if (r.notes.length > 0) {
    lines.push('')
    lines.push('Notes:')
    for (const n of r.notes) lines.push(`- ${n}`)
  }
  return lines.join('\n') + '\n'
}

/** The `cocoon bench --scale` result as Markdown: the load, the four figures of issue 14 against their targets, the tiers. */
export function renderScaleMarkdown(r: ScaleResult): string {
  const s = r.scale
  const t = BENCH_TARGETS
  const met = (ok: boolean | null) => (ok === null ? 'n/a' : ok ? 'yes' : 'no')
  const lines: string[] = []
  lines.push(`Cocoon bench --scale, ${r.date}; ${r.machine.cpus} CPUs, ${fmt(r.machine.memGiB)} GiB, Node ${r.machine.node}`)
  lines.push('')
  lines.push(`${s.workers} simulated workers (${s.workerSlots} slots each, connected in ${fmt(s.connectSec)} s); ${s.streams} concurrent streams over ${s.clientSessions} client session(s), ${s.chunks} chunks each`)
  lines.push(`Measured wave: ${s.succeeded} succeeded, ${s.failed} failed, in ${fmt(s.wallSec, 2)} s; load average ${fmt(s.loadAvg1m, 2)} on ${r.machine.cpus} CPUs`)
  lines.push('')
  lines.push('| Measure | Goal | Result | Met |')
  lines.push('|---|---|---:|---|')
  lines.push(`| routing decision, median, at ${s.routing.workers} workers | ≤ ${t.maxRoutingUs} µs | ${fmt(s.routing.p50Us, 2)} µs | ${met(s.routing.p50Us <= t.maxRoutingUs)} |`)
  lines.push(`| routing decision, p99 (of ${s.routing.decisions}) | ≤ ${t.maxRoutingUs} µs | ${fmt(s.routing.p99Us, 2)} µs | ${met(s.routing.p99Us <= t.maxRoutingUs)} |`)
  lines.push(`| proxy memory per idle worker session | ≤ ${t.maxIdleSessionKiB} KiB | ${fmt(s.idleSessionKiB)} KiB | ${met(s.idleSessionKiB === null ? null : s.idleSessionKiB <= t.maxIdleSessionKiB)} |`)
  lines.push(`| proxy CPU per request | | ${fmt(s.proxyCpuPerRequestMs, 3)} ms | |`)
  lines.push(`| proxy peak RSS | | ${fmt(s.proxyPeakRssMiB)} MiB | |`)
  lines.push(`| fastest tier's share of requests | above its share of workers (${s.fastestTierWorkerShare.toFixed(3)}) | ${s.fastestTierShare.toFixed(3)} | ${met(s.fastestTierShare > s.fastestTierWorkerShare)} |`)
  lines.push('')
  lines.push('| Tier | ms before each chunk | Workers | Requests |')
  lines.push('|---|---:|---:|---:|')
  for (const x of s.tiers) lines.push(`| ${x.name} | ${x.chunkDelayMs} | ${x.workers} | ${x.requests} |`)
  if (r.notes.length > 0) {
    lines.push('')
    lines.push('Notes:')
    for (const n of r.notes) lines.push(`- ${n}`)
  }
  return lines.join('\n') + '\n'
}
