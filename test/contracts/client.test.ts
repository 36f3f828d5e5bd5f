// Client contract: deposits, proxy-signed cumulative charges, withdrawal down to the
// stake, and both ways to close.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell } from '@ton/core'
import { ContractExitCode as E } from '../../src/ton/contracts/errors.ts'
import { Op, VOUCHER_DOMAIN } from '../../src/ton/contracts/opcodes.ts'
import { ClientContract } from '../../src/ton/contracts/client.ts'
import { signVoucher, voucherCell } from '../../src/ton/contracts/vouchers.ts'
import { sign } from '@ton/crypto'
import { createNet, createOpenChannel, expectNoTx, expectRejected, expectTx, GAS, keyPair, ONE_TON, PARAMS } from './helpers.ts'

const DEPOSIT = 5n * ONE_TON
const PRICE = PARAMS.pricePerTokenNano

describe('client contract', () => {
  describe('top-up', () => {
    it('is deployed by the first deposit, keeps exactly the amount and returns the rest', async () => {
      const net = await createNet()
      await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano })
      const r = await net.client.sendTopUp(net.clientWallet.getSender(), { amountNano: DEPOSIT, gasNano: ONE_TON })
      expectTx(r.transactions, { from: net.clientWallet.address, to: net.client.address, op: Op.clientTopUp, success: true, deploy: true })
      const back = expectTx(r.transactions, { from: net.client.address, to: net.clientWallet.address, op: Op.excesses })
      assert.ok(back.valueNano > ONE_TON - 10_000_000n)
      assert.equal((await net.blockchain.getContract(net.client.address)).balance, DEPOSIT)
      const st = await net.client.getState()
      assert.deepEqual(st, { state: 'active', balanceNano: DEPOSIT, stakeNano: PARAMS.minClientStakeNano, tokensCharged: 0n, unlockAt: 0 })
      const id = await net.client.getIdentity()
      assert.ok(id.owner.equals(net.clientWallet.address) && id.proxy.equals(net.proxy.address))
      assert.deepEqual(id.proxyPublicKey, net.proxyKeys.publicKey)
    })

    it('accepts deposits from anyone and rejects one that does not cover the amount plus gas', async () => {
      const net = await createOpenChannel()
      let r = await net.client.sendTopUp(net.stranger.getSender(), { amountNano: ONE_TON })
      expectTx(r.transactions, { to: net.client.address, success: true })
      assert.equal((await net.client.getState()).balanceNano, DEPOSIT + ONE_TON)
      r = await net.client.sendTopUp(net.stranger.getSender(), { amountNano: ONE_TON, gasNano: 0n })
      expectRejected(r.transactions, net.client.address, E.InsufficientValue)
    })
  })

  describe('charge vouchers', () => {
    it('moves the charged nanoTON to the proxy contract and returns the gas to the submitter', async () => {
      const net = await createOpenChannel()
      const r = await net.client.sendVoucher(net.proxyOwner.getSender(), {
        voucher: net.voucher('clientCharge', net.client.address, 1_000_000n), value: ONE_TON, queryId: 42n,
      })
      expectTx(r.transactions, { from: net.proxyOwner.address, to: net.client.address, op: Op.clientCharge, success: true })
      const deposit = expectTx(r.transactions, { from: net.client.address, to: net.proxy.address, op: Op.proxyChargeDeposit, success: true })
      assert.ok(deposit.valueNano > 1_000_000n * PRICE)
      const back = expectTx(r.transactions, { from: net.proxy.address, to: net.proxyOwner.address, op: Op.excesses })
      assert.ok(back.valueNano > ONE_TON - 20_000_000n, `excess ${back.valueNano}`)

      const client = await net.client.getState()
      assert.equal(client.tokensCharged, 1_000_000n)
      assert.equal(client.balanceNano, DEPOSIT - 1_000_000n * PRICE)
      assert.equal((await net.blockchain.getContract(net.client.address)).balance, client.balanceNano)
      const proxy = await net.proxy.getState()
      assert.equal(proxy.tokensCharged, 1_000_000n)
      assert.equal(proxy.fundsNano, PARAMS.minProxyStakeNano + 1_000_000n * PRICE)
    })

    it('charges only the delta of a newer cumulative voucher, submitted by anyone', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.clientWallet.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000n) })
      const r = await net.client.sendVoucher(net.stranger.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 3_500n) })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyChargeDeposit, success: true })
      assert.equal((await net.client.getState()).balanceNano, DEPOSIT - 3_500n * PRICE)
      assert.equal((await net.proxy.getState()).tokensCharged, 3_500n)
    })

    it('rejects a replayed or older voucher', async () => {
      const net = await createOpenChannel()
      const v = net.voucher('clientCharge', net.client.address, 2_000n)
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: v })
      let r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: v })
      expectRejected(r.transactions, net.client.address, E.VoucherNotNewer)
      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_999n) })
      expectRejected(r.transactions, net.client.address, E.VoucherNotNewer)
      expectNoTx(r.transactions, { to: net.proxy.address })
      assert.equal((await net.client.getState()).tokensCharged, 2_000n)
    })

    it('rejects a charge beyond the balance', async () => {
      const net = await createOpenChannel()
      const all = DEPOSIT / PRICE
      let r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, all + 1n) })
      expectRejected(r.transactions, net.client.address, E.ChargeExceedsBalance)
      // Exactly the balance is fine, stake included.
      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, all) })
      expectTx(r.transactions, { to: net.client.address, success: true })
      assert.equal((await net.client.getState()).balanceNano, 0n)
    })

    it('rejects a forged signature', async () => {
      const net = await createOpenChannel()
      const forged = signVoucher({ kind: 'clientCharge', target: net.client.address, tokens: 1_000n }, keyPair('attacker').secretKey)
      const r = await net.client.sendVoucher(net.stranger.getSender(), { voucher: forged })
      expectRejected(r.transactions, net.client.address, E.VoucherBadSignature)
      const tampered = { ...net.voucher('clientCharge', net.client.address, 1_000n), tokens: 2_000n }
      const r2 = await net.client.sendVoucher(net.stranger.getSender(), { voucher: tampered })
      expectRejected(r2.transactions, net.client.address, E.VoucherBadSignature)
    })

    it('rejects a voucher signed for another client contract', async () => {
      const net = await createOpenChannel()
      const other = net.blockchain.openContract(
        ClientContract.createFromConfig(
          { owner: net.stranger.address, proxy: net.proxy.address, proxyPublicKey: net.proxyKeys.publicKey, params: PARAMS },
          net.codes.client,
        ),
      )
      await other.sendTopUp(net.stranger.getSender(), { amountNano: DEPOSIT })
      const forOther = net.voucher('clientCharge', other.address, 1_000n)
      let r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: forOther })
      expectRejected(r.transactions, net.client.address, E.VoucherWrongTarget)
      // Re-aimed at this contract, the signature no longer matches.
      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: { ...forOther, target: net.client.address } })
      expectRejected(r.transactions, net.client.address, E.VoucherBadSignature)
      r = await other.sendVoucher(net.proxyOwner.getSender(), { voucher: forOther })
      expectTx(r.transactions, { to: other.address, success: true })
    })

    it('rejects a voucher signed for another op or outside the Cocoon domain', async () => {
      const net = await createOpenChannel()
      const payout = net.voucher('workerPayout', net.client.address, 1_000n)
      // A payout voucher presented inside a charge message.
      const body = beginCell()
        .storeUint(Op.clientCharge, 32).storeUint(0, 64).storeBuffer(payout.signature).storeRef(voucherCell(payout))
        .endCell()
      let r = await net.stranger.send({ to: net.client.address, value: GAS, body })
      expectRejected(r.transactions, net.client.address, E.VoucherWrongOp)

      const foreign = beginCell()
        .storeUint(VOUCHER_DOMAIN + 1, 32).storeUint(Op.clientCharge, 32).storeAddress(net.client.address).storeUint(1_000n, 64)
        .endCell()
      const foreignBody = beginCell()
        .storeUint(Op.clientCharge, 32).storeUint(0, 64)
        .storeBuffer(sign(foreign.hash(), net.proxyKeys.secretKey)).storeRef(foreign)
        .endCell()
      r = await net.stranger.send({ to: net.client.address, value: GAS, body: foreignBody })
      expectRejected(r.transactions, net.client.address, E.VoucherBadDomain)
    })

    it('rejects a voucher message that carries too little value', async () => {
      const net = await createOpenChannel()
      const r = await net.client.sendVoucher(net.proxyOwner.getSender(), {
        voucher: net.voucher('clientCharge', net.client.address, 1_000n), value: 20_000_000n,
      })
      expectRejected(r.transactions, net.client.address, E.InsufficientValue)
    })
  })

  describe('withdrawal', () => {
    it('pays the owner down to the stake and no further', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      const free = DEPOSIT - 1_000_000n * PRICE - PARAMS.minClientStakeNano
      let r = await net.client.sendWithdraw(net.clientWallet.getSender(), { value: GAS, amountNano: free + 1n })
      expectRejected(r.transactions, net.client.address, E.WithdrawBelowStake)
      r = await net.client.sendWithdraw(net.clientWallet.getSender(), { value: GAS, amountNano: free })
      const paid = expectTx(r.transactions, { from: net.client.address, to: net.clientWallet.address, op: Op.withdrawal })
      assert.ok(paid.valueNano > free)
      assert.equal((await net.client.getState()).balanceNano, PARAMS.minClientStakeNano)
    })

    it('rejects withdrawals by anyone but the owner', async () => {
      const net = await createOpenChannel()
      const r = await net.client.sendWithdraw(net.stranger.getSender(), { value: GAS, amountNano: 1n })
      expectRejected(r.transactions, net.client.address, E.NotOwner)
    })
  })

  describe('close with the proxy silent', () => {
    it('returns everything not charged after the close delay, and lets the proxy charge meanwhile', async () => {
      const net = await createOpenChannel()
      let r = await net.client.sendRequestClose(net.clientWallet.getSender(), { value: GAS })
      expectTx(r.transactions, { to: net.client.address, op: Op.clientRequestClose, success: true })
      let st = await net.client.getState()
      assert.equal(st.state, 'closing')
      assert.equal(st.unlockAt, net.blockchain.now! + PARAMS.clientCloseDelaySec)

      r = await net.client.sendFinishClose(net.clientWallet.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.CloseTooEarly)

      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyChargeDeposit, success: true })
      r = await net.client.sendTopUp(net.clientWallet.getSender(), { amountNano: ONE_TON })
      expectRejected(r.transactions, net.client.address, E.ClientNotActive)
      r = await net.client.sendWithdraw(net.clientWallet.getSender(), { value: GAS, amountNano: 1n })
      expectRejected(r.transactions, net.client.address, E.ClientNotActive)

      net.blockchain.now! += PARAMS.clientCloseDelaySec - 1
      r = await net.client.sendFinishClose(net.clientWallet.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.CloseTooEarly)
      net.blockchain.now! += 1
      r = await net.client.sendFinishClose(net.stranger.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.NotOwner)
      r = await net.client.sendFinishClose(net.clientWallet.getSender(), { value: GAS })
      const refund = expectTx(r.transactions, { from: net.client.address, to: net.clientWallet.address, op: Op.withdrawal })
      assert.ok(refund.valueNano > DEPOSIT - 1_000_000n * PRICE - 1_000_000n, `refund ${refund.valueNano}`)
      st = await net.client.getState()
      assert.equal(st.state, 'closed')
      assert.equal(st.balanceNano, 0n)
      assert.equal((await net.blockchain.getContract(net.client.address)).balance, 0n)

      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 2_000_000n) })
      expectRejected(r.transactions, net.client.address, E.ClientClosed)
    })

    it('rejects close ops out of order or from anyone but the owner', async () => {
      const net = await createOpenChannel()
      let r = await net.client.sendFinishClose(net.clientWallet.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.ClientNotClosing)
      r = await net.client.sendRequestClose(net.stranger.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.NotOwner)
      await net.client.sendRequestClose(net.clientWallet.getSender(), { value: GAS })
      r = await net.client.sendRequestClose(net.clientWallet.getSender(), { value: GAS })
      expectRejected(r.transactions, net.client.address, E.ClientNotActive)
    })
  })

  describe('close with a final charge', () => {
    it('charges the delta and refunds the rest at once', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      const r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientFinalCharge', net.client.address, 1_500_000n) })
      expectTx(r.transactions, { to: net.client.address, op: Op.clientFinalCharge, success: true })
      const deposit = expectTx(r.transactions, { from: net.client.address, to: net.proxy.address, op: Op.proxyChargeDeposit, success: true })
      assert.ok(deposit.valueNano >= 500_000n * PRICE)
      const refund = expectTx(r.transactions, { from: net.client.address, to: net.clientWallet.address, op: Op.withdrawal })
      assert.ok(refund.valueNano > DEPOSIT - 1_500_000n * PRICE - 1_000_000n)
      const st = await net.client.getState()
      assert.equal(st.state, 'closed')
      assert.equal(st.tokensCharged, 1_500_000n)
      assert.equal((await net.proxy.getState()).tokensCharged, 1_500_000n)

      const again = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientFinalCharge', net.client.address, 1_500_000n) })
      expectRejected(again.transactions, net.client.address, E.ClientClosed)
      const topUp = await net.client.sendTopUp(net.clientWallet.getSender(), { amountNano: ONE_TON })
      expectRejected(topUp.transactions, net.client.address, E.ClientNotActive)
    })

    it('closes with nothing new to charge, during a requested close', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000n) })
      await net.client.sendRequestClose(net.clientWallet.getSender(), { value: GAS })
      const r = await net.client.sendVoucher(net.clientWallet.getSender(), { voucher: net.voucher('clientFinalCharge', net.client.address, 1_000n) })
      expectTx(r.transactions, { to: net.client.address, success: true })
      expectNoTx(r.transactions, { to: net.proxy.address })
      expectTx(r.transactions, { from: net.client.address, to: net.clientWallet.address, op: Op.withdrawal })
      assert.equal((await net.client.getState()).state, 'closed')
    })

    it('rejects an older final charge, one beyond the balance, and a forged one', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000n) })
      let r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientFinalCharge', net.client.address, 999n) })
      expectRejected(r.transactions, net.client.address, E.VoucherNotNewer)
      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientFinalCharge', net.client.address, DEPOSIT / PRICE + 1n) })
      expectRejected(r.transactions, net.client.address, E.ChargeExceedsBalance)
      const forged = signVoucher({ kind: 'clientFinalCharge', target: net.client.address, tokens: 1_000n }, keyPair('attacker').secretKey)
      r = await net.client.sendVoucher(net.clientWallet.getSender(), { voucher: forged })
      expectRejected(r.transactions, net.client.address, E.VoucherBadSignature)
      // A plain charge voucher is not a final charge.
      const charge = net.voucher('clientCharge', net.client.address, 2_000n)
      const body = beginCell()
        .storeUint(Op.clientFinalCharge, 32).storeUint(0, 64).storeBuffer(charge.signature).storeRef(voucherCell(charge))
        .endCell()
      r = await net.clientWallet.send({ to: net.client.address, value: GAS, body })
      expectRejected(r.transactions, net.client.address, E.VoucherWrongOp)
      assert.equal((await net.client.getState()).state, 'active')
    })
  })

  it('rejects unknown opcodes', async () => {
    const net = await createOpenChannel()
    const r = await net.stranger.send({ to: net.client.address, value: GAS, body: beginCell().storeUint(0x12345678, 32).endCell() })
    expectRejected(r.transactions, net.client.address, E.UnknownOp)
  })
})
