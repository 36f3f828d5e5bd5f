// Billing on the request path: admission against funds (402 before any work), durable settlement, cancelled answers billed.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { Ledger } from '../../src/payments/ledger.ts'
import { ProxyBilling, type ClientFunds, type FundsSource } from '../../src/payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../../src/payments/pricing.ts'
import { silentLogger } from '../../src/core/log.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

/** FAKE funds source standing in for the chain: every client has the same fixed on-chain position. */
class FakeFunds implements FundsSource {
  constructor(public funds: ClientFunds) {}
  async clientFunds(): Promise<ClientFunds> {
    return this.funds
  }
}

async function network(funds?: FundsSource, backend = new FakeBackend({ chunks: 10 })) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-billing-'))
  const ledger = new Ledger(path.join(dir, 'ledger.sqlite'))
  stops.push(() => ledger.close())
  const billing = new ProxyBilling({ ledger, params: () => OFFCHAIN_PRICE_PARAMS, funds, log: silentLogger })
  const p = await startProxy({ billing })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort], { options: { maxTokensCap: 100 } })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  return { ledger, billing, backend, url: c.url, proxy: p.proxy }
}

const post = (url: string, body: unknown, signal?: AbortSignal) =>
  fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal })

test('an app asking for more than its balance allows gets 402 insufficient_quota before any work', async () => {
  // The reservation covers (body bytes + 512) prompt tokens and max_tokens, at max_coefficient 4.0x: about 2.7M nanoTON here.
  const funds = new FakeFunds({ balanceNano: 700_000n, tokensCharged: 0n, active: true })
  const net = await network(funds)
  const res = await post(net.url, { model: 'fake-model', prompt: 'x', max_tokens: 100 })
  assert.equal(res.status, 402)
  const j = (await res.json()) as any
  assert.equal(j.error.code, 'insufficient_quota')
  assert.equal(j.error.type, 'insufficient_quota')
  assert.equal(net.backend.seen.length, 0, 'no work was done')
  // Within the balance, it is served.
  funds.funds = { ...funds.funds, balanceNano: 10_000_000n }
  const ok = await post(net.url, { model: 'fake-model', prompt: 'x', max_tokens: 100 })
  assert.equal(ok.status, 200)
  await ok.json()
})

test('charged but unsettled usage and live reservations count against the balance', async () => {
  const funds = new FakeFunds({ balanceNano: 5_000_000n, tokensCharged: 0n, active: true })
  const net = await network(funds)
  const client = (await net.ledger.allCounters('client'))[0]?.address
  assert.equal(client, undefined)
  const r1 = await post(net.url, { model: 'fake-model', prompt: 'x', max_tokens: 10 })
  assert.equal(r1.status, 200)
  const used = BigInt(((await r1.json()) as any).usage.cost)
  const [acct] = net.ledger.allCounters('client')
  assert.equal(acct.nano, used)
  assert.equal(await net.billing.availableNano(acct.address), 5_000_000n - used)
  // A closing client is admitted no more.
  funds.funds = { ...funds.funds, active: false }
  const r2 = await post(net.url, { model: 'fake-model', prompt: 'x', max_tokens: 10 })
  assert.equal(r2.status, 402)
})

test('every answer is in the ledger before the app sees it complete, streamed or not', async () => {
  const net = await network()
  for (const stream of [false, true, false, true]) {
    const res = await post(net.url, { model: 'fake-model', prompt: 'a b c', max_tokens: 7, stream })
    const text = await res.text()
    assert.equal(res.status, 200)
    if (stream) assert.match(text, /"cost":10000.*\n\ndata: \[DONE\]\n\n$/s)
  }
  const [c] = net.ledger.allCounters('client')
  const [w] = net.ledger.allCounters('worker')
  assert.equal(c.requests, 4)
  assert.equal(c.tokens, 4n * 10n, '3 prompt + 7 completion adjusted tokens each')
  assert.equal(c.nano, 40_000n)
  assert.equal(w.nano, 32_000n)
  assert.equal(c.nano - w.nano, 8_000n, 'the proxy margin')
  assert.ok(net.ledger.verifyChain())
})

test('a cancelled request is billed for what was produced', async () => {
  const net = await network(undefined, new FakeBackend({ chunks: 100, delayMs: 10 }))
  const ac = new AbortController()
  const res = await post(net.url, { model: 'fake-model', prompt: 'x', max_tokens: 100, stream: true }, ac.signal)
  const reader = res.body!.getReader()
  await reader.read()
  await reader.read()
  ac.abort()
  await waitFor(() => net.ledger.allCounters('client').length === 1, 'the cancelled answer to be billed', 5_000)
  const [c] = net.ledger.allCounters('client')
  assert.ok(c.tokens >= 2n && c.tokens < 100n, `billed ${c.tokens} adjusted tokens`)
  assert.equal(net.backend.aborted, 1)
  await waitFor(() => (net.proxy.stats() as any).requests.cancelled === 1, 'the proxy to count it cancelled')
})
