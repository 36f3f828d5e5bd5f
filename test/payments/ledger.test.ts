// The proxy ledger: durable, append-only, hash-chained, with counters that move only with their events.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import crypto from 'node:crypto'
import { beginCell, Cell } from '@ton/core'
import { verifyReceiptProof } from '../../src/payments/receipts/proof.ts'
import { Ledger, LedgerRollbackError, LEDGER_SCHEMA_VERSION, type UsageEvent } from '../../src/payments/ledger.ts'
import { usageSigningPayload } from '../../src/net/protocol.ts'
import { checkUsage, ed25519PublicKey } from '../../src/net/usage.ts'
import type { SignedUsage, UsageRecord } from '../../src/core/usage.ts'

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

/** A usage record signed by a fresh Ed25519 key, as a worker signs its usage trailer. */
function signedUsage(requestId: string): { su: SignedUsage; publicKey: Uint8Array } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519')
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  const record: UsageRecord = { requestId, answer: { id: `chatcmpl-${requestId}`, object: 'chat.completion.chunk', model: 'm', created: 1 }, promptTokens: 10, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0, finishReason: 'stop' }
  const json = JSON.stringify(record)
  const signature = crypto.sign(null, usageSigningPayload(json), privateKey).toString('base64')
  return { su: { usage: record, json, signature, signer: Buffer.from(raw).toString('hex') }, publicKey: raw }
}

const cell = (i: number) => beginCell().storeUint(i, 32).endCell()
/** A ledger entry for any cell: the ledger logs what it is given. */
const entry = (c: Cell) => ({ boc: c.toBoc(), hash: c.hash(), depth: c.depth() })

test("a billed receipt keeps the worker's signed usage: it reads back exactly as signed, and the signature still verifies", async () => {
  const file = tmp()
  const l = new Ledger(file)
  const { su, publicKey } = signedUsage('r1')
  const r = l.recordUsage(usage(1), { receipt: entry(cell(1)), client: 'c1', worker: 'w1', signedUsage: su })
  l.recordReceipt('r2', { receipt: entry(cell(2)), client: 'c1', worker: 'w1' })
  l.close()
  const again = new Ledger(file)
  const kept = again.receipt(r.receiptIndex!)!.signedUsage!
  assert.deepEqual(kept, su)
  const check = await checkUsage(kept.json, kept.signature, ed25519PublicKey(Buffer.from(kept.signer, 'hex')), 'r1')
  assert.ok(check.ok, 'the kept signature verifies against the signer')
  assert.ok(Buffer.from(kept.signer, 'hex').equals(Buffer.from(publicKey)))
  assert.equal(again.receipt(1)!.signedUsage, undefined, 'an unbilled receipt has no signed usage')
  assert.deepEqual(again.receiptsOf('client', 'c1').map((x) => x.signedUsage?.signature), [su.signature, undefined])
  // The range the reliability record is derived from reads the same rows.
  assert.deepEqual(again.receiptsRange(0, 2).map((x) => x.signedUsage?.signature), [su.signature, undefined])
  again.close()
})

test('a ledger made before schema 3 gains the signed-usage columns on open, keeps its receipts, and stores signatures from then on', () => {
  const file = tmp()
  // Schema 2 as it was: receipts without the usage columns, commits without the receipt-log columns.
  const old = new Database(file)
  old.exec(`
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('schema', '2');
    CREATE TABLE commits (seqno INTEGER PRIMARY KEY, hash TEXT NOT NULL, confirmed_at INTEGER);
    CREATE TABLE receipts (idx INTEGER PRIMARY KEY, hash TEXT NOT NULL, depth INTEGER NOT NULL, boc BLOB NOT NULL, client TEXT NOT NULL, worker TEXT NOT NULL, at INTEGER NOT NULL);
  `)
  const c0 = cell(0)
  old.prepare('INSERT INTO receipts (idx, hash, depth, boc, client, worker, at) VALUES (0, ?, ?, ?, ?, ?, ?)').run(c0.hash().toString('hex'), c0.depth(), c0.toBoc(), 'c1', 'w1', Date.now())
  old.close()
  const l = new Ledger(file)
  assert.equal(l.receiptCount(), 1)
  const before = l.receipt(0)!
  assert.ok(Cell.fromBoc(before.boc)[0].equals(c0))
  assert.equal(before.signedUsage, undefined, 'an old receipt has no signed usage')
  const { su } = signedUsage('r1')
  const r = l.recordUsage(usage(1), { receipt: entry(cell(1)), client: 'c1', worker: 'w1', signedUsage: su })
  assert.equal(r.receiptIndex, 1)
  l.close()
  const again = new Ledger(file)
  assert.deepEqual(again.receipt(1)!.signedUsage, su)
  again.close()
  const db = new Database(file)
  assert.equal((db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string }).value, String(LEDGER_SCHEMA_VERSION))
  assert.equal(LEDGER_SCHEMA_VERSION, 3)
  db.close()
})

test('a ledger with more receipts than one block proves old receipts from its table after reopening, against old and new roots', () => {
  const file = tmp()
  const l = new Ledger(file)
  const n = 2 * 1024 + 37
  const cells = Array.from({ length: n }, (_, i) => cell(i))
  for (let i = 0; i < n; i += 500) {
    const batch = cells.slice(i, i + 500)
    l.recordUsageBatch(batch.map((_, k) => usage(i + k)), batch.map((c) => ({ receipt: entry(c), client: 'c1', worker: 'w1' })))
  }
  const rootAll = l.receiptsRoot()
  const root1500 = l.receiptsRoot(1500)
  l.close()
  const again = new Ledger(file)
  assert.equal(again.receiptCount(), n)
  assert.equal(again.receiptsRoot(), rootAll)
  assert.equal(again.receiptsRoot(1500), root1500)
  // A receipt's proof is asked for by its client and by its worker; the second ask gets the proof built for the
  // first. The counts are interleaved, so a proof kept for one count must never be handed out for another.
  for (const [i, count] of [[3, n], [3, 1500], [3, n], [3, n], [1030, n], [1030, 1500], [1499, 1500], [1030, n], [n - 1, n], [n - 1, n], [3, 1500]]) {
    const proof = Cell.fromBoc(again.receiptProof(i, count))[0]
    const root = Buffer.from(count === n ? rootAll : root1500, 'hex')
    assert.ok(verifyReceiptProof(proof, root, i, cells[i].hash()).equals(cells[i]), `receipt ${i} of ${count}`)
  }
  again.close()
})
