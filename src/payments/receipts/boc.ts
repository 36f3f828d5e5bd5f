// Bags of cells (TON's BoC) and ordinary cells read and written directly, for receipts and the receipt log's proofs:
// parsing and building them through @ton/core computes every cell's hashes at every level, which was most of the
// cost of a proof and of handling a receipt. Tests check every writer here byte for byte against @ton/core.
import crypto from 'node:crypto'

/** The hash and depth a parent cell needs of a child (level 0: every cell here is ordinary or a pruned branch). */
export interface CellRef {
  hash: Buffer
  depth: number
}

/** Representation hash and depth of an ordinary cell (TON cell hashing, level 0): d1 d2, data, the children's depths, their hashes. */
export function ordinaryHash(d2: number, data: Buffer, refs: readonly CellRef[]): CellRef {
  const repr = Buffer.allocUnsafe(2 + data.length + 34 * refs.length)
  repr[0] = refs.length
  repr[1] = d2
  let at = 2 + data.copy(repr, 2)
  let depth = 0
  for (const r of refs) {
    repr.writeUInt16BE(r.depth, at)
    at += 2
    if (r.depth + 1 > depth) depth = r.depth + 1
  }
  for (const r of refs) at += r.hash.copy(repr, at)
  return { hash: sha256(repr), depth }
}

/** SHA-256 in one call where this Node has it (crypto.hash, Node ≥ 20.12): a third of the cost of a Hash object for a cell. */
const sha256: (b: Buffer) => Buffer =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (b) => (crypto as unknown as { hash: (alg: string, b: Buffer, enc: 'buffer') => Buffer }).hash('sha256', b, 'buffer')
    : (b) => crypto.createHash('sha256').update(b).digest()

/** One cell of a parsed bag of cells: what a proof check needs of it. */
export interface RawCell {
  exotic: boolean
  /** Its data bytes as stored (a partial last byte carries its completion tag). */
  data: Buffer
  /** d2, the bits descriptor: 2 × whole bytes + 1 for a partial last byte. */
  d2: number
  refs: number[]
  /** Level-0 hash and depth, once computed. */
  hash?: Buffer
  depth?: number
}

const BOC_MAGIC = 0xb5ee9c72
/** Largest proof accepted: a receipt proof is under 1 KB, a few dozen cells. */
export const MAX_PROOF_BOC_BYTES = 64 * 1024
export const MAX_PROOF_CELLS = 1024

/**
 * Parses a single-root bag of cells without building @ton/core cells (their hashes for every level are most of a
 * proof check's cost). `fail` throws the caller's error for what is wrong.
 */
export function parseBoc(boc: Buffer, fail: (why: string) => never): { cells: RawCell[]; root: number } {
  if (boc.length > MAX_PROOF_BOC_BYTES) fail(`${boc.length} bytes`)
  if (boc.length < 6 || boc.readUInt32BE(0) !== BOC_MAGIC) fail('not a bag of cells')
  const flags = boc[4]
  const hasIdx = (flags & 0x80) !== 0
  const hasCrc = (flags & 0x40) !== 0
  if (flags & 0x38) fail('cache bits or flags set')
  const size = flags & 7
  const off = boc[5]
  if (size < 1 || size > 4 || off < 1 || off > 8) fail('bad size fields')
  let at = 6
  const uint = (bytes: number): number => {
    if (at + bytes > boc.length) fail('truncated')
    let v = 0
    for (let i = 0; i < bytes; i++) v = v * 256 + boc[at++]
    return v
  }
  const count = uint(size)
  const roots = uint(size)
  const absent = uint(size)
  const total = uint(off)
  if (roots !== 1 || absent !== 0 || count < 1 || count > MAX_PROOF_CELLS) fail('not one root over a bounded set of cells')
  const root = uint(size)
  if (hasIdx) at += count * off
  const end = at + total
  if (end + (hasCrc ? 4 : 0) !== boc.length) fail('sizes do not add up')
  const cells: RawCell[] = []
  for (let i = 0; i < count; i++) {
    if (at + 2 > end) fail('truncated cell')
    const d1 = boc[at]
    const d2 = boc[at + 1]
    at += 2
    const refCount = d1 & 7
    if (refCount > 4) fail('absent cells')
    if (d1 & 16) fail('stored hashes') // not what a proof is sent with
    const dataBytes = Math.ceil(d2 / 2)
    if (at + dataBytes + refCount * size > end) fail('truncated cell')
    const data = boc.subarray(at, at + dataBytes)
    at += dataBytes
    if (d2 % 2 === 1 && (dataBytes === 0 || data[dataBytes - 1] === 0)) fail('a partial byte without its completion tag')
    const refs: number[] = []
    for (let r = 0; r < refCount; r++) {
      const ref = uint(size)
      // Children come after their parent, so every walk ends.
      if (ref <= i || ref >= count) fail('a reference out of order')
      refs.push(ref)
    }
    cells.push({ exotic: (d1 & 8) !== 0, data, d2, refs })
  }
  if (at !== end || root >= count) fail('sizes do not add up')
  return { cells, root }
}

