// TON Connect top-ups: the transaction the node builds for the app user's own wallet, decoded the way a wallet
// decodes it and sent from another wallet in the sandbox, is accepted by the client contract as a top-up.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Address, Cell, loadStateInit } from '@ton/core'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { ContractExitCode } from '../../src/ton/contracts/errors.ts'
import { tonConnectTransaction, TONCONNECT_NETWORK } from '../../src/ton/chain-client/tonconnect.ts'
import { createNet, expectRejected, expectTx, ONE_TON, PARAMS } from './helpers.ts'
import type { SandboxContract, TreasuryContract } from '@ton/sandbox'

/** What a wallet does with a TON Connect message: parse the address, amount, payload and state init, and send. */
async function sendLikeAWallet(wallet: SandboxContract<TreasuryContract>, m: { address: string; amount: string; payload?: string; stateInit?: string }) {
  const parsed = Address.parseFriendly(m.address)
  return wallet.send({
    to: parsed.address,
    value: BigInt(m.amount),
    bounce: parsed.isBounceable,
    body: m.payload ? Cell.fromBase64(m.payload) : undefined,
    init: m.stateInit ? loadStateInit(Cell.fromBase64(m.stateInit).beginParse()) : undefined,
  })
}

describe('TON Connect top-up transaction', () => {
  it('deploys and funds the client contract from the user wallet, then tops it up again', async () => {
    const net = await createNet()
    await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano })
    const amount = 3n * ONE_TON
    const first = tonConnectTransaction(net.client.topUpMessage({ amountNano: amount, deployed: false }), { nowSec: 1_700_000_000, network: 'testnet' })
    assert.equal(first.network, TONCONNECT_NETWORK.testnet)
    assert.equal(first.validUntil, 1_700_000_300)
    const [m] = first.messages
    assert.ok(Address.parse(m.address).equals(net.client.address), 'the message goes to the client contract')
    assert.equal(Address.parseFriendly(m.address).isBounceable, false, 'an undeployed contract is addressed non-bounceable')
    assert.ok(BigInt(m.amount) > amount, 'the value covers the amount plus gas')
    const body = Cell.fromBase64(m.payload!).beginParse()
    assert.equal(body.loadUint(32), Op.clientTopUp)
    body.loadUint(64)
    assert.equal(body.loadCoins(), amount)
    assert.ok(m.stateInit, 'the first top-up carries the state init')

    // The user's wallet is a stranger to the contract (not the client node's wallet): deposits are open to anyone.
    const r = await sendLikeAWallet(net.stranger, m)
    expectTx(r.transactions, { to: net.client.address, op: Op.clientTopUp, success: true, deploy: true })
    let st = await net.client.getState()
    assert.equal(st.balanceNano, amount)
    assert.ok((await net.client.getIdentity()).owner.equals(net.clientWallet.address), 'the contract belongs to the client node, whoever paid')

    const again = tonConnectTransaction(net.client.topUpMessage({ amountNano: ONE_TON, deployed: true }), { nowSec: 1_700_000_000, network: 'mainnet' })
    assert.equal(again.messages[0].stateInit, undefined)
    assert.equal(Address.parseFriendly(again.messages[0].address).isBounceable, true)
    assert.equal(Address.parseFriendly(again.messages[0].address).isTestOnly, false)
    const r2 = await sendLikeAWallet(net.stranger, again.messages[0])
    expectTx(r2.transactions, { to: net.client.address, op: Op.clientTopUp, success: true })
    st = await net.client.getState()
    assert.equal(st.balanceNano, amount + ONE_TON)
  })

  it('is refused by the contract when the wallet sends less than the payload credits', async () => {
    const net = await createNet()
    await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: PARAMS.minProxyStakeNano })
    await sendLikeAWallet(net.stranger, tonConnectTransaction(net.client.topUpMessage({ amountNano: 2n * ONE_TON, deployed: false }), { nowSec: 0 }).messages[0])
    const m = tonConnectTransaction(net.client.topUpMessage({ amountNano: ONE_TON, deployed: true }), { nowSec: 0 }).messages[0]
    const r = await sendLikeAWallet(net.stranger, { ...m, amount: String(ONE_TON / 2n) })
    expectRejected(r.transactions, net.client.address, ContractExitCode.InsufficientValue)
    assert.equal((await net.client.getState()).balanceNano, 2n * ONE_TON)
  })
})
