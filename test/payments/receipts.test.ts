// Receipts: the signed cell round-trips, a changed field breaks the signature, and the proxy's ledger logs them durably with a provable root.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { beginCell, Cell, Dictionary } from '@ton/core'
import Database from 'better-sqlite3'
import { Ledger, type UsageEvent } from '../../src/payments/ledger.ts'
import { decodeReceiptBoc, receiptFieldsJson, signReceipt, verifyReceiptSignature, answerHash, requestHash, paramsHash, receiptIdFromSalt, newSalt, type Receipt, type ReceiptFields } from '../../src/payments/receipts/receipt.ts'
import { verifyReceiptProof } from '../../src/payments/receipts/proof.ts'

const cellOf = (r: { boc: Buffer }): Cell => Cell.fromBoc(r.boc)[0]

const tmp = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'receipts-')), 'ledger.sqlite')

function keyPair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519')
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  return { raw: Buffer.from(raw), sign: (d: Uint8Array) => crypto.sign(null, d, privateKey) }
}

export function sampleFields(i = 0, workerKey = Buffer.alloc(32, 7)): ReceiptFields {
  const salt = Buffer.alloc(32, i + 1)
  return {
    version: 2, signer: 'worker', requestId: `req-${i}`,
    requestHash: requestHash(salt, Buffer.from('{"model":"m"}')), answerHash: answerHash(salt, 'Once upon a time'),
    paramsHash: paramsHash(salt, { temperature: 0, top_p: null, seed: 1, max_tokens: 16, stop: null }),
    modelId: 'stories260K', modelHash: Buffer.alloc(32, 2), imageHash: Buffer.alloc(32, 3), workerKey, proxyKey: Buffer.alloc(32, 4),
    promptTokens: 10 + i, cachedTokens: 0, completionTokens: 16, reasoningTokens: 0, coefficient: 1000,
    pricePerTokenNano: 1000n, workerFeePerTokenNano: 800n, adjustedTokens: BigInt(26 + i), costNano: BigInt((26 + i) * 1000),
    startedAtMs: 1_700_000_000_000, firstTokenAtMs: 1_700_000_000_100, endedAtMs: 1_700_000_000_500, finishReason: 'length',
  }
}

test('a version 1 receipt (before first_token_at_ms) still decodes and verifies; version 2 carries the first token time', async () => {
  const k = keyPair()
  const v1 = await signReceipt({ ...sampleFields(0, k.raw), version: 1, firstTokenAtMs: 0 }, k.sign)
  const back1 = decodeReceiptBoc(v1.boc)
  assert.equal(back1.fields.version, 1)
  assert.equal(back1.fields.firstTokenAtMs, 0)
  assert.ok(verifyReceiptSignature(back1, k.raw))
  assert.ok(!('first_token_at_ms' in receiptFieldsJson(back1.fields)))
  // Version 1's body has exactly the layout of docs/receipts.md before the bump: 32+8·3+256·3+64·2 bits.
  assert.equal(cellOf(v1).refs[0].bits.length, 952)
  const v2 = await signReceipt(sampleFields(0, k.raw), k.sign)
  assert.equal(cellOf(v2).refs[0].bits.length, 1016)
  const back2 = decodeReceiptBoc(v2.boc)
  assert.equal(back2.fields.firstTokenAtMs, 1_700_000_000_100)
  assert.equal(receiptFieldsJson(back2.fields).first_token_at_ms, 1_700_000_000_100)
  // The time is signed: changing it breaks the signature.
  const forged = await signReceipt({ ...v2.fields, firstTokenAtMs: 1_700_000_000_001 }, () => v2.signature)
  assert.ok(!verifyReceiptSignature(forged, k.raw))
  // An unknown version is refused with a clear message.
  const v3 = await signReceipt({ ...sampleFields(0, k.raw), version: 3 }, k.sign)
  assert.throws(() => decodeReceiptBoc(v3.boc), /receipt version 3, this build reads 1 and 2/)
})

test('a signed receipt round-trips through its BoC and verifies against the signer only', async () => {
  const k = keyPair()
  const r = await signReceipt(sampleFields(0, k.raw), k.sign)
  const back = decodeReceiptBoc(r.boc.toString('base64'))
  assert.deepEqual(receiptFieldsJson(back.fields), receiptFieldsJson(r.fields))
  assert.ok(verifyReceiptSignature(back, k.raw))
  assert.ok(!verifyReceiptSignature(back, keyPair().raw))
  // Any field changed, the signature no longer holds.
  const forged = await signReceipt({ ...r.fields, costNano: 1n }, () => r.signature)
  assert.ok(!verifyReceiptSignature(forged, k.raw))
  assert.throws(() => decodeReceiptBoc(beginCell().storeUint(1, 8).endCell().toBoc()), /receipt/)
})

test('salted hashes depend on the salt; the receipt id is derived from it', () => {
  const a = newSalt()
  const b = newSalt()
  assert.notDeepEqual(answerHash(a, 'x'), answerHash(b, 'x'))
  assert.deepEqual(answerHash(a, 'x'), answerHash(Buffer.from(a), 'x'))
  assert.match(receiptIdFromSalt(a), /^[0-9a-f]{32}$/)
  assert.notEqual(receiptIdFromSalt(a), receiptIdFromSalt(b))
})