/** CRC-32C (Castagnoli), as a BoC's trailer: little-endian. */
const CRC32C_TABLE = (() => {
  const t = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    t[n] = c
  }
  return t
})()

export function crc32c(bytes: Uint8Array): number {
  let crc = ~0
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8)
  return ~crc >>> 0
}

/** A cell to write: descriptor bytes, data as stored (completion tag included), and the indices of its references. */
export interface OutCell {
  d1: number
  d2: number
  data: Buffer
  refs: number[]
}

function bytesFor(n: number): number {
  return Math.max(1, Math.ceil(n.toString(2).length / 8))
}

/**
 * Level-0 hash and depth of parsed cell `i`: for a pruned branch (level 1), the ones it stands for; for an ordinary
 * cell, computed over its children. Any other exotic cell fails. Kept on the cell once computed.
 */
export function level0(cells: RawCell[], i: number, fail: (why: string) => never): CellRef {
  const c = cells[i]
  if (c.hash) return { hash: c.hash, depth: c.depth! }
  if (c.exotic) {
    // A pruned branch of level 1: type 1, mask 1, hash, depth (288 bits).
    if (c.data.length !== 36 || c.d2 !== 72 || c.data[0] !== 1 || c.data[1] !== 1 || c.refs.length !== 0) fail('an exotic cell that is not a pruned branch')
    c.hash = c.data.subarray(2, 34)
    c.depth = c.data.readUInt16BE(34)
    return { hash: c.hash, depth: c.depth }
  }
  const r = ordinaryHash(c.d2, c.data, c.refs.map((k) => level0(cells, k, fail)))
  c.hash = r.hash
  c.depth = r.depth
  return r
}

/** Bits of a cell's data: whole bytes, and for an odd d2 the bits of the last byte above its completion tag. */
function dataBits(data: Buffer, d2: number): number {
  if (d2 % 2 === 0) return (d2 / 2) * 8
  const last = data[data.length - 1]
  return (data.length - 1) * 8 + 7 - Math.log2(last & -last) // the completion tag is the lowest set bit
}

/** Reads a cell's data bits, most significant first; `fail` throws the caller's error when a read runs past them. */
export class BitReader {
  private pos = 0
  readonly length: number

  constructor(
    private readonly data: Buffer,
    d2: number,
    private readonly fail: (why: string) => never,
  ) {
    this.length = dataBits(data, d2)
  }

  get left(): number {
    return this.length - this.pos
  }

  bit(): boolean {
    if (this.pos >= this.length) this.fail('a read runs past the cell')
    const b = (this.data[this.pos >> 3] >> (7 - (this.pos & 7))) & 1
    this.pos++
    return b === 1
  }

