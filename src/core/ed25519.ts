// Ed25519 public keys as node:crypto KeyObjects, imported once per raw key. A node checks many signatures by few
// keys (each receipt and usage record by its worker or proxy, each voucher by its proxy): importing the key anew
// for every one cost ~0.5 ms per request. The cache is bounded, least recently used out first.
import { createPublicKey, type KeyObject } from 'node:crypto'

/** The DER SubjectPublicKeyInfo header of an Ed25519 public key; the 32 raw key bytes follow it. */
export const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** How many imported public keys a process keeps: far more than the workers and proxies one node talks to. */
export const MAX_CACHED_PUBLIC_KEYS = 1024

/** Imported Ed25519 public keys by their raw bytes, at most `max`, least recently used out first. */
export class PublicKeyCache {
  readonly #keys = new Map<string, KeyObject>()
  constructor(readonly max: number) {}

  /** The KeyObject for the raw 32-byte key; throws (and caches nothing) when it is not one. */
  get(raw: Uint8Array): KeyObject {
    const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64')
    let key = this.#keys.get(id)
    if (key) {
      // Refreshed: a Map iterates in insertion order, so the first entry is the least recently used.
      this.#keys.delete(id)
    } else {
      key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
      if (this.#keys.size >= this.max) this.#keys.delete(this.#keys.keys().next().value!)
    }
    this.#keys.set(id, key)
    return key
  }

  get size(): number {
    return this.#keys.size
  }
}

const publicKeys = new PublicKeyCache(MAX_CACHED_PUBLIC_KEYS)

/** A KeyObject for a raw 32-byte Ed25519 public key, imported once and then cached. Throws when `raw` is not one. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  return publicKeys.get(raw)
}
