// The bench harness: the fake backend's answers, the result schema, and one smoke run of `cocoon bench` end to end.
// Speed is recorded, never asserted: the figures of a smoke run only have to be present and consistent.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BENCH_TARGETS, checkBenchResult, renderMarkdown, runBenchmarks, startFakeBackend, type BenchResult } from '../../src/bench/index.ts'
import { amortisedFeePerRequestNano } from '../../src/bench/fees.ts'
import { fakeChunkText } from '../../src/bench/fake-backend.ts'

const chat = (stream: boolean) => JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], stream })

test('the fake backend streams N chunks of B bytes, then usage and [DONE]; unstreamed, the same text', async () => {
  const backend = await startFakeBackend({ chunks: 5, chunkBytes: 128 })
  try {
    const streamed = await fetch(`${backend.url}/v1/chat/completions`, { method: 'POST', body: chat(true) })
    assert.equal(streamed.headers.get('content-type'), 'text/event-stream')
    const events = (await streamed.text()).split('\n\n').filter(Boolean).map((e) => e.replace(/^data: /, ''))
    assert.equal(events.length, 5 + 2)
    assert.equal(events.at(-1), '[DONE]')
    const chunks = events.slice(0, 5).map((e) => JSON.parse(e))
    assert.ok(chunks.every((c, i) => Buffer.byteLength(c.choices[0].delta.content) === 128 && c.choices[0].delta.content === fakeChunkText(i, 128)))
    assert.equal(chunks[4].choices[0].finish_reason, 'stop')
    const usage = JSON.parse(events[5])
    assert.deepEqual(usage.choices, [])
    assert.equal(usage.usage.completion_tokens, 5)

    const whole = (await (await fetch(`${backend.url}/v1/chat/completions`, { method: 'POST', body: chat(false) })).json()) as any
    assert.equal(whole.choices[0].message.content, chunks.map((c) => c.choices[0].delta.content).join(''))
    assert.deepEqual(whole.usage, usage.usage)
    assert.equal(backend.completed, 2)
  } finally {
    await backend.close()
  }
})

test('the schema check finds missing figures and derived figures that disagree', () => {
  assert.ok(checkBenchResult({}).length > 0)
  const r = sampleResult()
  assert.deepEqual(checkBenchResult(r), [])
  assert.match(checkBenchResult({ ...r, overhead: { ...r.overhead, ratioRps: 0.9 } }).join('\n'), /ratioRps/)
  const cpu = r.overhead.cpuPerRequestMs
  assert.match(checkBenchResult({ ...r, overhead: { ...r.overhead, cpuPerRequestMs: { ...cpu, network: { ...cpu.network, stack: 0.9 } } } }).join('\n'), /stack is not client \+ proxy \+ worker/)
  assert.match(checkBenchResult({ ...r, overhead: { ...r.overhead, cpuPerRequestMs: { ...cpu, direct: { backend: 'fast' } } } }).join('\n'), /cpuPerRequestMs\.direct\.backend/)
  assert.match(checkBenchResult({ ...r, fees: { 'client.charge': { gas: 1 }, perRequestAmortisedNano: null } }).join('\n'), /client\.charge.*feeNano/)
})