  /** `n` bits as an unsigned integer. */
  uint(n: number): bigint {
    if (n > this.left) this.fail('a read runs past the cell')
    let v = 0n
    if ((this.pos & 7) === 0 && (n & 7) === 0) {
      for (let i = 0; i < n; i += 8) v = (v << 8n) | BigInt(this.data[(this.pos + i) >> 3])
      this.pos += n
      return v
    }
    for (let i = 0; i < n; i++) v = (v << 1n) | (this.bit() ? 1n : 0n)
    return v
  }

  /** `n` bits (n ≤ 53, or 64 refused above 2^53 by the caller's own checks) as a number. */
  num(n: number): number {
    if (n > this.left) this.fail('a read runs past the cell')
    let v = 0
    if ((this.pos & 7) === 0 && (n & 7) === 0) {
      for (let i = 0; i < n; i += 8) v = v * 256 + this.data[(this.pos + i) >> 3]
      this.pos += n
      return v
    }
    for (let i = 0; i < n; i++) v = v * 2 + (this.bit() ? 1 : 0)
    return v
  }

  bytes(n: number): Buffer {
    if (n * 8 > this.left) this.fail('a read runs past the cell')
    if ((this.pos & 7) === 0) {
      const b = Buffer.from(this.data.subarray(this.pos >> 3, (this.pos >> 3) + n))
      this.pos += n * 8
      return b
    }
    const b = Buffer.alloc(n)
    for (let i = 0; i < n; i++) b[i] = Number(this.uint(8))
    return b
  }

  /** TON's Coins (VarUInteger 16): a 4-bit byte count, then that many bytes. */
  coins(): bigint {
    return this.uint(this.num(4) * 8)
  }
}

/** An ordinary cell built here: its bytes as a BoC stores them, its children, and its level-0 hash and depth. */
export interface BuiltCell extends CellRef {
  d2: number
  data: Buffer
  refs: BuiltCell[]
}

const CELL_BITS = 1023
const CELL_REFS = 4

/** Builds one ordinary cell bit by bit, as @ton/core's beginCell() does, with the same range checks. */
export class CellBuilder {
  private readonly buf = Buffer.alloc(128)
  private bits = 0
  private refs: BuiltCell[] = []

  private room(n: number): void {
    if (this.bits + n > CELL_BITS) throw new RangeError(`a cell holds ${CELL_BITS} bits`)
  }

  private bit(b: number): void {
    if (b) this.buf[this.bits >> 3] |= 0x80 >> (this.bits & 7)
    this.bits++
  }

  /** `v` as an `n`-bit unsigned integer. */
  uint(v: number | bigint, n: number): this {
    // Values below 2^53 (all but the largest Coins) are written with number arithmetic, exact for safe integers.
    const small = typeof v === 'bigint' ? (v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : -1) : Number.isSafeInteger(v) && v >= 0 ? v : -1
    if (small >= 0 && (n >= 53 || small < 2 ** n)) {
      this.room(n)
      if ((this.bits & 7) === 0 && (n & 7) === 0) {
        let y = small
        for (let i = (this.bits + n) / 8 - 1; i >= this.bits / 8; i--) {
          this.buf[i] = y % 256
          y = Math.floor(y / 256)
        }
        this.bits += n
      } else {
        for (let i = n - 1; i >= 0; i--) this.bit(i >= 53 ? 0 : Math.floor(small / 2 ** i) % 2)
      }
      return this
    }
    const x = BigInt(v)
    if (x < 0n || x >= 1n << BigInt(n)) throw new RangeError(`${v} does not fit in ${n} unsigned bits`)
    this.room(n)
    if ((this.bits & 7) === 0 && (n & 7) === 0) {
      let y = x
      for (let i = n / 8 - 1; i >= 0; i--) {
        this.buf[(this.bits >> 3) + i] = Number(y & 0xffn)
        y >>= 8n
      }
      this.bits += n
      return this
    }
    for (let i = n - 1; i >= 0; i--) this.bit(Number((x >> BigInt(i)) & 1n))
    return this
  }

