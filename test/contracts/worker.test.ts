// Worker contract: proxy-signed cumulative payout vouchers, paid from the proxy contract.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell } from '@ton/core'
import { ContractExitCode as E } from '../../src/ton/contracts/errors.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { WorkerContract } from '../../src/ton/contracts/worker.ts'
import { signVoucher, voucherCell } from '../../src/ton/contracts/vouchers.ts'
import { createNet, createOpenChannel, expectNoTx, expectRejected, expectTx, GAS, keyPair, ONE_TON, PARAMS } from './helpers.ts'

const FEE = PARAMS.workerFeePerTokenNano

describe('worker contract', () => {
  it('is deployed by its first payout, which pays the delta at the worker fee to the worker wallet', async () => {
    const net = await createOpenChannel()
    const r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 1_000_000n), queryId: 9n })
    expectTx(r.transactions, { from: net.workerWallet.address, to: net.worker.address, op: Op.workerPayout, success: true, deploy: true })
    expectTx(r.transactions, { from: net.worker.address, to: net.proxy.address, op: Op.proxyPayoutRequest, success: true })
    const paid = expectTx(r.transactions, { from: net.proxy.address, to: net.workerWallet.address, op: Op.workerPayment, success: true })
    assert.ok(paid.valueNano > 1_000_000n * FEE, `payment ${paid.valueNano}`)
    const st = await net.worker.getState()
    assert.equal(st.tokensPaid, 1_000_000n)
    assert.ok(st.owner.equals(net.workerWallet.address) && st.proxy.equals(net.proxy.address))
    assert.deepEqual(st.proxyPublicKey, net.proxyKeys.publicKey)
    const proxy = await net.proxy.getState()
    assert.equal(proxy.tokensPaid, 1_000_000n)
    assert.equal(proxy.fundsNano, PARAMS.minProxyStakeNano - 1_000_000n * FEE)
  })

  it('pays only the delta of a newer cumulative voucher, whoever submits it', async () => {
    const net = await createOpenChannel()
    await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 1_000n) })
    const r = await net.worker.sendPayout(net.proxyOwner.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 4_000n) })
    const paid = expectTx(r.transactions, { from: net.proxy.address, to: net.workerWallet.address, op: Op.workerPayment })
    assert.ok(paid.valueNano > 3_000n * FEE)
    assert.equal((await net.worker.getState()).tokensPaid, 4_000n)
    assert.equal((await net.proxy.getState()).fundsNano, PARAMS.minProxyStakeNano - 4_000n * FEE)
  })

  it('never pays the same tokens twice: replayed and older vouchers are rejected', async () => {
    const net = await createOpenChannel()
    const v = net.voucher('workerPayout', net.worker.address, 5_000n)
    await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: v })
    let r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: v })
    expectRejected(r.transactions, net.worker.address, E.VoucherNotNewer)
    expectNoTx(r.transactions, { to: net.proxy.address })
    r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 4_999n) })
    expectRejected(r.transactions, net.worker.address, E.VoucherNotNewer)
    assert.equal((await net.proxy.getState()).tokensPaid, 5_000n)
  })

  it('rejects a forged signature', async () => {
    const net = await createOpenChannel()
    const forged = signVoucher({ kind: 'workerPayout', target: net.worker.address, tokens: 1_000n }, keyPair('attacker').secretKey)
    const r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: forged })
    expectRejected(r.transactions, net.worker.address, E.VoucherBadSignature)
    expectNoTx(r.transactions, { to: net.proxy.address })
  })

  it('rejects a voucher signed for another worker contract', async () => {
    const net = await createOpenChannel()
    const other = net.blockchain.openContract(
      WorkerContract.createFromConfig({ owner: net.stranger.address, proxy: net.proxy.address, proxyPublicKey: net.proxyKeys.publicKey }, net.codes.worker),
    )
    const r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', other.address, 1_000n) })
    expectRejected(r.transactions, net.worker.address, E.VoucherWrongTarget)
  })

  it('rejects a client charge voucher presented as a payout', async () => {
    const net = await createOpenChannel()
    const charge = net.voucher('clientCharge', net.worker.address, 1_000n)
    const body = beginCell()
      .storeUint(Op.workerPayout, 32).storeUint(0, 64).storeBuffer(charge.signature).storeRef(voucherCell(charge))
      .endCell()
    const r = await net.workerWallet.send({ to: net.worker.address, value: GAS, body, init: net.worker.init })
    expectRejected(r.transactions, net.worker.address, E.VoucherWrongOp)
  })

  it('rejects a payout message that carries too little value', async () => {
    const net = await createOpenChannel()
    const r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 1_000n), value: 10_000_000n })
    expectRejected(r.transactions, net.worker.address, E.InsufficientValue)
  })

  it('undoes a payout the proxy contract cannot fund, so it can be claimed once funds arrive', async () => {
    const net = await createNet()
    await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: ONE_TON })
    const v = net.voucher('workerPayout', net.worker.address, 2_000_000n) // 1.6 TON at the worker fee
    let r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: v })
    expectRejected(r.transactions, net.proxy.address, E.InsufficientFunds)
    expectTx(r.transactions, { from: net.proxy.address, to: net.worker.address, bounced: true, success: true })
    expectTx(r.transactions, { from: net.worker.address, to: net.workerWallet.address, op: Op.excesses })
    assert.equal((await net.worker.getState()).tokensPaid, 0n)
    assert.equal((await net.proxy.getState()).tokensPaid, 0n)

    await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: ONE_TON })
    r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: v })
    expectTx(r.transactions, { from: net.proxy.address, to: net.workerWallet.address, op: Op.workerPayment })
    assert.equal((await net.worker.getState()).tokensPaid, 2_000_000n)
    assert.equal((await net.proxy.getState()).fundsNano, 2n * ONE_TON - 2_000_000n * FEE)
  })

  it('rejects unknown opcodes', async () => {
    const net = await createOpenChannel()
    await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 1n) })
    const r = await net.stranger.send({ to: net.worker.address, value: GAS, body: beginCell().storeUint(0x12345678, 32).endCell() })
    expectRejected(r.transactions, net.worker.address, E.UnknownOp)
  })
})