test('the schema check covers the e2ee section: every figure, and the ratios and differences derived from them', () => {
  const r = sampleResult()
  const e = r.e2ee
  assert.match(checkBenchResult({ ...r, e2ee: undefined }).join('\n'), /e2ee\.on\.rps/)
  for (const k of ['rps', 'p50Ms', 'ttfbP50Ms', 'c1P50Ms', 'c1TtfbP50Ms'] as const) {
    assert.match(checkBenchResult({ ...r, e2ee: { ...e, off: { ...e.off, [k]: null } } }).join('\n'), new RegExp(`e2ee\\.off\\.${k} must be`))
  }
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, on: { ...e.on, cpuPerRequestMs: { ...e.on.cpuPerRequestMs, proxy: 'n/a' } } } } as unknown as BenchResult).join('\n'), /e2ee\.on\.cpuPerRequestMs\.proxy/)
  // CPU figures may be null (no /proc), and then so is the added CPU.
  const noProc = { client: null, proxy: null, worker: null, stack: null }
  assert.deepEqual(checkBenchResult({ ...r, e2ee: { ...e, on: { ...e.on, cpuPerRequestMs: noProc }, off: { ...e.off, cpuPerRequestMs: noProc }, addedCpuPerRequestMs: null } }), [])
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, ratioRps: 1 } }).join('\n'), /e2ee\.ratioRps/)
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, addedC1P50Ms: 0.5 } }).join('\n'), /e2ee\.addedC1P50Ms/)
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, addedC1TtfbP50Ms: 0.5 } }).join('\n'), /e2ee\.addedC1TtfbP50Ms/)
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, addedCpuPerRequestMs: 0.9 } }).join('\n'), /e2ee\.addedCpuPerRequestMs/)
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, addedCpuPerRequestMs: null } }).join('\n'), /e2ee\.addedCpuPerRequestMs/)
  assert.match(checkBenchResult({ ...r, e2ee: { ...e, on: { ...e.on, cpuPerRequestMs: { ...e.on.cpuPerRequestMs, stack: 2 } }, addedCpuPerRequestMs: 1 } }).join('\n'), /e2ee cpuPerRequestMs\.stack/)
  const md = renderMarkdown(r)
  assert.match(md, /\| Requests\/s, concurrency 30 \| 640\.0 \| 600\.0 \| ×0\.938 \|/)
  assert.match(md, /\| p50 latency, ms, concurrency 1 \| 1\.800 \| 2\.000 \| \+0\.200 ms \|/)
})

test('the amortised on-chain cost per request follows the settlement thresholds', () => {
  const prices = { pricePerTokenNano: 1000n, workerFeePerTokenNano: 800n, promptMult: 10_000, cachedMult: 1_000, completionMult: 20_000, reasoningMult: 20_000, audioSecondMult: 1_000_000 }
  const terms = { source: 't', prices, clientChargeThresholdNano: 1_000_000_000n, workerPayoutThresholdNano: 10_000_000_000n }
  // 16 prompt + 50 completion tokens at 2x: 116 adjusted tokens; the client pays 116 000, the worker earns 92 800 nanoTON.
  const v = amortisedFeePerRequestNano(terms, { gas: 1, feeNano: 10_000_000 }, { gas: 1, feeNano: 10_000_000 }, { promptTokens: 16, completionTokens: 50 })
  assert.equal(v, 116_000 * 0.01 + 92_800 * 0.001)
})

test('a smoke run of the whole harness gives a result that matches the schema', { timeout: 180_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-bench-test-'))
  // Kept when the run fails: the error names the logs in it.
  let passed = false
  try {
    const feeReport = path.join(dir, 'contract-fees.json')
    fs.writeFileSync(feeReport, JSON.stringify({ version: 1, ops: { 'client.charge': { gas: 13_000, feeNano: 9_000_000 }, 'worker.payout': { gas: 11_000, feeNano: 8_000_000 } } }))
    const r = await runBenchmarks({ mode: 'smoke', feeReportFile: feeReport, generateFeeReport: false, workDir: path.join(dir, 'work'), say: () => {} })
    assert.deepEqual(checkBenchResult(r), [])
    assert.equal(r.quick, true)
    assert.equal(r.overhead.concurrency, 30)
    // On Linux with the shared TDX fixtures (as in CI) every figure is measured.
    assert.ok(Object.values(r.overhead.peakRssMiB).every((v) => typeof v === 'number' && v > 0), JSON.stringify(r.overhead.peakRssMiB))
    assert.ok(Object.values(r.overhead.idleRssMiB).every((v) => typeof v === 'number' && v > 0), JSON.stringify(r.overhead.idleRssMiB))
    const cpu = r.overhead.cpuPerRequestMs
    assert.ok([...Object.values(cpu.direct), ...Object.values(cpu.network)].every((v) => typeof v === 'number' && v >= 0), JSON.stringify(cpu))
    assert.equal(typeof r.handshake.tdxCold.p50Ms, 'number', r.notes.join('\n'))
    assert.equal(typeof r.handshake.tdxCached.p50Ms, 'number')
    assert.deepEqual(r.fees['client.charge'], { gas: 13_000, feeNano: 9_000_000 })
    assert.equal(typeof r.fees.perRequestAmortisedNano, 'number')
    assert.equal(r.receipts.count, 20_000)
    assert.ok(r.receipts.proofP50Ms > 0 && r.receipts.commitCpuMaxMs >= 0)
    assert.ok(r.inference.directTokPerSec > 0 && r.inference.networkTokPerSec > 0)
    const md = renderMarkdown(r)
    assert.match(md, /\| Requests\/s, concurrency 30 \|/)
    assert.match(md, /\| client\.charge \| 13000 \| 9000000 \|/)
    assert.match(md, /\| stack \(client \+ proxy \+ worker\) \| \| [0-9.]+ \|/)
    // E2EE on and off, both measured through the same proxy and worker.
    assert.ok(r.e2ee.on.rps > 0 && r.e2ee.off.rps > 0 && r.e2ee.on.c1P50Ms > 0 && r.e2ee.off.c1P50Ms > 0)
    assert.ok([...Object.values(r.e2ee.on.cpuPerRequestMs), ...Object.values(r.e2ee.off.cpuPerRequestMs)].every((v) => typeof v === 'number' && v >= 0), JSON.stringify(r.e2ee))
    assert.equal(r.e2ee.on.rps, r.overhead.network.rps)
    assert.match(md, /E2EE off \| E2EE on/)
    passed = true
  } finally {
    if (passed) fs.rmSync(dir, { recursive: true, force: true })
  }
})

