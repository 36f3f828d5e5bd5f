// The reliability record end to end on the devnet chain, through real processes: after answers and a commit, the
// proxy serves its record publicly (no certificate, no token) at /cocoon/v1/reliability; the record served is the
// one committed (its hash is get_reliability_hash), it recomputes from the receipts served with it (v2 receipts
// carry the first token time), and `cocoon reliability verify` detects a tampered record, hash or receipt set.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { Address } from '@ton/core'
import { cocoon, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { createChain } from '../../src/ton/chain-client/chain.ts'
import { ProxyContract } from '../../src/ton/contracts/proxy.ts'
import { decodeReceiptBoc } from '../../src/payments/receipts/receipt.ts'
import { reliabilityHash } from '../../src/payments/receipts/reliability.ts'
import { runReliability } from '../../src/cli/reliability.ts'
import { runAudit } from '../../src/cli/receipts.ts'
import { RELIABILITY_PRIOR_SCORE, reliabilityScore } from '../../src/proxy/routing.ts'

let devnet: Proc
let dir: string
let state: DevnetState
let base: string
const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>
const statsUrl = () => `http://127.0.0.1:${state.ports.proxyStats}`

async function settle(): Promise<any> {
  const token = fs.readFileSync(path.join(dir, 'proxy', 'admin.token'), 'utf8').trim()
  for (;;) {
    const r = await fetch(`${statsUrl()}/admin/settle`, { method: 'POST', headers: { 'x-cocoon-admin-token': token } })
    if (r.status !== 429) return r.json()
    await new Promise((res) => setTimeout(res, Number(r.headers.get('retry-after') ?? 1) * 1000))
  }
}

/** `cocoon reliability verify --json` in process, against the devnet chain. */
async function verify(proxy: string, extra: string[] = []): Promise<{ code: number; out: any }> {
  let text = ''
  const code = await runReliability(['verify', '--proxy', proxy, '--chain', state.chain!.endpoint, '--json', ...extra], { out: (s) => ((text += s), true), err: (s) => ((text += s), true) })
  return { code, out: JSON.parse(text) }
}

/** A FAKE proxy stats endpoint (the seam next door to the verifier): serves whatever document the test gives it. */
async function fakeProxy(doc: unknown): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(doc))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) }
}

