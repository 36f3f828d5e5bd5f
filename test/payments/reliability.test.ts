// The reliability record (src/payments/receipts/reliability.ts): derived from receipts only (requests, successes,
// cancelled, p50 time to first token, tokens/s), plus the proxy's uptime statement; canonical JSON whose hash
// changes with any field; a recomputation from the same receipts agrees, and from other receipts does not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  buildReliabilityRecord, canonicalReliabilityJson, compareRecomputed, reliabilityHash, reliabilityWindow, RELIABILITY_WINDOW_RECEIPTS, UptimeTracker,
} from '../../src/payments/receipts/reliability.ts'
import type { ReceiptFields } from '../../src/payments/receipts/receipt.ts'

function sampleFields(workerKey: Buffer): ReceiptFields {
  return {
    version: 2, signer: 'worker', requestId: 'req', requestHash: Buffer.alloc(32, 1), answerHash: Buffer.alloc(32, 2), paramsHash: Buffer.alloc(32, 3),
    modelId: 'stories260K', modelHash: Buffer.alloc(32, 4), imageHash: Buffer.alloc(32, 5), workerKey, proxyKey: Buffer.alloc(32, 0xab),
    promptTokens: 10, cachedTokens: 0, completionTokens: 21, reasoningTokens: 0, coefficient: 1000,
    pricePerTokenNano: 1000n, workerFeePerTokenNano: 800n, adjustedTokens: 31n, costNano: 31_000n,
    startedAtMs: 0, firstTokenAtMs: 0, endedAtMs: 0, finishReason: 'stop',
  }
}

const A = Buffer.alloc(32, 0xa1)
const B = Buffer.alloc(32, 0xb2)

function r(workerKey: Buffer, o: Partial<ReceiptFields> & { ttft?: number; ms?: number } = {}): ReceiptFields {
  const startedAtMs = o.startedAtMs ?? 1_000_000
  const ttft = o.ttft ?? 100
  return { ...sampleFields(workerKey), startedAtMs, firstTokenAtMs: startedAtMs + ttft, endedAtMs: startedAtMs + ttft + (o.ms ?? 1000), completionTokens: 21, finishReason: 'stop', ...o }
}

const build = (fields: ReceiptFields[], uptime?: Map<string, number>) =>
  buildReliabilityRecord({ proxyKey: 'ab'.repeat(32), seqno: 7, receipts: { from: 0, to: fields.length }, fields, uptime, uptimeWindow: { startMs: 0, endMs: 60_000 } })

test('the record counts requests, successes and cancellations per worker and model, from receipts only', () => {
  const rec = build([
    r(A, { ttft: 100 }), r(A, { ttft: 300 }), r(A, { ttft: 200 }), r(A, { finishReason: 'error' }), r(A, { finishReason: 'cancelled' }),
    r(A, { signer: 'proxy', finishReason: 'stop' }), // the proxy signed: its worker died, not a success
    r(B, { ttft: 50, ms: 500 }), r(A, { modelId: 'other', finishReason: 'length' }),
  ])
  assert.deepEqual(rec.workers.map((w) => [w.worker_key.slice(0, 2), w.model_id, w.requests, w.successes, w.cancelled]), [
    ['a1', 'other', 1, 1, 0], ['a1', 'stories260K', 6, 3, 1], ['b2', 'stories260K', 1, 1, 0],
  ])
  const a = rec.workers[1]
  assert.equal(a.p50_ttft_ms, 200, 'the median of 100, 200, 300')
  // 20 tokens after the first over 1 s each, for three successes.
  assert.equal(a.tokens_per_sec, 20)
  assert.equal(rec.workers[2].tokens_per_sec, 40)
  assert.equal(a.uptime, null, 'no uptime statement given')
})

test('version 1 receipts (no first token time) count, but give no latency figures', () => {
  const rec = build([r(A, { version: 1, firstTokenAtMs: 0 }), r(A, { version: 1, firstTokenAtMs: 0 })])
  assert.equal(rec.workers[0].successes, 2)
  assert.equal(rec.workers[0].p50_ttft_ms, null)
  assert.equal(rec.workers[0].tokens_per_sec, null)
})