function sampleResult(): BenchResult {
  const direct = { rps: 1000, p50Ms: 10, p99Ms: 20, ttfbP50Ms: 5 }
  const network = { rps: 600, p50Ms: 12.5, p99Ms: 30, ttfbP50Ms: 7 }
  return {
    version: 1,
    date: new Date().toISOString(),
    machine: { cpus: 2, memGiB: 4, node: process.version },
    quick: true,
    overhead: { concurrency: 30, direct, network, ratioRps: 0.6, addedP50Ms: 2.5, c1: { directP50Ms: 1, networkP50Ms: 2, addedP50Ms: 1 }, peakRssMiB: { client: 1, proxy: 1, worker: null }, idleRssMiB: { supervisor: 50, chain: null, client: 1, proxy: 1, worker: null },
      cpuPerRequestMs: { direct: { backend: 0.1, loadGenerator: 0.2 }, network: { client: 0.3, proxy: 0.4, worker: 0.5, stack: 1.2, backend: 0.1, loadGenerator: 0.2 } },
    },
    e2ee: {
      concurrency: 30,
      on: { rps: 600, p50Ms: 12.5, ttfbP50Ms: 7, c1P50Ms: 2, c1TtfbP50Ms: 1.5, cpuPerRequestMs: { client: 0.3, proxy: 0.4, worker: 0.5, stack: 1.2 } },
      off: { rps: 640, p50Ms: 12, ttfbP50Ms: 6.8, c1P50Ms: 1.8, c1TtfbP50Ms: 1.4, cpuPerRequestMs: { client: 0.2, proxy: 0.4, worker: 0.4, stack: 1 } },
      ratioRps: 0.938,
      addedC1P50Ms: 0.2,
      addedC1TtfbP50Ms: 0.1,
      addedCpuPerRequestMs: 0.2,
    },
    handshake: { simulated: { perSec: 100, p50Ms: 5 }, tdxCold: { p50Ms: null }, tdxCached: { p50Ms: BENCH_TARGETS.maxTdxCachedHandshakeMs } },
    inference: { directTokPerSec: 100, networkTokPerSec: 90, ratio: 0.9, concurrent4: { directTokPerSec: 1, networkTokPerSec: 1 } },
    fees: { 'client.charge': { gas: 1, feeNano: 2 }, perRequestAmortisedNano: null },
    receipts: { count: 1_000_000, appendUs: 3, commitCpuMs: 0.2, commitCpuMaxMs: 0.4, proofP50Ms: 0.5, proofP99Ms: 1, verifyP50Ms: 0.3, proofMaxBytes: 3000, rebuildMs: 3000, memMiB: 70 },
    notes: [],
  }
}
