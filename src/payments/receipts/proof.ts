// Checking a receipt's Merkle proof: a TON Merkle-proof cell over the log's Dictionary<uint64, Cell>, against a committed root.
import { Cell, CellType, type Slice } from '@ton/core'
import { RECEIPT_KEY_BITS } from './tree.ts'

/** A proof that does not show the receipt under the root; `reason` says which part failed. */
export class ReceiptProofError extends Error {
  readonly name = 'ReceiptProofError'
  constructor(readonly reason: string) {
    super(`receipt proof refused: ${reason}`)
  }
}

function readLabel(s: Slice, n: number): { bits: bigint; length: number } {
  const w = Math.ceil(Math.log2(n + 1))
  if (!s.loadBit()) {
    let l = 0
    while (s.loadBit()) l++
    return { bits: l ? s.loadUintBig(l) : 0n, length: l }
  }
  if (!s.loadBit()) {
    const l = w ? s.loadUint(w) : 0
    return { bits: l ? s.loadUintBig(l) : 0n, length: l }
  }
  const v = s.loadBit()
  const l = w ? s.loadUint(w) : 0
  return { bits: v && l ? (1n << BigInt(l)) - 1n : 0n, length: l }
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
      const label = readLabel(s, n)
      if (label.length > n) throw new ReceiptProofError('a label is longer than the key')
      const want = (key >> BigInt(n - label.length)) & ((1n << BigInt(label.length)) - 1n)
      if (label.bits !== want) throw new ReceiptProofError(`receipt ${key} is not in the dictionary`)
      n -= label.length
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
