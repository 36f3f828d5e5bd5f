// The receipt log's Merkle structure: a TON Dictionary<uint64, Cell> keyed 0..N-1, kept incrementally.
//
// Receipts are numbered from 0 with no gaps, so the dictionary's Patricia tree is fixed by N
// alone: every subtree covers an aligned block [a, a + 2^k) of receipt numbers, and a block that is
// full is a fork with empty labels down to its leaves. A full block never changes again. This
// keeps, per level k, the cell hash and depth of every full block; the root for any count C is
// then the right edge of the tree, O(log C) cells hashed from those, and a Merkle proof for any
// receipt against any earlier count is built from the same hashes (pruned branches).
// The cells are exactly what @ton/core's Dictionary serializes (test/payments/receipt-tree.test.ts
// checks the root against Dictionary.storeDirect), so proofs are native TON Merkle-proof cells.
import { beginCell, Builder, Cell, convertToMerkleProof } from '@ton/core'
import { ordinaryHash, parseBoc, writeBoc, type CellRef, type OutCell } from './boc.ts'

export type { CellRef }

/** Key length of the log's dictionary: receipt numbers are uint64. */
export const RECEIPT_KEY_BITS = 64

const HASH_BYTES = 32

/** Growable array of fixed-size hashes and their depths, one per full block of a level. */
class Level {
  private hashes = Buffer.alloc(HASH_BYTES * 16)
  private depths = new Uint16Array(16)
  length = 0

  push(r: CellRef): void {
    if (this.length === this.depths.length) {
      const h = Buffer.alloc(this.hashes.length * 2)
      this.hashes.copy(h)
      this.hashes = h
      const d = new Uint16Array(this.depths.length * 2)
      d.set(this.depths)
      this.depths = d
    }
    r.hash.copy(this.hashes, this.length * HASH_BYTES)
    this.depths[this.length++] = r.depth
  }

  get(i: number): CellRef {
    if (i >= this.length) throw new RangeError(`no full block ${i} at this level`)
    return { hash: this.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), depth: this.depths[i] }
  }

  truncate(n: number): void {
    this.length = Math.min(this.length, n)
  }
}

/** Bits of a hashmap label, as the shortest encoding @ton/core picks (labels here are all zeros). */
interface Bits {
  /** Up to 2 + 64 + 7 bits, left-aligned. */
  value: bigint
  length: number
}

function lenBits(n: number): number {
  return Math.ceil(Math.log2(n + 1))
}

/** The label `0`×l of an edge with n key bits left: hml_short, hml_long or hml_same, whichever is shortest (ties: short, then long). */
export function zeroLabel(l: number, n: number): Bits {
  const w = lenBits(n)
  const shortLen = 2 + 2 * l
  const longLen = 2 + w + l
  const sameLen = 3 + w
  let kind: 'short' | 'long' | 'same' = 'short'
  let best = shortLen
  if (longLen < best) {
    kind = 'long'
    best = longLen
  }
  if (sameLen < best) kind = 'same'
  if (kind === 'short') {
    // 0, then l ones (unary length), a zero, then the l zero bits of the label.
    const ones = ((1n << BigInt(l)) - 1n) << BigInt(1 + l)
    return { value: ones, length: shortLen }
  }
  if (kind === 'long') return { value: (0b10n << BigInt(w + l)) | (BigInt(l) << BigInt(l)), length: longLen }
  return { value: (0b110n << BigInt(w)) | BigInt(l), length: sameLen }
}

/** A cell's data bytes for `bits` (left-aligned in whole bytes, a partial last byte with its completion tag) and its bits descriptor d2. */
function packBits(bits: Bits): { data: Buffer; d2: number } {
  const dataBytes = Math.ceil(bits.length / 8)
  const data = Buffer.alloc(dataBytes)
  if (bits.length > 0) {
    const pad = dataBytes * 8 - bits.length
    let v = bits.value << BigInt(pad)
    if (pad > 0) v |= 1n << BigInt(pad - 1)
    for (let i = dataBytes - 1; i >= 0; i--) {
      data[i] = Number(v & 0xffn)
      v >>= 8n
    }
  }
  return { data, d2: Math.floor(bits.length / 8) + dataBytes }
}

/** Representation hash of an ordinary cell holding `bits` and refs `refs` (TON cell hashing, level 0). */
export function ordinaryCellHash(bits: Bits, refs: CellRef[]): CellRef {
  if (bits.length === 2 && bits.value === 0n) return emptyLabelCellHash(refs)
  const { data, d2 } = packBits(bits)
  return ordinaryHash(d2, data, refs)
}

