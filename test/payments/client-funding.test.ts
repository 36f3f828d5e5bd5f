// The client's funding budget (issue 14: "it funds a client contract per proxy it uses, within a budget from its
// config"), on a real devnet chain over HTTP: three proxies registered on a real root, a client wallet, and
// ClientAccount depositing into one client contract per proxy until the budget is spent. The deposit that would pass
// the budget is refused: nothing is sent, the contract stays undeployed, the refusal is logged and in the stats; a
// restart does not reset the budget; top-ups count against it too.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import type { Address } from '@ton/core'
import { startDevnet, hash, type Devnet } from '../ton/helpers.ts'
import { deployRoot, DEVNET_PARAMS, loadOrCreateWalletKey, ProxyRegistry, type NodeWallet } from '../../src/ton/chain-client/index.ts'
import { ONE_TON_NANO, type RootState } from '../../src/ton/contracts/index.ts'
import { ClientAccount, MAX_LEAD_TOP_UPS, REFUSAL_CHECK_MS, SPEND_SPAN_MS, TOP_UP_LEAD_MS, type ClientFundingOptions } from '../../src/payments/client-account.ts'
import { createLogger } from '../../src/core/log.ts'

const PROXY_IMAGE = hash(7)
let net: Devnet
let root: Address
let rootState: RootState
let client: NodeWallet
const proxyIds: string[] = []

before(async () => {
  net = await startDevnet()
  const owner = (await net.wallet('owner', '20')).wallet
  const deployed = await deployRoot(net.chain, owner, { params: DEVNET_PARAMS, proxyImageHashes: [PROXY_IMAGE] })
  root = deployed.address
  for (let i = 0; i < 3; i++) {
    const { wallet } = await net.wallet(`proxy-${i}`, '5')
    const registry = new ProxyRegistry(net.chain, wallet, loadOrCreateWalletKey(path.join(net.dir, `payment-${i}.key`)), root)
    await registry.register({ host: `10.0.0.${i + 1}`, workerPort: 11001, clientPort: 11002 }, { imageHash: PROXY_IMAGE })
    proxyIds.push(registry.publicKeyHex)
  }
  rootState = await net.chain.getRootState(root)
  client = (await net.wallet('client', '20')).wallet
})

after(async () => {
  await net?.close()
})

/** One more proxy on the root (its wallet and payment key named by `name`); returns its id, with rootState re-read. */
async function registerProxy(name: string, host: string): Promise<string> {
  const { wallet } = await net.wallet(`proxy-${name}`, '5')
  const registry = new ProxyRegistry(net.chain, wallet, loadOrCreateWalletKey(path.join(net.dir, `payment-${name}.key`)), root)
  await registry.register({ host, workerPort: 11001, clientPort: 11002 }, { imageHash: PROXY_IMAGE })
  rootState = await net.chain.getRootState(root)
  return registry.publicKeyHex
}

/** A ClientAccount as the client node builds it, with its log lines collected. */
function account(opts: ClientFundingOptions) {
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ role: 'client' }, 'info', (line: string) => void lines.push(JSON.parse(line)))
  const a = new ClientAccount({ chain: net.chain, wallet: client, root, rootState: () => rootState, log }, { fundingFile: path.join(net.dir, 'client-funding.json'), ...opts })
  return { a, lines }
}

test('deposits into one client contract per proxy until the budget is spent, then refuses, logged and on the stats', async () => {
  const budget = 2n * ONE_TON_NANO + ONE_TON_NANO / 2n
  const { a, lines } = account({ depositNano: ONE_TON_NANO, fundingBudgetNano: budget })
  const walletBefore = await client.balance()
  await a.ensureFunded(proxyIds[0])
  await a.ensureFunded(proxyIds[1])
  assert.ok(a.isFunded(proxyIds[0]) && a.isFunded(proxyIds[1]))
  assert.equal((await a.state(proxyIds[0]))!.balanceNano, ONE_TON_NANO)

  await a.ensureFunded(proxyIds[2])
  assert.equal(a.isFunded(proxyIds[2]), false)
  assert.equal(await a.state(proxyIds[2]), undefined, 'no client contract was deployed for the third proxy')
  const spentOnChain = walletBefore - (await client.balance())
  assert.ok(spentOnChain >= 2n * ONE_TON_NANO && spentOnChain < budget, `the wallet paid ${spentOnChain}: two deposits and gas, within the budget`)

  const stats = a.fundingStats() as any
  assert.equal(stats.budgetNano, budget.toString())
  assert.equal(stats.spentNano, (2n * ONE_TON_NANO).toString())
  assert.equal(stats.remainingNano, (ONE_TON_NANO / 2n).toString())
  assert.equal(stats.exhausted, true)
  assert.equal(stats.refused.length, 1)
  assert.equal(stats.refused[0].proxy, proxyIds[2])
  assert.equal(stats.refused[0].kind, 'deposit')
  assert.match(stats.refused[0].reason, /funding budget is exhausted/)
  const warned = lines.filter((l) => l.level === 'warn' && /funding budget is exhausted/.test(String(l.msg)))
  assert.equal(warned.length, 1, JSON.stringify(lines))

  // Asking again neither sends nor logs again.
  await a.ensureFunded(proxyIds[2])
  assert.equal(lines.filter((l) => l.level === 'warn').length, 1)

  // A restart keeps what was spent: the budget is not reset.
  const { a: restarted } = account({ depositNano: ONE_TON_NANO, fundingBudgetNano: budget })
  await restarted.ensureFunded(proxyIds[2])
  assert.equal(await restarted.state(proxyIds[2]), undefined)
  assert.equal((restarted.fundingStats() as any).spentNano, (2n * ONE_TON_NANO).toString())
})

