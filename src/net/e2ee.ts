// End-to-end encryption between the client node and the worker (docs/e2ee.md): HPKE-wrapped content keys
// for k attested recipients, an encrypted request body, and an answer made of counted AEAD records.
//
// Primitives come from well-kept implementations only: RFC 9180 HPKE from @hpke/core (DHKEM X25519,
// HKDF-SHA256, AES-128-GCM) over node:crypto's primitives (./hpke-node.ts), and AES-128-GCM from
// node:crypto. This file only frames them.

import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import type { RecipientContext, SenderContext } from '@hpke/core'
import { nodeHpkeSuite, type X25519Key } from './hpke-node.ts'

/** Format version; bumped on any incompatible change to what is below. */
export const E2EE_VERSION = 1
/**
 * The request envelope's version when it carries a cache scope: the plaintext is the scope (CACHE_SCOPE_BYTES) ‖ the
 * body. Version 1 (no scope) is still read: a worker keeps such requests in a scope of their own.
 */
export const E2EE_SCOPED_VERSION = 2
/** A cache scope: the worker reuses cached prompt state only between requests of the same scope (docs/e2ee.md). */
export const CACHE_SCOPE_BYTES = 16
const CACHE_SCOPE_HEX = new RegExp(`^[0-9a-f]{${CACHE_SCOPE_BYTES * 2}}$`)

/** A plaintext request's cache scope header (HEADERS.cacheScope) when well formed (lower-case hex of CACHE_SCOPE_BYTES), else undefined. */
export function parseCacheScope(v: unknown): string | undefined {
  return typeof v === 'string' && CACHE_SCOPE_HEX.test(v) ? v : undefined
}
/** HPKE `info` for every wrapped key (RFC 9180 §5.1). */
const HPKE_INFO = new TextEncoder().encode('cocoon-e2ee-v1')
/** Exporter context for the answer key and base nonce (RFC 9180 §5.3). */
const ANSWER_EXPORT = new TextEncoder().encode('cocoon-e2ee-v1 answer')
/** Domain prefixes of the additional data, so a request body can never be read as an answer record or the reverse. */
const REQUEST_AAD_PREFIX = Buffer.from('cocoon-e2ee-v1 request\n')
/** The same for an envelope with a cache scope: its version is bound, so neither kind opens as the other. */
const SCOPED_REQUEST_AAD_PREFIX = Buffer.from('cocoon-e2ee-v2 request\n')
const RECORD_AAD_PREFIX = Buffer.from('cocoon-e2ee-v1 record\n')
/** Additional data of each record type, built once (prefix ‖ type byte). */
const RECORD_AAD: ReadonlyMap<number, Buffer> = new Map([1, 2].map((t) => [t, Buffer.concat([RECORD_AAD_PREFIX, Buffer.from([t])])]))

export const KEY_BYTES = 16
export const NONCE_BYTES = 12
export const TAG_BYTES = 16
/** X25519 public key, raw. */
export const HPKE_PUBLIC_KEY_BYTES = 32
/** A wrapped content key: HPKE enc (32) ‖ sealed content key (16 + 16 tag). */
export const WRAPPED_KEY_BYTES = 32 + KEY_BYTES + TAG_BYTES
/** Record header: type (1) ‖ ciphertext length (4, big-endian). */
export const RECORD_HEADER_BYTES = 5
/** Largest record plaintext; a streamed event or a whole JSON answer. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024
/** Recipients a client node encrypts each request to, by default. */
export const DEFAULT_E2EE_RECIPIENTS = 3
/** Most recipients one request may name (bounds the header and the worker's work). */
export const MAX_E2EE_RECIPIENTS = 8
/** Content type of an encrypted request body and of an encrypted answer. */
export const E2EE_CONTENT_TYPE = 'application/vnd.cocoon.e2ee'

/** Record types. The type is authenticated (it is in the additional data). */
export const RECORD = { data: 1, final: 2 } as const
export type RecordType = (typeof RECORD)[keyof typeof RECORD]

/** Tampering, truncation, a wrong key or a malformed envelope. `reason` is safe to log and to show. */
export class E2eeError extends Error {
  readonly name = 'E2eeError'
  constructor(readonly reason: string) {
    super(`end-to-end encryption: ${reason}`)
  }
}

/** Synchronous primitives: no step of HPKE waits for a thread-pool job (./hpke-node.ts). */
const suite = nodeHpkeSuite()

