// `cocoon bench --scale` at a small size, end to end through the real CLI: a real proxy process, simulated attested
// workers (FAKE backends) in another, streams from the bench. Figures are recorded, never asserted: the result only
// has to match its schema and be consistent (every stream accounted for, tiers adding up, a routing time measured).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { checkScaleResult, renderScaleMarkdown, type ScaleResult } from '../../src/bench/index.ts'

const BIN = path.resolve(import.meta.dirname, '../../bin/cocoon.js')

function sample(): ScaleResult {
  return {
    version: 1,
    date: new Date().toISOString(),
    machine: { cpus: 2, memGiB: 24, node: 'v20' },
    scale: {
      workers: 3,
      streams: 10,
      clientSessions: 1,
      workerSlots: 16,
      chunks: 8,
      connectSec: 1,
      loadAvg1m: 1,
      succeeded: 10,
      failed: 0,
      wallSec: 1,
      routing: { decisions: 30, workers: 3, p50Us: 2, p99Us: 5, maxUs: 9 },
      idleSessionKiB: 50,
      proxyCpuPerRequestMs: 1,
      proxyPeakRssMiB: 100,
      tiers: [
        { name: 'fast', chunkDelayMs: 10, workers: 1, requests: 6 },
        { name: 'medium', chunkDelayMs: 40, workers: 1, requests: 3 },
        { name: 'slow', chunkDelayMs: 160, workers: 1, requests: 1 },
      ],
      fastestTierShare: 0.6,
      fastestTierWorkerShare: 0.333,
    },
    notes: [],
  }
}

test('the scale schema check finds missing fields and counts that do not add up', () => {
  assert.deepEqual(checkScaleResult(sample()), [])
  assert.ok(checkScaleResult({}).length > 0)
  const r = sample()
  assert.match(checkScaleResult({ ...r, scale: { ...r.scale, routing: { ...r.scale.routing, p99Us: 'fast' } } }).join('\n'), /routing\.p99Us/)
  assert.match(checkScaleResult({ ...r, scale: { ...r.scale, failed: 1 } }).join('\n'), /succeeded \+ scale\.failed/)
  assert.match(checkScaleResult({ ...r, scale: { ...r.scale, workers: 4 } }).join('\n'), /tiers' workers/)
  assert.match(renderScaleMarkdown(r), /routing decision, p99/)
})

test('cocoon bench --scale --workers 50 --streams 500 writes a result that matches the schema', { timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-scale-test-'))
  const out = path.join(dir, 'scale.json')
  try {
    const proc = spawn(process.execPath, [BIN, 'bench', '--scale', '--workers', '50', '--streams', '500', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    proc.stdout.on('data', (d) => (output += d))
    proc.stderr.on('data', (d) => (output += d))
    const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve))
    assert.equal(code, 0, output.slice(-3000))
    const r = JSON.parse(fs.readFileSync(out, 'utf8')) as ScaleResult
    assert.deepEqual(checkScaleResult(r), [])
    const s = r.scale
    assert.equal(s.workers, 50)
    assert.equal(s.streams, 500)
    assert.equal(s.succeeded + s.failed, 500)
    // Every answer is complete (its last chunk and the proxy's billed-usage trailers): a stream that fails here is a bug.
    assert.equal(s.failed, 0, r.notes.join('\n'))
    // Every stream was routed at least once, at the full worker count, and the proxy timed it there.
    assert.ok(s.routing.decisions >= 500, `${s.routing.decisions} routing decisions`)
    assert.equal(s.routing.workers, 50)
    assert.ok(s.routing.p50Us > 0)
    assert.equal(s.tiers.reduce((n, t) => n + t.workers, 0), 50)
    assert.ok(s.tiers.reduce((n, t) => n + t.requests, 0) >= s.succeeded)
    assert.match(output, /routing decision, median/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
