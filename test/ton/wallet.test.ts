// Node wallets on the devnet chain: key files, faucet funding, serialized transfers, wrappers
// through sender(), and what the sent messages did on their destinations.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Address, beginCell, toNano, type Contract, type OpenedContract } from '@ton/core'
import type { Chain } from '../../src/ton/chain-client/chain.ts'
import { contractCode } from '../../src/ton/contracts/compile.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { RootContract } from '../../src/ton/contracts/root.ts'
import { DEVNET_PARAMS } from '../../src/ton/chain-client/devnet-root.ts'
import { ChainError, WalletKeyError } from '../../src/ton/chain-client/errors.ts'
import { collectMessages, devnetFaucet, loadOrCreateWalletKey, loadWalletKey, NodeWallet } from '../../src/ton/chain-client/wallet.ts'
import { startDevnet, type Devnet } from './helpers.ts'

describe('wallet key files', () => {
  let net: Devnet
  before(async () => {
    net = await startDevnet()
  })
  after(() => net.close())

  it('creates a private 32-byte seed once and reads the same key back', () => {
    const file = path.join(net.dir, 'keys', 'node.key')
    const first = loadOrCreateWalletKey(file)
    assert.equal(fs.statSync(file).mode & 0o777, 0o600)
    assert.match(fs.readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/)
    assert.deepEqual(loadOrCreateWalletKey(file).publicKey, first.publicKey)
    assert.deepEqual(loadWalletKey(file).publicKey, first.publicKey)
  })

  it('accepts a raw 32-byte seed and refuses anything else, or a key others can read', () => {
    const raw = path.join(net.dir, 'raw.key')
    fs.writeFileSync(raw, Buffer.alloc(32, 5), { mode: 0o600 })
    assert.equal(loadWalletKey(raw).publicKey.length, 32)
    const bad = path.join(net.dir, 'bad.key')
    fs.writeFileSync(bad, 'hello', { mode: 0o600 })
    assert.throws(() => loadWalletKey(bad), (e: WalletKeyError) => e.name === 'WalletKeyError' && /32-byte seed/.test(e.message))
    const open = path.join(net.dir, 'open.key')
    fs.writeFileSync(open, Buffer.alloc(32, 6))
    fs.chmodSync(open, 0o644)
    assert.throws(() => loadWalletKey(open), /accessible by other users \(mode 644\)/)
    assert.throws(() => loadWalletKey(path.join(net.dir, 'missing.key')), /no such file/)
  })
})

