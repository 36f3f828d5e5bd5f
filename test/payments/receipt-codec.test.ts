// The receipt codec writes and reads bytes directly (src/payments/receipts/boc.ts). Here it is checked against an
// independent encoding through @ton/core's builders and slices (the layout of docs/receipts.md, as the code had it
// before): the same BoC byte for byte, the same hashes, the same fields back, and nothing accepted that @ton/core
// would read differently.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { beginCell, Cell, type Slice } from '@ton/core'
import { crc32c } from '../../src/payments/receipts/boc.ts'
import { decodeReceiptBoc, encodeReceipt, FINISH_REASONS, RECEIPT_BODY_TAG, receiptFieldsJson, ReceiptFormatError, signReceipt, verifyReceiptSignature, type ReceiptFields } from '../../src/payments/receipts/receipt.ts'

// ---------------------------------------------------------------- the reference, through @ton/core

const SIGNERS = ['worker', 'proxy'] as const

function refText(s: string): Cell {
  return beginCell().storeStringTail(s).endCell()
}

function refBody(f: ReceiptFields): Cell {
  const ids = beginCell().storeBuffer(f.modelHash, 32).storeRef(refText(f.requestId)).storeRef(refText(f.modelId)).endCell()
  const parties = beginCell().storeBuffer(f.imageHash, 32).storeBuffer(f.workerKey, 32).storeBuffer(f.proxyKey, 32).endCell()
  const usage = beginCell()
    .storeUint(f.promptTokens, 32).storeUint(f.cachedTokens, 32).storeUint(f.completionTokens, 32).storeUint(f.reasoningTokens, 32)
    .storeUint(f.coefficient, 32).storeCoins(f.pricePerTokenNano).storeCoins(f.workerFeePerTokenNano).storeUint(f.adjustedTokens, 64).storeCoins(f.costNano)
    .endCell()
  const b = beginCell()
    .storeUint(RECEIPT_BODY_TAG, 32).storeUint(f.version, 8).storeUint(SIGNERS.indexOf(f.signer), 8).storeUint(FINISH_REASONS.indexOf(f.finishReason), 8)
    .storeBuffer(f.requestHash, 32).storeBuffer(f.answerHash, 32).storeBuffer(f.paramsHash, 32)
    .storeUint(f.startedAtMs, 64).storeUint(f.endedAtMs, 64)
  if (f.version >= 2) b.storeUint(f.firstTokenAtMs, 64)
  return b.storeRef(ids).storeRef(parties).storeRef(usage).endCell()
}

function refCell(f: ReceiptFields, signature: Buffer): Cell {
  return beginCell().storeBuffer(signature, 64).storeRef(refBody(f)).endCell()
}

/** The decoder as it was, on @ton/core slices. */
function refDecode(cell: Cell): ReceiptFields {
  const text = (s: Slice) => s.loadRef().beginParse().loadStringTail()
  const s = cell.beginParse()
  s.loadBuffer(64)
  const body = s.loadRef()
  s.endParse()
  const b = body.beginParse()
  assert.equal(b.loadUint(32), RECEIPT_BODY_TAG)
  const version = b.loadUint(8)
  const signer = SIGNERS[b.loadUint(8)]
  const finishReason = FINISH_REASONS[b.loadUint(8)]
  const requestHash = b.loadBuffer(32)
  const answerHash = b.loadBuffer(32)
  const paramsHash = b.loadBuffer(32)
  const startedAtMs = Number(b.loadUintBig(64))
  const endedAtMs = Number(b.loadUintBig(64))
  const firstTokenAtMs = version >= 2 ? Number(b.loadUintBig(64)) : 0
  const ids = b.loadRef().beginParse()
  const parties = b.loadRef().beginParse()
  const u = b.loadRef().beginParse()
  b.endParse()
  const modelHash = ids.loadBuffer(32)
  return {
    version, signer, requestId: text(ids), requestHash, answerHash, paramsHash, modelId: text(ids), modelHash,
    imageHash: parties.loadBuffer(32), workerKey: parties.loadBuffer(32), proxyKey: parties.loadBuffer(32),
    promptTokens: u.loadUint(32), cachedTokens: u.loadUint(32), completionTokens: u.loadUint(32), reasoningTokens: u.loadUint(32), coefficient: u.loadUint(32),
    pricePerTokenNano: u.loadCoins(), workerFeePerTokenNano: u.loadCoins(), adjustedTokens: u.loadUintBig(64), costNano: u.loadCoins(),
    startedAtMs, firstTokenAtMs, endedAtMs, finishReason,
  }
}

// ---------------------------------------------------------------- random receipts

