// Payments end to end on the devnet chain, through real processes: billing, settlement, agreement with the
// contracts to the nanoTON, 402 before work, kill -9 of the proxy, a worker and the client, and a restored old ledger.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import Database from 'better-sqlite3'
import { Address } from '@ton/core'
import { cocoon, isAlive, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { handDrivenProxy, partyLedger, policyFor, waitFor } from '../helpers/network.ts'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { prng } from '../helpers/prng.ts'
import { signVoucher, signedVoucherToBase64 } from '../../src/ton/contracts/vouchers.ts'
import { WorkerPayouts } from '../../src/payments/worker-payouts.ts'
import { NodeWallet } from '../../src/ton/chain-client/wallet.ts'
import { createWorker, MAX_ACTIVE_REQUESTS } from '../../src/worker/worker.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/simulated.ts'
import { createPeerVerifier } from '../../src/tee/verify.ts'
import { silentLogger } from '../../src/core/log.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { createChain } from '../../src/ton/chain-client/chain.ts'
import { devnetFaucet, loadOrCreateWalletKey, loadWalletKey, nodeWalletContract } from '../../src/ton/chain-client/wallet.ts'
import { contractCodes } from '../../src/ton/contracts/compile.ts'
import { clientContract, proxyContract, workerContract, type ProxyChannel } from '../../src/payments/channels.ts'

const SEED = Number(process.env.COCOON_CRASH_SEED ?? 7)
const CRASH_REQUESTS = Number(process.env.COCOON_CRASH_REQUESTS ?? (process.env.COCOON_FAULTS_LONG ? 1000 : 200))

let devnet: Proc
let dir: string
let state: DevnetState
let openai: OpenAI
const getJson = async (url: string, init?: RequestInit) => (await fetch(url, init)).json() as Promise<any>
const proxyStats = () => getJson(`http://127.0.0.1:${state.ports.proxyStats}/jsonstats`)
/** A money-moving admin POST with the node's admin token; waits out the minimum interval (429 + Retry-After) like an operator would. */
async function admin(url: string, node: string): Promise<any> {
  const token = fs.readFileSync(path.join(dir, node, 'admin.token'), 'utf8').trim()
  for (;;) {
    const r = await fetch(url, { method: 'POST', headers: { 'x-cocoon-admin-token': token } })
    if (r.status !== 429) return r.json()
    await new Promise((res) => setTimeout(res, Number(r.headers.get('retry-after') ?? 1) * 1000))
  }
}
const settle = () => admin(`http://127.0.0.1:${state.ports.proxyStats}/admin/settle`, 'proxy')
const payout = (i: number) => admin(`http://127.0.0.1:${state.ports.workers[i]}/admin/payout`, `worker-${i}`)
const currentPid = (name: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8')) as DevnetState).children[name].pid!

before(async () => {
  dir = tmpDir('payments')
  devnet = cocoon(['devnet', '--workers', '2', '--no-speech', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 180_000)
  state = JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
  openai = new OpenAI({ baseURL: m[1], apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  if (devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  if (process.env.COCOON_KEEP_TEST_DIRS) console.log(`kept ${dir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
})

async function onChain() {
  const chain = createChain({ endpoint: state.chain!.endpoint })
  const root = Address.parse(state.chain!.root!)
  const rs = await chain.getRootState(root)
  const paymentKey = loadWalletKey(path.join(dir, 'proxy', 'payment.key')).publicKey
  const proxyOwner = nodeWalletContract(loadWalletKey(path.join(dir, 'proxy', 'wallet.key')).publicKey).address
  const ch: ProxyChannel = { root, owner: proxyOwner, paymentKey, params: rs.params, codes: await contractCodes() }
  const wallet = (f: string) => nodeWalletContract(loadWalletKey(path.join(dir, f, 'wallet.key')).publicKey).address
  const client = await chain.open(clientContract(ch, wallet('client'))).getState()
  const workers = await Promise.all([0, 1].map(async (i) => {
    const c = chain.open(workerContract(ch, wallet(`worker-${i}`)))
    return (await chain.isDeployed(c.address)) ? (await c.getState()).tokensPaid : 0n
  }))
  const proxy = await chain.open(proxyContract(ch)).getState()
  return { params: rs.params, client, workers, proxy, clientWallet: wallet('client').toRawString() }
}

/** One completion; streamed ones read the cost from the final usage chunk. Returns its cost in nanoTON. */
async function ask(stream: boolean, maxTokens = 8): Promise<number> {
  if (!stream) {
    const r = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0 })
    return (r.usage as any).cost
  }
  const s = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0, stream: true })
  let cost: number | undefined
  for await (const c of s) if ((c as any).usage) cost = (c as any).usage.cost
  assert.ok(cost !== undefined && cost > 0, 'a streamed answer carries its cost in the final usage chunk')
  return cost
}

test('streamed and non-streamed answers are billed, and after settlement the ledger, vouchers and contracts agree to the nanoTON', async () => {
  const chainBefore = await onChain()
  let total = 0n
  for (let i = 0; i < 12; i++) total += BigInt(await ask(i % 2 === 0))
  const ps = await proxyStats()
  assert.equal(BigInt(ps.money.chargedNano), total, "the proxy's counters hold exactly what the answers said they cost")
  await settle()
  for (const i of [0, 1]) await payout(i)
  const c = await onChain()
  const p = c.params
  const clientRow = (await proxyStats()).money.clients.find((r: any) => r.account === c.clientWallet)
  const clientTokens = BigInt(clientRow.tokens)
  assert.equal(c.client.tokensCharged, clientTokens, 'the client contract was charged exactly the ledger total')
  assert.equal(BigInt(clientRow.voucheredTokens), clientTokens, 'by a voucher for that total')
  assert.equal(chainBefore.client.balanceNano - c.client.balanceNano, clientTokens * p.pricePerTokenNano - (chainBefore.client.tokensCharged * p.pricePerTokenNano), 'the balance fell by exactly the charge')
  const workerTokens = (await proxyStats()).money.workers.reduce((t: bigint, w: any) => t + BigInt(w.tokens), 0n)
  assert.equal(c.workers[0] + c.workers[1], workerTokens, 'the worker contracts paid exactly what the workers earned')
  assert.equal(c.proxy.tokensCharged, clientTokens)
  assert.equal(c.proxy.tokensPaid, workerTokens)
  // client charged = worker earned + proxy margin, with margin >= 0.
  const charged = clientTokens * p.pricePerTokenNano
  const earned = workerTokens * p.workerFeePerTokenNano
  const margin = BigInt((await proxyStats()).money.marginNano)
  assert.equal(charged, earned + margin)
  assert.ok(margin >= 0n)
  // The client's own ledger holds what the proxy told it, and sees the charge on chain.
  const clientStats = await getJson(`${state.baseUrl.replace(/\/v1$/, '')}/jsonstats`)
  assert.equal(BigInt(clientStats.proxies[0].charged.nano), BigInt(clientRow.nano))
})

test('a payout voucher for another contract is refused on receipt: no transaction is sent, and the correct voucher is still claimed', async () => {
  // Funds in the proxy contract to pay from: a charged client.
  await ask(false)
  await settle()
  const paymentKey = loadWalletKey(path.join(dir, 'proxy', 'payment.key'))
  const proxyId = paymentKey.publicKey.toString('hex')
  // The proxy's real payment key, behind a FAKE proxy driven by hand; a real worker (in process) paid on the devnet chain.
  const proxy = await handDrivenProxy(proxyId)
  const chain = createChain({ endpoint: state.chain!.endpoint })
  const wdir = tmpDir('voucher-worker')
  const wallet = new NodeWallet(chain, loadOrCreateWalletKey(path.join(wdir, 'wallet.key')), { pollIntervalMs: 50 })
  await devnetFaucet(state.chain!.url, wallet.address, 2n * 1_000_000_000n)
  const ledger = partyLedger()
  const payouts = new WorkerPayouts({ chain, wallet, root: Address.parse(state.chain!.root!), rootState: () => undefined, ledger, log: silentLogger }, 0n)
  const backend = new FakeBackend()
  const identity = await createIdentity({ role: 'worker', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), modelId: backend.model.id, modelHash: backend.model.hash })
  const verifier = createPeerVerifier(await policyFor(), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 0 })
  const worker = createWorker(
    { proxies: [{ host: '127.0.0.1', port: proxy.port }], payoutAddress: wallet.address.toRawString() },
    { backend, identity: fixedIdentity(identity), verify: (d, r) => verifier(d, r), log: silentLogger, ledger, payoutContract: (id) => payouts.contractAddress(id) },
  )
  worker.start()
  try {
    await waitFor(proxy.connected, 'the worker to connect')
    const mine = Address.parseRaw(await payouts.contractAddress(proxyId))
    const elsewhere = Address.parseRaw(await (async () => {
      // Another worker's contract on the same proxy: a real, valid contract, just not this worker's.
      const ch: ProxyChannel = { root: Address.parse(state.chain!.root!), owner: nodeWalletContract(loadWalletKey(path.join(dir, 'proxy', 'wallet.key')).publicKey).address, paymentKey: paymentKey.publicKey, params: (await chain.getRootState(Address.parse(state.chain!.root!))).params, codes: await contractCodes() }
      return workerContract(ch, nodeWalletContract(loadWalletKey(path.join(dir, 'worker-0', 'wallet.key')).publicKey).address).address.toRawString()
    })())
    const voucher = (target: Address, tokens: bigint) => signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens }, paymentKey.secretKey))
    const told = { tokens: '1000000', nano: '1600000000' }
    const seqno0 = await wallet.seqno()
    const bad = await proxy.sendStatement({ ...told, voucher: voucher(elsewhere, 1_000_000n) })
    assert.equal(bad.ok, false)
    assert.match(bad.error, /another contract/)
    assert.equal(ledger.get(proxyId).voucher, null, 'the voucher for another contract was not kept')
    assert.equal(await payouts.claim(proxyId, true), 0n)
    assert.equal(await wallet.seqno(), seqno0, 'no transaction was sent')
    assert.equal(await chain.isDeployed(mine), false)
    // The correct voucher, with a lower count, is taken and claimed.
    const good = await proxy.sendStatement({ ...told, voucher: voucher(mine, 10n) })
    assert.equal(good.ok, true, JSON.stringify(good))
    assert.equal(await payouts.claim(proxyId, true), 10n)
    assert.equal(await wallet.seqno(), seqno0 + 1, 'one transaction: the claim')
    // A bad voucher kept by an older build cannot shadow later ones either: dropped at claim time, without a transaction.
    ledger.recordVoucher(proxyId, 1_000_000n, voucher(elsewhere, 1_000_000n))
    await assert.rejects(payouts.claim(proxyId, true), /not valid for this worker contract/)
    assert.equal(await wallet.seqno(), seqno0 + 1, 'no transaction for the stored bad voucher')
    assert.equal((await proxy.sendStatement({ ...told, voucher: voucher(mine, 20n) })).ok, true)
    assert.equal(ledger.get(proxyId).vouchered, 20n, 'the correct voucher is kept again')
    assert.equal(await payouts.claim(proxyId, true), 20n)
  } finally {
    await worker.stop()
    proxy.close()
    ledger.close()
    fs.rmSync(wdir, { recursive: true, force: true })
  }
})

test('an app asking for more than its balance allows gets 402 insufficient_quota before any work', async () => {
  const before = await Promise.all([0, 1].map((i) => getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`)))
  await assert.rejects(
    openai.completions.create({ model: 'stories260K', prompt: 'x', max_tokens: 1000, max_coefficient: 1_000_000 } as any),
    (e: any) => e.status === 402 && e.code === 'insufficient_quota',
  )
  const now = await Promise.all([0, 1].map((i) => getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`)))
  assert.deepEqual(now.map((w) => w.requests.requests), before.map((w) => w.requests.requests), 'no worker saw the request')
})

/** Why a request ended without a completed answer. A stream that ends normally but without its usage is a violation. */
class IncompleteAnswerError extends Error {
  readonly name = 'IncompleteAnswerError'
}

/** Like ask(), but a streamed answer that ends without an error and without its final usage is flagged, never counted. */
async function askChecked(stream: boolean, maxTokens: number): Promise<number> {
  if (!stream) return ask(false, maxTokens)
  const s = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0, stream: true })
  let cost: number | undefined
  for await (const c of s) if ((c as any).usage) cost = (c as any).usage.cost
  if (cost === undefined) throw new IncompleteAnswerError('the stream ended as if complete, without its final usage')
  return cost
}

test('kill -9 of the proxy, a worker and the client during a run: nobody overcharged, every answer paid, counters never go back', async () => {
  // Seeded, so the kill points are the same every run.
  const r = prng(SEED).next
  const victims = ['proxy', 'worker-0', 'client', 'worker-1'] as const
  const KILLS = process.env.COCOON_FAULTS_LONG ? 8 : 4
  const CONCURRENCY = 3
  const kills = new Map<number, (typeof victims)[number]>()
  while (kills.size < KILLS) kills.set(5 + Math.floor(r() * (CRASH_REQUESTS - 10)), victims[kills.size % victims.length])
  // Both workers earn before the run, so that "earnings never go back" is checked for each of them: routing by
  // measured quality may send all of three concurrent requests to one worker, so bursts wider than one worker's
  // slots (MAX_ACTIVE_REQUESTS) spill onto the other.
  const workerEarned = async (i: number) => BigInt((await getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`).catch(() => null))?.proxies[0]?.earned?.nano ?? 0)
  for (let burst = 0; burst < 5 && !((await workerEarned(0)) > 0n && (await workerEarned(1)) > 0n); burst++) {
    await Promise.all(Array.from({ length: 2 * MAX_ACTIVE_REQUESTS }, () => ask(false, 4)))
    await waitFor(async () => (await workerEarned(0)) > 0n && (await workerEarned(1)) > 0n, 'both workers to report earnings', 6_000).catch(() => undefined)
  }
  assert.ok((await workerEarned(0)) > 0n && (await workerEarned(1)) > 0n, 'both workers earned before the run')
  const start = await proxyStats()
  const startCharged = BigInt(start.money.chargedNano)
  // Watch the counters while the run goes on. A worker that does not know its proxy yet (just restarted) reports
  // no earnings (null), never zero; once it reports them, they must never go down, not even to zero.
  const samples: Array<{ charged: bigint; earned: Array<bigint | null> }> = []
  let watching = true
  const watcher = (async () => {
    while (watching) {
      const p = await proxyStats().catch(() => null)
      const ws = await Promise.all([0, 1].map((i) => getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`).catch(() => null)))
      if (p) samples.push({ charged: BigInt(p.money.chargedNano), earned: ws.map((w) => (w?.proxies[0]?.earned ? BigInt(w.proxies[0].earned.nano) : null)) })
      await new Promise((res) => setTimeout(res, 100))
    }
  })()
  let completed = 0n
  let maxCost = 0n
  let failures = 0
  let incomplete = 0
  /** Requests started and not yet ended: at a kill, these (and only these) may be cut off. */
  const inFlight = new Set<number>()
  let casualties = 0
  let next = 0
  const healthy = async () => {
    await waitFor(async () => (await getJson(`${state.baseUrl.replace(/\/v1$/, '')}/healthz`).catch(() => null))?.ok === true, 'the client to reach a proxy', 60_000)
    await waitFor(async () => (await proxyStats().catch(() => null))?.workers?.connected === 2, 'both workers', 60_000)
  }
  const loop = async () => {
    for (;;) {
      const i = next++
      if (i >= CRASH_REQUESTS) return
      const victim = kills.get(i)
      if (victim) {
        casualties += inFlight.size
        process.kill(currentPid(victim), 'SIGKILL')
      }
      inFlight.add(i)
      try {
        const c = BigInt(await askChecked(i % 3 === 0, 4))
        completed += c
        if (c > maxCost) maxCost = c
      } catch (err) {
        if (err instanceof IncompleteAnswerError) incomplete++
        failures++
        inFlight.delete(i)
        // Wait for the supervisor to bring the killed process back before the next request.
        await healthy()
        continue
      }
      inFlight.delete(i)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, loop))
  watching = false
  await watcher
  await waitFor(async () => (await proxyStats().catch(() => null))?.serving?.ok === true, 'the proxy to serve again', 30_000)
  await healthy()
  const end = await proxyStats()
  const charged = BigInt(end.money.chargedNano) - startCharged
  // 0. No answer ever looks complete to the app without its final usage.
  assert.equal(incomplete, 0, `${incomplete} streams ended as complete without their usage`)
  // 1. No client is charged for more than it used: every completed answer, plus at most the answers in flight at a kill.
  assert.ok(completed > 0n, 'some answers completed')
  assert.ok(charged >= completed, `charged ${charged} < completed ${completed}`)
  assert.ok(charged - completed <= BigInt(casualties) * maxCost, `charged ${charged - completed} nanoTON beyond the completed answers, with ${casualties} requests in flight at the ${kills.size} kills (${failures} failures in all)`)
  // 2. Every completed answer is paid to its worker: settle, wait until each worker holds a voucher for
  // all it earned (statements reach workers every few seconds), then let it claim.
  await settle()
  const final = await proxyStats()
  for (const i of [0, 1]) {
    const ws = await getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`)
    const earned = final.money.workers.find((w: any) => w.account === ws.payoutAddress)?.tokens ?? '0'
    await waitFor(async () => (await getJson(`http://127.0.0.1:${state.ports.workers[i]}/jsonstats`).catch(() => null))?.proxies[0]?.voucheredTokens === earned, `worker ${i} to hold a voucher for ${earned} tokens`, 30_000)
    const r = await payout(i)
    assert.ok(Array.isArray(r.payouts), JSON.stringify(r))
  }
  const c = await onChain()
  const ledgerWorkerTokens = final.money.workers.reduce((t: bigint, w: any) => t + BigInt(w.tokens), 0n)
  const ledgerClientTokens = final.money.clients.reduce((t: bigint, w: any) => t + BigInt(w.tokens), 0n)
  assert.equal(ledgerWorkerTokens, ledgerClientTokens, 'every billed answer credits its worker')
  assert.equal(c.workers[0] + c.workers[1], ledgerWorkerTokens, 'and the worker contracts paid all of it')
  // 3. Counters never go backwards: the proxy's charge, and each worker's earnings once it reports them (zero included).
  assert.ok(samples.length > 5)
  const lastEarned: Array<bigint | null> = [null, null]
  for (let k = 1; k < samples.length; k++) assert.ok(samples[k].charged >= samples[k - 1].charged, 'the proxy charge counter went back')
  for (const s of samples) {
    for (const w of [0, 1]) {
      const e = s.earned[w]
      if (e === null) continue
      assert.ok(lastEarned[w] === null || e >= lastEarned[w]!, `worker ${w} earnings went back from ${lastEarned[w]} to ${e}`)
      lastEarned[w] = e
    }
  }
  assert.ok(lastEarned.every((e) => e !== null && e > 0n), 'both workers reported earnings during the run')
})

test('revoking the model hash on the root stops routing to its workers within one refresh; allowing it brings them back', async () => {
  const model = state.model.sha256
  const gov = (cmd: string) => cocoon(['root', cmd, model, '--endpoint', state.chain!.endpoint, '--root', state.chain!.root!, '--wallet-key', state.chain!.ownerKey])
  const revoke = gov('revoke-model')
  assert.equal((await revoke.exited).code, 0, revoke.output())
  const t0 = Date.now()
  // The devnet refreshes the root every 2 s.
  await waitFor(async () => (await proxyStats()).workers.connected === 0, 'the proxy to drop the revoked workers', 10_000)
  assert.ok(Date.now() - t0 < 6_000, `took ${Date.now() - t0} ms`)
  await assert.rejects(ask(false), (e: any) => e.status === 404 && e.code === 'model_not_found')
  assert.ok((await proxyStats()).workers.refused >= 2)
  const allow = gov('allow-model')
  assert.equal((await allow.exited).code, 0, allow.output())
  await waitFor(async () => (await proxyStats()).workers.connected === 2, 'the workers to be accepted again', 30_000)
  assert.ok((await ask(false)) > 0)
})

test('a client closing with the proxy online gets its final charge signed and the rest back at once', async () => {
  // A second client, with its own wallet, funded by the faucet like the devnet's.
  const cdir = path.join(dir, 'client2')
  fs.mkdirSync(cdir, { recursive: true })
  const key = loadOrCreateWalletKey(path.join(cdir, 'wallet.key'))
  const walletAddr = nodeWalletContract(key.publicKey).address
  await devnetFaucet(state.chain!.url, walletAddr, 20n * 1_000_000_000n)
  const base = JSON.parse(fs.readFileSync(path.join(dir, 'client.json'), 'utf8'))
  const port = state.ports.client + 7
  const cfgFile = path.join(dir, 'client2.json')
  fs.writeFileSync(cfgFile, JSON.stringify({ ...base, dataDir: cdir, listen: `127.0.0.1:${port}`, chain: { ...base.chain, walletKeyFile: path.join(cdir, 'wallet.key') } }))
  const client2 = cocoon(['client', '--config', cfgFile])
  try {
    await waitFor(async () => (await getJson(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.ok === true, 'the second client', 60_000)
    const sdk = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 })
    let spent = 0n
    for (let i = 0; i < 3; i++) spent += BigInt(((await sdk.completions.create({ model: 'stories260K', prompt: 'Once', max_tokens: 8 })).usage as any).cost)
    const chain = createChain({ endpoint: state.chain!.endpoint })
    const walletBefore = await chain.getBalance(walletAddr)
    const close = cocoon(['client', 'close', '--config', cfgFile])
    assert.equal((await close.exited).code, 0, close.output())
    assert.match(close.output(), /"state":"closed"/, close.output())
    assert.doesNotMatch(close.output(), /closing through the delay/)
    const refund = (await chain.getBalance(walletAddr)) - walletBefore
    // Deposit 5 TON, minus exactly what was spent, minus a little gas.
    assert.ok(refund <= 5n * 1_000_000_000n - spent && refund > 5n * 1_000_000_000n - spent - 100_000_000n, `refund ${refund}, spent ${spent}`)
    const row = (await proxyStats()).money.clients.find((r: any) => r.account === walletAddr.toRawString())
    assert.equal(BigInt(row.nano), spent)
    assert.equal(row.voucheredTokens, row.tokens, 'the final charge covered everything')
  } finally {
    client2.proc.kill('SIGTERM')
    await client2.exited
  }
})

test('a proxy restored from an old copy of its ledger refuses to serve, and says why', async () => {
  const ledgerFile = path.join(dir, 'proxy', 'ledger.sqlite')
  const oldCopy = path.join(dir, 'ledger.old.sqlite')
  const db = new Database(ledgerFile, { readonly: true })
  await db.backup(oldCopy)
  db.close()
  for (let i = 0; i < 3; i++) await ask(false)
  const r = await settle()
  assert.ok(r.committed, 'the newer ledger head is committed on chain')
  const pid = currentPid('proxy')
  process.kill(pid, 'SIGKILL')
  for (const f of ['', '-wal', '-shm']) fs.rmSync(ledgerFile + f, { force: true })
  fs.copyFileSync(oldCopy, ledgerFile)
  await waitFor(async () => (await proxyStats().catch(() => null))?.serving?.ok === false, 'the restarted proxy to refuse', 30_000)
  await waitFor(async () => (await getJson(`${state.baseUrl.replace(/\/v1$/, '')}/healthz`).catch(() => null))?.ok === true, 'the client to reconnect', 30_000)
  const ps = await proxyStats()
  assert.match(ps.serving.reason, /rollback/)
  const clientStats = await getJson(`${state.baseUrl.replace(/\/v1$/, '')}/jsonstats`)
  await assert.rejects(ask(false), (e: any) => {
    assert.equal(e.status, 503, `${e.message}; client: ${JSON.stringify(clientStats.proxies)}; proxy log: ${fs.readFileSync(path.join(dir, 'logs', 'proxy.log'), 'utf8').split('\n').slice(-8).join('\n')}`)
    return e.code === 'proxy_not_serving'
  })
  // It does not crash-loop: the same process keeps running and reporting.
  const newPid = currentPid('proxy')
  await new Promise((res) => setTimeout(res, 3_000))
  assert.ok(isAlive(newPid))
  assert.equal(currentPid('proxy'), newPid)
})

test('a client closes with the proxy down: everything not charged comes back after the close delay', async () => {
  const clientCfg = path.join(dir, 'client.json')
  const proxyPid = currentPid('proxy')
  process.kill(proxyPid, 'SIGSTOP') // the proxy is silent: it cannot sign a final charge
  try {
    const before = await onChain()
    assert.equal(before.client.state, 'active')
    const walletKey = loadWalletKey(path.join(dir, 'client', 'wallet.key'))
    const chain = createChain({ endpoint: state.chain!.endpoint })
    const walletBefore = await chain.getBalance(nodeWalletContract(walletKey.publicKey).address)
    const close = cocoon(['client', 'close', '--config', clientCfg])
    assert.equal((await close.exited).code, 0, close.output())
    assert.match(close.output(), /"state":"closing"/)
    const early = cocoon(['client', 'close', '--finish', '--config', clientCfg])
    assert.equal((await early.exited).code, 1, 'finishing before the delay is refused')
    assert.match(early.output(), /exit code \d+/)
    const delay = before.params.clientCloseDelaySec
    const r = await fetch(`${state.chain!.url}/devnet/time`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ advance: delay + 5 }) })
    assert.equal(r.status, 200)
    const finish = cocoon(['client', 'close', '--finish', '--config', clientCfg])
    assert.equal((await finish.exited).code, 0, finish.output())
    const after = await onChain()
    assert.equal(after.client.state, 'closed')
    assert.equal(after.client.balanceNano, 0n)
    const walletAfter = await chain.getBalance(nodeWalletContract(walletKey.publicKey).address)
    const gasBudget = 200_000_000n // three owner messages' fees, generously
    assert.ok(walletAfter - walletBefore > before.client.balanceNano - gasBudget, `the wallet got back ${walletAfter - walletBefore} of ${before.client.balanceNano}`)
  } finally {
    process.kill(proxyPid, 'SIGCONT')
  }
})