test('top-ups count against the budget too; a raised budget lets funding go on', async () => {
  // The first test spent 2 TON; a top-up of 1 TON fits a 3.2 TON budget once, not twice.
  const opts = { depositNano: ONE_TON_NANO, topUpBelowNano: ONE_TON_NANO / 2n, topUpNano: ONE_TON_NANO, fundingBudgetNano: 3n * ONE_TON_NANO + ONE_TON_NANO / 5n }
  const { a } = account(opts)
  const drain = async () => {
    const s = (await a.state(proxyIds[0]))!
    await a.withdraw(proxyIds[0], s.balanceNano - s.stakeNano)
    assert.ok((await a.state(proxyIds[0]))!.balanceNano < opts.topUpBelowNano)
  }
  await drain()
  await a.ensureFunded(proxyIds[0])
  assert.equal((await a.state(proxyIds[0]))!.balanceNano, rootState.params.minClientStakeNano + ONE_TON_NANO, 'topped up')
  await drain()
  await a.ensureFunded(proxyIds[0])
  assert.ok((await a.state(proxyIds[0]))!.balanceNano < opts.topUpBelowNano, 'the second top-up would pass the budget')
  const stats = a.fundingStats() as any
  assert.equal(stats.spentNano, (3n * ONE_TON_NANO).toString())
  assert.equal(stats.refused.find((r: any) => r.proxy === proxyIds[0]).kind, 'top-up')

  // The operator raises the budget: the refused deposit and top-up go through.
  const { a: raised } = account({ ...opts, fundingBudgetNano: 5n * ONE_TON_NANO })
  await raised.ensureFunded(proxyIds[0])
  await raised.ensureFunded(proxyIds[2])
  assert.ok(raised.isFunded(proxyIds[2]))
  assert.ok((await raised.state(proxyIds[0]))!.balanceNano >= ONE_TON_NANO)
  const after = raised.fundingStats() as any
  assert.equal(after.spentNano, (5n * ONE_TON_NANO).toString())
  assert.equal(after.exhausted, false)
  assert.deepEqual(after.refused, [])
})

test('concurrent funding runs for one proxy make one deposit', async () => {
  const { a } = account({ depositNano: ONE_TON_NANO / 2n })
  // A fresh proxy: register a fourth one.
  const { wallet } = await net.wallet('proxy-3', '5')
  const registry = new ProxyRegistry(net.chain, wallet, loadOrCreateWalletKey(path.join(net.dir, 'payment-3.key')), root)
  await registry.register({ host: '10.0.0.4', workerPort: 11001, clientPort: 11002 }, { imageHash: PROXY_IMAGE })
  rootState = await net.chain.getRootState(root)
  const before = (a.fundingStats() as any).spentNano
  await Promise.all([a.ensureFunded(registry.publicKeyHex), a.ensureFunded(registry.publicKeyHex), a.ensureFunded(registry.publicKeyHex)])
  assert.equal((await a.state(registry.publicKeyHex))!.balanceNano, ONE_TON_NANO / 2n)
  assert.equal(BigInt((a.fundingStats() as any).spentNano) - BigInt(before), ONE_TON_NANO / 2n)
})