describe('node wallet on the devnet', () => {
  let net: Devnet
  before(async () => {
    net = await startDevnet()
  })
  after(() => net.close())
  const bob = new Address(0, Buffer.alloc(32, 0xb0))

  it('is funded by the faucet before it is deployed', async () => {
    const { wallet } = await net.wallet('funded', '0')
    const out = await devnetFaucet(net.server.url, wallet.address, toNano('4'))
    assert.equal(out.balanceNano, toNano('4'))
    assert.equal(await wallet.balance(), toNano('4'))
    assert.equal(await wallet.seqno(), 0)
    assert.equal(await net.chain.isDeployed(wallet.address), false)
  })

  it('deploys on its first transfer and serializes concurrent ones: three sends, seqno +3', async () => {
    const { wallet } = await net.wallet('busy', '10')
    const transfers = await Promise.all([1, 2, 3].map((i) => wallet.send([{ to: bob, value: toNano('0.1') * BigInt(i), bounce: false }])))
    assert.deepEqual(transfers.map((t) => t.seqno), [0, 1, 2])
    assert.equal(await wallet.seqno(), 3)
    assert.equal(await net.chain.isDeployed(wallet.address), true)
    const results = await Promise.all(transfers.map((t) => wallet.results(t)))
    assert.deepEqual(results.map((r) => r[0].valueNano), [toNano('0.1'), toNano('0.2'), toNano('0.3')])
    assert.ok(results.every((r) => r[0].from?.equals(wallet.address)))
  })

  it('sends up to four messages in one transfer, and refuses more', async () => {
    const { wallet } = await net.wallet('batch', '10')
    const to = [1, 2, 3, 4].map((i) => new Address(0, Buffer.alloc(32, i)))
    const t = await wallet.send(to.map((a) => ({ to: a, value: toNano('0.01'), bounce: false })))
    assert.equal(t.seqno, 0)
    const results = await wallet.results(t)
    assert.deepEqual(results.map((r) => r.address.toRawString()), to.map((a) => a.toRawString()))
    await assert.rejects(wallet.send(to.concat(to[0]).map((a) => ({ to: a, value: 1n }))), RangeError)
  })

  it('works as the Sender of the contract wrappers, and reports a contract’s refusal by exit code name', async () => {
    const { wallet } = await net.wallet('owner', '10')
    const { wallet: stranger } = await net.wallet('stranger', '10')
    const root = RootContract.createFromConfig({ owner: wallet.address, params: DEVNET_PARAMS, uniqueId: 77 }, await contractCode('root'))
    await net.chain.open(root).sendDeploy(wallet.sender(), toNano('0.2'))
    assert.equal(await net.chain.isDeployed(root.address), true)

    const allow = (via: NodeWallet) =>
      collectMessages((s) => net.chain.open(root).sendAllowHash(s, { value: toNano('0.05'), kind: 'model', hash: Buffer.alloc(32, 1) }))
    await assert.rejects(stranger.sendAndConfirm(await allow(stranger)), (err: Error & { exitCode?: number; exitCodeName?: string }) => {
      assert.equal(err.name, 'ContractRejectedError')
      assert.equal(err.exitCode, 100)
      assert.equal(err.exitCodeName, 'NotOwner')
      assert.match(err.message, /exit code 100 \(NotOwner\)/)
      return true
    })
    const [tx] = await wallet.sendAndConfirm(await allow(wallet))
    assert.equal(tx.op, Op.rootAllowHash)
    assert.equal(tx.success, true)
    assert.deepEqual((await net.chain.getRootState(root.address)).modelHashes, ['01'.repeat(32)])
  })

  it('fails a transfer the chain refuses, after one retry, with a clear error', async () => {
    // Not deployed and no funds: the wallet cannot pay for its own deployment.
    const { wallet } = await net.wallet('broke', '0')
    await assert.rejects(wallet.send([{ to: bob, value: 1n, bounce: false }]), (err: Error & { reason?: string; cause?: unknown }) => {
      assert.equal(err.name, 'WalletSendError')
      assert.equal(err.reason, 'rejected')
      assert.ok(err.cause instanceof ChainError)
      return true
    })
    // The queue carries on after a failure.
    await devnetFaucet(net.server.url, wallet.address, toNano('1'))
    assert.equal((await wallet.send([{ to: bob, value: 1n, bounce: false }])).seqno, 0)
  })

  it('re-signs once with a fresh seqno when a transfer is lost, then gives up with a timeout', async () => {
    const { keyFile } = await net.wallet('lossy', '5')
    let sends = 0
    let dropFirst = 0
    // The seam next door: the wallet's external messages get lost on the way (the first `dropFirst` of them).
    const lossy: Chain = Object.create(net.chain, {
      open: {
        value: <T extends Contract>(c: T) => {
          const opened = net.chain.open(c) as OpenedContract<T> & { send(m: unknown): Promise<void> }
          return new Proxy(opened, {
            get: (target, prop) =>
              prop === 'send'
                ? async (m: unknown) => {
                    sends++
                    if (sends > dropFirst) await target.send(m)
                  }
                : Reflect.get(target, prop),
          })
        },
      },
    })
    const wallet = new NodeWallet(lossy, loadWalletKey(keyFile), { sendTimeoutMs: 300, pollIntervalMs: 50 })

    dropFirst = 1
    const t = await wallet.send([{ to: bob, value: 1n, bounce: false }])
    assert.equal(sends, 2)
    assert.equal(t.seqno, 0)
    assert.equal(await wallet.seqno(), 1)

    sends = 0
    dropFirst = Infinity
    await assert.rejects(wallet.send([{ to: bob, value: 1n, bounce: false }]), (err: Error & { reason?: string }) => {
      assert.equal(err.name, 'WalletSendError')
      assert.equal(err.reason, 'timeout')
      assert.match(err.message, /seqno stayed at 1/)
      return true
    })
    assert.equal(sends, 2)
  })

  it('tells when a message could not leave the wallet for lack of balance', async () => {
    const { wallet } = await net.wallet('poor', '1')
    const t = await wallet.send([{ to: bob, value: toNano('50'), bounce: false, body: beginCell().endCell() }])
    await assert.rejects(wallet.results(t), (err: Error & { reason?: string }) => err.name === 'WalletSendError' && err.reason === 'failed' && /0 of 1 messages left the wallet/.test(err.message))
  })
})
