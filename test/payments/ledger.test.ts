// The proxy ledger: durable, append-only, hash-chained, with counters that move only with their events.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import { Ledger, LedgerRollbackError, type UsageEvent } from '../../src/payments/ledger.ts'

const tmp = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ledger-')), 'ledger.sqlite')
const usage = (i: number, client = 'c1', worker = 'w1'): UsageEvent => ({
  type: 'usage', requestId: `r${i}`, client, worker, coefficient: 1000,
  promptTokens: 10, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0,
  adjusted: '15', clientNano: '300', workerNano: '225',
})

test('usage moves both counters and survives reopening', () => {
  const file = tmp()
  const l = new Ledger(file)
  const r = l.recordUsage(usage(1))
  assert.equal(r.head.seqno, 1)
  const [b] = l.recordUsageBatch([usage(2)])
  assert.equal(b.head.seqno, 2)
  l.close()
  const again = new Ledger(file)
  assert.deepEqual(again.counters('client', 'c1'), { tokens: 30n, nano: 600n, requests: 2, vouchered: 0n })
  assert.deepEqual(again.counters('worker', 'w1'), { tokens: 30n, nano: 450n, requests: 2, vouchered: 0n })
  assert.equal(again.getHead().seqno, 2)
  assert.ok(again.verifyChain())
  again.close()
})

test('vouchers never go backwards and never exceed the counter', () => {
  const l = new Ledger(tmp())
  l.recordUsage(usage(1))
  l.recordUsage(usage(2))
  l.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: 'C', tokens: '20', signature: 'aa' }, 'client', 'c1')
  assert.throws(() => l.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: 'C', tokens: '10', signature: 'aa' }, 'client', 'c1'), /backwards/)
  assert.throws(() => l.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: 'C', tokens: '31', signature: 'aa' }, 'client', 'c1'), /exceeds/)
  assert.equal(l.counters('client', 'c1').vouchered, 20n)
  l.close()
})

test('events are append-only, even to direct SQL', () => {
  const file = tmp()
  const l = new Ledger(file)
  l.recordUsage(usage(1))
  l.close()
  const db = new Database(file)
  assert.throws(() => db.prepare(`UPDATE events SET body = 'x'`).run(), /append-only/)
  assert.throws(() => db.prepare(`DELETE FROM events`).run(), /append-only/)
  db.close()
})

test('an old copy of the ledger is detected against the on-chain commit', () => {
  const file = tmp()
  const l = new Ledger(file)
  l.recordUsage(usage(1))
  l.close()
  fs.copyFileSync(file, file + '.old')
  const l2 = new Ledger(file)
  l2.recordUsage(usage(2))
  const committed = l2.getHead()
  l2.checkAgainstCommit(committed)
  l2.close()
  const old = new Ledger(file + '.old')
  assert.throws(() => old.checkAgainstCommit(committed), LedgerRollbackError)
  old.close()
  // A ledger with the same length but a different history is caught too.
  const forked = new Ledger(file + '.old')
  forked.recordUsage(usage(99))
  assert.equal(forked.getHead().seqno, committed.seqno)
  assert.throws(() => forked.checkAgainstCommit(committed), LedgerRollbackError)
  forked.close()
})