/** Recipient public keys kept imported (a client node encrypts to the same few workers again and again). */
export const RECIPIENT_KEY_CACHE_ENTRIES = 1000
/**
 * HPKE sender contexts kept ready per recipient seen more than once. A sender context (a fresh
 * ephemeral key, the DH and the key schedule) does not depend on the request, so it can be made
 * before the request comes; each is used for exactly one request and then dropped, so preparing
 * it early changes nothing on the wire. This takes the slow part of sealing off the request path.
 */
export const PREPARED_CONTEXTS_PER_RECIPIENT = 2
interface RecipientEntry {
  key: Promise<CryptoKey>
  /** Unused sender contexts for this recipient, each to be taken once, with its answer key already exported. */
  prepared: Array<Promise<ReadySender>>
}
/** A sender context and what it exports for the answer (key ‖ base nonce); neither depends on the request. */
interface ReadySender {
  ctx: SenderContext
  exported: Buffer
}
/** Recipients by hex, oldest use first: the imported public key and prepared contexts (their ephemeral secrets die with the entry). */
const recipients = new Map<string, RecipientEntry>()

/**
 * A sender context for `hex` (already checked to be 64 lowercase hex chars) that no other request has
 * used or will use: a prepared one when there is one, else made now. A recipient seen before gets
 * its prepared contexts topped up in the background.
 */
async function senderContext(hex: string): Promise<ReadySender> {
  let e = recipients.get(hex)
  const seenBefore = e !== undefined
  if (e) {
    // Refresh its place: the map's order is the eviction order.
    recipients.delete(hex)
  } else {
    const entry: RecipientEntry = { key: suite.kem.deserializePublicKey(Buffer.from(hex, 'hex')), prepared: [] }
    // A key that does not import is not kept, so it fails again next time rather than for good.
    entry.key.catch(() => recipients.get(hex) === entry && recipients.delete(hex))
    e = entry
  }
  recipients.set(hex, e)
  while (recipients.size > RECIPIENT_KEY_CACHE_ENTRIES) recipients.delete(recipients.keys().next().value!)
  const taken = e.prepared.shift()
  // Only recipients that come back get contexts made ahead; after this request's own work has started.
  if (seenBefore) {
    const entry = e
    setTimeout(() => refill(entry), 0)
  }
  return taken ?? freshContext(e)
}

async function freshContext(e: RecipientEntry): Promise<ReadySender> {
  const ctx = await suite.createSenderContext({ recipientPublicKey: await e.key, info: HPKE_INFO })
  return { ctx, exported: Buffer.from(await ctx.export(ANSWER_EXPORT, KEY_BYTES + NONCE_BYTES)) }
}

function refill(e: RecipientEntry): void {
  while (e.prepared.length < PREPARED_CONTEXTS_PER_RECIPIENT) {
    const p = freshContext(e)
    // One that fails is dropped (and its error not left unhandled); the request that would have taken it makes its own.
    p.catch(() => {
      const i = e.prepared.indexOf(p)
      if (i >= 0) e.prepared.splice(i, 1)
    })
    e.prepared.push(p)
  }
}

/** Recipients held now (imported keys, each with its prepared contexts), for tests. */
export function recipientKeyCacheSize(): number {
  return recipients.size
}


/** A worker's HPKE key pair. The private key never leaves the process that made it (the TEE). */
export interface HpkeKeyPair {
  /** Raw X25519 public key, lowercase hex (what the attested claims carry). */
  publicKeyHex: string
  privateKey: X25519Key
  /** Kept with the private key, so opening a request need not derive it again. */
  publicKey: X25519Key
  createdAtMs: number
}

export async function generateHpkeKeyPair(now = Date.now()): Promise<HpkeKeyPair> {
  const kp = await suite.kem.generateKeyPair()
  const raw = new Uint8Array(await suite.kem.serializePublicKey(kp.publicKey))
  return { publicKeyHex: Buffer.from(raw).toString('hex'), privateKey: kp.privateKey as unknown as X25519Key, publicKey: kp.publicKey as unknown as X25519Key, createdAtMs: now }
}

/**
 * A worker's HPKE keys: the current one (in its newest certificate) and the previous ones, kept
 * while certificates naming them may still be verified by clients, so a renewal breaks no request.
 */
export class HpkeKeyRing {
  private keys: HpkeKeyPair[] = []

  /** @param retainMs how long a replaced key still opens requests (the certificate lifetime). */
  constructor(private readonly retainMs: number, private readonly now: () => number = Date.now) {}

