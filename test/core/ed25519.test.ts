// The cache of imported Ed25519 public keys (src/core/ed25519.ts): a cached KeyObject verifies exactly as a freshly
// imported one, and the cache is bounded (least recently used out first). Real keys and signatures from node:crypto.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { ED25519_SPKI_PREFIX, PublicKeyCache, ed25519PublicKey } from '../../src/core/ed25519.ts'

/** A real Ed25519 key pair: the private KeyObject and the raw 32-byte public key (from its DER SPKI). */
function keyPair(): { priv: crypto.KeyObject; raw: Buffer } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519')
  const der = publicKey.export({ format: 'der', type: 'spki' })
  return { priv: privateKey, raw: der.subarray(ED25519_SPKI_PREFIX.length) }
}

test('a cached public key verifies exactly as a freshly imported one', () => {
  const { priv, raw } = keyPair()
  const other = keyPair()
  const msg = Buffer.from('usage record')
  const sig = crypto.sign(null, msg, priv)
  const forged = Buffer.from(sig)
  forged[0] ^= 1
  const fresh = crypto.createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
  const first = ed25519PublicKey(raw)
  // A copy of the bytes, in a larger buffer at an offset: the same key.
  const copy = Buffer.alloc(40)
  raw.copy(copy, 5)
  const cached = ed25519PublicKey(new Uint8Array(copy.buffer, copy.byteOffset + 5, 32))
  assert.equal(cached, first, 'the second import of the same raw key is the cached KeyObject')
  assert.ok(cached.equals(fresh))
  for (const [m, s] of [[msg, sig], [msg, forged], [Buffer.from('another record'), sig]] as const) {
    assert.equal(crypto.verify(null, m, cached, s), crypto.verify(null, m, fresh, s))
  }
  assert.equal(crypto.verify(null, msg, cached, sig), true)
  assert.equal(crypto.verify(null, msg, cached, forged), false)
  assert.equal(crypto.verify(null, msg, ed25519PublicKey(other.raw), sig), false, 'another key does not verify it')
})

test('the cache is bounded: past its size the least recently used key goes first', () => {
  const cache = new PublicKeyCache(3)
  const [a, b, c, d, e] = Array.from({ length: 5 }, () => keyPair().raw)
  const ka = cache.get(a)
  const kb = cache.get(b)
  cache.get(c)
  assert.equal(cache.get(a), ka, 'a hit returns the cached key (and refreshes it)')
  cache.get(d)
  assert.equal(cache.size, 3)
  assert.equal(cache.get(a), ka, 'the refreshed key stayed')
  assert.notEqual(cache.get(b), kb, 'the least recently used key (b) was dropped and is imported anew')
  for (const raw of [c, d, e, a, b]) cache.get(raw)
  assert.equal(cache.size, 3)
})

test('bytes that are not a public key throw and are not cached', () => {
  const cache = new PublicKeyCache(3)
  assert.throws(() => cache.get(new Uint8Array(31)))
  assert.equal(cache.size, 0)
})
