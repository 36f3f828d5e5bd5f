// Admission at the proxy: reservations keyed by the proxy, never by the app's request_id; atomic per client; freed in
// every case, and swept when leaked. Real RA-TLS and HTTP/2 on loopback; the backend and the funds source are FAKES.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { Ledger } from '../../src/payments/ledger.ts'
import { ProxyBilling, RESERVATION_SWEEP_SLACK_MS, type ClientFunds, type FundsSource } from '../../src/payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS, worstCaseAdjustedTokens } from '../../src/payments/pricing.ts'
import { PROMPT_OVERHEAD_TOKENS } from '../../src/net/protocol.ts'
import { createLogger, silentLogger } from '../../src/core/log.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

/**
 * FAKE funds source standing in for the chain: a fixed position, answered after a chain-like delay, with
 * concurrent callers sharing one lookup (as a cached or coalesced chain read does). Sharing is what lets
 * several admissions resume in the same moment, which is where a non-atomic admission overspends.
 */
class SlowFakeFunds implements FundsSource {
  private pending?: Promise<ClientFunds>
  constructor(
    public funds: ClientFunds,
    readonly delayMs = 50,
  ) {}
  clientFunds(): Promise<ClientFunds> {
    this.pending ??= new Promise<ClientFunds>((r) => setTimeout(() => r(this.funds), this.delayMs)).finally(() => (this.pending = undefined))
    return this.pending
  }
}

function billingWith(funds?: FundsSource, log = silentLogger): { billing: ProxyBilling; ledger: Ledger } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-admission-'))
  const ledger = new Ledger(path.join(dir, 'ledger.sqlite'))
  const billing = new ProxyBilling({ ledger, params: () => OFFCHAIN_PRICE_PARAMS, funds, log })
  stops.push(() => {
    billing.close()
    ledger.close()
  })
  return { billing, ledger }
}

async function network(opts: { funds?: FundsSource; backend?: FakeBackend; clients?: number } = {}) {
  const { billing } = billingWith(opts.funds)
  const backend = opts.backend ?? new FakeBackend({ chunks: 10 })
  const p = await startProxy({ billing })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort], { options: { maxTokensCap: 100, maxActiveRequests: 32 } })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const urls: string[] = []
  for (let i = 0; i < (opts.clients ?? 1); i++) {
    const c = await startClient([p.clientPort])
    stops.push(() => c.client.stop())
    await waitFor(() => c.client.health().ok, 'client')
    urls.push(c.url)
  }
  return { billing, backend, urls, proxy: p.proxy }
}

const post = (url: string, body: unknown) => fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

test('a request_id already in flight from the same client gets 409, and no reservation is left behind', async () => {
  const net = await network({ backend: new FakeBackend({ chunks: 5, delayMs: 40 }) })
  const body = { model: 'fake-model', prompt: 'x', max_tokens: 5, request_id: 'same-id' }
  const results = await Promise.all(Array.from({ length: 6 }, () => post(net.urls[0], body)))
  const statuses = results.map((r) => r.status).sort()
  const bodies = await Promise.all(results.map((r) => r.json() as Promise<any>))
  assert.ok(statuses.includes(200), `statuses ${statuses}`)
  for (const [i, r] of results.entries()) {
    if (r.status === 200) continue
    assert.equal(r.status, 409, JSON.stringify(bodies[i]))
    assert.equal(bodies[i].error.code, 'duplicate_request_id')
    assert.equal(bodies[i].error.param, 'request_id')
    assert.match(bodies[i].error.message, /already in flight/)
  }
  await waitFor(() => net.billing.reservations === 0, 'every reservation to be released')
  assert.equal(net.billing.reservedNano(), 0n)
  // The id is free again once the first request ended.
  const again = await post(net.urls[0], body)
  assert.equal(again.status, 200)
  await again.json()
})

test("one client's request_id can neither collide with nor lock another client's funds", async () => {
  const net = await network({ backend: new FakeBackend({ chunks: 5, delayMs: 40 }), clients: 2 })
  const body = { model: 'fake-model', prompt: 'x', max_tokens: 5, request_id: 'shared-id' }
  // Two clients, same request_id, at the same time: both are served (the ids are scoped per client).
  const [a, b] = await Promise.all(net.urls.map((u) => post(u, body)))
  assert.equal(a.status, 200, JSON.stringify(await a.clone().json()))
  assert.equal(b.status, 200, JSON.stringify(await b.clone().json()))
  await Promise.all([a.json(), b.json()])
  await waitFor(() => net.billing.reservations === 0, 'both reservations to be released')
  const accounts = net.billing.ledger.allCounters('client').map((c) => c.address)
  assert.equal(accounts.length, 2)
  for (const acct of accounts) assert.equal(net.billing.reservedNano(acct), 0n, `funds of ${acct.slice(0, 8)} are not locked`)
})