  /** Makes a fresh key the current one; returns its public key (hex) for the new claims. */
  async rotate(): Promise<string> {
    const k = await generateHpkeKeyPair(this.now())
    const cutoff = this.now() - this.retainMs
    // A key is retired once the key that replaced it is older than the retention time.
    this.keys = [k, ...this.keys.filter((old, i) => i === 0 || this.keys[i - 1].createdAtMs > cutoff)]
    return k.publicKeyHex
  }

  /** The current public key, hex; undefined before the first rotate(). */
  get currentHex(): string | undefined {
    return this.keys[0]?.publicKeyHex
  }

  find(publicKeyHex: string): HpkeKeyPair | undefined {
    return this.keys.find((k) => k.publicKeyHex === publicKeyHex)
  }

  get size(): number {
    return this.keys.length
  }
}

/**
 * The routing data of an encrypted request: what the proxy needs to route, reserve and bill. The
 * client node sends it as canonical JSON in a header; those exact bytes are the additional data of
 * the body and of every wrapped key, so no hop can change them without the worker noticing.
 */
export interface E2eeRoute {
  v: 1
  /** The endpoint, e.g. /v1/chat/completions. */
  path: string
  model: string
  /** The app's max_tokens (or max_completion_tokens); absent: the worker's cap. */
  maxTokens?: number
  stream: boolean
  requestId: string
  maxCoefficient: number
}

export function encodeRoute(r: E2eeRoute): string {
  const o: Record<string, unknown> = { v: 1, path: r.path, model: r.model, stream: r.stream, requestId: r.requestId, maxCoefficient: r.maxCoefficient }
  if (r.maxTokens !== undefined) o.maxTokens = r.maxTokens
  const sorted: Record<string, unknown> = {}
  for (const k of Object.keys(o).sort()) sorted[k] = o[k]
  return JSON.stringify(sorted)
}

/** Parses a route header strictly (canonical bytes only, so two parsers never disagree about what was authenticated). */
export function parseRoute(text: unknown): E2eeRoute {
  if (typeof text !== 'string' || text.length > 4096) throw new E2eeError('route header missing or too long')
  let x: Record<string, unknown>
  try {
    x = JSON.parse(text) as Record<string, unknown>
  } catch {
    throw new E2eeError('route header is not JSON')
  }
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new E2eeError('route header is not an object')
  if (x.v !== 1) throw new E2eeError('unsupported route version')
  if (typeof x.path !== 'string' || typeof x.model !== 'string' || !x.model || typeof x.requestId !== 'string' || typeof x.stream !== 'boolean') {
    throw new E2eeError('route header lacks path, model, stream or requestId')
  }
  if (!Number.isSafeInteger(x.maxCoefficient) || (x.maxCoefficient as number) <= 0) throw new E2eeError('route maxCoefficient must be a positive integer')
  if (x.maxTokens !== undefined && (!Number.isSafeInteger(x.maxTokens) || (x.maxTokens as number) <= 0)) throw new E2eeError('route maxTokens must be a positive integer')
  const r = x as unknown as E2eeRoute
  if (encodeRoute(r) !== text) throw new E2eeError('route header is not canonical')
  return r
}

/**
 * The content type of a sealed multipart body (a transcription), read from inside the encryption.
 * The client node encodes the form itself, and such a body begins with its delimiter line
 * (`--BOUNDARY` CRLF, no preamble): the boundary travels encrypted, as the body's first line, and
 * nothing in clear names it. Throws E2eeError for a body that does not begin so.
 */