const rnd = (n: number) => crypto.randomInt(n)
const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)]
const u32 = () => pick([0, 1, 255, 256, 65_535, 2 ** 31, 2 ** 32 - 1, rnd(2 ** 32)])
const coins = () => pick([0n, 1n, 255n, 256n, 10n ** 9n, 2n ** 64n - 1n, 2n ** 120n - 1n, BigInt(rnd(2 ** 40))])
const time = () => pick([0, 1_700_000_000_000, Date.now(), 2 ** 53 - 1])
const texts = ['', 'a', 'req-1', 'stories260K', 'x'.repeat(126), 'y'.repeat(127), 'z'.repeat(128), 'w'.repeat(254), 'v'.repeat(255), 'u'.repeat(400), 'модель-é-🙂'.repeat(20)]

function randomFields(): ReceiptFields {
  const version = pick([1, 2])
  const requestId = pick(texts)
  return {
    version,
    signer: pick(SIGNERS),
    requestId,
    requestHash: crypto.randomBytes(32),
    answerHash: crypto.randomBytes(32),
    paramsHash: crypto.randomBytes(32),
    // Sometimes the same text twice: @ton/core stores one cell for both.
    modelId: rnd(4) === 0 ? requestId : pick(texts),
    modelHash: crypto.randomBytes(32),
    imageHash: crypto.randomBytes(32),
    workerKey: crypto.randomBytes(32),
    proxyKey: crypto.randomBytes(32),
    promptTokens: u32(),
    cachedTokens: u32(),
    completionTokens: u32(),
    reasoningTokens: u32(),
    coefficient: u32(),
    pricePerTokenNano: coins(),
    workerFeePerTokenNano: coins(),
    adjustedTokens: pick([0n, 1n, 2n ** 64n - 1n, BigInt(rnd(2 ** 40))]),
    costNano: coins(),
    startedAtMs: time(),
    firstTokenAtMs: version >= 2 ? time() : 0,
    endedAtMs: time(),
    finishReason: pick(FINISH_REASONS),
  }
}

const json = (f: ReceiptFields) => receiptFieldsJson(f)

test('a receipt encodes to exactly the BoC and hashes @ton/core gives, and decodes back to the same fields', () => {
  for (let i = 0; i < 400; i++) {
    const f = randomFields()
    const sig = crypto.randomBytes(64)
    const ours = encodeReceipt(f, sig)
    const ref = refCell(f, sig)
    assert.ok(ours.boc.equals(ref.toBoc()), `BoC of ${JSON.stringify(json(f))}`)
    assert.ok(ours.hash.equals(ref.hash()))
    assert.equal(ours.depth, ref.depth())
    assert.ok(ours.bodyHash.equals(ref.refs[0].hash()))
    const back = decodeReceiptBoc(ours.boc)
    assert.deepEqual(json(back.fields), json(f))
    assert.deepEqual(json(back.fields), json(refDecode(ref)))
    assert.ok(back.hash.equals(ours.hash) && back.bodyHash.equals(ours.bodyHash) && back.signature.equals(sig))
    assert.ok(back.boc.equals(ours.boc))
  }
})

test('the signature covers the body: it verifies for the signer only, and for no changed field', async () => {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519')
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  const f = randomFields()
  const r = await signReceipt(f, (d) => crypto.sign(null, d, privateKey))
  assert.ok(verifyReceiptSignature(decodeReceiptBoc(r.boc), raw))
  // The same signature over the body @ton/core builds.
  assert.ok(crypto.verify(null, Buffer.concat([Buffer.from('cocoon-receipt-v1\n'), refBody(f).hash()]), publicKey, r.signature))
  assert.ok(!verifyReceiptSignature(encodeReceipt({ ...f, costNano: f.costNano === 0n ? 1n : f.costNano - 1n }, r.signature), raw))
  assert.ok(!verifyReceiptSignature(r, crypto.randomBytes(32)))
})

test('every flipped bit is refused, or read exactly as @ton/core reads it', () => {
  for (let n = 0; n < 3; n++) {
    const f = randomFields()
    const boc = encodeReceipt(f, crypto.randomBytes(64)).boc
    let accepted = 0
    let refusedByCrc = 0
    for (let bit = 0; bit < boc.length * 8; bit++) {
      const bad = Buffer.from(boc)
      bad[bit >> 3] ^= 0x80 >> (bit & 7)
      // The CRC-32C trailer catches any single flip.
      assert.throws(() => decodeReceiptBoc(bad), ReceiptFormatError)
      refusedByCrc++
      // With the trailer made right again, the flip reaches the cells.
      if (bit < (boc.length - 4) * 8) bad.writeUInt32LE(crc32c(bad.subarray(0, boc.length - 4)), boc.length - 4)
      let ours
      try {
        ours = decodeReceiptBoc(bad)
      } catch (err) {
        assert.ok(err instanceof ReceiptFormatError, `bit ${bit}: ${(err as Error).message}`)
        continue
      }
      accepted++
      // What ours accepts, @ton/core parses (CRC included) to the same cell and fields.
      const cell = Cell.fromBoc(bad)[0]
      assert.ok(ours.hash.equals(cell.hash()), `bit ${bit}`)
      assert.deepEqual(json(ours.fields), json(refDecode(cell)), `bit ${bit}`)
    }
    // Flips in the signature, the hashes, the keys and most numbers make another well-formed receipt; the rest are refused.
    assert.ok(accepted > 64 * 8 && accepted < boc.length * 8, `${accepted} of ${boc.length * 8} flips accepted`)
    assert.equal(refusedByCrc, boc.length * 8)
  }
})

