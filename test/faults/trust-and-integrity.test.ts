// Defect 16: a worker answering as a model it did not attest is dropped; the root watcher never goes back to
// an older root version; the ledger's counters are checked against its hash chain when it opens; and a
// policy change drops already-connected peers at clients and workers too (image and evidence kind).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import { Address } from '@ton/core'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { offchainBilling, policyFor, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { cocoon, randomPortOffset, tmpDir } from '../helpers/procs.ts'
import { createLogger, silentLogger } from '../../src/core/log.ts'
import { HEADERS, usageSigningPayload, type UsageRecord } from '../../src/net/protocol.ts'
import { RootWatcher } from '../../src/ton/chain-client/root-watcher.ts'
import type { Chain } from '../../src/ton/chain-client/chain.ts'
import type { RootState } from '../../src/ton/contracts/root.ts'
import { DEVNET_PARAMS } from '../../src/ton/chain-client/devnet-root.ts'
import { Ledger } from '../../src/payments/ledger.ts'
import { LiveTrust, refusalUnder } from '../../src/node/trust.ts'
import { SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/simulated.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { createClient } from '../../src/client/client.ts'
import { createWorker } from '../../src/worker/worker.ts'
import type { Policy } from '../../src/tee/types.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test('a worker whose answer names a model it did not attest is dropped, bills nothing, and stays away', async () => {
  const lines: string[] = []
  const p = await startProxy({ billing: offchainBilling(), log: createLogger({}, 'debug', (l) => lines.push(l)) })
  stops.push(() => p.proxy.stop())
  const w = await startWorker(new FakeBackend(), [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  // A HOSTILE worker: the real one, signing records that name another model.
  const identity = (w as any).deps.identity.current()
  ;(w as any).usageTrailers = async (r: UsageRecord) => {
    const json = JSON.stringify({ ...r, answer: { ...r.answer, model: 'gpt-9-premium' } })
    return { [HEADERS.usage]: json, [HEADERS.usageSig]: Buffer.from(await identity.signAsync(usageSigningPayload(json))).toString('base64') }
  }
  const r = await fetch(c.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
  assert.equal(r.status, 502)
  await r.arrayBuffer()
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 0, 'the proxy to drop the worker')
  assert.equal((p.proxy.stats() as any).money.chargedNano, '0', 'nothing billed')
  assert.ok(lines.some((l) => l.includes("answered as model 'gpt-9-premium' but attested 'fake-model'")))
  // It redials at once; it is not taken back.
  await sleep(1500)
  assert.equal((p.proxy.stats() as any).workers.connected, 0)
  assert.ok((p.proxy.stats() as any).workers.refused >= 2)
})

function rootState(version: number, proxyImages: string[] = []): RootState {
  return { owner: Address.parseRaw('0:' + '00'.repeat(32)), version, uniqueId: 1, params: DEVNET_PARAMS, proxyImageHashes: proxyImages, workerImageHashes: [], modelHashes: [], proxies: new Map(), delisted: new Map() }
}

test('the root watcher never applies an older root version than it has seen', async () => {
  // FAKE chain (the seam next door): answers with whatever version the test queues.
  const answers = [5, 3, 4, 6, 2]
  const chain = { getRootState: async () => rootState(answers.shift()!) } as unknown as Chain
  const lines: string[] = []
  const watcher = new RootWatcher({ chain, root: Address.parseRaw('0:' + '11'.repeat(32)), log: createLogger({}, 'debug', (l) => lines.push(l)) }, { refreshMs: 3_600_000 })
  stops.push(() => watcher.stop())
  assert.equal((await watcher.start()).version, 5)
  const seen: number[] = []
  watcher.subscribe((s) => seen.push(s.version))
  assert.equal((await watcher.refresh())!.version, 5, 'version 3 is ignored')
  assert.equal((await watcher.refresh())!.version, 5, 'version 4 is ignored')
  assert.equal((await watcher.refresh())!.version, 6)
  assert.equal((await watcher.refresh())!.version, 6, 'version 2 is ignored')
  assert.deepEqual(seen, [6], 'subscribers see only forward moves')
  assert.equal(lines.filter((l) => l.includes('older root version')).length, 3)
})

test('the ledger checks its counters against its hash chain when it opens', () => {
  const tmp = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ledger-')), 'ledger.sqlite')
  const usage = (i: number) => ({ type: 'usage' as const, requestId: `r${i}`, client: 'c1', worker: 'w1', coefficient: 1000, promptTokens: 10, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0, adjusted: '15', clientNano: '300', workerNano: '225' })
  const fill = (file: string) => {
    const l = new Ledger(file)
    for (let i = 0; i < 5; i++) l.recordUsage(usage(i))
    l.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: 'C', tokens: '45', signature: 'aa' }, 'client', 'c1')
    assert.equal(l.integrity, undefined)
    l.close()
  }
  const reopen = (file: string, tamper: (db: Database.Database) => void) => {
    const db = new Database(file)
    tamper(db)
    db.close()
    const l = new Ledger(file)
    const problem = l.integrity?.message
    l.close()
    return problem
  }
  const good = tmp()
  fill(good)
  assert.equal(reopen(good, () => {}), undefined, 'an intact ledger opens clean')
  const counters = tmp()
  fill(counters)
  assert.match(reopen(counters, (db) => db.prepare(`UPDATE counters SET tokens = '1000000' WHERE party = 'worker'`).run())!, /worker counter of w1 says 1000000 tokens.*add up to 75/)
  const lowered = tmp()
  fill(lowered)
  assert.match(reopen(lowered, (db) => db.prepare(`UPDATE counters SET nano = '1' WHERE party = 'client'`).run())!, /client counter of c1/)
  const body = tmp()
  fill(body)
  assert.match(
    reopen(body, (db) => {
      db.exec('DROP TRIGGER events_append_only_u')
      db.prepare(`UPDATE events SET body = replace(body, '"adjusted":"15"', '"adjusted":"1"') WHERE seqno = 2`).run()
    })!,
    /hash chain breaks at event 2/,
  )
  const vouchered = tmp()
  fill(vouchered)
  assert.match(reopen(vouchered, (db) => db.prepare(`UPDATE counters SET vouchered = '0' WHERE party = 'client'`).run())!, /voucher for 45 tokens is not reflected/)
  const missing = tmp()
  fill(missing)
  assert.match(reopen(missing, (db) => db.prepare(`DELETE FROM counters WHERE party = 'worker'`).run())!, /worker counter of w1 is missing/)
})

