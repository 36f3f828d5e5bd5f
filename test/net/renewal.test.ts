// Certificate renewal: new handshakes get a fresh certificate with the same key; live sessions carry on.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { RenewingIdentity } from '../../src/tee/renew.ts'
import { SimulatedEvidenceProvider, simulatedImageHash } from '../../src/tee/simulated.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { tlsOptions, peerCertDer } from '../../src/tee/tls.ts'
import { parseAttestedCert } from '../../src/tee/cert.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

async function proxyCert(port: number): Promise<{ createdAt: number; serial: string; key: string }> {
  const me = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...tlsOptions(me) }, async () => {
      const der = peerCertDer(s)!
      const serial = Buffer.from(der).toString('hex')
      s.destroy()
      const c = await parseAttestedCert(der)
      resolve({ createdAt: c.claims.createdAt, serial, key: c.claims.publicKey })
    })
    s.on('error', reject)
  })
}

test('a renewed certificate keeps the key, and a stream open across the renewal completes', async () => {
  let now = Date.now()
  const identity = await RenewingIdentity.start(
    { role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), now: () => new Date(now) },
    { renewSec: 3000 },
  )
  stops.push(() => identity.stop())
  const p = await startProxy({ identity })
  stops.push(() => p.proxy.stop())
  const b = new FakeBackend({ chunks: 30, delayMs: 10 })
  const w = await startWorker(b, [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')

  const before = await proxyCert(p.clientPort)
  const res = await fetch(c.url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', prompt: 'x', stream: true }) })
  const reader = res.body!.getReader()
  await reader.read()
  now += 60_000
  await identity.renew()
  let text = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    text += new TextDecoder().decode(value)
  }
  assert.match(text, /data: \[DONE\]/, 'the live stream finished normally')
  assert.equal(b.completed, 1)
  const afterRenewal = await proxyCert(p.clientPort)
  assert.equal(afterRenewal.key, before.key, 'same identity key')
  assert.notEqual(afterRenewal.serial, before.serial, 'a new certificate')
  assert.equal(afterRenewal.createdAt, before.createdAt + 60)
  // The old sessions still work after the renewal, and so do new ones.
  const again = await fetch(c.url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
  assert.equal(again.status, 200)
})

test('renewal must come before expiry', async () => {
  await assert.rejects(RenewingIdentity.start({ role: 'client', configHash: '00'.repeat(32), validitySec: 60 }, { renewSec: 60 }), RangeError)
})
