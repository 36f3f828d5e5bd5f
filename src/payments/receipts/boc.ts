// Bags of cells (TON's BoC) read and written directly, for the receipt log's proofs: parsing and building them
// through @ton/core computes every cell's hashes at every level, which was most of the cost of a proof.

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