test('the canonical JSON is fixed by the values: key order and receipt order do not matter, any change changes the hash', () => {
  const fields = [r(A, { ttft: 100 }), r(B), r(A, { ttft: 300 })]
  const one = build(fields)
  const two = build([...fields].reverse())
  assert.equal(canonicalReliabilityJson(one), canonicalReliabilityJson(two))
  // The same record with its keys shuffled (as any JSON parser may hand it over) hashes the same.
  const shuffled = JSON.parse(JSON.stringify({ workers: one.workers.map((w) => Object.fromEntries(Object.entries(w).reverse())), uptime_window: one.uptime_window, receipts: one.receipts, seqno: one.seqno, proxy_key: one.proxy_key, version: one.version }))
  assert.deepEqual(reliabilityHash(shuffled), reliabilityHash(one))
  assert.match(canonicalReliabilityJson(one), /^\{"version":1,"proxy_key":"(ab)+","seqno":7,"receipts":\{"from":0,"to":3\},"uptime_window":\{"start_ms":0,"end_ms":60000\},"workers":\[\{"worker_key":"(a1)+","model_id":"stories260K","requests":2,/)
  for (const tamper of [(x: any) => x.workers[0].successes--, (x: any) => (x.workers[0].p50_ttft_ms = 1), (x: any) => (x.seqno = 8), (x: any) => x.workers.pop(), (x: any) => (x.workers[0].uptime = 1)]) {
    const t = structuredClone(one)
    tamper(t)
    assert.notDeepEqual(reliabilityHash(t), reliabilityHash(one))
  }
  // Extra fields are not part of the record: the canonical form drops them, so they cannot smuggle a different meaning.
  assert.deepEqual(reliabilityHash({ ...one, note: 'x' }), reliabilityHash(one))
  assert.throws(() => reliabilityHash({ ...one, workers: [{ ...one.workers[0], requests: -1 }] }), /requests is not a non-negative integer/)
  assert.throws(() => reliabilityHash({ ...one, receipts: undefined }), /receipts is not an object/)
})

test('recomputing from the same receipts agrees, without the uptime statement; from other receipts it names the differences', () => {
  const fields = [r(A, { ttft: 100 }), r(A, { finishReason: 'error' }), r(B)]
  const served = build(fields, new Map([[`${A.toString('hex')}\nstories260K`, 0.5]]))
  assert.equal(served.workers[0].uptime, 0.5)
  assert.deepEqual(compareRecomputed(served, build(fields)), [])
  const inflated = structuredClone(served)
  inflated.workers[0].successes = 2
  assert.match(compareRecomputed(inflated, build(fields)).join('\n'), /successes served 2, receipts give 1/)
  assert.match(compareRecomputed(served, build(fields.slice(0, 2))).join('\n'), /no receipts in the window/)
})

test('the window is the newest receipts of the committed log', () => {
  assert.deepEqual(reliabilityWindow(5), { from: 0, to: 5 })
  assert.deepEqual(reliabilityWindow(RELIABILITY_WINDOW_RECEIPTS + 7), { from: 7, to: RELIABILITY_WINDOW_RECEIPTS + 7 })
})

test('uptime: the share of the window a worker had a session, counting overlapping sessions once', () => {
  const t = new UptimeTracker(0)
  t.connected('a', 'm', 0)
  t.connected('b', 'm', 250)
  t.connected('b', 'm', 300) // a second session of the same worker
  t.disconnected('b', 'm', 500)
  t.disconnected('b', 'm', 750)
  let s = t.shares(1000)
  assert.equal(s.uptime.get('a\nm'), 1)
  assert.equal(s.uptime.get('b\nm'), 0.5)
  // Shares change nothing until the window advances.
  assert.equal(t.shares(1000).uptime.get('b\nm'), 0.5)
  t.advance(1000)
  t.disconnected('a', 'm', 1500)
  s = t.shares(2000)
  assert.deepEqual([s.startMs, s.endMs], [1000, 2000])
  assert.equal(s.uptime.get('a\nm'), 0.5)
  assert.equal(s.uptime.get('b\nm'), undefined, 'gone for the whole window: not listed')
})