test('a proxy process whose ledger counters disagree with its events refuses to serve, and says why', async () => {
  const dir = tmpDir('integrity')
  stops.push(() => fs.rmSync(dir, { recursive: true, force: true }))
  const l = new Ledger(path.join(dir, 'proxy', 'ledger.sqlite'))
  l.recordUsage({ type: 'usage', requestId: 'r1', client: 'c1', worker: 'w1', coefficient: 1000, promptTokens: 10, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0, adjusted: '15', clientNano: '300', workerNano: '225' })
  l.close()
  const db = new Database(path.join(dir, 'proxy', 'ledger.sqlite'))
  db.prepare(`UPDATE counters SET tokens = '0', nano = '0' WHERE party = 'client'`).run()
  db.close()
  const base = randomPortOffset()
  const image = await simulatedImageHash('')
  const cfg = path.join(dir, 'proxy.json')
  fs.writeFileSync(cfg, JSON.stringify({ role: 'proxy', dataDir: path.join(dir, 'proxy'), tee: { kind: 'simulated' }, policy: { acceptKinds: ['simulated', 'none'], imageHashes: { worker: [image], client: '*' } }, stats: `127.0.0.1:${base + 11000}`, workerListen: `127.0.0.1:${base + 11001}`, clientListen: `127.0.0.1:${base + 11002}` }))
  const proc = cocoon(['proxy', '--config', cfg])
  stops.push(async () => {
    proc.proc.kill('SIGTERM')
    await proc.exited
  })
  let stats: any
  await waitFor(async () => (stats = await fetch(`http://127.0.0.1:${base + 11000}/jsonstats`).then((r) => r.json()).catch(() => null)) !== null, 'the proxy', 60_000).catch(async () => {
    throw new Error(proc.output())
  })
  assert.equal(stats.serving.ok, false)
  assert.match(stats.serving.reason, /integrity check failed.*client counter of c1/)
  assert.match(proc.output(), /refusing to serve/)
})

async function liveTrust(proxyTag: string): Promise<LiveTrust> {
  const policy: Policy = { ...(await policyFor({ proxyTags: [proxyTag] })), acceptKinds: ['simulated', 'none'] }
  return new LiveTrust(policy, { simulated: new SimulatedEvidenceVerifier() })
}

test('a policy change drops a connected proxy at a client and at a worker: image revoked, evidence kind no longer accepted', async () => {
  for (const change of ['image', 'kind'] as const) {
    const p = await startProxy()
    stops.push(() => p.proxy.stop())
    const worker = await startWorker(new FakeBackend(), [p.workerPort])
    stops.push(() => worker.stop())
    await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'a worker for the client to use')
    const ct = await liveTrust('')
    const wt = await liveTrust('')
    const client = createClient({ listen: { host: '127.0.0.1', port: 0 }, proxies: [{ host: '127.0.0.1', port: p.clientPort }] }, { identity: fixedIdentity(await createIdentity({ role: 'client', configHash: '00'.repeat(32) })), verify: ct.verify, log: silentLogger })
    ct.onUpdate((pol) => client.revalidate((peer) => refusalUnder(pol, peer)))
    const port = await client.start()
    stops.push(() => client.stop())
    const backend = new FakeBackend()
    const w = createWorker(
      { proxies: [{ host: '127.0.0.1', port: p.workerPort }] },
      { backend, identity: fixedIdentity(await createIdentity({ role: 'worker', provider: new (await import('../../src/tee/simulated.ts')).SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), modelId: 'watched-model', modelHash: backend.model.hash })), verify: wt.verify, log: silentLogger },
    )
    wt.onUpdate((pol) => w.revalidate((peer) => refusalUnder(pol, peer)))
    w.start()
    stops.push(() => w.stop())
    await waitFor(() => client.health().ok && (w.stats() as any).proxies[0].state === 'connected', 'both to connect')
    const ok = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
    assert.equal(ok.status, 200)
    await ok.arrayBuffer()
    const next = (t: LiveTrust): Policy => (change === 'image' ? { ...t.policy, imageHashes: { ...t.policy.imageHashes, proxy: [] } } : { ...t.policy, acceptKinds: ['tdx'] })
    ct.update(next(ct))
    wt.update(next(wt))
    const why = change === 'image' ? /no longer allowed|not allowed|not on the allow-list|image/ : /kind|simulated/
    await waitFor(() => (client.stats() as any).proxies[0].state === 'refused', `the client to drop the proxy (${change})`)
    await waitFor(() => (w.stats() as any).proxies[0].state === 'refused', `the worker to drop the proxy (${change})`)
    assert.match((client.stats() as any).proxies[0].lastError, why)
    assert.match((w.stats() as any).proxies[0].lastError, why)
    await waitFor(() => !(p.proxy.stats() as any).workers.list.some((x: any) => x.model.id === 'watched-model'), 'the worker to leave the proxy')
    const refused = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x' }) })
    assert.equal(refused.status, 503, 'the client no longer uses the proxy')
    await refused.arrayBuffer()
  }
})
