// Root contract, proxy registry: permissionless registration with an allowed image and a stake,
// endpoint updates, leaving with the stake back after the close delay, delisting by the owner,
// and the rule that decides which proxies are offered to clients. Each refusal has its own exit code.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { KeyPair } from '@ton/crypto'
import type { SandboxContract, TreasuryContract } from '@ton/sandbox'
import { ContractExitCode as E } from '../../src/ton/contracts/errors.ts'
import { Op } from '../../src/ton/contracts/opcodes.ts'
import { offeredProxies, signRegistration, type SignedRegistration } from '../../src/ton/contracts/root.ts'
import { createNet, expectNoTx, expectRejected, expectTx, GAS, keyPair, ONE_TON, PARAMS, type Net } from './helpers.ts'

const IMAGE = Buffer.alloc(32, 0xab)
const OTHER_IMAGE = Buffer.alloc(32, 0xee)
const ENDPOINT = { workerPort: 11001, clientPort: 11002, host: 'proxy-a.example.org' }
const STAKE = PARAMS.minProxyStakeNano

interface Registry extends Net {
  keys: KeyPair
  reg(o?: { keys?: KeyPair; owner?: SandboxContract<TreasuryContract>; image?: Buffer; root?: Net['root'] }): SignedRegistration
}

/** Root deployed with IMAGE on the proxy allow-list. */
async function registry(): Promise<Registry> {
  const net = await createNet()
  expectTx((await net.root.sendDeploy(net.rootOwner.getSender(), ONE_TON)).transactions, { to: net.root.address, success: true })
  await net.root.sendAllowHash(net.rootOwner.getSender(), { value: GAS, kind: 'proxyImage', hash: IMAGE })
  const keys = net.proxyKeys
  return {
    ...net,
    keys,
    reg: (o = {}) =>
      signRegistration(
        { root: (o.root ?? net.root).address, owner: (o.owner ?? net.proxyOwner).address, imageHash: o.image ?? IMAGE, ...ENDPOINT },
        (o.keys ?? keys).secretKey,
      ),
  }
}

async function registered(): Promise<Registry> {
  const net = await registry()
  const r = await net.root.sendRegisterProxy(net.proxyOwner.getSender(), { value: GAS, registration: net.reg(), stakeNano: STAKE })
  expectTx(r.transactions, { to: net.root.address, op: Op.rootRegisterProxy, success: true })
  return net
}

const hex = (b: Buffer) => b.toString('hex')

