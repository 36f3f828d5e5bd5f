// @ton/core hashes every cell it builds or parses with @ton/crypto's `sha256_sync`, which is jsSHA, pure
// JavaScript working on hex strings: 7–9 % of each node's CPU under load (receipts, vouchers, proofs). This
// puts node:crypto's SHA-256 (OpenSSL) in its place: the same function of the same bytes, about twenty times
// faster. @ton/core reads the function from @ton/crypto's exports at every call, so replacing it there is
// enough; nothing else of either library changes. test/ton/fast-sha256.test.ts checks the digests and the
// cell hashes against jsSHA's.
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'

type Sha256Sync = (source: Buffer | string) => Buffer

/** SHA-256 of `source` (a string as its UTF-8 bytes), as @ton/crypto's sha256_sync defines it. */
export function nodeSha256Sync(source: Buffer | string): Buffer {
  return createHash('sha256').update(typeof source === 'string' ? Buffer.from(source, 'utf-8') : source).digest()
}

let installed: boolean | undefined

/**
 * Makes @ton/core hash with node:crypto. Idempotent. Returns false, changing nothing, when @ton/crypto's
 * layout is not the one this knows (then hashing stays correct, only slower).
 */
export function installFastSha256(): boolean {
  if (installed !== undefined) return installed
  installed = false
  try {
    const primitives = createRequire(import.meta.url)('@ton/crypto/dist/primitives/sha256.js') as { sha256_sync?: Sha256Sync }
    const original = primitives.sha256_sync
    if (typeof original !== 'function') return false
    // Only when both agree on a sample, strings and bytes alike.
    const probe = Buffer.from('cocoon fast sha256 probe')
    if (!original(probe).equals(nodeSha256Sync(probe)) || !original('κόκκος').equals(nodeSha256Sync('κόκκος'))) return false
    primitives.sha256_sync = nodeSha256Sync
    installed = true
  } catch {
    // Another @ton/crypto layout: keep its own hashing.
  }
  return installed
}