export function sealedMultipartType(body: Uint8Array): string {
  const head = Buffer.from(body.buffer, body.byteOffset, Math.min(body.byteLength, 2 + MAX_BOUNDARY_CHARS + 2)).toString('latin1')
  // RFC 2046 §5.1.1 allows 1-70 characters; only those that need no quoting in a header parameter are taken.
  const m = /^--([0-9A-Za-z'+_.-]{1,70})\r\n/.exec(head)
  if (!m) throw new E2eeError('the decrypted body does not begin with a multipart delimiter line')
  return `multipart/form-data; boundary=${m[1]}`
}
const MAX_BOUNDARY_CHARS = 70

/** One recipient's wrapped content key: the recipient's HPKE public key (hex) and enc ‖ sealed key. */
export interface WrappedKey {
  recipient: string
  wrapped: Uint8Array
}

/** Header value listing wrapped keys: `recipientHex=base64url,…`. */
export function encodeWrappedKeys(keys: WrappedKey[]): string {
  return keys.map((k) => `${k.recipient}=${Buffer.from(k.wrapped).toString('base64url')}`).join(',')
}

export function parseWrappedKeys(text: unknown): WrappedKey[] {
  if (typeof text !== 'string' || !text) throw new E2eeError('no wrapped keys')
  const parts = text.split(',')
  if (parts.length > MAX_E2EE_RECIPIENTS) throw new E2eeError(`more than ${MAX_E2EE_RECIPIENTS} recipients`)
  return parts.map((p) => {
    const m = /^([0-9a-f]{64})=([A-Za-z0-9_-]+)$/.exec(p)
    if (!m) throw new E2eeError('malformed wrapped key')
    const wrapped = new Uint8Array(Buffer.from(m[2], 'base64url'))
    if (wrapped.length !== WRAPPED_KEY_BYTES) throw new E2eeError('wrapped key has the wrong length')
    return { recipient: m[1], wrapped }
  })
}

/** What the client node keeps to read the answer: one answer key per recipient (whichever worker answers). */
export interface AnswerKeys {
  keys: Array<{ recipient: string; key: Buffer; nonce: Buffer }>
}

export interface SealedRequest {
  /** The encrypted body: version (1, or 2 with a scope) ‖ AES-128-GCM(content key, zero nonce, route AAD) ‖ tag. */
  body: Buffer
  keys: WrappedKey[]
  answer: AnswerKeys
}

/**
 * Encrypts `body` once with a fresh content key and wraps that key for each recipient (raw X25519
 * public keys, hex, each already verified by the caller's attestation policy). With `cacheScope`
 * (CACHE_SCOPE_BYTES), the envelope is version 2 and the scope travels encrypted before the body.
 */
export async function sealRequest(body: Uint8Array, routeHeader: string, recipients: string[], cacheScope?: Uint8Array): Promise<SealedRequest> {
  if (recipients.length === 0) throw new E2eeError('no recipients')
  if (recipients.length > MAX_E2EE_RECIPIENTS) throw new E2eeError(`more than ${MAX_E2EE_RECIPIENTS} recipients`)
  if (cacheScope !== undefined && cacheScope.length !== CACHE_SCOPE_BYTES) throw new E2eeError(`a cache scope has ${CACHE_SCOPE_BYTES} bytes`)
  const route = Buffer.from(routeHeader, 'utf8')
  const contentKey = randomBytes(KEY_BYTES)
  // A fresh key per request, used once: a zero nonce is safe.
  const c = createCipheriv('aes-128-gcm', contentKey, Buffer.alloc(NONCE_BYTES))
  c.setAAD(Buffer.concat([cacheScope ? SCOPED_REQUEST_AAD_PREFIX : REQUEST_AAD_PREFIX, route]))
  const ct = cacheScope
    ? Buffer.concat([Buffer.from([E2EE_SCOPED_VERSION]), c.update(cacheScope), c.update(body), c.final(), c.getAuthTag()])
    : Buffer.concat([Buffer.from([E2EE_VERSION]), c.update(body), c.final(), c.getAuthTag()])
  const keys: WrappedKey[] = []
  const answer: AnswerKeys = { keys: [] }
  await Promise.all(
    recipients.map(async (recipient, i) => {
      if (!/^[0-9a-f]{64}$/.test(recipient)) throw new E2eeError('recipient key must be 64 lowercase hex chars')
      const { ctx, exported } = await senderContext(recipient)
      const sealedKey = new Uint8Array(await ctx.seal(contentKey, route))
      keys[i] = { recipient, wrapped: new Uint8Array(Buffer.concat([Buffer.from(ctx.enc), sealedKey])) }
      answer.keys[i] = { recipient, key: exported.subarray(0, KEY_BYTES), nonce: exported.subarray(KEY_BYTES) }
    }),
  )
  return { body: ct, keys, answer }
}

/** What a worker recovers from a request: the plaintext body, the route it was bound to and the answer's writer. */
export interface OpenedRequest {
  body: Buffer
  /** The request's cache scope, hex (version 2); absent for a version 1 envelope. */
  cacheScope?: string
  route: E2eeRoute
  answer: AnswerWriter
  /** SHA-256 of the HPKE enc, hex: names this request for the replay guard. */
  encHash: string
}

/**
 * Opens a request with the recipient's key. `routeHeader` is the route exactly as received; any
 * change to it, the body or the wrapped key fails here.
 */
export async function openRequest(body: Uint8Array, routeHeader: string, wrapped: WrappedKey, ring: HpkeKeyRing): Promise<OpenedRequest> {
  const route = parseRoute(routeHeader)
  const mine = ring.find(wrapped.recipient)
  if (!mine) throw new E2eeError('the wrapped key is not for a key of this worker')
  if (wrapped.wrapped.length !== WRAPPED_KEY_BYTES) throw new E2eeError('wrapped key has the wrong length')
  const aad = Buffer.from(routeHeader, 'utf8')
  let ctx: RecipientContext
  let contentKey: Buffer
  try {
    // The pair, not the private key alone: @hpke/core would otherwise derive the public key again for each request.
    const recipientKey = { privateKey: mine.privateKey, publicKey: mine.publicKey } as unknown as CryptoKeyPair
    ctx = await suite.createRecipientContext({ recipientKey, enc: wrapped.wrapped.subarray(0, 32), info: HPKE_INFO })
    contentKey = Buffer.from(await ctx.open(wrapped.wrapped.subarray(32), aad))
  } catch {
    throw new E2eeError('the wrapped key does not open (wrong recipient, or the key or route was changed)')
  }
  const version = body[0]
  if (body.length < 1 + TAG_BYTES || (version !== E2EE_VERSION && version !== E2EE_SCOPED_VERSION)) throw new E2eeError('request body is not an encrypted envelope of a known version')
  const d = createDecipheriv('aes-128-gcm', contentKey, Buffer.alloc(NONCE_BYTES))
  d.setAAD(Buffer.concat([version === E2EE_SCOPED_VERSION ? SCOPED_REQUEST_AAD_PREFIX : REQUEST_AAD_PREFIX, aad]))
  d.setAuthTag(Buffer.from(body.subarray(body.length - TAG_BYTES)))
  let plain: Buffer
  try {
    plain = Buffer.concat([d.update(body.subarray(1, body.length - TAG_BYTES)), d.final()])
  } catch {
    throw new E2eeError('request body does not authenticate (changed in transit, or bound to other routing headers)')
  }
  let cacheScope: string | undefined
  if (version === E2EE_SCOPED_VERSION) {
    if (plain.length < CACHE_SCOPE_BYTES) throw new E2eeError('request body is shorter than its cache scope')
    cacheScope = plain.subarray(0, CACHE_SCOPE_BYTES).toString('hex')
    plain = plain.subarray(CACHE_SCOPE_BYTES)
  }
  const exported = Buffer.from(await ctx.export(ANSWER_EXPORT, KEY_BYTES + NONCE_BYTES))
  return {
    body: plain,
    ...(cacheScope !== undefined ? { cacheScope } : {}),
    route,
    answer: new AnswerWriter(exported.subarray(0, KEY_BYTES), exported.subarray(KEY_BYTES)),
    encHash: createHash('sha256').update(wrapped.wrapped.subarray(0, 32)).digest('hex'),
  }
}

/** The nonce of record `counter`: the base nonce with the counter XORed into its last 8 bytes (big-endian). Exported for tests. */
export function recordNonce(base: Buffer, counter: number): Buffer {
  const n = Buffer.from(base)
  if (counter <= 0xffffffff) {
    // The usual case, without BigInt: the counter fits the last 4 bytes, so only they change.
    n.writeUInt32BE((n.readUInt32BE(NONCE_BYTES - 4) ^ counter) >>> 0, NONCE_BYTES - 4)
    return n
  }
  n.writeBigUInt64BE(n.readBigUInt64BE(NONCE_BYTES - 8) ^ BigInt(counter), NONCE_BYTES - 8)
  return n
}

function recordAad(type: number): Buffer {
  return RECORD_AAD.get(type) ?? Buffer.concat([RECORD_AAD_PREFIX, Buffer.from([type])])
}

/** Worker side: turns answer bytes into records; the n-th record uses nonce base XOR n. */
export class AnswerWriter {
  private counter = 0
  private ended = false

  constructor(private readonly key: Buffer, private readonly nonce: Buffer) {}

  /** One data record (a whole JSON answer, or one SSE event). */
  data(plain: Uint8Array | string): Buffer {
    return this.seal(RECORD.data, typeof plain === 'string' ? Buffer.from(plain, 'utf8') : plain)
  }

  /** The record that marks the end; nothing may follow it. */
  final(): Buffer {
    const r = this.seal(RECORD.final, Buffer.alloc(0))
    this.ended = true
    return r
  }

  private seal(type: RecordType, plain: Uint8Array): Buffer {
    if (this.ended) throw new E2eeError('record after the final record')
    if (plain.length > MAX_RECORD_BYTES) throw new E2eeError('record too large')
    const c = createCipheriv('aes-128-gcm', this.key, recordNonce(this.nonce, this.counter++))
    c.setAAD(recordAad(type))
    // One buffer for the whole record (header ‖ ciphertext ‖ tag): a streamed answer seals one per token.
    const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + plain.length + TAG_BYTES)
    out[0] = type
    out.writeUInt32BE(plain.length + TAG_BYTES, 1)
    let at = RECORD_HEADER_BYTES + c.update(plain).copy(out, RECORD_HEADER_BYTES)
    at += c.final().copy(out, at)
    c.getAuthTag().copy(out, at)
    return out
  }
}

/**
 * Client side: reads records from the answer's bytes as they arrive, in any chunking. The first
 * record decides which recipient answered (only its key opens it). A record out of order, replayed,
 * changed, or missing, and an answer without its final record, throw E2eeError.
 */
export class AnswerReader {
  private buf: Buffer = Buffer.alloc(0)
  private counter = 0
  private chosen?: { recipient: string; key: Buffer; nonce: Buffer }
  private done = false

  constructor(private readonly keys: AnswerKeys) {}

  /** The recipient (HPKE public key, hex) whose worker answered, once the first record is read. */
  get recipient(): string | undefined {
    return this.chosen?.recipient
  }

  /** True once the final record was read. */
  get complete(): boolean {
    return this.done
  }

  /** Feeds bytes; returns the plaintext of every data record completed by them. */
  push(chunk: Uint8Array): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const out: Buffer[] = []
    while (this.buf.length >= RECORD_HEADER_BYTES) {
      if (this.done) throw new E2eeError('bytes after the final record')
      const type = this.buf[0]
      const len = this.buf.readUInt32BE(1)
      if (type !== RECORD.data && type !== RECORD.final) throw new E2eeError(`unknown record type ${type}`)
      if (len < TAG_BYTES || len > MAX_RECORD_BYTES + TAG_BYTES) throw new E2eeError('record length out of range')
      if (this.buf.length < RECORD_HEADER_BYTES + len) break
      const body = this.buf.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + len)
      this.buf = this.buf.subarray(RECORD_HEADER_BYTES + len)
      const plain = this.open(type, body)
      if (type === RECORD.final) {
        if (plain.length !== 0) throw new E2eeError('final record carries data')
        this.done = true
      } else out.push(plain)
    }
    if (this.done && this.buf.length > 0) throw new E2eeError('bytes after the final record')
    return out
  }

  /** Call when the answer's bytes end: throws unless the final record was read. */
  end(): void {
    if (!this.done) throw new E2eeError(this.buf.length ? 'answer ends inside a record' : 'answer ends without its final record (truncated)')
  }

  private open(type: number, body: Buffer): Buffer {
    const candidates = this.chosen ? [this.chosen] : this.keys.keys
    for (const k of candidates) {
      const d = createDecipheriv('aes-128-gcm', k.key, recordNonce(k.nonce, this.counter))
      d.setAAD(recordAad(type))
      d.setAuthTag(body.subarray(body.length - TAG_BYTES))
      try {
        const plain = d.update(body.subarray(0, body.length - TAG_BYTES))
        // GCM gives nothing more at the end; final() checks the tag (and throws when it does not match).
        d.final()
        this.chosen = k
        this.counter++
        return plain
      } catch {
        // Not this key (first record), or tampered.
      }
    }
    throw new E2eeError(this.chosen ? `record ${this.counter} does not authenticate (changed, reordered, replayed or dropped)` : 'the first record opens with no recipient key (not from a chosen worker, or changed)')
  }
}

/**
 * Worker side: refuses a request seen before (same HPKE enc), so a proxy cannot replay a client's
 * request to run (and bill) it twice. Entries live as long as the request could still be valid.
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>()

  constructor(private readonly ttlMs: number, private readonly maxEntries = 100_000, private readonly now: () => number = Date.now) {}

  /** Throws E2eeError if `encHash` was seen within the TTL; otherwise remembers it. */
  check(encHash: string): void {
    const t = this.now()
    for (const [k, exp] of this.seen) {
      if (exp > t && this.seen.size < this.maxEntries) break
      this.seen.delete(k)
    }
    const exp = this.seen.get(encHash)
    if (exp !== undefined && exp > t) throw new E2eeError('request replayed')
    this.seen.set(encHash, t + this.ttlMs)
  }
}