describe('root proxy registry', () => {
  it('registers a proxy with an allowed image and the minimum stake, with no owner action', async () => {
    const net = await registry()
    const before = (await net.blockchain.getContract(net.root.address)).balance
    const r = await net.root.sendRegisterProxy(net.proxyOwner.getSender(), { value: ONE_TON, registration: net.reg(), stakeNano: STAKE, queryId: 7n })
    expectTx(r.transactions, { from: net.proxyOwner.address, to: net.root.address, op: Op.rootRegisterProxy, success: true })
    // The unused gas comes back; the stake stays on the root.
    const back = expectTx(r.transactions, { from: net.root.address, to: net.proxyOwner.address, op: Op.excesses })
    assert.ok(back.valueNano > ONE_TON - 20_000_000n, `excess ${back.valueNano}`)
    const after = (await net.blockchain.getContract(net.root.address)).balance
    assert.ok(after - before >= STAKE && after - before < STAKE + 20_000_000n, `root balance grew by ${after - before}`)

    const st = await net.root.getState()
    const p = st.proxies.get(hex(net.keys.publicKey))
    assert.ok(p)
    assert.ok(p.owner.equals(net.proxyOwner.address))
    assert.deepEqual(
      { ...p, owner: null },
      { ...ENDPOINT, owner: null, imageHash: hex(IMAGE), stakeNano: STAKE, state: 'listed', registeredAt: net.blockchain.now, unlockAt: 0 },
    )
    assert.equal(st.version, 2)
    assert.equal(await net.root.getIsProxyOffered(net.keys.publicKey), true)
    assert.deepEqual([...offeredProxies(st).keys()], [hex(net.keys.publicKey)])
  })

  it('refuses registrations, each with its own exit code', async () => {
    const net = await registry()
    const via = net.proxyOwner.getSender()
    const send = (registration: SignedRegistration, stakeNano = STAKE, value = GAS) => net.root.sendRegisterProxy(via, { value, registration, stakeNano })

    // Image not on the allow-list.
    expectRejected((await send(net.reg({ image: OTHER_IMAGE }))).transactions, net.root.address, E.ProxyImageNotAllowed)
    // Stake below the minimum.
    expectRejected((await send(net.reg(), STAKE - 1n)).transactions, net.root.address, E.ProxyStakeBelowMinimum)
    // Attached value does not cover the stake plus gas.
    const short = await net.root.sendRegisterProxy(via, { value: 0n, registration: net.reg(), stakeNano: STAKE })
    expectRejected(short.transactions, net.root.address, E.InsufficientValue)
    // Signed by another key than the one registered.
    const forged = { ...net.reg({ keys: keyPair('someone-else') }), publicKey: net.keys.publicKey }
    expectRejected((await send(forged)).transactions, net.root.address, E.RegistrationBadSignature)
    // Signed for another root.
    const elsewhere = { ...net.reg(), root: net.proxy.address }
    const otherRoot = signRegistration(elsewhere, net.keys.secretKey)
    expectRejected((await send(otherRoot)).transactions, net.root.address, E.RegistrationWrongRoot)
    // Signed for another wallet: a registration seen on chain cannot be replayed by someone else.
    const replayed = await net.root.sendRegisterProxy(net.stranger.getSender(), { value: GAS, registration: net.reg(), stakeNano: STAKE })
    expectRejected(replayed.transactions, net.root.address, E.RegistrationWrongOwner)
    assert.equal((await net.root.getState()).proxies.size, 0)

    // Registered once; the same key again is refused.
    expectTx((await send(net.reg())).transactions, { to: net.root.address, success: true })
    expectRejected((await send(net.reg())).transactions, net.root.address, E.ProxyAlreadyRegistered)
    // Every refused message bounced its value (stake included) back.
    expectTx(short.transactions, { from: net.root.address, to: net.proxyOwner.address, bounced: true })
    assert.equal((await net.root.getState()).version, 2)
  })

  it('lets the proxy owner update its endpoint, and nobody else', async () => {
    const net = await registered()
    const key = net.keys.publicKey
    const endpoint = { workerPort: 21001, clientPort: 21002, host: '10.77.0.12' }
    let r = await net.root.sendUpdateProxy(net.stranger.getSender(), { value: GAS, publicKey: key, endpoint })
    expectRejected(r.transactions, net.root.address, E.NotProxyOwner)
    r = await net.root.sendUpdateProxy(net.rootOwner.getSender(), { value: GAS, publicKey: key, endpoint })
    expectRejected(r.transactions, net.root.address, E.NotProxyOwner)
    r = await net.root.sendUpdateProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: keyPair('unknown').publicKey, endpoint })
    expectRejected(r.transactions, net.root.address, E.ProxyNotRegistered)
    r = await net.root.sendUpdateProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key, endpoint })
    expectTx(r.transactions, { to: net.root.address, op: Op.rootUpdateProxy, success: true })
    const p = (await net.root.getState()).proxies.get(hex(key))
    assert.deepEqual([p?.host, p?.workerPort, p?.clientPort, p?.stakeNano, p?.state], [endpoint.host, 21001, 21002, STAKE, 'listed'])
  })

  it('unregisters: not offered at once, stake back only after the close delay', async () => {
    const net = await registered()
    const key = net.keys.publicKey
    let r = await net.root.sendWithdrawProxyStake(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.ProxyStillListed)
    r = await net.root.sendUnregisterProxy(net.stranger.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.NotProxyOwner)
    r = await net.root.sendUnregisterProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectTx(r.transactions, { to: net.root.address, op: Op.rootUnregisterProxy, success: true })
    let st = await net.root.getState()
    const p = st.proxies.get(hex(key))
    assert.deepEqual([p?.state, p?.unlockAt], ['leaving', net.blockchain.now! + PARAMS.proxyCloseDelaySec])
    assert.equal(await net.root.getIsProxyOffered(key), false)
    assert.equal(offeredProxies(st).size, 0)
    // A leaving proxy can no longer change its endpoint or unregister twice.
    r = await net.root.sendUpdateProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key, endpoint: ENDPOINT })
    expectRejected(r.transactions, net.root.address, E.ProxyNotListed)
    r = await net.root.sendUnregisterProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.ProxyNotListed)

    net.blockchain.now! += PARAMS.proxyCloseDelaySec - 1
    r = await net.root.sendWithdrawProxyStake(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.CloseTooEarly)
    r = await net.root.sendWithdrawProxyStake(net.stranger.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.NotProxyOwner)
    net.blockchain.now! += 1
    r = await net.root.sendWithdrawProxyStake(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectTx(r.transactions, { to: net.root.address, op: Op.rootWithdrawProxyStake, success: true })
    const paid = expectTx(r.transactions, { from: net.root.address, to: net.proxyOwner.address, op: Op.withdrawal })
    assert.ok(paid.valueNano >= STAKE && paid.valueNano < STAKE + GAS, `paid ${paid.valueNano}`)
    st = await net.root.getState()
    assert.equal(st.proxies.size, 0)
    // Gone for good: a second withdrawal finds nothing.
    r = await net.root.sendWithdrawProxyStake(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.ProxyNotRegistered)
    // And the key may register again later (it was not delisted).
    r = await net.root.sendRegisterProxy(net.proxyOwner.getSender(), { value: GAS, registration: net.reg(), stakeNano: STAKE })
    expectTx(r.transactions, { to: net.root.address, success: true })
  })

  it('lets the owner delist a proxy: recorded on chain, never re-registered, stake back after the delay', async () => {
    const net = await registered()
    const key = net.keys.publicKey
    let r = await net.root.sendDelistProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key, reason: 3 })
    expectRejected(r.transactions, net.root.address, E.NotOwner)
    r = await net.root.sendDelistProxy(net.rootOwner.getSender(), { value: GAS, publicKey: keyPair('unknown').publicKey })
    expectRejected(r.transactions, net.root.address, E.ProxyNotRegistered)
    const at = net.blockchain.now!
    r = await net.root.sendDelistProxy(net.rootOwner.getSender(), { value: GAS, publicKey: key, reason: 3 })
    expectTx(r.transactions, { to: net.root.address, op: Op.rootDelistProxy, success: true })
    let st = await net.root.getState()
    assert.deepEqual(st.delisted.get(hex(key)), { at, reason: 3 })
    assert.equal(st.proxies.get(hex(key))?.state, 'delisted')
    assert.equal(await net.root.getIsProxyOffered(key), false)
    r = await net.root.sendDelistProxy(net.rootOwner.getSender(), { value: GAS, publicKey: key })
    expectRejected(r.transactions, net.root.address, E.ProxyDelisted)
    r = await net.root.sendUpdateProxy(net.proxyOwner.getSender(), { value: GAS, publicKey: key, endpoint: ENDPOINT })
    expectRejected(r.transactions, net.root.address, E.ProxyNotListed)

    net.blockchain.now! += PARAMS.proxyCloseDelaySec
    r = await net.root.sendWithdrawProxyStake(net.proxyOwner.getSender(), { value: GAS, publicKey: key })
    expectTx(r.transactions, { from: net.root.address, to: net.proxyOwner.address, op: Op.withdrawal })
    st = await net.root.getState()
    assert.equal(st.proxies.size, 0)
    assert.deepEqual(st.delisted.get(hex(key)), { at, reason: 3 }, 'the governance record outlives the entry')
    r = await net.root.sendRegisterProxy(net.proxyOwner.getSender(), { value: GAS, registration: net.reg(), stakeNano: STAKE })
    expectRejected(r.transactions, net.root.address, E.ProxyDelisted)
    expectNoTx(r.transactions, { to: net.root.address, success: true })
  })

  it('stops offering a proxy whose stake falls below a raised minimum, until it adds stake', async () => {
    const net = await registered()
    const key = net.keys.publicKey
    await net.root.sendSetParams(net.rootOwner.getSender(), { value: GAS, params: { ...PARAMS, minProxyStakeNano: STAKE * 2n } })
    let st = await net.root.getState()
    assert.equal(st.proxies.get(hex(key))?.state, 'listed')
    assert.equal(await net.root.getIsProxyOffered(key), false)
    assert.equal(offeredProxies(st).size, 0)

    let r = await net.root.sendAddProxyStake(net.stranger.getSender(), { publicKey: key, amountNano: STAKE, value: 0n })
    expectRejected(r.transactions, net.root.address, E.InsufficientValue)
    r = await net.root.sendAddProxyStake(net.stranger.getSender(), { publicKey: keyPair('unknown').publicKey, amountNano: STAKE })
    expectRejected(r.transactions, net.root.address, E.ProxyNotRegistered)
    r = await net.root.sendAddProxyStake(net.stranger.getSender(), { publicKey: key, amountNano: STAKE })
    expectTx(r.transactions, { to: net.root.address, op: Op.rootAddProxyStake, success: true })
    st = await net.root.getState()
    assert.equal(st.proxies.get(hex(key))?.stakeNano, STAKE * 2n)
    assert.equal(await net.root.getIsProxyOffered(key), true)
    assert.equal(offeredProxies(st).size, 1)

    // A revoked image is not offered either, whatever the stake.
    await net.root.sendRevokeHash(net.rootOwner.getSender(), { value: GAS, kind: 'proxyImage', hash: IMAGE })
    assert.equal(await net.root.getIsProxyOffered(key), false)
    assert.equal(offeredProxies(await net.root.getState()).size, 0)
  })
})
