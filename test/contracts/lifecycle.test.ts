// A full life cycle of one proxy with two clients and two workers, checking that every
// nanoTON is accounted for (gas and storage fees included), and the fee report for
// `cocoon bench`.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { Address, type Transaction } from '@ton/core'
import type { SandboxContract, SendMessageResult, TreasuryContract } from '@ton/sandbox'
import { ClientContract } from '../../src/ton/contracts/client.ts'
import { WorkerContract } from '../../src/ton/contracts/worker.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { summarizeTransaction } from '../../src/ton/contracts/transactions.ts'
import { CONTRACT_FEE_REPORT_PATH, writeContractFeeReport } from '../../src/ton/contracts/fees.ts'
import { createNet, expectTx, GAS, ONE_TON, PARAMS } from './helpers.ts'

type Party = 'clients' | 'workers' | 'proxyOwner'

/** Amount fields of the business messages, read from the inbound bodies of all transactions. */
function amountsByOp(txs: Transaction[], proxy: Address) {
  const sums = { topUps: 0n, charged: 0n, clientWithdrawals: 0n, workerPayments: 0n, proxyWithdrawals: 0n, stake: 0n }
  for (const tx of txs) {
    const msg = tx.inMessage
    if (!msg || msg.info.type !== 'internal' || msg.info.bounced) continue
    const s = msg.body.beginParse()
    if (s.remainingBits < 96) continue
    const op = s.loadUint(32)
    s.loadUintBig(64) // queryId
    const ok = summarizeTransaction(tx).success
    if (!ok) continue
    switch (op) {
      case Op.clientTopUp: sums.topUps += s.loadCoins(); break
      case Op.proxyAddStake: sums.stake += s.loadCoins(); break
      case Op.proxyChargeDeposit: s.loadUintBig(64); sums.charged += s.loadCoins(); break
      case Op.workerPayment: s.loadUintBig(64); sums.workerPayments += s.loadCoins(); break
      case Op.withdrawal: {
        const amount = s.loadCoins()
        if (msg.info.src.equals(proxy)) sums.proxyWithdrawals += amount
        else sums.clientWithdrawals += amount
        break
      }
    }
  }
  return sums
}

