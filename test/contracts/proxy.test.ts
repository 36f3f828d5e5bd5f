// Proxy contract: stake, state commits, margin withdrawal, worker payouts and close.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell } from '@ton/core'
import { ContractExitCode as E } from '../../src/ton/contracts/errors.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { commitStateBody, parseCommitStateBody } from '../../src/ton/contracts/proxy.ts'
import { createNet, createOpenChannel, expectNoTx, expectRejected, expectTx, GAS, ONE_TON, PARAMS } from './helpers.ts'

const HASH_A = Buffer.alloc(32, 0x11)
const HASH_B = Buffer.alloc(32, 0x22)

describe('proxy contract', () => {
  it('is deployed by its first stake deposit and returns the unused gas', async () => {
    const net = await createNet()
    const r = await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano, gasNano: ONE_TON })
    expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyAddStake, success: true, deploy: true })
    const back = expectTx(r.transactions, { from: net.proxy.address, to: net.proxyOwner.address, op: Op.excesses })
    assert.ok(back.valueNano > ONE_TON - 10_000_000n, `excess ${back.valueNano}`)
    const st = await net.proxy.getState()
    assert.equal(st.state, 'active')
    assert.equal(st.stakeNano, PARAMS.minProxyStakeNano)
    assert.equal(st.fundsNano, PARAMS.minProxyStakeNano)
    // The contract holds exactly what it tracks; gas came out of the attached value.
    assert.equal((await net.blockchain.getContract(net.proxy.address)).balance, PARAMS.minProxyStakeNano)
    const id = await net.proxy.getIdentity()
    assert.ok(id.owner.equals(net.proxyOwner.address) && id.root.equals(net.root.address))
    assert.deepEqual(id.publicKey, net.proxyKeys.publicKey)
    assert.deepEqual(id.params, PARAMS)
  })

  it('accepts stake from anyone, and rejects a deposit that does not cover the amount plus gas', async () => {
    const net = await createOpenChannel()
    let r = await net.proxy.sendAddStake(net.stranger.getSender(), { amountNano: ONE_TON })
    expectTx(r.transactions, { to: net.proxy.address, success: true })
    assert.equal((await net.proxy.getState()).stakeNano, PARAMS.minProxyStakeNano + ONE_TON)
    r = await net.proxy.sendAddStake(net.stranger.getSender(), { amountNano: ONE_TON, gasNano: 1_000_000n })
    expectRejected(r.transactions, net.proxy.address, E.InsufficientValue)
  })

  it('derives the same client and worker contract addresses on-chain as the wrappers', async () => {
    const net = await createOpenChannel()
    assert.ok((await net.proxy.getClientContractAddress(net.clientWallet.address)).equals(net.client.address))
    assert.ok((await net.proxy.getWorkerContractAddress(net.workerWallet.address)).equals(net.worker.address))
  })

  describe('state commits', () => {
    it('records monotonic (seqno, hash) commits from the owner', async () => {
      const net = await createOpenChannel()
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A })
      expectTx(r.transactions, { from: net.proxyOwner.address, to: net.proxy.address, op: Op.proxyCommitState, success: true })
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 5n, stateHash: HASH_B })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      const st = await net.proxy.getState()
      assert.equal(st.commitSeqno, 5n)
      assert.deepEqual(st.commitHash, HASH_B)
    })

    it('rejects a seqno that does not grow', async () => {
      const net = await createOpenChannel()
      await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 5n, stateHash: HASH_A })
      for (const seqno of [5n, 4n]) {
        const r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno, stateHash: HASH_B })
        expectRejected(r.transactions, net.proxy.address, E.SeqnoNotNewer)
      }
      assert.deepEqual((await net.proxy.getState()).commitHash, HASH_A)
    })

    it('rejects commits from anyone but the owner', async () => {
      const net = await createOpenChannel()
      const r = await net.proxy.sendCommitState(net.stranger.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A })
      expectRejected(r.transactions, net.proxy.address, E.NotOwner)
    })

    it('rejects commits while the stake is below the minimum', async () => {
      const net = await createNet()
      await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano - 1n })
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A })
      expectRejected(r.transactions, net.proxy.address, E.StakeTooLow)
      await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: 1n })
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
    })
  })

  describe('receipt log commits', () => {
    const ROOT_A = Buffer.alloc(32, 0xaa)
    const ROOT_B = Buffer.alloc(32, 0xbb)

    it('stores the receipts root and count with each commit and serves them from get_receipts_root', async () => {
      const net = await createOpenChannel()
      let rr = await net.proxy.getReceiptsRoot()
      assert.deepEqual(rr, { seqno: 0n, root: Buffer.alloc(32), count: 0n })
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 3n } })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyCommitState, success: true })
      rr = await net.proxy.getReceiptsRoot()
      assert.deepEqual(rr, { seqno: 1n, root: ROOT_A, count: 3n })
      // An empty round (no new receipts) keeps the count.
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 2n, stateHash: HASH_B, receipts: { root: ROOT_A, count: 3n } })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 3n, stateHash: HASH_B, receipts: { root: ROOT_B, count: 7n } })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      assert.deepEqual(await net.proxy.getReceiptsRoot(), { seqno: 3n, root: ROOT_B, count: 7n })
      // The proxy state getter still reports the same commit.
      assert.equal((await net.proxy.getState()).commitSeqno, 3n)
    })

    it('rejects a commit whose receipt count shrinks', async () => {
      const net = await createOpenChannel()
      await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 5n } })
      const r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 2n, stateHash: HASH_B, receipts: { root: ROOT_B, count: 4n } })
      expectRejected(r.transactions, net.proxy.address, E.ReceiptsShrink)
      assert.deepEqual(await net.proxy.getReceiptsRoot(), { seqno: 1n, root: ROOT_A, count: 5n })
    })

    it('rejects a zero root for a non-empty log and a non-zero root for an empty one', async () => {
      const net = await createOpenChannel()
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A, receipts: { root: Buffer.alloc(32), count: 1n } })
      expectRejected(r.transactions, net.proxy.address, E.ReceiptsRootMalformed)
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 0n } })
      expectRejected(r.transactions, net.proxy.address, E.ReceiptsRootMalformed)
    })
  })

  describe('reliability record commits', () => {
    const ROOT_A = Buffer.alloc(32, 0xaa)
    const REL_A = Buffer.alloc(32, 0x5a)
    const REL_B = Buffer.alloc(32, 0x5b)

    it('stores the reliability record hash with each commit and serves it from get_reliability_hash', async () => {
      const net = await createOpenChannel()
      assert.deepEqual(await net.proxy.getReliabilityHash(), { seqno: 0n, hash: Buffer.alloc(32) })
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 3n }, reliabilityHash: REL_A })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyCommitState, success: true })
      assert.deepEqual(await net.proxy.getReliabilityHash(), { seqno: 1n, hash: REL_A })
      // The receipts commit is unchanged by the new field.
      assert.deepEqual(await net.proxy.getReceiptsRoot(), { seqno: 1n, root: ROOT_A, count: 3n })
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 2n, stateHash: HASH_B, receipts: { root: ROOT_A, count: 3n }, reliabilityHash: REL_B })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      assert.deepEqual(await net.proxy.getReliabilityHash(), { seqno: 2n, hash: REL_B })
      // A commit that states no record (the wrapper's default) stores zeros: the hash always belongs to the latest seqno.
      r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 3n, stateHash: HASH_B, receipts: { root: ROOT_A, count: 3n } })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      assert.deepEqual(await net.proxy.getReliabilityHash(), { seqno: 3n, hash: Buffer.alloc(32) })
    })

    it('keeps the committed hash when a commit is refused, and refuses anyone but the owner', async () => {
      const net = await createOpenChannel()
      await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 5n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 3n }, reliabilityHash: REL_A })
      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 5n, stateHash: HASH_B, receipts: { root: ROOT_A, count: 3n }, reliabilityHash: REL_B })
      expectRejected(r.transactions, net.proxy.address, E.SeqnoNotNewer)
      r = await net.proxy.sendCommitState(net.stranger.getSender(), { value: GAS, seqno: 6n, stateHash: HASH_B, receipts: { root: ROOT_A, count: 3n }, reliabilityHash: REL_B })
      expectRejected(r.transactions, net.proxy.address, E.NotOwner)
      assert.deepEqual(await net.proxy.getReliabilityHash(), { seqno: 5n, hash: REL_A })
    })

    it('the commit body round-trips through the audit parser, and a body without the hash parses as none', () => {
      const body = commitStateBody({ seqno: 9n, stateHash: HASH_A, receipts: { root: ROOT_A, count: 2n }, reliabilityHash: REL_A })
      const back = parseCommitStateBody(body)!
      assert.deepEqual(back.reliabilityHash, REL_A)
      assert.equal(back.seqno, 9n)
      const old = beginCell().storeUint(Op.proxyCommitState, 32).storeUint(0, 64).storeUint(9, 64).storeBuffer(HASH_A).storeBuffer(ROOT_A).storeUint(2, 64).endCell()
      assert.deepEqual(parseCommitStateBody(old)!.reliabilityHash, Buffer.alloc(32))
    })
  })

  describe('margin withdrawal', () => {
    it('pays the owner the margin free of stake and worker obligations, and nothing more', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      // 1M tokens charged at 1000 = 1 TON collected; 0.8 TON owed to workers.
      let st = await net.proxy.getState()
      assert.equal(st.owedNano, 800_000_000n)
      assert.equal(st.withdrawableNano, 200_000_000n)

      let r = await net.proxy.sendWithdraw(net.proxyOwner.getSender(), { value: GAS, amountNano: 200_000_001n })
      expectRejected(r.transactions, net.proxy.address, E.ExceedsWithdrawable)

      r = await net.proxy.sendWithdraw(net.proxyOwner.getSender(), { value: GAS, amountNano: 150_000_000n })
      const paid = expectTx(r.transactions, { from: net.proxy.address, to: net.proxyOwner.address, op: Op.withdrawal })
      assert.ok(paid.valueNano > 150_000_000n && paid.valueNano < 150_000_000n + GAS)
      st = await net.proxy.getState()
      assert.equal(st.fundsNano, PARAMS.minProxyStakeNano + 850_000_000n)
      assert.equal(st.withdrawableNano, 50_000_000n)
    })

    it('rejects withdrawals by anyone but the owner', async () => {
      const net = await createOpenChannel()
      const r = await net.proxy.sendWithdraw(net.stranger.getSender(), { value: GAS, amountNano: 0n })
      expectRejected(r.transactions, net.proxy.address, E.NotOwner)
    })
  })

  describe('notifications from channel contracts', () => {
    it('rejects a charge deposit that does not come from a derived client contract', async () => {
      const net = await createOpenChannel()
      const body = beginCell()
        .storeUint(Op.proxyChargeDeposit, 32).storeUint(0, 64)
        .storeUint(1_000n, 64).storeCoins(ONE_TON)
        .storeAddress(net.stranger.address).storeAddress(net.stranger.address)
        .endCell()
      const r = await net.stranger.send({ to: net.proxy.address, value: 2n * ONE_TON, body })
      expectRejected(r.transactions, net.proxy.address, E.NotChannelContract)
      assert.equal((await net.proxy.getState()).fundsNano, PARAMS.minProxyStakeNano)
    })

    it('rejects a payout request that does not come from a derived worker contract', async () => {
      const net = await createOpenChannel()
      const body = beginCell()
        .storeUint(Op.proxyPayoutRequest, 32).storeUint(0, 64)
        .storeUint(1_000_000n, 64).storeAddress(net.stranger.address)
        .endCell()
      const r = await net.stranger.send({ to: net.proxy.address, value: GAS, body })
      expectRejected(r.transactions, net.proxy.address, E.NotChannelContract)
      expectNoTx(r.transactions, { from: net.proxy.address, op: Op.workerPayment })
    })
  })

  describe('close', () => {
    it('closes at once when no worker obligations are open, paying everything to the owner', async () => {
      const net = await createOpenChannel()
      let r = await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyRequestClose, success: true })
      let st = await net.proxy.getState()
      assert.equal(st.state, 'closing')
      assert.equal(st.unlockAt, net.blockchain.now! + PARAMS.proxyCloseDelaySec)

      r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyFinishClose, success: true })
      const paid = expectTx(r.transactions, { from: net.proxy.address, to: net.proxyOwner.address, op: Op.withdrawal })
      assert.ok(paid.valueNano >= PARAMS.minProxyStakeNano)
      st = await net.proxy.getState()
      assert.equal(st.state, 'closed')
      assert.equal(st.fundsNano, 0n)
      assert.equal((await net.blockchain.getContract(net.proxy.address)).balance, 0n)
    })

    it('waits for the close delay while worker obligations are open', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })

      let r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.CloseTooEarly)

      // While closing, workers are still paid.
      r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 400_000n) })
      expectTx(r.transactions, { from: net.proxy.address, to: net.workerWallet.address, op: Op.workerPayment })

      net.blockchain.now! += PARAMS.proxyCloseDelaySec - 1
      r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.CloseTooEarly)

      net.blockchain.now! += 1
      r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
      assert.equal((await net.proxy.getState()).state, 'closed')
    })

    it('closes before the delay once workers are paid for everything charged', async () => {
      const net = await createOpenChannel()
      await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 1_000_000n) })
      await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })
      await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 1_000_000n) })
      assert.equal((await net.proxy.getState()).owedNano, 0n)
      const r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectTx(r.transactions, { to: net.proxy.address, success: true })
    })

    it('rejects close ops out of order or from anyone but the owner', async () => {
      const net = await createOpenChannel()
      let r = await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.ProxyNotClosing)
      r = await net.proxy.sendRequestClose(net.stranger.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.NotOwner)
      await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })
      r = await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.ProxyNotActive)
      r = await net.proxy.sendFinishClose(net.stranger.getSender(), { value: GAS })
      expectRejected(r.transactions, net.proxy.address, E.NotOwner)
      r = await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: ONE_TON })
      expectRejected(r.transactions, net.proxy.address, E.ProxyNotActive)
    })

    it('after closing, refuses commits and payouts but still credits late charges to the owner', async () => {
      const net = await createOpenChannel()
      await net.proxy.sendRequestClose(net.proxyOwner.getSender(), { value: GAS })
      await net.proxy.sendFinishClose(net.proxyOwner.getSender(), { value: GAS })

      let r = await net.proxy.sendCommitState(net.proxyOwner.getSender(), { value: GAS, seqno: 1n, stateHash: HASH_A })
      expectRejected(r.transactions, net.proxy.address, E.ProxyClosed)

      r = await net.client.sendVoucher(net.proxyOwner.getSender(), { voucher: net.voucher('clientCharge', net.client.address, 500_000n) })
      expectTx(r.transactions, { to: net.proxy.address, op: Op.proxyChargeDeposit, success: true })
      let st = await net.proxy.getState()
      assert.equal(st.fundsNano, 500_000_000n)
      assert.equal(st.withdrawableNano, 500_000_000n)

      r = await net.worker.sendPayout(net.workerWallet.getSender(), { voucher: net.voucher('workerPayout', net.worker.address, 100n) })
      expectRejected(r.transactions, net.proxy.address, E.ProxyClosed)

      r = await net.proxy.sendWithdraw(net.proxyOwner.getSender(), { value: GAS, amountNano: 500_000_000n })
      expectTx(r.transactions, { from: net.proxy.address, to: net.proxyOwner.address, op: Op.withdrawal })
      st = await net.proxy.getState()
      assert.equal(st.fundsNano, 0n)
    })
  })
})
