// The devnet chain served over HTTP, driven by the real TonClient from @ton/ton, as every node will use it.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { keyPairFromSeed } from '@ton/crypto'
import { Address, Cell, SendMode, TonClient, WalletContractV4, WalletContractV5R1, beginCell, external, internal, storeMessage, toNano } from '@ton/ton'
import { silentLogger } from '../../src/core/log.ts'
import { startDevnetChain, type DevnetChainServer } from '../../src/ton/chain/server.ts'
import { faucet, postJson, rpc, tempDir } from './helpers.ts'

const alice = keyPairFromSeed(Buffer.alloc(32, 1))
const carol = keyPairFromSeed(Buffer.alloc(32, 3))
const bob = Address.parse('0:' + 'b0'.repeat(32))

/** Uninitialized accounts pay a few nanoTON of storage fee per transaction, depending on elapsed time. */
function assertNear(actual: bigint, expected: bigint, toleranceNano = 1_000n): void {
  const diff = actual > expected ? actual - expected : expected - actual
  assert.ok(diff <= toleranceNano, `${actual} is not within ${toleranceNano} of ${expected}`)
}

describe('devnet chain over toncenter JSON-RPC', () => {
  const dir = tempDir()
  let server: DevnetChainServer
  let client: TonClient
  const wallet = WalletContractV4.create({ workchain: 0, publicKey: alice.publicKey })
  let firstTransfer: Cell

  before(async () => {
    server = await startDevnetChain({ dir, port: 0, log: silentLogger })
    client = new TonClient({ endpoint: server.endpoint })
  })
  after(async () => {
    await server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('binds loopback and answers /healthz', async () => {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    const res = await fetch(`${server.url}/healthz`)
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { ok: boolean }).ok, true)
  })

  it('credits an uninitialized wallet address from the faucet', async () => {
    const out = await faucet(server.url, wallet.address.toString(), toNano('5'))
    assert.equal(out.balance, toNano('5'))
    const state = await client.getContractState(wallet.address)
    assert.equal(state.balance, toNano('5'))
    assert.equal(state.state, 'uninitialized')
    assert.equal(state.lastTransaction?.lt, out.lt)
    assert.equal(state.lastTransaction?.hash, out.hash)
  })

  it('deploys the wallet with a signed external transfer sent through sendBoc, and balances move', async () => {
    const opened = client.open(wallet)
    assert.equal(await opened.getSeqno(), 0)
    firstTransfer = opened.createTransfer({
      seqno: 0,
      secretKey: alice.secretKey,
      sendMode: SendMode.PAY_GAS_SEPARATELY | SendMode.IGNORE_ERRORS,
      messages: [internal({ to: bob, value: toNano('1'), bounce: false })],
    })
    await opened.send(firstTransfer)
    assert.equal(await client.isContractDeployed(wallet.address), true)
    assert.equal(await opened.getSeqno(), 1)
    assertNear(await client.getBalance(bob), toNano('1'))
    const left = await client.getBalance(wallet.address)
    assert.ok(left < toNano('4') && left > toNano('3.9'), `wallet kept ${left}`)
  })

  it('deploys a V5R1 wallet the same way', async () => {
    const v5 = client.open(WalletContractV5R1.create({ workchain: 0, publicKey: carol.publicKey }))
    await faucet(server.url, v5.address.toString(), toNano('2'))
    await v5.sendTransfer({ seqno: 0, secretKey: carol.secretKey, sendMode: SendMode.PAY_GAS_SEPARATELY, messages: [internal({ to: bob, value: toNano('0.5'), bounce: false })] })
    assert.equal(await v5.getSeqno(), 1)
    assertNear(await client.getBalance(bob), toNano('1.5'))
  })

  it('runs get-methods with the stack in toncenter format', async () => {
    const seqno = await client.runMethod(wallet.address, 'seqno')
    assert.equal(seqno.stack.readNumber(), 1)
    const key = await client.runMethod(wallet.address, 'get_public_key')
    assert.equal(key.stack.readBigNumber(), BigInt('0x' + alice.publicKey.toString('hex')))
    const raw = await rpc(server.endpoint, 'runGetMethod', { address: wallet.address.toString(), method: 'seqno', stack: [] })
    assert.deepEqual(raw.body.result.stack, [['num', '0x1']])
    assert.equal(raw.body.result.exit_code, 0)
    // get_plugin_list returns a (possibly empty) list; an argument goes in as ["num", ...]
    const plugin = await client.runMethod(wallet.address, 'is_plugin_installed', [
      { type: 'int', value: 0n },
      { type: 'int', value: 42n },
    ])
    assert.equal(plugin.stack.readNumber(), 0)
    const missing = await client.runMethodWithError(wallet.address, 'no_such_method')
    assert.equal(missing.exit_code, 11)
    const uninit = await client.runMethodWithError(bob, 'seqno')
    assert.equal(uninit.exit_code, -13)
  })

  it('lists transactions newest first and pages like toncenter', async () => {
    const txs = await client.getTransactions(wallet.address, { limit: 10 })
    assert.equal(txs.length, 2)
    assert.equal(txs[0].inMessage?.info.type, 'external-in')
    assert.equal(txs[1].inMessage?.info.type, 'internal')
    assert.ok(txs[0].lt > txs[1].lt)
    assert.equal(txs[0].outMessagesCount, 1)
    const next = await client.getTransactions(wallet.address, { limit: 1, lt: txs[0].lt.toString(), hash: txs[0].hash().toString('base64') })
    assert.equal(next.length, 1)
    assert.equal(next[0].hash().toString('hex'), txs[1].hash().toString('hex'))
    const one = await client.getTransaction(wallet.address, txs[1].lt.toString(), txs[1].hash().toString('base64'))
    assert.equal(one?.lt, txs[1].lt)
    const bounded = await client.getTransactions(wallet.address, { limit: 10, to_lt: txs[1].lt.toString() })
    assert.equal(bounded.length, 1)
    const raw = await rpc(server.endpoint, 'getTransactions', { address: wallet.address.toString(), limit: 1 })
    const r = raw.body.result[0]
    assert.equal(r.in_msg.source, '')
    assert.equal(r.out_msgs[0].destination, bob.toString())
    assert.equal(r.out_msgs[0].value, toNano('1').toString())
    assert.ok(BigInt(r.fee) > 0n)
  })

  it('estimates the fees of an external message', async () => {
    const opened = client.open(wallet)
    const body = opened.createTransfer({ seqno: 1, secretKey: alice.secretKey, messages: [internal({ to: bob, value: toNano('0.1') })] })
    const fees = await client.estimateExternalMessageFee(wallet.address, { body, initCode: null, initData: null, ignoreSignature: true })
    assert.ok(fees.source_fees.gas_fee > 0)
    assert.ok(fees.source_fees.in_fwd_fee > 0)
    assert.ok(fees.source_fees.fwd_fee > 0)
    // an undeployed wallet with its init can be estimated too (the copy is topped up for the estimate)
    const fresh = WalletContractV4.create({ workchain: 0, publicKey: carol.publicKey })
    const freshBody = client.open(fresh).createTransfer({ seqno: 0, secretKey: carol.secretKey, messages: [] })
    const freshFees = await client.estimateExternalMessageFee(fresh.address, { body: freshBody, initCode: fresh.init.code, initData: fresh.init.data, ignoreSignature: true })
    assert.ok(freshFees.source_fees.gas_fee > 0)
    assert.equal(await client.getBalance(fresh.address), 0n, 'estimating changed nothing')
  })

  it('answers a garbage or replayed external message with an error and keeps serving', async () => {
    const before = await client.getBalance(wallet.address)
    await assert.rejects(client.sendFile(Buffer.from('definitely not a bag of cells')))
    const garbage = await rpc(server.endpoint, 'sendBoc', { boc: Buffer.from('garbage').toString('base64') }, 77)
    assert.equal(garbage.status, 500)
    assert.deepEqual([garbage.body.ok, garbage.body.code, garbage.body.id, garbage.body.jsonrpc], [false, 500, 77, '2.0'])
    assert.match(garbage.body.error, /failed to parse external message/)

    const replay = beginCell()
      .store(storeMessage(external({ to: wallet.address, init: wallet.init, body: firstTransfer })))
      .endCell()
    const replayed = await rpc(server.endpoint, 'sendBoc', { boc: replay.toBoc().toString('base64') })
    assert.equal(replayed.status, 500)
    assert.match(replayed.body.error, /External message was not accepted/)
    assert.match(replayed.body.error, /exitcode=33/)

    assert.equal(await client.getBalance(wallet.address), before)
    const info = await client.getMasterchainInfo()
    assert.ok(info.latestSeqno >= 3)
  })

  it('turns malformed requests into clear JSON errors', async () => {
    const badJson = await postJson(server.endpoint, '{"id": 1, "method": ')
    assert.equal(badJson.status, 422)
    assert.equal(badJson.body.ok, false)
    assert.match(badJson.body.error, /not valid JSON/)
    const unknown = await rpc(server.endpoint, 'dropTheChain', {}, 'abc')
    assert.deepEqual([unknown.status, unknown.body.error, unknown.body.id], [422, 'Unknown method', 'abc'])
    const badAddress = await rpc(server.endpoint, 'getAddressInformation', { address: 'nope' })
    assert.equal(badAddress.status, 416)
    const badLimit = await rpc(server.endpoint, 'getTransactions', { address: wallet.address.toString(), limit: 0 })
    assert.equal(badLimit.status, 422)
    const missingParam = await rpc(server.endpoint, 'runGetMethod', { address: wallet.address.toString(), stack: [] })
    assert.equal(missingParam.status, 422)
    const huge = await postJson(server.endpoint, JSON.stringify({ method: 'sendBoc', params: { boc: 'A'.repeat(3 * 1024 * 1024) } }))
    assert.equal(huge.status, 413)
    const noRoute = await fetch(`${server.url}/api/v3/whatever`)
    assert.equal(noRoute.status, 404)
    assert.equal(((await noRoute.json()) as { ok: boolean }).ok, false)
    assert.equal((await client.getMasterchainInfo()).workchain, -1)
  })

  it('caps the faucet per call and checks its input', async () => {
    const tooMuch = await postJson(`${server.url}/devnet/faucet`, { address: bob.toString(), amount: (10_001n * 10n ** 9n).toString() })
    assert.equal(tooMuch.status, 422)
    assert.match(tooMuch.body.error, /faucet amount/)
    const notANumber = await postJson(`${server.url}/devnet/faucet`, { address: bob.toString(), amount: '1.5' })
    assert.equal(notANumber.status, 422)
    const before = await new TonClient({ endpoint: server.endpoint }).getBalance(bob)
    const asNumber = await postJson(`${server.url}/devnet/faucet`, { address: bob.toRawString(), amount: 1000 })
    assert.equal(asNumber.status, 200)
    // an uninitialized account pays a little storage fee on every transaction
    const after = BigInt(asNumber.body.result.balance)
    assert.ok(after > before && after <= before + 1000n, `${before} -> ${after}`)
  })

  it('reports accounts, logical time and persistence in /jsonstats', async () => {
    const stats = (await (await fetch(`${server.url}/jsonstats`)).json()) as Record<string, any>
    assert.equal(stats.accounts, 3)
    assert.ok(BigInt(stats.lastLt) > 0n)
    assert.ok(Math.abs(stats.now - Date.now() / 1000) < 5, 'chain time follows the wall clock')
    assert.ok(Date.parse(stats.persistedAt) > Date.now() - 60_000)
    assert.equal(stats.txIndexPerAccount, 200)
  })

  it('resumes balances, wallet seqno and transaction history after a restart on the same dir', async () => {
    const balances = [await client.getBalance(wallet.address), await client.getBalance(bob)]
    const history = (await client.getTransactions(wallet.address, { limit: 10 })).map((t) => t.hash().toString('hex'))
    const lastLt = server.blockchain.lt
    await server.close()

    server = await startDevnetChain({ dir, port: 0, log: silentLogger })
    client = new TonClient({ endpoint: server.endpoint })
    assert.deepEqual([await client.getBalance(wallet.address), await client.getBalance(bob)], balances)
    assert.equal(server.blockchain.lt, lastLt)
    const opened = client.open(wallet)
    assert.equal(await opened.getSeqno(), 1)
    assert.deepEqual((await client.getTransactions(wallet.address, { limit: 10 })).map((t) => t.hash().toString('hex')), history)

    await opened.sendTransfer({ seqno: 1, secretKey: alice.secretKey, messages: [internal({ to: bob, value: toNano('0.25'), bounce: false })] })
    assert.equal(await opened.getSeqno(), 2)
    const after = await client.getTransactions(wallet.address, { limit: 10 })
    assert.equal(after.length, 3)
    assert.ok(after[0].lt > lastLt, 'logical time continues after the restart')
  })
})