/** The common case (every full block): an empty label, two bits `00`, so one data byte 0x20 with its completion tag. */
const EMPTY_LABEL_DATA = Buffer.from([0x20])
function emptyLabelCellHash(refs: CellRef[]): CellRef {
  return ordinaryHash(1, EMPTY_LABEL_DATA, refs)
}

function storeBits(b: Builder, bits: Bits): Builder {
  if (bits.length > 0) b.storeUint(bits.value, bits.length)
  return b
}

function prunedBranch(r: CellRef): Cell {
  return beginCell().storeUint(1, 8).storeUint(1, 8).storeBuffer(r.hash).storeUint(r.depth, 16).endCell({ exotic: true })
}

function depthBytes(depth: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(depth)
  return b
}

/** Bit length of a non-negative integer (0 for 0). */
function bitLength(x: number): number {
  return x === 0 ? 0 : Math.floor(Math.log2(x)) + 1
}

/** Reads the cell hashes and depths of receipts [from, to), in order: where the tree finds a block it no longer holds. */
export type ReceiptSource = (from: number, to: number) => CellRef[]

/** Receipts per block by default (2^10): the tree holds the inside of at most a few blocks. */
export const RECEIPT_BLOCK_BITS = 10
/** Complete blocks whose inside the tree keeps, most recently used first (proofs come in runs of nearby receipts). */
export const RECEIPT_CACHED_BLOCKS = 32

/** The inside of one aligned block of 2^B receipts: its receipts, and its full sub-blocks at levels 0..B-1. */
class Block {
  readonly receipts = new Level()
  readonly levels: Level[]

  constructor(readonly bits: number) {
    this.levels = Array.from({ length: bits }, () => new Level())
  }

  /** Appends the next receipt of this block and every sub-block it completes below the block's own level. */
  push(receipt: CellRef): void {
    this.receipts.push(receipt)
    this.levels[0].push(ordinaryCellHash(zeroLabel(0, 0), [receipt]))
    const n = this.receipts.length
    for (let k = 1; k < this.bits && n % 2 ** k === 0; k++) {
      const j = n / 2 ** k - 1
      this.levels[k].push(ordinaryCellHash(zeroLabel(0, k), [this.levels[k - 1].get(2 * j), this.levels[k - 1].get(2 * j + 1)]))
    }
  }

  truncate(count: number): void {
    this.receipts.truncate(count)
    for (let k = 0; k < this.bits; k++) this.levels[k].truncate(Math.floor(count / 2 ** k))
  }
}

export interface ReceiptTreeOptions {
  /**
   * Where to read back the receipts of a complete block (the ledger's receipts table). Without one,
   * the tree keeps every receipt's hash in memory (34 bytes each).
   */
  source?: ReceiptSource
  /** log2 of the receipts per block (default RECEIPT_BLOCK_BITS); at least 1. */
  blockBits?: number
  /** Complete blocks whose inside stays in memory (default RECEIPT_CACHED_BLOCKS). */
  cachedBlocks?: number
}

/**
 * The Merkle structure of an append-only receipt log. Append each receipt's cell hash and depth in
 * order; read the root for any count up to the current one, and build proofs.
 *
 * Memory stays flat as the log grows: the log is cut into aligned blocks of 2^B receipts. The tree
 * keeps every full block at level B and above (34 bytes per 2^B receipts), the inside of the block
 * being filled, and the inside of a few recently used complete blocks. The inside of any other
 * block, which only a proof or the root of an old count needs, is rebuilt from its receipts through
 * the source: one read of 2^B rows and 2^(B+1) hashes.
 */
export class ReceiptTree {
  private n = 0
  private readonly bits: number
  private readonly size: number
  private readonly cachedBlocks: number
  private readonly source: ReceiptSource
  /** Every receipt, only when there is no source to read them back from. */
  private readonly all: Level | undefined
  /** The block being filled: number floor(n / size). */
  private current: Block
  /** top[k] (k ≥ bits): the edge cell of the full block [j·2^k, (j+1)·2^k) at index j. */
  private readonly top: Level[] = []
  /** Complete blocks' insides, least recently used first. */
  private readonly cache = new Map<number, Block>()

  constructor(o: ReceiptTreeOptions = {}) {
    this.bits = o.blockBits ?? RECEIPT_BLOCK_BITS
    if (!Number.isInteger(this.bits) || this.bits < 1 || this.bits > 30) throw new RangeError(`blockBits must be an integer from 1 to 30, not ${this.bits}`)
    this.size = 2 ** this.bits
    this.cachedBlocks = Math.max(0, o.cachedBlocks ?? RECEIPT_CACHED_BLOCKS)
    if (o.source) {
      this.source = o.source
    } else {
      const all = (this.all = new Level())
      this.source = (from, to) => Array.from({ length: to - from }, (_, i) => all.get(from + i))
    }
    this.current = new Block(this.bits)
  }