describe('contract life cycle', () => {
  it('accounts for every nanoTON: deposits = charges + refunds, charges = payouts + margin, and balances move only by these and fees', async () => {
    const net = await createNet()
    const { blockchain, proxy, proxyOwner } = net
    const clientB = await blockchain.treasury('client-b')
    const workerB = await blockchain.treasury('worker-b')
    const open = {
      client: (w: SandboxContract<TreasuryContract>) => blockchain.openContract(ClientContract.createFromConfig(
        { owner: w.address, proxy: proxy.address, proxyPublicKey: net.proxyKeys.publicKey, params: PARAMS }, net.codes.client)),
      worker: (w: SandboxContract<TreasuryContract>) => blockchain.openContract(WorkerContract.createFromConfig(
        { owner: w.address, proxy: proxy.address, proxyPublicKey: net.proxyKeys.publicKey }, net.codes.worker)),
    }
    const cA = net.client
    const cB = open.client(clientB)
    const wA = net.worker
    const wB = open.worker(workerB)

    const wallets: Record<Party, SandboxContract<TreasuryContract>[]> = {
      clients: [net.clientWallet, clientB],
      workers: [net.workerWallet, workerB],
      proxyOwner: [proxyOwner],
    }
    const contracts: Record<Party, Address[]> = {
      clients: [cA.address, cB.address],
      workers: [wA.address, wB.address],
      proxyOwner: [proxy.address],
    }
    const partyOf = (a: Address): Party | undefined =>
      (Object.keys(wallets) as Party[]).find((p) => wallets[p].some((w) => w.address.equals(a)) || contracts[p].some((c) => c.equals(a)))
    const isWallet = (a: Address) => Object.values(wallets).flat().some((w) => w.address.equals(a))
    const balance = async (a: Address) => (await blockchain.getContract(a)).balance
    const partyBalance = async (p: Party) => {
      let sum = 0n
      for (const w of wallets[p]) sum += await balance(w.address)
      for (const c of contracts[p]) sum += await balance(c)
      return sum
    }
    const before = { clients: await partyBalance('clients'), workers: await partyBalance('workers'), proxyOwner: await partyBalance('proxyOwner') }

    // Fees: who pays each transaction's fees (see `step`), tallied per party.
    const all: Transaction[] = []
    const fees: Record<Party, bigint> = { clients: 0n, workers: 0n, proxyOwner: 0n }
    const step = async (by: Party, send: () => Promise<SendMessageResult>) => {
      const r = await send()
      for (const tx of r.transactions) {
        const s = summarizeTransaction(tx)
        assert.ok(s.success, `op by ${by} failed on ${s.address} with exit code ${s.exitCode}`)
        const owner = partyOf(s.address)
        assert.ok(owner, `transaction on an unexpected account ${s.address}`)
        const burnt = s.totalFeesNano + s.outForwardFeesNano
        // A wallet pays its own transactions' fees from its balance, whoever sent to it. A
        // contract pays gas, forward and storage fees out of the inbound value (it keeps
        // exactly its tracked balance), so the op's initiator pays them.
        fees[isWallet(s.address) ? owner : by] += s.totalFeesNano + s.outForwardFeesNano
        all.push(tx)
      }
      return r
    }
    const charge = (c: typeof cA, tokens: bigint) => step('proxyOwner', () =>
      c.sendVoucher(proxyOwner.getSender(), { voucher: net.voucher('clientCharge', c.address, tokens) }))
    const payout = (w: typeof wA, wallet: SandboxContract<TreasuryContract>, tokens: bigint) => step('workers', () =>
      w.sendPayout(wallet.getSender(), { voucher: net.voucher('workerPayout', w.address, tokens) }))

    await step('proxyOwner', () => proxy.sendAddStake(proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano }))
    await step('proxyOwner', () => proxy.sendCommitState(proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: Buffer.alloc(32, 1) }))
    await step('clients', () => cA.sendTopUp(net.clientWallet.getSender(), { amountNano: 5n * ONE_TON }))
    await step('clients', () => cB.sendTopUp(clientB.getSender(), { amountNano: 3n * ONE_TON }))
    await charge(cA, 1_000_000n)
    await charge(cB, 500_000n)
    blockchain.now! += 3600
    await payout(wA, net.workerWallet, 900_000n)
    await payout(wB, workerB, 400_000n)
    await step('clients', () => cA.sendWithdraw(net.clientWallet.getSender(), { value: GAS, amountNano: ONE_TON }))
    const { withdrawableNano } = await proxy.getState()
    await step('proxyOwner', () => proxy.sendWithdraw(proxyOwner.getSender(), { value: GAS, amountNano: withdrawableNano }))
    await charge(cA, 2_000_000n)
    await step('clients', () => cB.sendRequestClose(clientB.getSender(), { value: GAS }))
    await charge(cB, 800_000n)
    blockchain.now! += PARAMS.clientCloseDelaySec
    await step('clients', () => cB.sendFinishClose(clientB.getSender(), { value: GAS }))
    await step('proxyOwner', () => cA.sendVoucher(proxyOwner.getSender(), { voucher: net.voucher('clientFinalCharge', cA.address, 2_500_000n) }))
    await payout(wA, net.workerWallet, 1_800_000n)
    await payout(wB, workerB, 1_000_000n)
    await step('proxyOwner', () => proxy.sendRequestClose(proxyOwner.getSender(), { value: GAS }))
    blockchain.now! += PARAMS.proxyCloseDelaySec
    const closed = await step('proxyOwner', () => proxy.sendFinishClose(proxyOwner.getSender(), { value: GAS }))
    expectTx(closed.transactions, { from: proxy.address, to: proxyOwner.address, op: Op.withdrawal })

    // The contracts' own ledgers.
    const tokensCharged = 2_500_000n + 800_000n
    const tokensPaid = 1_800_000n + 1_000_000n
    const sums = amountsByOp(all, proxy.address)
    assert.equal(sums.topUps, 8n * ONE_TON)
    assert.equal(sums.charged, tokensCharged * PARAMS.pricePerTokenNano)
    assert.equal(sums.workerPayments, tokensPaid * PARAMS.workerFeePerTokenNano)
    // What clients deposited was charged or came back (withdrawal and close refunds).
    assert.equal(sums.topUps, sums.charged + sums.clientWithdrawals)
    // What was charged went to workers or is the proxy's margin; the stake came back whole.
    const marginNano = sums.proxyWithdrawals - sums.stake
    assert.equal(sums.charged, sums.workerPayments + marginNano)
    assert.equal(marginNano, tokensCharged * PARAMS.pricePerTokenNano - tokensPaid * PARAMS.workerFeePerTokenNano)

    // Every contract ends empty, and each party's real balance moved by exactly its
    // business flow minus the fees it paid.
    for (const c of [cA.address, cB.address, proxy.address, wA.address, wB.address]) assert.equal(await balance(c), 0n, `${c} not empty`)
    const delta = {
      clients: (await partyBalance('clients')) - before.clients,
      workers: (await partyBalance('workers')) - before.workers,
      proxyOwner: (await partyBalance('proxyOwner')) - before.proxyOwner,
    }
    assert.equal(-delta.clients, sums.charged + fees.clients, 'clients paid = charges + their fees')
    assert.equal(delta.workers, sums.workerPayments - fees.workers, 'workers got payouts - their fees')
    assert.equal(delta.proxyOwner, marginNano - fees.proxyOwner, 'proxy owner got the margin - its fees')
    // So: what clients paid = worker payouts + proxy margin + all fees (refunds net out).
    assert.equal(-delta.clients, delta.workers + delta.proxyOwner + fees.clients + fees.workers + fees.proxyOwner)
  })

  it('writes the gas and fee report that cocoon bench reads', async () => {
    const report = await writeContractFeeReport()
    const onDisk = JSON.parse(await readFile(CONTRACT_FEE_REPORT_PATH, 'utf8'))
    assert.deepEqual(onDisk, report)
    assert.equal(report.version, 1)
    const expected = [
      'root.deploy', 'root.setParams', 'root.allowHash', 'root.revokeHash', 'root.registerProxy', 'root.updateProxy',
      'root.addProxyStake', 'root.unregisterProxy', 'root.withdrawProxyStake', 'root.delistProxy',
      'root.changeOwner', 'proxy.deploy', 'proxy.addStake', 'proxy.commitState', 'proxy.withdraw', 'proxy.requestClose',
      'proxy.finishClose', 'client.deploy', 'client.topUp', 'client.charge', 'client.finalCharge', 'client.withdraw',
      'client.requestClose', 'client.finishClose', 'worker.deploy', 'worker.payout',
    ]
    assert.deepEqual(Object.keys(report.ops).sort(), expected.sort())
    for (const [op, cost] of Object.entries(report.ops)) {
      assert.ok(Number.isInteger(cost.gas) && cost.gas > 0, `${op} gas ${cost.gas}`)
      assert.ok(Number.isInteger(cost.feeNano) && cost.feeNano > 0 && cost.feeNano < 100_000_000, `${op} fee ${cost.feeNano}`)
    }
  })
})
