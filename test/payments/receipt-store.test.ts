// The client node's receipt store keeps its counts (for /jsonstats) as receipts are added and verified, instead of
// scanning every receipt held on each call. Here the kept counts are checked against a fresh count of the table
// (a second store opened on the same file) after every step of a random run.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
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

test('receipts are kept per API key; a file from before keys were kept opens, its receipts under no key', () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-store-')), 'receipts.sqlite')
  // The table as nodes before this change made it, with one receipt.
  const old = new Database(file)
  old.exec(`CREATE TABLE receipts (
    id TEXT PRIMARY KEY, proxy TEXT NOT NULL, request_id TEXT NOT NULL, salt TEXT NOT NULL, boc BLOB NOT NULL,
    idx INTEGER, cert BLOB, at INTEGER NOT NULL, answer_ok INTEGER, proof BLOB, commit_json TEXT, verified INTEGER NOT NULL DEFAULT 0)`)
  old.prepare(`INSERT INTO receipts (id, proxy, request_id, salt, boc, at) VALUES ('old', 'p', 'r0', '00', x'00', 1)`).run()
  old.close()
  const store = new ReceiptStore(file)
  const add = (id: string, keyId: string | null) => store.add({ id, proxyId: 'p', requestId: id, keyId, salt: crypto.randomBytes(32), boc: crypto.randomBytes(40), index: null, cert: null, answerMatches: null })
  add('a1', 'key-a')
  add('b1', 'key-b')
  add('a2', 'key-a')
  add('none', null)
  assert.deepEqual(store.since(0).map((r) => r.id).sort(), ['a1', 'a2', 'b1', 'none', 'old'], 'a reader of all receipts sees all')
  assert.deepEqual(store.since(0, 1000, 'key-a').map((r) => r.id).sort(), ['a1', 'a2'])
  assert.deepEqual(store.since(0, 1000, 'key-b').map((r) => r.id), ['b1'])
  assert.equal(store.get('old')!.keyId, null)
  assert.equal(store.get('a1')!.keyId, 'key-a')
  store.close()
  // Opened again: the column is there once.
  new ReceiptStore(file).close()
})
