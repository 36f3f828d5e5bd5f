// Defect 15: the proxy bills only usage its worker signed for this very request, with possible counts.
// A forged signature, a record replayed from another request, and cached > prompt tokens are each
// refused, logged with the reason, and bill nothing.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { offchainBilling, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { createLogger } from '../../src/core/log.ts'
import { checkUsage, ed25519PublicKey } from '../../src/net/usage.ts'
import { HEADERS, usageSigningPayload, type UsageRecord } from '../../src/net/protocol.ts'
import type { Worker } from '../../src/worker/worker.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

const record = (over: Partial<UsageRecord> = {}): UsageRecord => ({
  requestId: 'req-1',
  answer: { id: 'cmpl-1', object: 'text_completion', model: 'fake-model', created: 1 },
  promptTokens: 10,
  cachedTokens: 2,
  completionTokens: 5,
  reasoningTokens: 0,
  finishReason: 'stop',
  ...over,
})

test('checkUsage accepts the worker-signed record of this request, and says why it refuses anything else', async () => {
  const worker = crypto.generateKeyPairSync('ed25519')
  const other = crypto.generateKeyPairSync('ed25519')
  const raw = worker.publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  const key = ed25519PublicKey(raw)
  const signed = (r: UsageRecord, by = worker.privateKey) => {
    const json = JSON.stringify(r)
    return { json, sig: crypto.sign(null, usageSigningPayload(json), by).toString('base64') }
  }
  const good = signed(record())
  assert.deepEqual(await checkUsage(good.json, good.sig, key, 'req-1'), { ok: true, usage: record() })
  const forged = signed(record(), other.privateKey)
  assert.match((await checkUsage(forged.json, forged.sig, key, 'req-1') as any).reason, /forged/)
  // A genuine signature over a different record is a forgery too.
  assert.match((await checkUsage(JSON.stringify(record({ completionTokens: 500 })), good.sig, key, 'req-1') as any).reason, /forged/)
  assert.match((await checkUsage(good.json, good.sig, key, 'req-2') as any).reason, /replayed/)
  const cached = signed(record({ cachedTokens: 11 }))
  assert.match((await checkUsage(cached.json, cached.sig, key, 'req-1') as any).reason, /11 cached tokens > 10 prompt/)
  const reasoning = signed(record({ reasoningTokens: 6 }))
  assert.match((await checkUsage(reasoning.json, reasoning.sig, key, 'req-1') as any).reason, /reasoning/)
  assert.equal((await checkUsage(undefined, undefined, key, 'req-1')).ok, false)
})

/** A HOSTILE worker: the real worker, whose usage trailers are replaced by `tamper` (the seam under test). */
function tamper(w: Worker, fn: (record: UsageRecord, honest: () => Promise<Record<string, string>>) => Promise<Record<string, string>>): void {
  const real = (w as any).usageTrailers.bind(w) as (r: UsageRecord, ...rest: unknown[]) => Promise<Record<string, string>>
  ;(w as any).usageTrailers = (r: UsageRecord, ...rest: unknown[]) => fn(r, () => real(r, ...rest))
}

async function network() {
  const lines: string[] = []
  const billing = offchainBilling()
  const p = await startProxy({ billing, log: createLogger({ role: 'proxy' }, 'debug', (l) => lines.push(l)) })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const ask = (stream = false) => fetch(c.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'one two three', stream }) })
  const charged = () => BigInt((p.proxy.stats() as any).money.chargedNano)
  const identity = (w as any).deps.identity.current()
  return { p, w, ask, charged, lines, identity }
}

async function refused(n: Awaited<ReturnType<typeof network>>, reason: RegExp) {
  const before = n.charged()
  const r = await n.ask()
  assert.equal(r.status, 502, 'the answer is withheld')
  assert.equal(((await r.json()) as any).error.code, 'upstream_error')
  const s = await n.ask(true)
  const text = await s.text()
  assert.doesNotMatch(text, /\[DONE\]/, 'a streamed answer never looks complete')
  assert.match(text, /upstream_error/)
  assert.equal(n.charged(), before, 'nothing was billed')
  assert.equal(n.lines.filter((l) => l.includes('refused the usage') && reason.test(l)).length, 2, `the refusal is logged with its reason:\n${n.lines.join('')}`)
}

test('a forged usage signature is refused and logged, and bills nothing', async () => {
  const n = await network()
  const forger = crypto.generateKeyPairSync('ed25519')
  tamper(n.w, async (r) => {
    const json = JSON.stringify({ ...r, completionTokens: r.completionTokens * 100 })
    return { [HEADERS.usage]: json, [HEADERS.usageSig]: crypto.sign(null, usageSigningPayload(json), forger.privateKey).toString('base64') }
  })
  await refused(n, /forged usage/)
})

test('a usage record replayed from another request is refused and logged, and bills nothing', async () => {
  const n = await network()
  let first: Record<string, string> | undefined
  tamper(n.w, async (_r, honest) => (first ??= await honest()))
  const ok = await n.ask()
  assert.equal(ok.status, 200, 'the first answer carries its own record')
  await ok.json()
  await refused(n, /replayed usage/)
})

test('usage with more cached than prompt tokens is refused and logged, and bills nothing', async () => {
  const n = await network()
  tamper(n.w, async (r) => {
    const json = JSON.stringify({ ...r, cachedTokens: r.promptTokens + 5 })
    return { [HEADERS.usage]: json, [HEADERS.usageSig]: Buffer.from(await n.identity.signAsync(usageSigningPayload(json))).toString('base64') }
  })
  await refused(n, /cached tokens > \d+ prompt tokens/)
})
