// The HPKE suite of end-to-end encryption (docs/e2ee.md), with its primitives on synchronous node:crypto.
//
// RFC 9180 itself (the DHKEM, the labels, the key schedule, the contexts, sequence numbers and export)
// stays @hpke/core's: its CipherSuite takes the KEM, KDF and AEAD as objects, and here they are
// @hpke/core's own classes with only the primitive calls underneath swapped. @hpke/core's defaults
// run every primitive through WebCrypto, where each X25519, HMAC, HKDF and AES-GCM step is a job on
// libuv's thread pool: about 20 round trips to open one request (1–3 ms, more on a loaded machine).
// node:crypto's X25519, HMAC-SHA256, HKDF-SHA256 and AES-128-GCM are the same OpenSSL primitives,
// called synchronously: the bytes on the wire are the same (test/net/hpke-node.test.ts checks them
// against @hpke/core's WebCrypto suite both ways). Nothing here is hand-written cryptography.
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto'
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core'

/** An X25519 key as node:crypto holds it; passed through @hpke/core where its types say CryptoKey. */
export type X25519Key = KeyObject

type Bytes = ArrayBufferLike | ArrayBufferView

function bytes(x: Bytes): Buffer {
  return ArrayBuffer.isView(x) ? Buffer.from(x.buffer, x.byteOffset, x.byteLength) : Buffer.from(x as ArrayBuffer)
}

/**
 * An ArrayBuffer holding exactly `b` (what @hpke/core expects back from a primitive): `b`'s own when
 * `b` is all of it (node:crypto's fresh digests, secrets and ciphertexts are), else a copy.
 * Only for buffers nothing else holds: each step of a handshake then allocates half as much.
 */
function arrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.buffer.byteLength === b.length && b.buffer instanceof ArrayBuffer) return b.buffer
  const out = new ArrayBuffer(b.length)
  new Uint8Array(out).set(b)
  return out
}

const X25519_KEY_BYTES = 32
/** PKCS#8 DER prefix of a raw X25519 private key (RFC 8410): the 32 key bytes follow. */
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')

/** Raw bytes of public keys already serialized (a worker's own key is serialized for every request it opens). */
const rawOf = new WeakMap<X25519Key, Buffer>()

// Public keys go in and out as JWK: node:crypto parses a JWK about ten times faster than SPKI DER.
function rawPublic(key: X25519Key): Buffer {
  let raw = rawOf.get(key)
  if (!raw) {
    const x = key.export({ format: 'jwk' }).x
    if (typeof x !== 'string') throw new Error('not an X25519 public key')
    raw = Buffer.from(x, 'base64url')
    rawOf.set(key, raw)
  }
  return raw
}

function publicFromRaw(raw: Buffer): X25519Key {
  if (raw.length !== X25519_KEY_BYTES) throw new Error(`an X25519 public key has ${X25519_KEY_BYTES} bytes, not ${raw.length}`)
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' })
  rawOf.set(key, Buffer.from(raw))
  return key
}

function privateFromRaw(raw: Buffer): X25519Key {
  if (raw.length !== X25519_KEY_BYTES) throw new Error(`an X25519 private key has ${X25519_KEY_BYTES} bytes, not ${raw.length}`)
  // As a JWK: about 40 µs, where PKCS#8 DER costs about 0.5 ms on Node 20 (OpenSSL 3's decoder lookup), and
  // every request's ephemeral key comes through here. For a private OKP JWK Node builds the key from `d` alone
  // and only checks that `x` is a string (the public key is derived from `d`; test/net/hpke-node.test.ts checks
  // it against the DER import). Should a Node release ever refuse the empty `x`, the DER import still works.
  try {
    return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: raw.toString('base64url'), x: '' }, format: 'jwk' })
  } catch {
    return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' })
  }
}