test('funding runs for several proxies at once never pass the budget together', async () => {
  const fresh: string[] = []
  for (let i = 4; i < 6; i++) {
    const { wallet } = await net.wallet(`proxy-${i}`, '5')
    const registry = new ProxyRegistry(net.chain, wallet, loadOrCreateWalletKey(path.join(net.dir, `payment-${i}.key`)), root)
    await registry.register({ host: `10.0.0.${i + 1}`, workerPort: 11001, clientPort: 11002 }, { imageHash: PROXY_IMAGE })
    fresh.push(registry.publicKeyHex)
  }
  rootState = await net.chain.getRootState(root)
  // A separate record: room for exactly one deposit of 0.5 TON.
  const { a } = account({ depositNano: ONE_TON_NANO / 2n, fundingBudgetNano: ONE_TON_NANO / 2n, fundingFile: path.join(net.dir, 'funding-race.json') })
  await Promise.all(fresh.map((p) => a.ensureFunded(p)))
  const funded = fresh.filter((p) => a.isFunded(p))
  assert.equal(funded.length, 1, 'one of the two proxies is funded, the other refused')
  const stats = a.fundingStats() as any
  assert.equal(stats.spentNano, (ONE_TON_NANO / 2n).toString())
  assert.equal(stats.refused.length, 1)
})

test("a wallet that cannot pay a deposit is told plainly once, with its address: nothing is sent, and funding goes on once it is paid in", async () => {
  const poor = (await net.wallet('poor-client', '0.5')).wallet
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ role: 'client' }, 'info', (line: string) => void lines.push(JSON.parse(line)))
  const a = new ClientAccount({ chain: net.chain, wallet: poor, root, rootState: () => rootState, log }, { depositNano: ONE_TON_NANO })
  const before = await poor.balance()
  await a.ensureFunded(proxyIds[0])
  await a.ensureFunded(proxyIds[0])
  assert.equal(a.isFunded(proxyIds[0]), false)
  assert.equal(await a.state(proxyIds[0]), undefined, 'no client contract was deployed')
  assert.equal(await poor.balance(), before, 'no transfer was attempted, so no fee was paid')
  const warned = lines.filter((l) => l.level === 'warn')
  assert.equal(warned.length, 1, JSON.stringify(lines))
  assert.match(String(warned[0].msg), new RegExp(`send TON to ${poor.address.toString()}`))
  const stats = a.fundingStats() as any
  assert.equal(stats.spentNano, '0', 'what was not sent is not counted')
  assert.equal(stats.walletShort.length, 1)
  assert.equal(stats.walletShort[0].kind, 'deposit')
  assert.equal(stats.walletShort[0].walletNano, before.toString())
  assert.ok(BigInt(stats.walletShort[0].neededNano) > ONE_TON_NANO)

  await net.wallet('poor-client', '3')
  await a.ensureFunded(proxyIds[0])
  assert.ok(a.isFunded(proxyIds[0]))
  assert.deepEqual((a.fundingStats() as any).walletShort, [])
})

test("what the proxy charged but has not settled counts as spent, and a proxy's refusal for funds tops up while little is spendable, never past the cap", async () => {
  const p = await registerProxy('refusal', '10.0.0.9')
  // FAKE statements: what the proxy told this client it charged (the client node reads them from its party ledger).
  let told = { tokens: 0n, nano: 0n }
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ role: 'client' }, 'info', (line: string) => void lines.push(JSON.parse(line)))
  const a = new ClientAccount(
    { chain: net.chain, wallet: client, root, rootState: () => rootState, log, charged: () => told },
    { depositNano: ONE_TON_NANO, topUpBelowNano: ONE_TON_NANO / 2n, topUpNano: ONE_TON_NANO, fundingFile: path.join(net.dir, 'funding-refusal.json') },
  )
  const balance = async () => (await a.state(p))!.balanceNano
  await a.ensureFunded(p)
  assert.equal(await balance(), ONE_TON_NANO)
  // 0.6 TON charged off chain (600 tokens at 1 mTON): 0.4 TON spendable, below the 0.5 threshold, though the balance is 1 TON.
  told = { tokens: 600n, nano: (6n * ONE_TON_NANO) / 10n }
  assert.equal(a.spendableNano(p, (await a.state(p))!), (4n * ONE_TON_NANO) / 10n)
  await a.ensureFunded(p)
  assert.equal(await balance(), 2n * ONE_TON_NANO, 'the periodic check topped up on what is spendable')
  // 1.4 TON spendable: above the threshold, so the periodic check leaves it; a refusal for funds tops up (below 0.5 + 1),
  // unless the request lacked more than one top-up could give.
  await a.ensureFunded(p)
  assert.equal(await balance(), 2n * ONE_TON_NANO)
  a.refusedForFunds(p, 2n * ONE_TON_NANO)
  await a.ensureFunded(p)
  assert.equal(await balance(), 2n * ONE_TON_NANO, 'a request short of 2 TON is not helped by a 1 TON top-up')
  a.refusedForFunds(p, ONE_TON_NANO / 50n)
  await a.ensureFunded(p) // joins the run the refusal started
  assert.equal(await balance(), 3n * ONE_TON_NANO, 'the refusal topped up')
  // More refusals (an oversized request, say): at most one check per REFUSAL_CHECK_MS, and none above the cap.
  a.refusedForFunds(p)
  await a.ensureFunded(p)
  await new Promise((r) => setTimeout(r, REFUSAL_CHECK_MS + 100))
  a.refusedForFunds(p)
  await a.ensureFunded(p)
  assert.equal(await balance(), 3n * ONE_TON_NANO, '2.4 TON spendable is above the cap of 1.5: no more top-ups')
  assert.equal((a.fundingStats() as any).spentNano, (3n * ONE_TON_NANO).toString())
  assert.deepEqual(lines.filter((l) => l.level === 'warn' || l.level === 'error'), [])
})