  get count(): number {
    return this.n
  }

  /** Complete blocks whose inside is in memory now (for tests and stats). */
  get cachedBlockCount(): number {
    return this.cache.size
  }

  /** Appends receipt number `count` (its cell's hash and depth); amortized two hashes. Returns its number. */
  append(receipt: CellRef): number {
    const index = this.n
    this.all?.push(receipt)
    this.current.push(receipt)
    const n = index + 1
    if (n % this.size === 0) {
      // The block is complete: its edge cell joins level B, and so on up for every larger block it completes.
      for (let k = this.bits; n % 2 ** k === 0; k++) {
        const j = n / 2 ** k - 1
        const pair: [CellRef, CellRef] = k === this.bits ? [this.current.levels[k - 1].get(0), this.current.levels[k - 1].get(1)] : [this.top[k - 1].get(2 * j), this.top[k - 1].get(2 * j + 1)]
        ;(this.top[k] ??= new Level()).push(ordinaryCellHash(zeroLabel(0, k), pair))
      }
      this.remember(Math.floor(index / this.size), this.current)
      this.current = new Block(this.bits)
    }
    this.n = n
    return index
  }

  /** Forgets receipts from `count` on (only to undo appends whose write failed). */
  truncate(count: number): void {
    if (count >= this.n) return
    this.all?.truncate(count)
    for (let k = this.bits; k < this.top.length; k++) this.top[k]?.truncate(Math.floor(count / 2 ** k))
    const b = Math.floor(count / this.size)
    for (const key of [...this.cache.keys()]) if (key >= b) this.cache.delete(key)
    if (b === Math.floor(this.n / this.size)) {
      this.current.truncate(count - b * this.size)
    } else {
      this.current = new Block(this.bits)
      for (const r of this.read(b * this.size, count)) this.current.push(r)
    }
    this.n = count
  }

  /** Root of the dictionary holding receipts 0..count-1 (default: all), or undefined when empty. */
  root(count = this.count): CellRef | undefined {
    if (count > this.count) throw new RangeError(`the log holds ${this.count} receipts, not ${count}`)
    if (count === 0) return undefined
    return this.edge(0, RECEIPT_KEY_BITS, count)
  }

  /** The receipt cell's hash and depth for receipt `index`. */
  receipt(index: number): CellRef {
    if (index >= this.n) throw new RangeError(`no receipt ${index} in a log of ${this.n}`)
    const b = Math.floor(index / this.size)
    return this.block(b).receipts.get(index - b * this.size)
  }

  /** The edge cell of the full block [j·2^k, (j+1)·2^k). */
  private full(k: number, j: number): CellRef {
    if (k >= this.bits) {
      const level = this.top[k]
      if (!level) throw new RangeError(`no full block ${j} at level ${k}`)
      return level.get(j)
    }
    const b = Math.floor((j * 2 ** k) / this.size)
    return this.block(b).levels[k].get(j - b * 2 ** (this.bits - k))
  }

  /** The inside of block `b`: the one being filled, a cached one, or one rebuilt from the source. */
  private block(b: number): Block {
    if (b === Math.floor(this.n / this.size)) return this.current
    const hit = this.cache.get(b)
    if (hit) {
      this.cache.delete(b)
      this.cache.set(b, hit)
      return hit
    }
    const block = new Block(this.bits)
    for (const r of this.read(b * this.size, (b + 1) * this.size)) block.push(r)
    this.remember(b, block)
    return block
  }

  private read(from: number, to: number): CellRef[] {
    const refs = this.source(from, to)
    if (refs.length !== to - from) throw new Error(`the receipt source gave ${refs.length} receipts for [${from}, ${to}), not ${to - from}`)
    return refs
  }

  private remember(b: number, block: Block): void {
    if (this.cachedBlocks === 0) return
    this.cache.set(b, block)
    while (this.cache.size > this.cachedBlocks) this.cache.delete(this.cache.keys().next().value as number)
  }

  /** The edge cell for the block starting at `a` with `n` key bits left, holding `c` receipts (1 ≤ c ≤ 2^n). */
  private edge(a: number, n: number, c: number): CellRef {
    if (c === 2 ** n) return this.full(n, a / c)
    const m = bitLength(c - 1)
    const label = zeroLabel(n - m, n)
    if (m === 0) return ordinaryCellHash(label, [this.receipt(a)])
    const half = 2 ** (m - 1)
    return ordinaryCellHash(label, [this.full(m - 1, a / half), this.edge(a + half, m - 1, c - half)])
  }

