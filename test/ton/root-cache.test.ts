// The root state as a node saves it for running without the chain: every field survives JSON, registry entries included.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Address } from '@ton/core'
import { rootStateFromJson, rootStateToJson } from '../../src/ton/chain-client/root-watcher.ts'
import type { RootState } from '../../src/ton/contracts/root.ts'

test('a root state with registered and delisted proxies round-trips through the saved JSON', () => {
  const owner = Address.parseRaw('0:' + '11'.repeat(32))
  const state = {
    owner,
    version: 7,
    uniqueId: 1,
    params: { pricePerTokenNano: 1000n, minProxyStake: 5_000_000_000n } as unknown as RootState['params'],
    proxyImageHashes: ['aa'.repeat(32)],
    workerImageHashes: ['bb'.repeat(32)],
    modelHashes: ['cc'.repeat(32)],
    proxies: new Map([['dd'.repeat(32), { host: '10.0.0.1', clientPort: 10002, workerPort: 10001, owner, imageHash: 'aa'.repeat(32), stakeNano: 12_345_678_901_234n, state: 'listed', registeredAt: 1700000000, unlockAt: 0 }]]),
    delisted: new Map([['ee'.repeat(32), { at: 1700000100, reason: 3 }]]),
  } as unknown as RootState
  const back = rootStateFromJson(JSON.parse(JSON.stringify(rootStateToJson(state))))
  const p = back.proxies.get('dd'.repeat(32))!
  assert.equal(p.stakeNano, 12_345_678_901_234n)
  assert.ok(p.owner.equals(owner))
  assert.equal(back.delisted.get('ee'.repeat(32))?.reason, 3)
  assert.equal((back.params as any).minProxyStake, 5_000_000_000n)
  assert.equal(back.version, 7)
})