test('a node spending fast tops up before its contract runs low: the threshold follows the spend rate of the last 20-30 s', async () => {
  const p = await registerProxy('rate', '10.0.0.10')
  // FAKE statements (what the proxy told this client it charged) and a FAKE clock, so a minute of spending takes no time.
  let told = { tokens: 0n, nano: 0n }
  let now = 1_000_000
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ role: 'client' }, 'info', (line: string) => void lines.push(JSON.parse(line)))
  const a = new ClientAccount(
    { chain: net.chain, wallet: client, root, rootState: () => rootState, log, charged: () => told, now: () => now },
    { depositNano: 3n * ONE_TON_NANO, topUpBelowNano: ONE_TON_NANO / 2n, topUpNano: ONE_TON_NANO, fundingFile: path.join(net.dir, 'funding-rate.json') },
  )
  const balance = async () => (await a.state(p))!.balanceNano
  const threshold = () => BigInt((a.fundingStats() as any).topUpBelowNano[p])
  await a.ensureFunded(p)
  assert.equal(await balance(), 3n * ONE_TON_NANO)
  await a.ensureFunded(p) // the first check of a funded contract: nothing spent yet
  // Spending 1.2 TON a minute, checked every 10 s as the node does: 0.2 TON per check, all of it charged on chain
  // at once here (tokensCharged stays 0, so what is spendable is the balance less what was told).
  const spend = async (nano: bigint) => {
    now += 10_000
    told = { tokens: told.tokens + nano / 1000n, nano: told.nano + nano }
    await a.ensureFunded(p)
  }
  await spend(ONE_TON_NANO / 5n)
  assert.equal(threshold(), ONE_TON_NANO / 2n, 'no rate yet after 10 s: the configured threshold')
  await spend(ONE_TON_NANO / 5n)
  // 0.4 TON over 20 s: 1.2 TON a minute, TOP_UP_LEAD_MS ahead.
  assert.equal(SPEND_SPAN_MS, 20_000)
  assert.equal(threshold(), (ONE_TON_NANO * 4n * BigInt(TOP_UP_LEAD_MS)) / 10n / 20_000n)
  assert.equal(threshold(), (12n * ONE_TON_NANO) / 10n)
  assert.equal(await balance(), 3n * ONE_TON_NANO, '2.6 TON spendable is above 1.2: no top-up yet')
  const spendable = async () => a.spendableNano(p, (await a.state(p))!)
  for (let i = 0; i < 7; i++) await spend(ONE_TON_NANO / 5n)
  // 3 - 1.8 = 1.2 TON spendable after 9 checks, then 1.0 < 1.2 at the 10th: topped up by 1 TON, with more than
  // 0.5 TON (the configured threshold) still there: a fixed threshold would wait until the last 0.5 TON.
  assert.equal(await balance(), 3n * ONE_TON_NANO)
  assert.equal(await spendable(), (12n * ONE_TON_NANO) / 10n)
  await spend(ONE_TON_NANO / 5n)
  assert.equal(await balance(), 4n * ONE_TON_NANO, 'topped up at 1.0 TON spendable, twice the configured threshold')
  assert.ok(lines.some((l) => l.msg === 'topping up the client contract' && l.thresholdNano === ((12n * ONE_TON_NANO) / 10n).toString()), 'the log says which threshold')
  // A much faster rate is capped: at most topUpBelowNano + MAX_LEAD_TOP_UPS top-ups ahead.
  await spend(10n * ONE_TON_NANO)
  await spend(0n)
  assert.equal(threshold(), ONE_TON_NANO / 2n + MAX_LEAD_TOP_UPS * ONE_TON_NANO)
  // A burst inside one span is measured with what came before it; once spending stops, the threshold falls back.
  for (let i = 0; i < 3; i++) await spend(0n)
  assert.equal(threshold(), ONE_TON_NANO / 2n, 'no spending for 20 s: the configured threshold again')
  assert.deepEqual(lines.filter((l) => l.level === 'warn' || l.level === 'error'), [])
})