  /**
   * A Merkle proof (exotic cell) that receipt `index` is `receiptCell` in the dictionary of the
   * first `count` receipts. Everything off the path to that key is a pruned branch.
   */
  proof(index: number, receiptCell: Cell, count = this.count): Cell {
    if (index >= count || count > this.count) throw new RangeError(`receipt ${index} is not among the first ${count} of ${this.count}`)
    return convertToMerkleProof(this.pathCell(0, RECEIPT_KEY_BITS, count, index, receiptCell))
  }

  /**
   * proof(index, receipt, count).toBoc(), byte for byte (and so @ton/core's generateMerkleProof(...).toBoc()), written
   * straight from the tree's hashes without building @ton/core cells (about ten times faster): what the proxy serves.
   * `receiptBoc` is the receipt cell's BoC as the ledger stores it, whose hash the tree holds: the Merkle-proof cell
   * names the tree's root. (proof() builds its cells and hashes them, so it stays the reference for any cell.)
   */
  proofBoc(index: number, receiptBoc: Buffer, count = this.count): Buffer {
    if (index >= count || count > this.count) throw new RangeError(`receipt ${index} is not among the first ${count} of ${this.count}`)
    const receipt = parseBoc(receiptBoc, (why) => {
      throw new Error(`receipt ${index} is not a well-formed cell: ${why}`)
    })
    if (receipt.root !== 0 || receipt.cells.some((c) => c.exotic)) throw new Error(`receipt ${index} is not a well-formed cell: its root is not first, or it holds an exotic cell`)
    const root = this.root(count)!
    // Cells in the order @ton/core writes them (depth first, references in order), each referring to later ones.
    const cells: OutCell[] = [{ d1: 1 + 8, d2: 70, data: Buffer.concat([Buffer.from([3]), root.hash, depthBytes(root.depth)]), refs: [1] }]
    const pruned = (r: CellRef): number => {
      // A pruned branch of level 1: exotic, level mask 1, no references; its data is type, mask, hash and depth.
      cells.push({ d1: 8 + 32, d2: 72, data: Buffer.concat([Buffer.from([1, 1]), r.hash, depthBytes(r.depth)]), refs: [] })
      return cells.length - 1
    }
    const path = (a: number, n: number, c: number): number => {
      const full = c === 2 ** n
      const m = full ? n : bitLength(c - 1)
      const cell: OutCell = { d1: 0, ...packBits(zeroLabel(n - m, n)), refs: [] }
      const me = cells.push(cell) - 1
      if (m === 0) {
        // The leaf: its one reference is the receipt, copied as stored (ordinary cells, level 0).
        const base = cells.length
        for (const rc of receipt.cells) cells.push({ d1: rc.refs.length, d2: rc.d2, data: rc.data, refs: rc.refs.map((r) => base + r) })
        cell.d1 = 1
        cell.refs = [base]
        return me
      }
      const half = 2 ** (m - 1)
      const rightCount = full ? half : c - half
      if (index < a + half) {
        const left = path(a, m - 1, half)
        cell.refs = [left, pruned(full ? this.full(m - 1, a / half + 1) : this.edge(a + half, m - 1, rightCount))]
      } else {
        const left = pruned(this.full(m - 1, a / half))
        cell.refs = [left, path(a + half, m - 1, rightCount)]
      }
      cell.d1 = 2 + 32 // two references, level mask 1 (a pruned branch below)
      return me
    }
    path(0, RECEIPT_KEY_BITS, count)
    return writeBoc(cells)
  }

  private pathCell(a: number, n: number, c: number, index: number, receiptCell: Cell): Cell {
    const full = c === 2 ** n
    const m = full ? n : bitLength(c - 1)
    const b = storeBits(beginCell(), zeroLabel(n - m, n))
    if (m === 0) return b.storeRef(receiptCell).endCell()
    const half = 2 ** (m - 1)
    const rightCount = full ? half : c - half
    if (index < a + half) {
      const right = full ? this.full(m - 1, a / half + 1) : this.edge(a + half, m - 1, rightCount)
      return b.storeRef(this.pathCell(a, m - 1, half, index, receiptCell)).storeRef(prunedBranch(right)).endCell()
    }
    return b.storeRef(prunedBranch(this.full(m - 1, a / half))).storeRef(this.pathCell(a + half, m - 1, rightCount, index, receiptCell)).endCell()
  }
}
