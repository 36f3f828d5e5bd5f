// Spec: the proxy's admission reads each client's funds from chain at most once at a time (ProxySettlement.clientFunds):
// admissions arriving together share one read, a funded client's recent state admits while the read refreshing it
// runs, and a client not known to be funded waits for the read. The chain is a FAKE Chain seam (counting reads, with
// a read delay the test sets); the contract addresses, codes and params are the real ones.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Address } from '@ton/core'
import { ProxySettlement } from '../../src/payments/proxy-settlement.ts'
import type { ProxyChannel } from '../../src/payments/channels.ts'
import { contractCodes } from '../../src/ton/contracts/index.ts'
import { DEVNET_PARAMS, type Chain } from '../../src/ton/chain-client/index.ts'
import { createLogger } from '../../src/core/log.ts'
import type { Ledger } from '../../src/payments/ledger.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * FAKE chain: client contracts with a balance the test sets. Each read (is it deployed, then its state) is counted and, while `gate` is set,
 * waits for it to open (so a test knows a read cannot have finished); `delayMs` adds a plain delay.
 */
function fakeChain() {
  const f = {
    reads: 0,
    delayMs: 0,
    deployed: true,
    balanceNano: 5_000_000_000n,
    gate: undefined as Promise<void> | undefined,
    chain: undefined as unknown as Chain,
    /** Holds every read until the returned function is called. */
    close(): () => void {
      let open!: () => void
      f.gate = new Promise<void>((r) => (open = r))
      return () => {
        f.gate = undefined
        open()
      }
    },
  }
  f.chain = {
    endpoint: 'fake',
    open: (contract: { address: Address }) => ({
      address: contract.address,
      getState: async () => {
        await sleep(f.delayMs)
        await f.gate
        return { state: 'active', balanceNano: f.balanceNano, stakeNano: 0n, tokensCharged: 0n, unlockAt: 0 }
      },
    }),
    // A read starts with this call: counted here.
    isDeployed: async () => {
      f.reads++
      await sleep(f.delayMs)
      return f.deployed
    },
  } as unknown as Chain
  return f
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined
  const r = await Promise.race([p.then(() => true, () => true), new Promise<boolean>((res) => (t = setTimeout(() => res(false), ms)))])
  clearTimeout(t)
  return r
}

async function settlementOn(f: ReturnType<typeof fakeChain>, opts: { fundsCacheMs: number; fundsStaleMs: number }) {
  const channel: ProxyChannel = { root: new Address(0, Buffer.alloc(32, 1)), owner: new Address(0, Buffer.alloc(32, 2)), paymentKey: Buffer.alloc(32, 3), params: DEVNET_PARAMS, codes: await contractCodes() }
  const s = new ProxySettlement({ chain: f.chain, wallet: undefined as never, paymentKey: undefined as never, channel, ledger: undefined as unknown as Ledger, log: createLogger({}, 'error') }, opts)
  // Admission names a client by its wallet (raw form); its contract is the channel's client contract of that wallet.
  return { s, client: new Address(0, Buffer.alloc(32, 4)).toRawString() }
}

test('admissions arriving together share one chain read of a client’s funds', async () => {
  const f = fakeChain()
  const { s, client } = await settlementOn(f, { fundsCacheMs: 100, fundsStaleMs: 0 })
  f.delayMs = 50
  const first = await Promise.all(Array.from({ length: 30 }, () => s.clientFunds(client)))
  assert.equal(f.reads, 1, 'thirty admissions of an unknown client: one read')
  assert.ok(first.every((v) => v?.balanceNano === 5_000_000_000n && v.active))
  await sleep(150) // past the cache
  const again = await Promise.all(Array.from({ length: 30 }, () => s.clientFunds(client)))
  assert.equal(f.reads, 2, 'thirty admissions after the cache expired: one more read')
  assert.ok(again.every((v) => v?.balanceNano === 5_000_000_000n))
})

test('a funded client’s recent state admits at once while the read refreshing it runs; an old one waits for the read', async () => {
  const f = fakeChain()
  const { s, client } = await settlementOn(f, { fundsCacheMs: 100, fundsStaleMs: 3_000 })
  await s.clientFunds(client)
  assert.equal(f.reads, 1)
  await sleep(150) // past the cache, within the stale bound
  let open = f.close()
  f.balanceNano = 7_000_000_000n
  const during = s.clientFunds(client)
  assert.ok(await settlesWithin(during, 1_000), 'admitted while the refreshing read is held: it did not wait for it')
  assert.equal((await during)?.balanceNano, 5_000_000_000n, 'the recent state')
  assert.equal((await s.clientFunds(client))?.balanceNano, 5_000_000_000n, 'a second admission meanwhile: the same, and no second read')
  assert.equal(f.reads, 2)
  open()
  for (let i = 0; i < 100 && (await s.clientFunds(client))?.balanceNano !== 7_000_000_000n; i++) await sleep(20)
  assert.equal((await s.clientFunds(client))?.balanceNano, 7_000_000_000n, 'the refresh landed')
  await sleep(3_100) // past the stale bound
  open = f.close()
  f.balanceNano = 9_000_000_000n
  const late = s.clientFunds(client)
  assert.equal(await settlesWithin(late, 300), false, 'a state past the stale bound does not admit: the read is waited for')
  open()
  assert.equal((await late)?.balanceNano, 9_000_000_000n)
  assert.equal(f.reads, 3)
})

test('a client not known to be funded waits for the read rather than being refused on its old state', async () => {
  const f = fakeChain()
  f.deployed = false
  const { s, client } = await settlementOn(f, { fundsCacheMs: 100, fundsStaleMs: 5_000 })
  assert.equal(await s.clientFunds(client), undefined, 'no contract yet')
  await sleep(150)
  f.deployed = true // the client deployed and funded its contract
  f.delayMs = 100
  const now = await s.clientFunds(client)
  assert.equal(now?.balanceNano, 5_000_000_000n, 'the fresh state, not the stale "no contract"')
  assert.equal(now?.active, true)
})
