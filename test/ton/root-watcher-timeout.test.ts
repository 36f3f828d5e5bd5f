// A root read that never answers (a chain frozen with SIGSTOP) must time out even when the GC runs during it. On
// Node 20 an AbortSignal.timeout that only AbortSignal.any refers to can be collected before it fires; the watcher
// then waited for good and never said the chain was unreachable (found by test/faults/chain-outage.test.ts once the
// devnet's nodes ran with a smaller heap). The chain here is a FAKE that answers only by aborting.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Address } from '@ton/core'
import { RootWatcher } from '../../src/ton/chain-client/root-watcher.ts'
import type { Chain } from '../../src/ton/chain-client/chain.ts'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/** FAKE chain: getRootState never answers; it rejects only when its signal aborts. */
const frozenChain = {
  getRootState: (_root: Address, opts: { signal?: AbortSignal } = {}) =>
    new Promise((_resolve, reject) => opts.signal?.addEventListener('abort', () => reject(opts.signal!.reason), { once: true })),
} as unknown as Chain

test('a root read of a frozen chain times out and marks it unreachable, with the GC running meanwhile', async () => {
  const watcher = new RootWatcher({ chain: frozenChain, root: new Address(0, Buffer.alloc(32)) }, { readTimeoutMs: 300, refreshMs: 60_000 })
  try {
    const read = watcher.refresh()
    const collecting = setInterval(gc, 20)
    const outcome = await Promise.race([read.then(() => 'settled'), new Promise((r) => setTimeout(() => r('hung'), 5_000))])
    clearInterval(collecting)
    assert.equal(outcome, 'settled', 'the read never timed out')
    assert.equal(watcher.reachability.reachable, false)
    assert.match(String((watcher.reachability as { lastError?: string }).lastError), /timeout/i)
  } finally {
    watcher.stop()
  }
})
