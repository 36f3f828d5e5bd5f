// Test helper: copies a GGUF file with one extra string metadata key (e.g. a chat template), so template handling can be tested on the tiny model.

import fs from 'node:fs/promises'

const GGUF_TYPE_STRING = 8
const GGUF_TYPE_ARRAY = 9
/** Byte sizes of the fixed-size GGUF value types, by type id. */
const FIXED_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 }
const DEFAULT_ALIGNMENT_BYTES = 32

/** Writes `dest`: `src` plus the string key `key` = `value`, with the tensor data re-aligned. */
export async function ggufWithStringKey(src: string, dest: string, key: string, value: string): Promise<void> {
  const buf = await fs.readFile(src)
  if (buf.toString('latin1', 0, 4) !== 'GGUF' || buf.readUInt32LE(4) !== 3) throw new Error('not a GGUF v3 file')
  let off = 8
  const tensorCount = Number(buf.readBigUInt64LE(off))
  const kvCount = Number(buf.readBigUInt64LE(off + 8))
  off += 16
  const readString = () => {
    const len = Number(buf.readBigUInt64LE(off))
    const s = buf.toString('utf8', off + 8, off + 8 + len)
    off += 8 + len
    return s
  }
  const skipValue = (type: number): void => {
    if (type === GGUF_TYPE_STRING) readString()
    else if (type === GGUF_TYPE_ARRAY) {
      const itemType = buf.readUInt32LE(off)
      const n = Number(buf.readBigUInt64LE(off + 4))
      off += 12
      if (itemType in FIXED_SIZE) off += n * FIXED_SIZE[itemType]
      else for (let i = 0; i < n; i++) skipValue(itemType)
    } else off += FIXED_SIZE[type]
  }
  let alignment = DEFAULT_ALIGNMENT_BYTES
  for (let i = 0; i < kvCount; i++) {
    const k = readString()
    const type = buf.readUInt32LE(off)
    off += 4
    if (k === 'general.alignment') alignment = buf.readUInt32LE(off)
    skipValue(type)
  }
  const kvEnd = off
  for (let i = 0; i < tensorCount; i++) {
    readString()
    const dims = buf.readUInt32LE(off)
    off += 4 + dims * 8 + 4 + 8
  }
  const infoEnd = off
  const dataStart = Math.ceil(infoEnd / alignment) * alignment

  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8')
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(b.length))
    return Buffer.concat([len, b])
  }
  const type = Buffer.alloc(4)
  type.writeUInt32LE(GGUF_TYPE_STRING)
  const kv = Buffer.concat([str(key), type, str(value)])
  const head = Buffer.from(buf.subarray(0, kvEnd))
  head.writeBigUInt64LE(BigInt(kvCount + 1), 16)
  const newInfoEnd = infoEnd + kv.length
  const pad = Buffer.alloc(Math.ceil(newInfoEnd / alignment) * alignment - newInfoEnd)
  await fs.writeFile(dest, Buffer.concat([head, kv, buf.subarray(kvEnd, infoEnd), pad, buf.subarray(dataStart)]))
}
