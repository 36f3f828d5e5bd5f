// Root contract: owner-only governance of parameters and allow-lists (the proxy registry is in registry.test.ts).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell } from '@ton/core'
import { ContractExitCode as E } from '../../src/ton/contracts/errors.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { createNet, expectRejected, expectTx, GAS, keyPair, ONE_TON, PARAMS, type Net } from './helpers.ts'

async function deployedRoot(): Promise<Net> {
  const net = await createNet()
  const r = await net.root.sendDeploy(net.rootOwner.getSender(), ONE_TON)
  expectTx(r.transactions, { to: net.root.address, success: true, deploy: true })
  return net
}

const IMAGE = Buffer.alloc(32, 0xab)
const MODEL = Buffer.alloc(32, 0xcd)
const PROXY_KEY = keyPair('registered-proxy').publicKey

describe('root contract', () => {
  it('starts at version 0 with the deploy parameters and empty lists', async () => {
    const { root, rootOwner } = await deployedRoot()
    const st = await root.getState()
    assert.ok(st.owner.equals(rootOwner.address))
    assert.equal(st.version, 0)
    assert.deepEqual(st.params, PARAMS)
    assert.deepEqual(await root.getParams(), PARAMS)
    assert.deepEqual([st.proxyImageHashes, st.workerImageHashes, st.modelHashes, st.proxies.size], [[], [], [], 0])
  })

  it('lets the owner set parameters, bumping version and paramsVersion', async () => {
    const { root, rootOwner } = await deployedRoot()
    const next = { ...PARAMS, pricePerTokenNano: 3_000n, workerFeePerTokenNano: 2_000n, clientCloseDelaySec: 3600, audioSecondMult: 2_500_000, paramsVersion: 77 }
    const r = await root.sendSetParams(rootOwner.getSender(), { value: GAS, params: next, queryId: 5n })
    expectTx(r.transactions, { from: rootOwner.address, to: root.address, op: Op.rootSetParams, success: true })
    expectTx(r.transactions, { from: root.address, to: rootOwner.address, op: Op.excesses })
    assert.deepEqual(await root.getParams(), { ...next, paramsVersion: 1 })
    assert.equal(await root.getVersion(), 1)
  })

  it('rejects parameters whose worker fee exceeds the price', async () => {
    const { root, rootOwner } = await deployedRoot()
    const bad = { ...PARAMS, workerFeePerTokenNano: PARAMS.pricePerTokenNano + 1n }
    const r = await root.sendSetParams(rootOwner.getSender(), { value: GAS, params: bad })
    expectRejected(r.transactions, root.address, E.InvalidParams)
    assert.equal(await root.getVersion(), 0)
  })

  it('allows and revokes hashes on each of the three lists', async () => {
    const { root, rootOwner } = await deployedRoot()
    for (const kind of ['proxyImage', 'workerImage', 'model'] as const) {
      const r = await root.sendAllowHash(rootOwner.getSender(), { value: GAS, kind, hash: IMAGE })
      expectTx(r.transactions, { to: root.address, op: Op.rootAllowHash, success: true })
      assert.equal(await root.getIsHashAllowed(kind, IMAGE), true)
    }
    await root.sendAllowHash(rootOwner.getSender(), { value: GAS, kind: 'model', hash: MODEL })
    let st = await root.getState()
    assert.equal(st.version, 4)
    assert.deepEqual(st.proxyImageHashes, [IMAGE.toString('hex')])
    assert.deepEqual(st.workerImageHashes, [IMAGE.toString('hex')])
    assert.deepEqual(st.modelHashes.sort(), [IMAGE.toString('hex'), MODEL.toString('hex')].sort())

    const r = await root.sendRevokeHash(rootOwner.getSender(), { value: GAS, kind: 'workerImage', hash: IMAGE })
    expectTx(r.transactions, { to: root.address, op: Op.rootRevokeHash, success: true })
    assert.equal(await root.getIsHashAllowed('workerImage', IMAGE), false)
    assert.equal(await root.getIsHashAllowed('proxyImage', IMAGE), true)
    st = await root.getState()
    assert.equal(st.version, 5)
    assert.deepEqual(st.workerImageHashes, [])
  })

  it('rejects allowing a listed hash, revoking an unlisted one and an unknown list kind', async () => {
    const { root, rootOwner } = await deployedRoot()
    await root.sendAllowHash(rootOwner.getSender(), { value: GAS, kind: 'model', hash: MODEL })
    let r = await root.sendAllowHash(rootOwner.getSender(), { value: GAS, kind: 'model', hash: MODEL })
    expectRejected(r.transactions, root.address, E.HashAlreadyListed)
    r = await root.sendRevokeHash(rootOwner.getSender(), { value: GAS, kind: 'proxyImage', hash: MODEL })
    expectRejected(r.transactions, root.address, E.HashNotListed)
    const body = beginCell().storeUint(Op.rootAllowHash, 32).storeUint(0, 64).storeUint(9, 8).storeBuffer(MODEL).endCell()
    r = await rootOwner.send({ to: root.address, value: GAS, body })
    expectRejected(r.transactions, root.address, E.UnknownHashKind)
    assert.equal(await root.getVersion(), 1)
  })

  it('hands ownership over: the new owner governs, the old one is rejected', async () => {
    const { root, rootOwner, stranger } = await deployedRoot()
    let r = await root.sendChangeOwner(rootOwner.getSender(), { value: GAS, newOwner: stranger.address })
    expectTx(r.transactions, { to: root.address, op: Op.rootChangeOwner, success: true })
    assert.ok((await root.getOwner()).equals(stranger.address))
    r = await root.sendAllowHash(rootOwner.getSender(), { value: GAS, kind: 'model', hash: MODEL })
    expectRejected(r.transactions, root.address, E.NotOwner)
    r = await root.sendAllowHash(stranger.getSender(), { value: GAS, kind: 'model', hash: MODEL })
    expectTx(r.transactions, { to: root.address, success: true })
    assert.equal(await root.getVersion(), 2)
  })

  it('rejects every governance op from anyone but the owner', async () => {
    const { root, stranger } = await deployedRoot()
    const via = stranger.getSender()
    const attempts = [
      () => root.sendSetParams(via, { value: GAS, params: PARAMS }),
      () => root.sendAllowHash(via, { value: GAS, kind: 'proxyImage', hash: IMAGE }),
      () => root.sendRevokeHash(via, { value: GAS, kind: 'proxyImage', hash: IMAGE }),
      () => root.sendDelistProxy(via, { value: GAS, publicKey: PROXY_KEY }),
      () => root.sendChangeOwner(via, { value: GAS, newOwner: stranger.address }),
    ]
    for (const attempt of attempts) {
      const r = await attempt()
      expectRejected(r.transactions, root.address, E.NotOwner)
      // The rejected message bounces back to the sender with its value.
      expectTx(r.transactions, { from: root.address, to: stranger.address, bounced: true })
    }
    assert.equal(await root.getVersion(), 0)
  })

  it('rejects unknown opcodes and accepts plain transfers', async () => {
    const { root, stranger } = await deployedRoot()
    let r = await stranger.send({ to: root.address, value: GAS, body: beginCell().storeUint(0xdeadbeef, 32).storeUint(0, 64).endCell() })
    expectRejected(r.transactions, root.address, E.UnknownOp)
    r = await stranger.send({ to: root.address, value: GAS })
    expectTx(r.transactions, { to: root.address, success: true })
    assert.equal(await root.getVersion(), 0)
  })
})