test("cancelling one client's request never cancels another client's request with the same request_id at the worker", async () => {
  const net = await network({ backend: new FakeBackend({ chunks: 30, delayMs: 25 }), clients: 2 })
  const body = { model: 'fake-model', prompt: 'x', max_tokens: 30, request_id: 'shared-id', stream: true }
  const streamed = (url: string, signal?: AbortSignal) => fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal })
  const ac = new AbortController()
  const a = await streamed(net.urls[0], ac.signal)
  assert.equal(a.status, 200)
  await waitFor(() => net.backend.seen.length === 1, 'the first request to reach the worker')
  const b = await streamed(net.urls[1])
  assert.equal(b.status, 200)
  await waitFor(() => net.backend.seen.length === 2, 'the second request to reach the worker')
  // The first app goes away: its client node cancels, and the proxy stops that request at the worker.
  ac.abort()
  await a.body?.cancel().catch(() => {})
  const text = await b.text()
  const chunks = text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)))
  const produced = chunks.flatMap((c) => c.choices ?? []).map((ch: any) => ch.text ?? '').join('')
  assert.match(produced, /tok29 /, `the other client's answer was cut short: ${produced.slice(-80)}`)
  assert.equal(chunks.at(-1)?.usage?.completion_tokens, 30)
})

test('concurrent admission is atomic per client: exactly as many requests as the balance covers are admitted, the rest get 402', async () => {
  const body = { model: 'fake-model', prompt: 'x', max_tokens: 50 }
  // The client forwards the body without its control fields, so the proxy sees exactly this JSON.
  const worstNano = worstCaseAdjustedTokens(JSON.stringify(body).length + PROMPT_OVERHEAD_TOKENS, 50, 4000, OFFCHAIN_PRICE_PARAMS) * OFFCHAIN_PRICE_PARAMS.pricePerTokenNano
  const covered = 3
  const funds = new SlowFakeFunds({ balanceNano: worstNano * BigInt(covered) + worstNano / 2n, tokensCharged: 0n, active: true })
  const net = await network({ funds, backend: new FakeBackend({ chunks: 50, delayMs: 20 }) })
  const results = await Promise.all(Array.from({ length: 8 }, () => post(net.urls[0], body)))
  const bodies = await Promise.all(results.map((r) => r.json() as Promise<any>))
  const ok = results.filter((r) => r.status === 200).length
  const refused = results.filter((r) => r.status === 402).length
  assert.equal(ok, covered, `admitted ${ok}: ${JSON.stringify(bodies.map((b) => b.error?.code ?? 'ok'))}`)
  assert.equal(refused, 8 - covered)
  for (const [i, r] of results.entries()) if (r.status === 402) assert.equal(bodies[i].error.code, 'insufficient_quota')
  assert.equal(net.backend.seen.length, covered, 'no work was done for the refused ones')
})

test('billing: concurrent reservations against one slow balance lookup never exceed the balance', async () => {
  const funds = new SlowFakeFunds({ balanceNano: 10_000n, tokensCharged: 0n, active: true }, 20)
  const { billing } = billingWith(funds)
  // 4 tokens × 1000 nano = 4000 nano each: two fit in 10 000, the third does not.
  const tries = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => billing.reserve({ client: 'c1', requestId: `q${i}`, worstTokens: 4n, deadlineMs: Date.now() + 60_000 })))
  assert.equal(tries.filter((t) => t.status === 'fulfilled').length, 2)
  for (const t of tries) if (t.status === 'rejected') assert.equal((t.reason as Error).name, 'InsufficientQuotaError')
  assert.equal(billing.reservedNano('c1'), 8_000n)
  // Another client's balance is its own.
  await billing.reserve({ client: 'c2', requestId: 'q0', worstTokens: 2n, deadlineMs: Date.now() + 60_000 })
  assert.equal(billing.reservedNano('c2'), 2_000n)
})

test('billing: reservation keys are the proxy’s own, so the same request_id twice holds and frees two reservations', async () => {
  const { billing } = billingWith()
  const a = await billing.reserve({ client: 'c1', requestId: 'dup', worstTokens: 3n, deadlineMs: Date.now() + 60_000 })
  const b = await billing.reserve({ client: 'c1', requestId: 'dup', worstTokens: 5n, deadlineMs: Date.now() + 60_000 })
  assert.notEqual(a.key, b.key)
  assert.equal(billing.reservedNano('c1'), 8_000n)
  billing.release(a)
  billing.release(a)
  assert.equal(billing.reservedNano('c1'), 5_000n, 'a double release frees nothing more')
  billing.release(b)
  assert.equal(billing.reservedNano('c1'), 0n)
})

test('billing: the sweeper frees and logs a reservation left past its deadline, and only that one', async () => {
  const lines: string[] = []
  const { billing } = billingWith(undefined, createLogger({}, 'warn', (l) => lines.push(l)))
  const now = Date.now()
  await billing.reserve({ client: 'c1', requestId: 'leaked', worstTokens: 7n, deadlineMs: now - 1 })
  await billing.reserve({ client: 'c1', requestId: 'live', worstTokens: 2n, deadlineMs: now + 60_000 })
  assert.equal(billing.sweep(now), 0, 'not before the slack has passed')
  assert.equal(billing.sweep(now + RESERVATION_SWEEP_SLACK_MS + 1), 1)
  assert.equal(billing.reservedNano('c1'), 2_000n)
  assert.equal(billing.reservations, 1)
  const rec = JSON.parse(lines.find((l) => l.includes('past its deadline'))!)
  assert.equal(rec.requestId, 'leaked')
  assert.equal(rec.nano, '7000')
})
