// Defect 13: a proxy caught going backwards stays distrusted: the mark is in the node's own ledger, so it
// holds across the reconnects the link makes by itself and across a restart of the node.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { offchainBilling, partyLedger, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { PartyLedger } from '../../src/payments/party-ledger.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { RECONNECT_MIN_MS } from '../../src/net/proxy-link.ts'
import { CHEAT_WEIGHT } from '../../src/client/proxy-scores.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

const post = (url: string) => fetch(url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test('a client keeps away from a distrusted proxy across reconnects and across its own restart', async () => {
  const p = await startProxy({ billing: offchainBilling() })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const ledger = partyLedger()
  const identity = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  const c = await startClient([p.clientPort], { ledger, identity })
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const proxyId = (c.client.stats() as any).proxies[0].proxyId
  // The client remembers more than this proxy will report: as after a rollback of the proxy's ledger.
  ledger.recordStatement(proxyId, { tokens: 10_000n, nano: 10_000_000n })
  const first = await post(c.url)
  assert.equal(first.status, 200)
  await first.json()
  await waitFor(() => (c.client.stats() as any).proxies[0].state === 'distrusted', 'the client to distrust the proxy')
  assert.ok(ledger.isDistrusted(proxyId), 'the distrust is in the ledger')
  // A rollback is a cheat: backed off at once as CHEAT_WEIGHT failures (counted once), and shown on /jsonstats.
  const score = (c.client.stats() as any).proxies[0].score
  assert.equal(score.lastFailure?.kind, 'cheated', JSON.stringify(score))
  assert.equal(score.consecutiveFailures, CHEAT_WEIGHT, JSON.stringify(score))
  assert.equal(score.backedOff, true)
  // The link reconnects by itself within RECONNECT_MIN_MS; give it many chances.
  await sleep(RECONNECT_MIN_MS * 8)
  for (let i = 0; i < 3; i++) {
    const r = await post(c.url)
    assert.equal(r.status, 503, 'after reconnecting, the distrusted proxy is still not used')
    await r.arrayBuffer()
    assert.equal((c.client.stats() as any).proxies[0].state, 'distrusted')
    assert.equal(c.client.health().ok, false)
    await sleep(RECONNECT_MIN_MS * 2)
  }
  await c.client.stop()
  ledger.close()

  // A restart: a new client process-to-be, same identity, same ledger file on disk.
  const reopened = new PartyLedger(ledger.file)
  const again = await startClient([p.clientPort], { ledger: reopened, identity })
  stops.push(() => again.client.stop(), () => reopened.close())
  await waitFor(() => (again.client.stats() as any).proxies[0].state === 'distrusted', 'the restarted client to refuse the proxy')
  assert.match((again.client.stats() as any).proxies[0].lastError, /went backwards/)
  await sleep(RECONNECT_MIN_MS * 4)
  const r = await post(again.url)
  assert.equal(r.status, 503, 'after a restart, the distrusted proxy is still not used')
  await r.arrayBuffer()
})

test('a worker keeps away from a distrusted proxy across reconnects and across its own restart', async () => {
  const p = await startProxy({ billing: offchainBilling() })
  stops.push(() => p.proxy.stop())
  const ledger = partyLedger()
  const backend = new FakeBackend()
  const w = await startWorker(backend, [p.workerPort], { ledger })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const proxyId = (w.stats() as any).proxies[0].proxyId
  ledger.recordStatement(proxyId, { tokens: 1000n, nano: 800_000n })
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  await (await post(c.url)).json()
  await p.proxy.pushStatements()
  await waitFor(() => (w.stats() as any).proxies[0].state === 'distrusted', 'the worker to distrust the proxy')
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 0, 'the worker to leave')
  await sleep(RECONNECT_MIN_MS * 8)
  assert.equal((p.proxy.stats() as any).workers.connected, 0, 'after reconnecting, the worker still does not serve the proxy')
  assert.equal((w.stats() as any).proxies[0].state, 'distrusted')
  const r = await post(c.url)
  assert.notEqual(r.status, 200)
  await r.arrayBuffer()
  await w.stop()
  ledger.close()

  const reopened = new PartyLedger(ledger.file)
  const again = await startWorker(backend, [p.workerPort], { ledger: reopened })
  stops.push(() => again.stop(), () => reopened.close())
  await waitFor(() => (again.stats() as any).proxies[0].state === 'distrusted', 'the restarted worker to refuse the proxy')
  await sleep(RECONNECT_MIN_MS * 4)
  assert.equal((p.proxy.stats() as any).workers.connected, 0, 'after a restart, the worker still does not serve the proxy')
})