test('a receipt in another encoding of the same cells, or with more than its layout, is refused', () => {
  // A price short enough that a 15-byte Coins is padded.
  const f = { ...randomFields(), version: 2, pricePerTokenNano: 1000n }
  const sig = crypto.randomBytes(64)
  const ref = refCell(f, sig)
  // The same cells with an index: @ton/core reads it, but it is not the receipt's one encoding.
  assert.throws(() => decodeReceiptBoc(ref.toBoc({ idx: true })), /canonical/)
  // A bit after the usage (the old decoder ignored it; the hash and so the log key differ).
  const b = ref.refs[0]
  const usage = b.refs[2]
  const longer = beginCell().storeBuffer(sig, 64).storeRef(
    beginCell().storeBits(b.beginParse().loadBits(b.bits.length)).storeRef(b.refs[0]).storeRef(b.refs[1]).storeRef(beginCell().storeBits(usage.beginParse().loadBits(usage.bits.length)).storeBit(1).endCell()).endCell(),
  ).endCell()
  assert.doesNotThrow(() => refDecode(longer))
  assert.throws(() => decodeReceiptBoc(longer.toBoc()), ReceiptFormatError)
  // Coins written with a leading zero byte.
  const padded = beginCell().storeBuffer(sig, 64).storeRef(
    beginCell().storeBits(b.beginParse().loadBits(b.bits.length)).storeRef(b.refs[0]).storeRef(b.refs[1]).storeRef(
      beginCell().storeUint(f.promptTokens, 32).storeUint(f.cachedTokens, 32).storeUint(f.completionTokens, 32).storeUint(f.reasoningTokens, 32).storeUint(f.coefficient, 32)
        .storeUint(15, 4).storeUint(f.pricePerTokenNano, 120).storeCoins(f.workerFeePerTokenNano).storeUint(f.adjustedTokens, 64).storeCoins(f.costNano).endCell(),
    ).endCell(),
  ).endCell()
  assert.deepEqual(json(refDecode(padded)), json(f))
  assert.throws(() => decodeReceiptBoc(padded.toBoc()), /canonical/)
  // A time past 2^53 would not come back as the number signed.
  assert.throws(() => decodeReceiptBoc(refCell({ ...f, endedAtMs: (2n ** 53n + 1n) as unknown as number }, sig).toBoc()), ReceiptFormatError)
  // Not a BoC, an empty one, a huge one.
  for (const junk of [Buffer.alloc(0), Buffer.from('hello'), crypto.randomBytes(600), Buffer.alloc(20_000, 1)]) assert.throws(() => decodeReceiptBoc(junk), ReceiptFormatError)
  assert.throws(() => decodeReceiptBoc(beginCell().storeUint(1, 8).endCell().toBoc()), ReceiptFormatError)
})

test('fields out of range are refused when encoding, as @ton/core refuses them', () => {
  const f = randomFields()
  const sig = crypto.randomBytes(64)
  for (const bad of [{ coefficient: 2 ** 32 }, { promptTokens: -1 }, { costNano: -1n }, { costNano: 2n ** 120n }, { adjustedTokens: 2n ** 64n }, { completionTokens: 1.5 }]) {
    assert.throws(() => refCell({ ...f, ...bad } as ReceiptFields, sig), Error, JSON.stringify(Object.keys(bad)))
    assert.throws(() => encodeReceipt({ ...f, ...bad } as ReceiptFields, sig), Error, JSON.stringify(Object.keys(bad)))
  }
  assert.throws(() => encodeReceipt({ ...f, workerKey: Buffer.alloc(31) }, sig), ReceiptFormatError)
  assert.throws(() => encodeReceipt({ ...f, answerHash: Buffer.alloc(33) }, sig), ReceiptFormatError)
  assert.throws(() => encodeReceipt(f, sig.subarray(0, 63)), ReceiptFormatError)
})