const usage = (i: number): UsageEvent => ({
  type: 'usage', requestId: `r${i}`, client: 'c1', worker: 'w1', coefficient: 1000,
  promptTokens: 10, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0, adjusted: '15', clientNano: '300', workerNano: '225',
})

test('the ledger logs receipts with usage and alone, in order, and rebuilds the same root after reopening', async () => {
  const file = tmp()
  const l = new Ledger(file)
  const k = keyPair()
  const rs: Receipt[] = []
  for (let i = 0; i < 5; i++) rs.push(await signReceipt(sampleFields(i, k.raw), k.sign))
  const cells = rs.map(cellOf)
  const a = l.recordUsage(usage(0), { receipt: rs[0], client: 'c1', worker: 'w1' })
  assert.equal(a.receiptIndex, 0)
  const batch = l.recordUsageBatch([usage(1), usage(2)], [{ receipt: rs[1], client: 'c1', worker: 'w1' }, { receipt: rs[2], client: 'c2', worker: 'w1' }])
  assert.deepEqual(batch.map((b) => b.receiptIndex), [1, 2])
  assert.equal(l.recordReceipt('r3', { receipt: rs[3], client: 'c1', worker: 'w2' }).receiptIndex, 3)
  const d = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell())
  cells.slice(0, 4).forEach((c, i) => d.set(BigInt(i), c))
  const root = beginCell().storeDictDirect(d).endCell().hash().toString('hex')
  assert.equal(l.receiptsRoot(), root)
  assert.deepEqual(l.receiptsOf('client', 'c1').map((r) => r.index), [0, 1, 3])
  assert.equal(l.receiptByHash(cells[2].hash().toString('hex'))!.index, 2)
  // Where a receipt is and whose, without its cell; and a party's list as stored, byte for byte.
  assert.deepEqual(l.receiptPlace({ index: 2 }), { index: 2, hash: cells[2].hash().toString('hex'), client: 'c2', worker: 'w1' })
  assert.deepEqual(l.receiptPlace({ hash: cells[3].hash().toString('hex') }), { index: 3, hash: cells[3].hash().toString('hex'), client: 'c1', worker: 'w2' })
  assert.equal(l.receiptPlace({ index: 4 }), undefined)
  assert.equal(l.receiptPlace({ hash: cells[4].hash().toString('hex') }), undefined)
  assert.deepEqual(l.receiptBocsOf('client', 'c1', 1).map((r) => [r.index, r.boc.toString('hex')]), [1, 3].map((i) => [i, cells[i].toBoc().toString('hex')]))
  assert.ok(l.verifyChain())
  l.close()

  const again = new Ledger(file)
  assert.equal(again.receiptCount(), 4)
  assert.equal(again.receiptsRoot(), root)
  const proof = Cell.fromBoc(again.receiptProof(2))[0]
  assert.ok(verifyReceiptProof(proof, Buffer.from(root, 'hex'), 2, cells[2].hash()).equals(cells[2]))
  // Against an earlier count too.
  const root2 = again.receiptsRoot(3)
  verifyReceiptProof(Cell.fromBoc(again.receiptProof(1, 3))[0], Buffer.from(root2, 'hex'), 1, cells[1].hash())
  again.recordCommit({ seqno: 4, hash: 'ab' }, 123, { root, count: 4, tx: 'cd' })
  assert.deepEqual(again.lastConfirmedCommit(), { seqno: 4, hash: 'ab', confirmedAt: 123, receiptsRoot: root, receiptsCount: 4, tx: 'cd' })
  again.close()
  // The log is append-only in SQLite too.
  const db = new Database(file)
  assert.throws(() => db.prepare(`DELETE FROM receipts WHERE idx = 1`).run(), /append-only/)
  db.close()
})

test('a failed write leaves no receipt in the tree', async () => {
  const l = new Ledger(tmp())
  const k = keyPair()
  const c = await signReceipt(sampleFields(0, k.raw), k.sign)
  l.recordUsage(usage(0), { receipt: c, client: 'c1', worker: 'w1' })
  const counters = { client: l.counters('client', 'c1'), worker: l.counters('worker', 'w1') }
  // The same receipt number twice is refused by the primary key; simulate by a bad batch (NaN counters).
  assert.throws(() => l.recordUsageBatch([usage(1), { ...usage(2), adjusted: 'x' }], [{ receipt: c, client: 'c1', worker: 'w1' }, { receipt: c, client: 'c1', worker: 'w1' }]))
  assert.equal(l.receiptCount(), 1)
  // The counters the first usage of the failed batch moved read as before it (the ledger keeps them in memory too).
  assert.deepEqual({ client: l.counters('client', 'c1'), worker: l.counters('worker', 'w1') }, counters)
  assert.throws(() => l.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: 'EQ-c1', tokens: '1000000', signature: 'ab' }, 'client', 'c1'), /exceeds the counter/)
  assert.deepEqual(l.counters('client', 'c1'), counters.client)
  assert.equal(l.getHead().seqno, 1)
  l.recordUsage(usage(3), { receipt: c, client: 'c1', worker: 'w1' })
  assert.equal(l.receiptCount(), 2)
  l.close()
})