before(async () => {
  dir = tmpDir('reliability')
  devnet = cocoon(['devnet', '--workers', '1', '--no-speech', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 180_000)
  state = JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
  base = m[1].replace(/\/v1$/, '')
})

after(async () => {
  if (devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  if (process.env.COCOON_KEEP_TEST_DIRS) console.log(`kept ${dir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
})

test('the proxy serves the committed record publicly; its hash is on chain and it recomputes from its receipts', async () => {
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 8, temperature: 0, stream: i % 2 === 0 }) })
    assert.equal(r.status, 200)
    await r.text()
  }
  await settle()
  // Public: a plain GET, no client certificate, no admin token.
  const r = await fetch(`${statsUrl()}/cocoon/v1/reliability?receipts=1`)
  assert.equal(r.status, 200)
  const served = (await r.json()) as any
  assert.deepEqual(Object.keys(served).sort(), ['contract', 'hash', 'receipts', 'record', 'seqno', 'tx'])
  const rec = served.record
  assert.equal(rec.seqno, served.seqno)
  assert.ok(rec.receipts.to >= 4 && rec.receipts.from === 0, JSON.stringify(rec.receipts))
  assert.equal(served.receipts.length, rec.receipts.to - rec.receipts.from)
  const w = rec.workers.find((x: any) => x.model_id === 'stories260K')
  assert.ok(w, JSON.stringify(rec.workers))
  assert.ok(w.requests >= 4 && w.successes >= 4, JSON.stringify(w))
  assert.ok(w.p50_ttft_ms !== null && w.p50_ttft_ms >= 0, 'time to first token comes from the v2 receipts')
  assert.ok(w.tokens_per_sec > 0)
  assert.ok(w.uptime > 0 && w.uptime <= 1, `uptime ${w.uptime}`)
  // The receipts are version 2, with the first token between start and end.
  const f = decodeReceiptBoc(served.receipts[served.receipts.length - 1]).fields
  assert.equal(f.version, 2)
  assert.ok(f.firstTokenAtMs >= f.startedAtMs && f.firstTokenAtMs <= f.endedAtMs, JSON.stringify([f.startedAtMs, f.firstTokenAtMs, f.endedAtMs]))
  // The record served is the one committed.
  const chain = createChain({ endpoint: state.chain!.endpoint })
  const proxy = chain.open(ProxyContract.createFromAddress(Address.parse(served.contract)))
  const onChain = await proxy.getReliabilityHash()
  assert.equal(onChain.seqno, BigInt(served.seqno))
  assert.equal(onChain.hash.toString('hex'), served.hash)
  assert.equal(reliabilityHash(rec).toString('hex'), served.hash)
  // The proxy routes on the record: the connected worker's score is the one its committed entry gives.
  const stats = await getJson(`${statsUrl()}/jsonstats`)
  assert.deepEqual(stats.reliability, { seqno: served.seqno, hash: served.hash, workers: rec.workers.length })
  const conn = stats.workers.list.find((x: any) => x.model.id === 'stories260K')
  assert.equal(conn.quality.reliability, Math.round(reliabilityScore(w) * 1000) / 1000)
  assert.notEqual(conn.quality.reliability, Math.round(RELIABILITY_PRIOR_SCORE * 1000) / 1000, 'not the prior any more')
  // Without ?receipts=1, the same record without its receipts.
  const plain = await getJson(`${statsUrl()}/cocoon/v1/reliability`)
  assert.equal(plain.receipts, undefined)
  assert.equal(plain.hash, served.hash)
  // The CLI agrees, every check.
  const v = await verify(statsUrl())
  assert.equal(v.code, 0, JSON.stringify(v.out.checks))
  assert.deepEqual(v.out.checks.map((c: any) => c.name), ['hash', 'contract', 'chain', 'receipts', 'recompute'])
  assert.match(v.out.checks.find((c: any) => c.name === 'receipts').detail, /rebuild the receipts root the commit holds/)
  // `cocoon audit` names the last commit's reliability hash too (when no newer commit came in between).
  let auditText = ''
  assert.equal(await runAudit(['--proxy', served.contract, '--chain', state.chain!.endpoint, '--json'], { out: (s) => ((auditText += s), true) }), 0)
  const audit = JSON.parse(auditText)
  const latest = await proxy.getReliabilityHash()
  assert.equal(audit.reliabilityHash, latest.hash.toString('hex'))
})

test('a tampered record, a re-hashed record, a record from other receipts and a pinned other contract are each detected', async () => {
  const served = await getJson(`${statsUrl()}/cocoon/v1/reliability?receipts=1`)
  const cases: Array<{ name: string; doc: any; failed: string; extra?: string[] }> = []
  // 1. A better record than the receipts show, served under the committed hash.
  const inflated = structuredClone(served)
  inflated.record.workers[0].p50_ttft_ms = 1
  cases.push({ name: 'changed record, same hash', doc: inflated, failed: 'hash' })
  // 2. The same, re-hashed: the hash is not the one on chain.
  const rehashed = structuredClone(inflated)
  rehashed.hash = reliabilityHash(rehashed.record).toString('hex')
  cases.push({ name: 're-hashed record', doc: rehashed, failed: 'chain' })
  // 3. The committed record, with one receipt left out: the receipts no longer rebuild the root, or recompute.
  const fewer = structuredClone(served)
  fewer.receipts = fewer.receipts.slice(1)
  cases.push({ name: 'receipt withheld', doc: fewer, failed: 'receipts' })
  for (const c of cases) {
    const fake = await fakeProxy(c.doc)
    try {
      const v = await verify(fake.url, c.extra)
      assert.equal(v.code, 1, `${c.name}: ${JSON.stringify(v.out.checks)}`)
      assert.ok(v.out.failed.includes(c.failed), `${c.name}: failed ${v.out.failed}`)
    } finally {
      await fake.close()
    }
  }
  // 4. Pinned to another contract (the root's address is no proxy contract with this payment key).
  const other = await verify(statsUrl(), ['--contract', state.chain!.root!])
  assert.equal(other.code, 1)
  assert.ok(other.out.failed.includes('contract'), JSON.stringify(other.out.checks))
})
