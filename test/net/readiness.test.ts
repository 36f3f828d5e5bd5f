// What a client says while the network comes up: /v1/models is an empty list until a worker is there, and
// /healthz is not ready, with a reason, until a request could be served. Real RA-TLS and HTTP/2 on loopback;
// the FAKE backend stands in for the model at the worker's seam.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { SimulatedEvidenceProvider, simulatedImageHash } from '../../src/tee/simulated.ts'

const stops: Array<() => Promise<void>> = []
after(async () => {
  for (const s of stops.reverse()) await s().catch(() => {})
})

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => s.once('listening', r))
  const port = (s.address() as net.AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

const get = async (url: string) => {
  const r = await fetch(url)
  return { status: r.status, body: (await r.json()) as any }
}

test('with no proxy: /v1/models is 200 with an empty list, /healthz is 503 with reason "no proxy"', async () => {
  const c = await startClient([await closedPort()])
  stops.push(() => c.client.stop())
  assert.deepEqual(await get(c.url + '/v1/models'), { status: 200, body: { object: 'list', data: [] } })
  const h = await get(c.url + '/healthz')
  assert.equal(h.status, 503)
  assert.equal(h.body.ok, false)
  assert.equal(h.body.reason, 'no proxy')
})

test('a proxy without workers: the client says "no worker" and lists nothing; ready once a worker connects', async () => {
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  assert.equal(p.proxy.health().ok, false)
  assert.equal(p.proxy.health().reason, 'no worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().connectedProxies === 1, 'the client to reach the proxy')
  assert.deepEqual(await get(c.url + '/v1/models'), { status: 200, body: { object: 'list', data: [] } })
  const h = await get(c.url + '/healthz')
  assert.equal(h.status, 503)
  assert.equal(h.body.reason, 'no worker')
  assert.equal(h.body.connectedProxies, 1)

  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(async () => (await get(c.url + '/healthz')).status === 200, 'the client to be ready')
  const ready = await get(c.url + '/healthz')
  assert.equal(ready.body.ok, true)
  assert.equal(ready.body.reason, undefined)
  assert.deepEqual(ready.body.models, ['fake-model'])
  assert.deepEqual((await get(c.url + '/v1/models')).body.data.map((m: any) => m.id), ['fake-model'])
  assert.equal(p.proxy.health().ok, true)
})

test('on chain, a client whose contract with the proxy holds nothing says "not funded"', async () => {
  // A proxy that settles on chain claims a payment key; the client's funding check is the seam next door, faked here.
  const identity = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), paymentKey: 'ab'.repeat(32) })
  const p = await startProxy({ identity: fixedIdentity(identity) })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  let funded = false
  const c = await startClient([p.clientPort], { funded: () => funded })
  stops.push(() => c.client.stop())
  await waitFor(async () => (await get(c.url + '/healthz')).body.reason === 'not funded', 'the client to report "not funded"')
  assert.equal((await get(c.url + '/healthz')).status, 503)
  funded = true
  assert.equal((await get(c.url + '/healthz')).status, 200)
})
