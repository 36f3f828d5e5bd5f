// Clients and workers keep what the proxy told them; a proxy whose figures go backwards is caught and dropped.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { offchainBilling, partyLedger, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

const post = (url: string, body: unknown) => fetch(url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

test('the client records each cumulative charge, and the worker its earnings', async () => {
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  const wl = partyLedger()
  const w = await startWorker(new FakeBackend({ chunks: 4 }), [p.workerPort], { ledger: wl })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const cl = partyLedger()
  const c = await startClient([p.clientPort], { ledger: cl })
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  let total = 0
  for (let i = 0; i < 3; i++) {
    const j = (await (await post(c.url, { model: 'fake-model', prompt: 'one two' })).json()) as any
    total += j.usage.cost
  }
  const [rec] = cl.all()
  assert.equal(rec.told.nano, BigInt(total), 'the client ledger holds the cumulative charge')
  assert.equal(rec.distrusted, null)
  await p.proxy.pushStatements()
  const [wrec] = wl.all()
  assert.equal(wrec.told.nano, (BigInt(total) * 800n) / 1000n, 'the worker ledger holds its cumulative earnings')
  const ws = w.stats() as any
  assert.equal(ws.proxies[0].earned.nano, wrec.told.nano.toString())
})

test('a worker stops serving a proxy that reports less than it already owed', async () => {
  const p = await startProxy({ billing: offchainBilling() })
  stops.push(() => p.proxy.stop())
  const wl = partyLedger()
  const w = await startWorker(new FakeBackend(), [p.workerPort], { ledger: wl })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  // The worker remembers more than this (fresh) proxy ledger will report: as after a rollback.
  const proxyId = (w.stats() as any).proxies[0].proxyId
  wl.recordStatement(proxyId, { tokens: 1000n, nano: 800_000n })
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  await (await post(c.url, { model: 'fake-model', prompt: 'x' })).json()
  await p.proxy.pushStatements()
  await waitFor(() => (w.stats() as any).proxies[0].state === 'distrusted', 'the worker to distrust the proxy')
  assert.match(wl.isDistrusted(proxyId)!, /went backwards/)
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 0, 'the worker to leave the proxy')
})

test('a client stops using a proxy whose charge goes backwards', async () => {
  const p = await startProxy({ billing: offchainBilling() })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const cl = partyLedger()
  const c = await startClient([p.clientPort], { ledger: cl })
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const proxyId = (c.client.stats() as any).proxies[0].proxyId
  cl.recordStatement(proxyId, { tokens: 10_000n, nano: 10_000_000n })
  const res = await post(c.url, { model: 'fake-model', prompt: 'x' })
  assert.equal(res.status, 200)
  await res.json()
  await waitFor(() => (c.client.stats() as any).proxies[0].state === 'distrusted', 'the client to distrust the proxy')
  assert.match((c.client.stats() as any).proxies[0].lastError, /went backwards/)
  const after = await post(c.url, { model: 'fake-model', prompt: 'x' })
  assert.equal(after.status, 503, 'the distrusted proxy is not used')
})

test('a worker refuses forged and cross-purpose vouchers before it would submit them', async () => {
  const { keyPairFromSeed } = await import('@ton/crypto')
  const { Address } = await import('@ton/core')
  const { signVoucher, signedVoucherToBase64 } = await import('../../src/ton/contracts/vouchers.ts')
  const http2 = await import('node:http2')
  const { createIdentity } = await import('../../src/tee/cert.ts')
  const { SimulatedEvidenceProvider, simulatedImageHash } = await import('../../src/tee/simulated.ts')
  const { fixedIdentity } = await import('../../src/tee/renew.ts')
  const { listenAttested } = await import('../../src/net/attested.ts')
  const { silentLogger } = await import('../../src/core/log.ts')
  const { policyFor } = await import('../helpers/network.ts')
  const { createPeerVerifier } = await import('../../src/tee/verify.ts')
  const { SimulatedEvidenceVerifier } = await import('../../src/tee/simulated.ts')
  // A bare attested "proxy" that we drive by hand, with a payment key it claims.
  const payment = keyPairFromSeed(Buffer.alloc(32, 9))
  const identity = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), paymentKey: payment.publicKey.toString('hex') })
  const verify = createPeerVerifier(await policyFor(), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 0 })
  let session: import('node:http2').ClientHttp2Session | undefined
  const server = await listenAttested({ host: '127.0.0.1', port: 0, identity: fixedIdentity(identity), verify: (d, r) => verify(d, r), expectedRole: 'worker', log: silentLogger, onPeer: ({ socket }) => (session = http2.connect('https://w', { createConnection: () => socket })) })
  stops.push(() => void server.close())
  const wl = partyLedger()
  const w = await startWorker(new FakeBackend(), [(server.address() as any).port], { ledger: wl })
  stops.push(() => w.stop())
  await waitFor(() => session !== undefined, 'the worker to connect')
  const send = (st: unknown) =>
    new Promise<any>((resolve, reject) => {
      const r = session!.request({ ':method': 'POST', ':path': '/cocoon/v1/statement' })
      let body = ''
      r.on('data', (c) => (body += c))
      r.on('end', () => resolve(JSON.parse(body)))
      r.on('error', reject)
      r.end(JSON.stringify(st))
    })
  const target = Address.parseRaw('0:' + '11'.repeat(32))
  const forger = keyPairFromSeed(Buffer.alloc(32, 1))
  const forged = signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens: 10n }, forger.secretKey))
  assert.match((await send({ tokens: '10', nano: '8000', voucher: forged })).error, /not signed by this proxy/)
  const charge = signedVoucherToBase64(signVoucher({ kind: 'clientCharge', target, tokens: 10n }, payment.secretKey))
  assert.match((await send({ tokens: '10', nano: '8000', voucher: charge })).error, /not a payout/)
  const inflated = signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens: 99n }, payment.secretKey))
  assert.match((await send({ tokens: '10', nano: '8000', voucher: inflated })).error, /more than/)
  assert.equal(wl.all()[0]?.voucher ?? null, null, 'no refused voucher was kept')
  const good = signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens: 10n }, payment.secretKey))
  assert.equal((await send({ tokens: '10', nano: '8000', voucher: good })).ok, true)
  assert.equal(wl.all()[0].vouchered, 10n)
  // Replaying an older voucher changes nothing.
  const older = signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens: 5n }, payment.secretKey))
  assert.equal((await send({ tokens: '10', nano: '8000', voucher: older })).ok, true)
  assert.equal(wl.all()[0].vouchered, 10n)
})