  bytes(b: Uint8Array): this {
    this.room(b.length * 8)
    if ((this.bits & 7) === 0) {
      this.buf.set(b, this.bits >> 3)
      this.bits += b.length * 8
      return this
    }
    for (const x of b) this.uint(x, 8)
    return this
  }

  /** TON's Coins (VarUInteger 16): the shortest byte count, then the bytes; zero is four zero bits. */
  coins(v: bigint): this {
    if (v < 0n) throw new RangeError(`coins cannot be negative: ${v}`)
    const size = v === 0n ? 0 : Math.ceil(v.toString(16).length / 2)
    if (size > 15) throw new RangeError(`${v} does not fit in Coins`)
    return this.uint(size, 4).uint(v, size * 8)
  }

  ref(c: BuiltCell): this {
    if (this.refs.length >= CELL_REFS) throw new RangeError(`a cell holds ${CELL_REFS} references`)
    this.refs.push(c)
    return this
  }

  /** The cell; the builder is spent. */
  end(): BuiltCell {
    const whole = this.bits >> 3
    const partial = (this.bits & 7) !== 0
    const data = this.buf.subarray(0, whole + (partial ? 1 : 0))
    if (partial) data[whole] |= 0x80 >> (this.bits & 7) // the completion tag
    const d2 = whole * 2 + (partial ? 1 : 0)
    const refs = this.refs
    this.refs = []
    this.bits = CELL_BITS + 1 // nothing more fits
    const { hash, depth } = ordinaryHash(d2, data, refs)
    return { hash, depth, d2, data, refs }
  }
}

/**
 * A tree of built cells as one BoC, byte for byte what @ton/core's toBoc() writes for the same cells: identical cells
 * stored once, in its order (the reverse of a depth-first post-order that takes each cell's references last first).
 */
export function serializeCells(root: BuiltCell): Buffer {
  const order: BuiltCell[] = []
  const seen = new Set<string>()
  const visit = (c: BuiltCell): void => {
    const key = c.hash.toString('latin1')
    if (seen.has(key)) return
    seen.add(key)
    for (let i = c.refs.length - 1; i >= 0; i--) visit(c.refs[i])
    order.push(c)
  }
  visit(root)
  order.reverse()
  const index = new Map(order.map((c, i) => [c.hash.toString('latin1'), i]))
  return writeBoc(order.map((c) => ({ d1: c.refs.length, d2: c.d2, data: c.data, refs: c.refs.map((r) => index.get(r.hash.toString('latin1'))!) })))
}

/** Serializes cells (root first, every reference to a later cell) as @ton/core's toBoc() does: no index, with CRC-32C. */
export function writeBoc(cells: OutCell[]): Buffer {
  const size = bytesFor(cells.length)
  let total = 0
  for (const c of cells) total += 2 + c.data.length + c.refs.length * size
  const off = bytesFor(total)
  const out = Buffer.alloc(4 + 1 + 1 + 3 * size + off + size + total + 4)
  out.writeUInt32BE(BOC_MAGIC, 0)
  out[4] = 0x40 | size // has_crc32c, size bytes
  out[5] = off
  let at = 6
  const uint = (v: number, bytes: number) => {
    for (let i = bytes - 1; i >= 0; i--) {
      out[at + i] = v % 256
      v = Math.floor(v / 256)
    }
    at += bytes
  }
  uint(cells.length, size)
  uint(1, size) // roots
  uint(0, size) // absent
  uint(total, off)
  uint(0, size) // the root is cell 0
  for (const c of cells) {
    out[at++] = c.d1
    out[at++] = c.d2
    at += c.data.copy(out, at)
    for (const r of c.refs) uint(r, size)
  }
  out.writeUInt32LE(crc32c(out.subarray(0, at)), at)
  return out
}
