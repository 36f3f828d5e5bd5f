// The Chain compliance suite: the contract every way of reaching a TON chain must meet (devnet, testnet,
// mainnet through toncenter), run against each reachable one. Read-only checks need only an endpoint;
// the rest needs a funded wallet there.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Address } from '@ton/core'
import type { Chain } from '../../src/ton/chain-client/chain.ts'
import { ChainError, RootMismatchError } from '../../src/ton/chain-client/errors.ts'
import type { NodeWallet } from '../../src/ton/chain-client/wallet.ts'
import { deployRoot, DEVNET_PARAMS } from '../../src/ton/chain-client/devnet-root.ts'

export interface ChainTarget {
  chain: Chain
  /** A wallet with at least 2 TON on this chain, for the checks that write; absent, they are skipped. */
  funded?: NodeWallet
  close?: () => Promise<void>
}

/** An address nobody can have deployed to (no known state init hashes to it). */
const NOBODY = new Address(0, Buffer.alloc(32, 0x5a))

export function chainCompliance(name: string, setup: () => Promise<ChainTarget | undefined>, skip?: string): void {
  describe(`Chain compliance: ${name}`, { skip }, () => {
    let t: ChainTarget
    before(async () => {
      const got = await setup()
      assert.ok(got, 'the target could not be set up')
      t = got
    })
    after(async () => t?.close?.())

    it('tells the chain time in unix seconds, never going back', async () => {
      const a = await t.chain.now()
      const b = await t.chain.now()
      assert.ok(Number.isSafeInteger(a) && a > 1_500_000_000, `chain time ${a}`)
      assert.ok(b >= a, `chain time went back from ${a} to ${b}`)
    })

    it('reads an account nobody deployed as empty and not deployed', async () => {
      assert.equal(await t.chain.getBalance(NOBODY), 0n)
      assert.equal(await t.chain.isDeployed(NOBODY), false)
    })

    it('rejects reading a root where there is none with RootMismatchError', async () => {
      await assert.rejects(t.chain.getRootState(NOBODY), RootMismatchError)
    })

    it('honours an aborted signal on every read', async () => {
      const signal = AbortSignal.abort()
      for (const call of [() => t.chain.now({ signal }), () => t.chain.getBalance(NOBODY, { signal }), () => t.chain.isDeployed(NOBODY, { signal }), () => t.chain.getRootState(NOBODY, { signal })]) {
        await assert.rejects(call(), (e: Error) => e.name === 'AbortError' || (e instanceof ChainError && /abort/i.test(e.message)))
      }
    })

    it('shows a funded wallet its balance and, once it has sent, as deployed', async (c) => {
      if (!t.funded) return c.skip('no funded wallet on this chain')
      assert.ok((await t.chain.getBalance(t.funded.address)) > 0n)
      const root = await deployRoot(t.chain, t.funded, { params: DEVNET_PARAMS })
      assert.equal(await t.chain.isDeployed(t.funded.address), true, 'a wallet that sent is deployed')
      assert.equal(await t.chain.isDeployed(root.address), true)
      const st = await t.chain.getRootState(root.address)
      assert.ok(st.owner.equals(t.funded.address))
      assert.deepEqual(st.params, DEVNET_PARAMS)
      const opened = t.chain.open({ address: root.address } as { address: Address })
      assert.ok(opened.address.equals(root.address), 'open binds a wrapper to this chain')
    })
  })
}
