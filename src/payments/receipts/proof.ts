// Checking a receipt's Merkle proof: a TON Merkle-proof cell over the log's Dictionary<uint64, Cell>, against a committed root.
import { Cell, CellType, type Slice } from '@ton/core'
import { RECEIPT_KEY_BITS } from './tree.ts'
import { BitReader, level0, parseBoc } from './boc.ts'

/** A proof that does not show the receipt under the root; `reason` says which part failed. */
export class ReceiptProofError extends Error {
  readonly name = 'ReceiptProofError'
  constructor(readonly reason: string) {
    super(`receipt proof refused: ${reason}`)
  }
}

/** Where a dictionary label is read from: a @ton/core slice, or a cell's bytes. */
interface BitSource {
  bit(): boolean
  uint(n: number): bigint
}

function readLabel(s: BitSource, n: number): { bits: bigint; length: number } {
  const w = Math.ceil(Math.log2(n + 1))
  if (!s.bit()) {
    let l = 0
    while (s.bit()) l++
    return { bits: s.uint(l), length: l }
  }
  if (!s.bit()) {
    const l = Number(s.uint(w))
    return { bits: s.uint(l), length: l }
  }
  const v = s.bit()
  const l = Number(s.uint(w))
  return { bits: v && l ? (1n << BigInt(l)) - 1n : 0n, length: l }
}

/** Reads one edge's label on the way to `key`, with `n` key bits left; returns the bits left after it. */
function followLabel(s: BitSource, n: number, key: bigint): number {
  const label = readLabel(s, n)
  if (label.length > n) throw new ReceiptProofError('a label is longer than the key')
  const want = (key >> BigInt(n - label.length)) & ((1n << BigInt(label.length)) - 1n)
  if (label.bits !== want) throw new ReceiptProofError(`receipt ${key} is not in the dictionary`)
  return n - label.length
}

function sliceBits(s: Slice): BitSource {
  return { bit: () => s.loadBit(), uint: (n) => (n ? s.loadUintBig(n) : 0n) }
}

/**
 * Walks the proof down to key `index` and returns the receipt cell stored there. Throws
 * ReceiptProofError unless `proof` is a Merkle-proof cell whose root hash is `root`, the key is
 * present (not pruned away), and, when given, the receipt's hash is `receiptHash`.
 */
export function verifyReceiptProof(proof: Cell, root: Buffer, index: bigint | number, receiptHash?: Buffer): Cell {
  const key = BigInt(index)
  if (key < 0n || key >= 1n << BigInt(RECEIPT_KEY_BITS)) throw new ReceiptProofError(`receipt number ${key} out of range`)
  if (!proof.isExotic || proof.type !== CellType.MerkleProof) throw new ReceiptProofError('not a Merkle-proof cell')
  const head = proof.beginParse(true)
  head.skip(8)
  const claimed = head.loadBuffer(32)
  if (!claimed.equals(root)) throw new ReceiptProofError(`the proof is for root ${claimed.toString('hex')}, not ${root.toString('hex')}`)
  let cell = proof.refs[0]
  if (!cell.hash(0).equals(root)) throw new ReceiptProofError('the proof body does not hash to its root')
  let n = RECEIPT_KEY_BITS
  try {
    for (;;) {
      if (cell.isExotic) throw new ReceiptProofError(`receipt ${key} is pruned from the proof`)
      const s = cell.beginParse()
      n = followLabel(sliceBits(s), n, key)
      if (n === 0) {
        const value = s.loadRef()
        if (receiptHash && !value.hash(0).equals(receiptHash)) throw new ReceiptProofError(`the dictionary holds another receipt at ${key}`)
        if (value.isExotic) throw new ReceiptProofError(`receipt ${key} is pruned from the proof`)
        return value
      }
      const bit = Number((key >> BigInt(n - 1)) & 1n)
      n -= 1
      cell = cell.refs[bit]
      if (!cell) throw new ReceiptProofError('a fork has fewer than two branches')
    }
  } catch (err) {
    if (err instanceof ReceiptProofError) throw err
    throw new ReceiptProofError(`malformed dictionary cell: ${(err as Error).message}`)
  }
}

/**
 * verifyReceiptProof on the proof's bytes (a BoC), without building @ton/core cells: the same checks, about seven
 * times faster (45 µs against 340 µs). Client nodes and workers check a proof for every receipt. Throws ReceiptProofError on any failure,
 * including a malformed bag of cells.
 */
export function verifyReceiptProofBoc(boc: Buffer, root: Buffer, index: bigint | number, receiptHash: Buffer): void {
  const key = BigInt(index)
  if (key < 0n || key >= 1n << BigInt(RECEIPT_KEY_BITS)) throw new ReceiptProofError(`receipt number ${key} out of range`)
  const { cells, root: top } = parseBoc(boc, (why) => {
    throw new ReceiptProofError(`malformed proof: ${why}`)
  })
  const proof = cells[top]
  // A Merkle-proof cell: type 3, the hash and depth of the tree it proves (280 bits), one reference to it.
  if (!proof.exotic || proof.data[0] !== 3) throw new ReceiptProofError('not a Merkle-proof cell')
  if (proof.data.length !== 35 || proof.d2 !== 70 || proof.refs.length !== 1) throw new ReceiptProofError('malformed proof: a Merkle-proof cell of the wrong size')
  const claimed = proof.data.subarray(1, 33)
  if (!claimed.equals(root)) throw new ReceiptProofError(`the proof is for root ${claimed.toString('hex')}, not ${root.toString('hex')}`)
  const fail = (why: string): never => {
    throw new ReceiptProofError(`malformed proof: ${why}`)
  }
  let at = proof.refs[0]
  const body = level0(cells, at, fail)
  if (!body.hash.equals(root) || body.depth !== proof.data.readUInt16BE(33)) throw new ReceiptProofError('the proof body does not hash to its root')
  let n = RECEIPT_KEY_BITS
  for (;;) {
    const cell = cells[at]
    if (cell.exotic) throw new ReceiptProofError(`receipt ${key} is pruned from the proof`)
    n = followLabel(new BitReader(cell.data, cell.d2, (why) => fail(`a dictionary cell: ${why}`)), n, key)
    if (n === 0) {
      if (cell.refs.length < 1) throw new ReceiptProofError('malformed dictionary cell: a leaf without its value')
      const value = cell.refs[0]
      if (!level0(cells, value, fail).hash.equals(receiptHash)) throw new ReceiptProofError(`the dictionary holds another receipt at ${key}`)
      if (cells[value].exotic) throw new ReceiptProofError(`receipt ${key} is pruned from the proof`)
      return
    }
    const bit = Number((key >> BigInt(n - 1)) & 1n)
    n -= 1
    if (cell.refs.length < 2) throw new ReceiptProofError('a fork has fewer than two branches')
    at = cell.refs[bit]
  }
}
