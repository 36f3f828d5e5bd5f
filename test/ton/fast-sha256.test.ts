// Spec: installFastSha256 (src/ton/fast-sha256.ts) gives @ton/core node:crypto's SHA-256 in place of jsSHA:
// the same digests, the same cell hashes and BoCs, only faster.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { beginCell, Cell } from '@ton/core'
import { installFastSha256, nodeSha256Sync } from '../../src/ton/fast-sha256.ts'

/** @ton/crypto as @ton/core requires it, read at each call as @ton/core does. */
const tonCrypto = createRequire(import.meta.url)('@ton/crypto') as { sha256_sync: (x: Buffer | string) => Buffer }

/** A few cells of varied shape: refs, odd bit lengths, an exotic pruned branch. */
function cells(): Cell[] {
  const leaf = beginCell().storeUint(7, 3).storeBuffer(Buffer.from('leaf')).endCell()
  const mid = beginCell().storeBit(1).storeRef(leaf).storeRef(beginCell().storeUint(1234567, 40).endCell()).endCell()
  const pruned = beginCell().storeUint(1, 8).storeUint(1, 8).storeBuffer(leaf.hash()).storeUint(leaf.depth(), 16).endCell({ exotic: true })
  return [leaf, mid, beginCell().storeRef(mid).storeRef(pruned).endCell()]
}

test('installs node:crypto under @ton/core: the same digests, cell hashes and BoCs as jsSHA gave', () => {
  const inputs: Array<Buffer | string> = [Buffer.alloc(0), Buffer.from('abc'), randomBytes(1000), '', 'κόκκος', 'abc']
  const jsSha = tonCrypto.sha256_sync
  assert.notEqual(jsSha, nodeSha256Sync, 'jsSHA before the install')
  const before = inputs.map((x) => jsSha(x))
  const hashesBefore = cells().map((c) => c.hash().toString('hex'))
  const extra = beginCell().storeBuffer(randomBytes(100)).endCell()
  const boc = extra.toBoc()

  assert.equal(installFastSha256(), true, 'the @ton/crypto layout is the known one')
  assert.equal(tonCrypto.sha256_sync, nodeSha256Sync, '@ton/crypto now hands out node:crypto SHA-256')
  assert.deepEqual(inputs.map((x) => tonCrypto.sha256_sync(x)), before)
  // Cells built and parsed after the swap hash exactly as before it.
  assert.deepEqual(cells().map((c) => c.hash().toString('hex')), hashesBefore)
  assert.equal(Cell.fromBoc(boc)[0].hash().toString('hex'), extra.hash().toString('hex'))
  assert.equal(installFastSha256(), true, 'idempotent')
})