/** X25519 for @hpke/core's DHKEM (its DhkemPrimitives contract), on node:crypto KeyObjects. */
class NodeX25519 {
  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    // A copy: the raw bytes are cached for this key and must not be shared.
    return arrayBuffer(Buffer.from(rawPublic(key as unknown as X25519Key)))
  }
  async deserializePublicKey(key: Bytes): Promise<CryptoKey> {
    return publicFromRaw(bytes(key)) as unknown as CryptoKey
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    const d = (key as unknown as X25519Key).export({ format: 'jwk' }).d
    if (typeof d !== 'string') throw new Error('not an X25519 private key')
    return arrayBuffer(Buffer.from(d, 'base64url'))
  }
  async deserializePrivateKey(key: Bytes): Promise<CryptoKey> {
    return privateFromRaw(bytes(key)) as unknown as CryptoKey
  }
  async importKey(format: 'raw' | 'jwk', key: ArrayBuffer | JsonWebKey, isPublic: boolean): Promise<CryptoKey> {
    if (format === 'raw') return (isPublic ? publicFromRaw(bytes(key as ArrayBuffer)) : privateFromRaw(bytes(key as ArrayBuffer))) as unknown as CryptoKey
    const jwk = key as JsonWebKey
    if (jwk.kty !== 'OKP' || jwk.crv !== 'X25519') throw new Error('not an X25519 JWK')
    return (isPublic ? createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: jwk.x! }, format: 'jwk' }) : createPrivateKey({ key: jwk as never, format: 'jwk' })) as unknown as CryptoKey
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    // 32 random bytes are an X25519 private key (RFC 7748 clamps them on use). Not generateKeyPairSync:
    // on Node 20 its key-generation job, collected by the GC while that same key is being exported
    // (as JWK, to serialize it), locks the key's mutex a second time and deadlocks the process for good
    // (seen in CI; test/net/hpke-node.test.ts repeats it). A key imported from bytes has no such job.
    const privateKey = privateFromRaw(randomBytes(X25519_KEY_BYTES))
    return { privateKey, publicKey: createPublicKey(privateKey) } as unknown as CryptoKeyPair
  }
  async deriveKeyPair(): Promise<CryptoKeyPair> {
    // DeriveKeyPair (RFC 9180 §7.1.3) is for deterministic keys and tests; Cocoon never derives one.
    throw new Error('deriveKeyPair is not used by Cocoon')
  }
  async derivePublicKey(key: CryptoKey): Promise<CryptoKey> {
    return createPublicKey(key as unknown as X25519Key) as unknown as CryptoKey
  }
  async dh(sk: CryptoKey, pk: CryptoKey): Promise<ArrayBuffer> {
    const shared = diffieHellman({ privateKey: sk as unknown as X25519Key, publicKey: pk as unknown as X25519Key })
    // RFC 9180 §7.1.4 (and WebCrypto's X25519): an all-zero shared secret (a low-order public key) aborts.
    if (shared.every((b) => b === 0)) throw new Error('X25519 gave the all-zero shared secret')
    return arrayBuffer(shared)
  }
}

/**
 * @hpke/core's HKDF-SHA256 (its labels and their layout) with HMAC and HKDF from node:crypto. The
 * three methods are RFC 5869's: Extract is one HMAC, Expand the T(i) chain, and ExtractAndExpand the one then the other.
 */
class NodeHkdfSha256 extends HkdfSha256 {
  override async extract(salt: Bytes, ikm: Bytes): Promise<ArrayBuffer> {
    // An empty salt is HashLen zero bytes (RFC 5869 §2.2); HMAC pads its key with zeros, so both are the same key.
    return arrayBuffer(createHmac('sha256', bytes(salt)).update(bytes(ikm)).digest())
  }
  override async expand(prk: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    if (len > 255 * this.hashSize) throw new Error('HKDF-Expand: too long')
    const key = bytes(prk)
    const infoBytes = bytes(info)
    const blocks: Buffer[] = []
    let prev = Buffer.alloc(0)
    for (let i = 1, have = 0; have < len; i++) {
      prev = createHmac('sha256', key).update(prev).update(infoBytes).update(Buffer.from([i])).digest()
      blocks.push(prev)
      have += prev.length
    }
    return arrayBuffer(blocks.length === 1 && len === prev.length ? prev : Buffer.concat(blocks).subarray(0, len))
  }
  override async extractAndExpand(salt: Bytes, ikm: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    // Two HMACs for the usual len <= 32; hkdfSync gives the same bytes but costs twice as much per call (it builds key objects).
    return this.expand(await this.extract(salt, ikm), info, len)
  }
}

/** DHKEM(X25519, HKDF-SHA256) of @hpke/core, with X25519 and HKDF on node:crypto. */
class NodeDhkemX25519HkdfSha256 extends DhkemX25519HkdfSha256 {
  constructor() {
    super()
    const kdf = new NodeHkdfSha256()
    // The KEM's own suite id (RFC 9180 §4.1): "KEM" ‖ I2OSP(kem_id, 2).
    kdf.init(new Uint8Array([0x4b, 0x45, 0x4d, 0x00, 0x20]))
    this._kdf = kdf
    this._prim = new NodeX25519()
  }
}

/** AES-128-GCM for @hpke/core's contexts (its AeadInterface), from node:crypto. */
class NodeAes128Gcm extends Aes128Gcm {
  override createEncryptionContext(key: Bytes): { seal(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer>; open(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> } {
    const k = Buffer.from(bytes(key))
    return {
      async seal(iv, data, aad) {
        const c = createCipheriv('aes-128-gcm', k, bytes(iv))
        c.setAAD(bytes(aad))
        return arrayBuffer(Buffer.concat([c.update(bytes(data)), c.final(), c.getAuthTag()]))
      },
      async open(iv, data, aad) {
        const d = bytes(data)
        if (d.length < 16) throw new Error('ciphertext shorter than its tag')
        const c = createDecipheriv('aes-128-gcm', k, bytes(iv))
        c.setAAD(bytes(aad))
        c.setAuthTag(d.subarray(d.length - 16))
        return arrayBuffer(Buffer.concat([c.update(d.subarray(0, d.length - 16)), c.final()]))
      },
    }
  }
}

/** DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM: @hpke/core's RFC 9180, node:crypto's primitives. */
export function nodeHpkeSuite(): CipherSuite {
  return new CipherSuite({ kem: new NodeDhkemX25519HkdfSha256(), kdf: new NodeHkdfSha256(), aead: new NodeAes128Gcm() })
}

/** The raw 32-byte public key of an X25519 KeyObject. */
export function x25519PublicRaw(key: X25519Key): Buffer {
  return rawPublic(key)
}