describe('devnet chain persistence limits and time', () => {
  it('keeps only the last N transactions per account, also on disk and across restarts', async () => {
    const dir = tempDir()
    const target = Address.parse('0:' + 'c1'.repeat(32))
    let server = await startDevnetChain({ dir, port: 0, log: silentLogger, txIndexPerAccount: 3 })
    try {
      const lts: string[] = []
      let balance = 0n
      for (let i = 0; i < 5; i++) {
        const out = await faucet(server.url, target.toString(), 1_000n + BigInt(i))
        lts.push(out.lt)
        balance = out.balance
      }
      let client = new TonClient({ endpoint: server.endpoint })
      let txs = await client.getTransactions(target, { limit: 10 })
      assert.deepEqual(
        txs.map((t) => t.lt.toString()),
        lts.slice(2).reverse(),
      )
      const evicted = await rpc(server.endpoint, 'getTransactions', { address: target.toString(), limit: 5, lt: lts[0], hash: Buffer.alloc(32).toString('hex') })
      assert.equal(evicted.status, 404)
      await server.close()
      const lines = fs.readFileSync(path.join(dir, 'transactions.jsonl'), 'utf8').trim().split('\n')
      assert.equal(lines.length, 3)

      server = await startDevnetChain({ dir, port: 0, log: silentLogger, txIndexPerAccount: 3 })
      client = new TonClient({ endpoint: server.endpoint })
      txs = await client.getTransactions(target, { limit: 10 })
      assert.equal(txs.length, 3)
      assert.equal(await client.getBalance(target), balance)
    } finally {
      await server.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses a second chain on a directory in use, and takes over a lock left by a dead process', async () => {
    const dir = tempDir()
    const server = await startDevnetChain({ dir, port: 0, log: silentLogger })
    try {
      await assert.rejects(startDevnetChain({ dir, port: 0, log: silentLogger }), { name: 'ChainDirLockedError' })
    } finally {
      await server.close()
    }
    fs.writeFileSync(path.join(dir, 'chain.lock'), '999999999')
    const again = await startDevnetChain({ dir, port: 0, log: silentLogger })
    await again.close()
    assert.equal(fs.existsSync(path.join(dir, 'chain.lock')), false)
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('follows the wall clock unless a test freezes or advances it, and never goes back', async () => {
    const dir = tempDir()
    let server = await startDevnetChain({ dir, port: 0, log: silentLogger })
    try {
      const client = new TonClient({ endpoint: server.endpoint })
      const now = Math.floor(Date.now() / 1000)
      const t0 = (await client.getContractState(bob)).timestampt
      assert.ok(Math.abs(t0 - now) <= 2)

      server.clock.set(now + 10_000)
      assert.equal((await client.getContractState(bob)).timestampt, now + 10_000)
      const advanced = await postJson(`${server.url}/devnet/time`, { advance: 500 })
      assert.equal(advanced.body.result.now, now + 10_500)
      const back = await postJson(`${server.url}/devnet/time`, { set: now })
      assert.equal(back.status, 422)
      await faucet(server.url, bob.toString(), 1n)
      const tx = (await client.getTransactions(bob, { limit: 1 }))[0]
      assert.equal(tx.now, now + 10_500, 'transactions run at chain time')

      await server.close()
      server = await startDevnetChain({ dir, port: 0, log: silentLogger })
      assert.equal(server.clock.now(), now + 10_500, 'a frozen clock stays frozen across a restart')
      const follow = await postJson(`${server.url}/devnet/time`, { follow: true })
      assert.equal(follow.body.result.frozen, false)
      assert.ok(follow.body.result.now >= now + 10_500)
    } finally {
      await server.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
