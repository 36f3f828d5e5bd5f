// The client node's receipt store keeps its counts (for /jsonstats) as receipts are added and verified, instead of
// scanning every receipt held on each call. Here the kept counts are checked against a fresh count of the table
// (a second store opened on the same file) after every step of a random run.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ReceiptStore } from '../../src/payments/receipts/store.ts'

test('the counts kept as receipts come and are verified equal a fresh count of the table, duplicates and repeats included', () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-store-')), 'receipts.sqlite')
  const store = new ReceiptStore(file)
  const ids: string[] = []
  const fresh = () => {
    const again = new ReceiptStore(file)
    try {
      return again.counts()
    } finally {
      again.close()
    }
  }
  assert.deepEqual(store.counts(), { held: 0, committed: 0, verified: 0, pending: 0, answerMismatches: 0 })
  const commit = { seqno: 1, root: 'ab'.repeat(32), proxy: 'EQ...', tx: null }
  for (let step = 0; step < 300; step++) {
    if (crypto.randomInt(3) > 0 || ids.length === 0) {
      // A new receipt, or now and then one the proxy hands over twice.
      const id = ids.length && crypto.randomInt(8) === 0 ? ids[crypto.randomInt(ids.length)] : crypto.randomBytes(16).toString('hex')
      if (!ids.includes(id)) ids.push(id)
      store.add({
        id, proxyId: `p${crypto.randomInt(2)}`, requestId: `r${step}`, salt: crypto.randomBytes(32), boc: crypto.randomBytes(40),
        index: crypto.randomInt(5) === 0 ? null : step, cert: null, answerMatches: [true, false, null][crypto.randomInt(3)],
      })
    } else {
      // A batch verified: some held (verified before or not), some the store never had.
      const list = Array.from({ length: 1 + crypto.randomInt(5) }, () => ({ id: crypto.randomInt(4) === 0 ? 'unknown' : ids[crypto.randomInt(ids.length)], proof: crypto.randomBytes(8) }))
      store.markVerifiedMany(list, { ...commit, seqno: step })
    }
    if (step % 10 === 0 || step === 299) assert.deepEqual(store.counts(), fresh(), `after step ${step}`)
  }
  const c = store.counts()
  assert.ok(c.held > 100 && c.verified > 10 && c.pending > 10 && c.answerMismatches > 10, JSON.stringify(c))
  store.close()
})
