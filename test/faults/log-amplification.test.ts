// Defect 2: outside input cannot fill the disk. The logger bounds every line, a client with no funds gets
// metadata calls only (402 otherwise, before its body is read), and a client that keeps failing is slowed.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { createLogger, formatLogLine, MAX_LOG_LINE_BYTES } from '../../src/core/log.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { Ledger } from '../../src/payments/ledger.ts'
import { ProxyBilling, type ClientFunds, type FundsSource } from '../../src/payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../../src/payments/pricing.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

/** FAKE funds source (the chain seam next door): a fixed balance per client account. */
class FakeFunds implements FundsSource {
  constructor(readonly balances: Map<string, bigint>) {}
  async clientFunds(client: string): Promise<ClientFunds | undefined> {
    const b = this.balances.get(client)
    return b === undefined ? undefined : { balanceNano: b, tokensCharged: 0n, active: true }
  }
}

function capture() {
  const lines: string[] = []
  return { lines, log: createLogger({}, 'debug', (l) => lines.push(l)), bytes: () => lines.reduce((t, l) => t + Buffer.byteLength(l), 0) }
}

test('the logger caps every field and every line, whatever it is given', () => {
  const huge = 'm'.repeat(4 * 1024 * 1024)
  const one = formatLogLine('info', huge, { requestId: huge }, { model: huge, nested: { deeper: [huge, huge], err: new Error(huge) } })
  assert.ok(Buffer.byteLength(one) <= MAX_LOG_LINE_BYTES, `one line is ${Buffer.byteLength(one)} bytes`)
  assert.match(one, /…\(\+\d+ chars\)/, 'says how much was cut')
  const many: Record<string, unknown> = {}
  for (let i = 0; i < 1000; i++) many[`f${i}`] = 'x'.repeat(500)
  const wide = formatLogLine('warn', 'many fields', {}, many)
  assert.ok(Buffer.byteLength(wide) <= MAX_LOG_LINE_BYTES)
  assert.equal(JSON.parse(wide).truncated, true)
  assert.equal(JSON.parse(wide).msg, 'many fields')
})

test('10 requests with 4 MB model strings, funded or not, leave a bounded log; unfunded clients get 402 and only metadata', async () => {
  const proxyLog = capture()
  const clientLog = capture()
  const funded = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  const unfunded = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  const funds = new FakeFunds(new Map([[Buffer.from(funded.publicKey).toString('hex'), 10n ** 15n]]))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-ledger-'))
  const billing = new ProxyBilling({ ledger: new Ledger(path.join(dir, 'ledger.sqlite')), params: () => OFFCHAIN_PRICE_PARAMS, funds, log: proxyLog.log })
  const p = await startProxy({ billing, log: proxyLog.log })
  stops.push(() => p.proxy.stop())
  const backend = new FakeBackend()
  const w = await startWorker(backend, [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const rich = await startClient([p.clientPort], { identity: funded, log: clientLog.log })
  const poor = await startClient([p.clientPort], { identity: unfunded, log: clientLog.log })
  stops.push(() => rich.client.stop(), () => poor.client.stop())
  await waitFor(() => rich.client.health().ok && poor.client.health().ok, 'clients')

  // Metadata is free; anything else needs funds, and is refused before the body is read.
  const models = await fetch(poor.url + '/v1/models')
  assert.equal(models.status, 200)
  const small = await fetch(poor.url + '/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] }) })
  assert.equal(small.status, 402)
  const err = ((await small.json()) as any).error
  assert.equal(err.code, 'insufficient_quota')
  assert.match(err.message, /no funds.*metadata/)
  assert.equal(backend.seen.length, 0, 'no worker ran anything for the unfunded client')

  const before = proxyLog.bytes() + clientLog.bytes()
  const huge = 'M'.repeat(4 * 1024 * 1024)
  const statuses: number[] = []
  for (const c of [poor, rich]) {
    for (let i = 0; i < 10; i++) {
      const r = await fetch(c.url + '/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: huge, messages: [{ role: 'user', content: 'hi' }] }) })
      statuses.push(r.status)
      const text = await r.text()
      assert.ok(text.length < 4096, `the error answer echoes at most a bounded prefix (${text.length} chars)`)
    }
  }
  assert.deepEqual([...new Set(statuses.slice(0, 10))], [402], 'the unfunded client is refused with 402')
  assert.deepEqual([...new Set(statuses.slice(10))], [404], 'the funded one learns the model does not exist')
  const written = proxyLog.bytes() + clientLog.bytes() - before
  // 20 requests of 4 MB each: 80 MB of input. A few bounded lines per request at most.
  assert.ok(written < 20 * 3 * MAX_LOG_LINE_BYTES, `the two nodes logged ${written} bytes`)
  for (const l of [...proxyLog.lines, ...clientLog.lines]) assert.ok(Buffer.byteLength(l) <= MAX_LOG_LINE_BYTES)
  assert.equal(backend.seen.length, 0)
})

test('a client that keeps getting errors is slowed with 429 and Retry-After, then served again', async () => {
  const proxyLog = capture()
  const p = await startProxy({ log: proxyLog.log })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const bad = () => fetch(c.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'no-such-model', prompt: 'x' }) })
  const statuses: number[] = []
  let retryAfter: string | null = null
  for (let i = 0; i < 40; i++) {
    const r = await bad()
    statuses.push(r.status)
    if (r.status === 429) retryAfter = r.headers.get('retry-after')
    await r.arrayBuffer()
  }
  assert.ok(statuses.filter((s) => s === 404).length >= 15, `first errors are answered normally: ${statuses.join(',')}`)
  assert.ok(statuses.filter((s) => s === 429).length >= 10, `then the client is slowed: ${statuses.join(',')}`)
  assert.ok(Number(retryAfter) >= 1, 'with Retry-After')
  const good = () => fetch(c.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
  const limited = await good()
  assert.equal(limited.status, 429, 'even a good request waits out the penalty')
  await limited.arrayBuffer()
  assert.equal(proxyLog.lines.filter((l) => l.includes('slowing it down')).length, 1, 'the limit is logged once, not per refusal')
  await new Promise((r) => setTimeout(r, Number(retryAfter) * 1000 + 100))
  const ok = await good()
  assert.equal(ok.status, 200)
  await ok.arrayBuffer()
  assert.ok((p.proxy.stats() as any).clients.rateLimited >= 10)
})
