// The receipt: one TON cell per answered request, signed by the worker's attested key (TL-B in docs/receipts.md).
import crypto from 'node:crypto'
import { BitReader, CellBuilder, parseBoc, serializeCells, type BuiltCell, type CellRef, type RawCell } from './boc.ts'
import { priceRequest, type PriceParams } from '../pricing.ts'
import type { SignedUsage, Usage } from '../../core/usage.ts'
import { ed25519PublicKey } from '../../core/ed25519.ts'

/** Bumped on any change to the receipt layout. Version 2 adds first_token_at_ms; version 1 receipts still decode and verify. */
export const RECEIPT_VERSION = 2
/** The receipt versions this build reads. */
export const RECEIPT_VERSIONS_READ: readonly number[] = [1, 2]
/** Prefix of a receipt body cell: ASCII "rcp1". */
export const RECEIPT_BODY_TAG = 0x72637031
/** What a receipt signature covers: this domain tag, then the body cell's 32-byte representation hash. */
const RECEIPT_SIG_DOMAIN = Buffer.from('cocoon-receipt-v1\n', 'utf8')

/** Who signed: the worker that produced the answer, or the proxy when that worker died before signing. */
export type ReceiptSigner = 'worker' | 'proxy'
const SIGNERS: ReceiptSigner[] = ['worker', 'proxy']

/** Finish reasons, by their code in the cell. */
export const FINISH_REASONS = ['other', 'stop', 'length', 'cancelled', 'error', 'timeout', 'content_filter', 'tool_calls'] as const
export type FinishReason = (typeof FINISH_REASONS)[number]

export function finishReasonOf(s: string): FinishReason {
  return (FINISH_REASONS as readonly string[]).includes(s) ? (s as FinishReason) : 'other'
}

/** Every field of a receipt. Hashes are 32 bytes; keys are raw Ed25519 public keys. */
export interface ReceiptFields {
  version: number
  signer: ReceiptSigner
  requestId: string
  /** HMAC-SHA256 keyed with the request's salt over the request body the worker received. */
  requestHash: Buffer
  /** HMAC-SHA256 keyed with the salt over the answer text as the app receives it. */
  answerHash: Buffer
  /** HMAC-SHA256 keyed with the salt over the sampling parameters as the worker applied them. */
  paramsHash: Buffer
  modelId: string
  modelHash: Buffer
  /** The worker's image hash (from its attestation). */
  imageHash: Buffer
  /** The worker's attested certificate key. */
  workerKey: Buffer
  /** The proxy's payment key (the key its proxy contract knows). */
  proxyKey: Buffer
  promptTokens: number
  cachedTokens: number
  completionTokens: number
  reasoningTokens: number
  /** The worker's price factor, 1000 = 1.0x. */
  coefficient: number
  pricePerTokenNano: bigint
  workerFeePerTokenNano: bigint
  adjustedTokens: bigint
  /** What the client pays for this answer: adjustedTokens × pricePerTokenNano. */
  costNano: bigint
  startedAtMs: number
  /**
   * When the answer's first token was produced (unix ms); 0 when unknown or there was none. Version 2 on;
   * a version 1 receipt has none (0).
   */
  firstTokenAtMs: number
  endedAtMs: number
  finishReason: FinishReason
}

/**
 * A receipt as it travels and is stored: its bag of cells, that cell's hash and depth (its key and weight in the
 * log's tree), the decoded fields, and the signature over its body. A receipt's BoC is canonical: exactly what
 * encodeReceipt writes for its fields and signature (what @ton/core's toBoc() writes for the same cells).
 */
export interface Receipt extends CellRef {
  boc: Buffer
  fields: ReceiptFields
  signature: Buffer
  /** The body cell's hash: what the signature covers, after its domain tag. */
  bodyHash: Buffer
}

/**
 * A usage signature together with the receipt that binds it to the request, the answer and the
 * price. The worker signs both; the proxy keeps both (and logs the receipt).
 */
export interface SignedReceipt extends SignedUsage {
  receipt: Receipt
}

export class ReceiptFormatError extends Error {
  readonly name = 'ReceiptFormatError'
}

/** Most bytes a receipt's text (request id, model id) may have; longer ones are chained over cells (as storeStringTail does). */
const TEXT_BYTES_PER_CELL = 127

/** A text as a snake string: each cell takes as many whole bytes as fit, and the rest goes on in its one reference. */
function textCell(bytes: Buffer, at = 0): BuiltCell {
  const b = new CellBuilder().bytes(bytes.subarray(at, at + TEXT_BYTES_PER_CELL))
  if (at + TEXT_BYTES_PER_CELL < bytes.length) b.ref(textCell(bytes, at + TEXT_BYTES_PER_CELL))
  return b.end()
}

/** The body cell: everything the signature covers. */
function receiptBody(f: ReceiptFields): BuiltCell {
  const ids = new CellBuilder().bytes(hash32(f.modelHash)).ref(textCell(Buffer.from(f.requestId, 'utf8'))).ref(textCell(Buffer.from(f.modelId, 'utf8'))).end()
  const parties = new CellBuilder().bytes(hash32(f.imageHash)).bytes(hash32(f.workerKey)).bytes(hash32(f.proxyKey)).end()
  const usage = new CellBuilder()
    .uint(f.promptTokens, 32)
    .uint(f.cachedTokens, 32)
    .uint(f.completionTokens, 32)
    .uint(f.reasoningTokens, 32)
    .uint(f.coefficient, 32)
    .coins(f.pricePerTokenNano)
    .coins(f.workerFeePerTokenNano)
    .uint(f.adjustedTokens, 64)
    .coins(f.costNano)
    .end()
  const b = new CellBuilder()
    .uint(RECEIPT_BODY_TAG, 32)
    .uint(f.version, 8)
    .uint(SIGNERS.indexOf(f.signer), 8)
    .uint(FINISH_REASONS.indexOf(f.finishReason), 8)
    .bytes(hash32(f.requestHash))
    .bytes(hash32(f.answerHash))
    .bytes(hash32(f.paramsHash))
    .uint(f.startedAtMs, 64)
    .uint(f.endedAtMs, 64)
  if (f.version >= 2) b.uint(f.firstTokenAtMs, 64)
  return b.ref(ids).ref(parties).ref(usage).end()
}

function hash32(b: Buffer): Buffer {
  if (b.length !== 32) throw new ReceiptFormatError(`a receipt hash or key is 32 bytes, not ${b.length}`)
  return b
}

/** The bytes a receipt signature covers. */
export function receiptSigningPayload(bodyHash: Buffer): Buffer {
  return Buffer.concat([RECEIPT_SIG_DOMAIN, bodyHash])
}

/**
 * The receipt for `fields` and `signature`: the receipt cell (the signature, then the body as a reference) as a BoC,
 * with its hash. The signature is not checked here (verifyReceiptSignature does).
 */
export function encodeReceipt(fields: ReceiptFields, signature: Uint8Array, body: BuiltCell = receiptBody(fields)): Receipt {
  if (signature.length !== 64) throw new ReceiptFormatError('a receipt signature is 64 bytes')
  const root = new CellBuilder().bytes(signature).ref(body).end()
  return { boc: serializeCells(root), hash: root.hash, depth: root.depth, fields, signature: Buffer.from(signature), bodyHash: body.hash }
}

/** Builds and signs a receipt with `sign` (the signer's Ed25519 key). */
export async function signReceipt(f: ReceiptFields, sign: (data: Uint8Array) => Promise<Uint8Array> | Uint8Array): Promise<Receipt> {
  const body = receiptBody(f)
  return encodeReceipt(f, await sign(receiptSigningPayload(body.hash)), body)
}

/** Largest receipt BoC read: a receipt is about 500 bytes, more with long ids. */
const MAX_RECEIPT_BOC_BYTES = 16 * 1024

function formatError(why: string): never {
  throw new ReceiptFormatError(`not a receipt cell: ${why}`)
}

/**
 * Decodes a receipt's BoC (bytes or base64). Throws ReceiptFormatError when it is not one, or not in the canonical
 * form encodeReceipt writes (so one receipt has one encoding, and its hash is that of the cells read).
 */
export function decodeReceiptBoc(boc: Buffer | string): Receipt {
  const bytes = typeof boc === 'string' ? Buffer.from(boc, 'base64') : boc
  if (bytes.length > MAX_RECEIPT_BOC_BYTES) throw new ReceiptFormatError(`a receipt BoC of ${bytes.length} bytes (at most ${MAX_RECEIPT_BOC_BYTES})`)
  const { cells, root } = parseBoc(bytes, (why) => {
    throw new ReceiptFormatError(`not a BoC: ${why}`)
  })
  const cell = (i: number, refs: number): { r: BitReader; refs: number[] } => {
    const c = cells[i]
    if (c.exotic) formatError('an exotic cell')
    if (c.refs.length !== refs) formatError(`a cell with ${c.refs.length} references where ${refs} belong`)
    return { r: new BitReader(c.data, c.d2, formatError), refs: c.refs }
  }
  const text = (i: number): string => {
    const parts: Buffer[] = []
    for (let at: number | undefined = i; at !== undefined; ) {
      const c: RawCell = cells[at]
      if (c.exotic || c.refs.length > 1) formatError('a text cell with more than one reference')
      const r = new BitReader(c.data, c.d2, formatError)
      if (r.left % 8 !== 0) formatError('a text cell of partial bytes')
      parts.push(r.bytes(r.left / 8))
      at = c.refs[0]
    }
    return Buffer.concat(parts).toString('utf8')
  }
  const top = cell(root, 1)
  const signature = top.r.bytes(64)
  const body = cell(top.refs[0], 3)
  const b = body.r
  if (b.num(32) !== RECEIPT_BODY_TAG) throw new ReceiptFormatError('not a receipt (bad tag)')
  const version = b.num(8)
  if (!RECEIPT_VERSIONS_READ.includes(version)) throw new ReceiptFormatError(`receipt version ${version}, this build reads ${RECEIPT_VERSIONS_READ.join(' and ')}`)
  const signer = SIGNERS[b.num(8)]
  const finishReason = FINISH_REASONS[b.num(8)]
  if (!signer || !finishReason) throw new ReceiptFormatError('unknown signer or finish reason')
  const requestHash = b.bytes(32)
  const answerHash = b.bytes(32)
  const paramsHash = b.bytes(32)
  const startedAtMs = b.num(64)
  const endedAtMs = b.num(64)
  const firstTokenAtMs = version >= 2 ? b.num(64) : 0
  const ids = cell(body.refs[0], 2)
  const parties = cell(body.refs[1], 0).r
  const u = cell(body.refs[2], 0).r
  const fields: ReceiptFields = {
    version,
    signer,
    requestId: text(ids.refs[0]),
    requestHash,
    answerHash,
    paramsHash,
    modelId: text(ids.refs[1]),
    modelHash: ids.r.bytes(32),
    imageHash: parties.bytes(32),
    workerKey: parties.bytes(32),
    proxyKey: parties.bytes(32),
    promptTokens: u.num(32),
    cachedTokens: u.num(32),
    completionTokens: u.num(32),
    reasoningTokens: u.num(32),
    coefficient: u.num(32),
    pricePerTokenNano: u.coins(),
    workerFeePerTokenNano: u.coins(),
    adjustedTokens: u.uint(64),
    costNano: u.coins(),
    startedAtMs,
    firstTokenAtMs,
    endedAtMs,
    finishReason,
  }
  // Anything left over, a number past 2^53, a non-shortest Coins or text split: re-encoding tells, byte for byte.
  let again: Receipt
  try {
    again = encodeReceipt(fields, signature)
  } catch (err) {
    throw new ReceiptFormatError(`not a receipt cell: ${(err as Error).message}`)
  }
  if (!again.boc.equals(bytes)) throw new ReceiptFormatError('a receipt not in canonical form (it differs from its fields re-encoded)')
  return again
}

/** True when the receipt's signature verifies against `publicKey` (raw 32-byte Ed25519). */
export function verifyReceiptSignature(r: Receipt, publicKey: Uint8Array): boolean {
  try {
    return crypto.verify(null, receiptSigningPayload(r.bodyHash), ed25519PublicKey(publicKey), r.signature)
  } catch {
    return false
  }
}

/** verifyReceiptSignature on libuv's thread pool, off the event loop: the proxy checks one per answer. */
export function verifyReceiptSignatureAsync(r: Receipt, publicKey: Uint8Array): Promise<boolean> {
  let key: crypto.KeyObject
  try {
    key = ed25519PublicKey(publicKey)
  } catch {
    return Promise.resolve(false)
  }
  return new Promise((resolve) => crypto.verify(null, receiptSigningPayload(r.bodyHash), key, r.signature, (err, ok) => resolve(!err && ok)))
}

/** The decoded fields as JSON (snake_case; hashes and keys hex; nanoTON and adjusted tokens as decimal strings). */
export function receiptFieldsJson(f: ReceiptFields): Record<string, unknown> {
  return {
    version: f.version,
    signer: f.signer,
    request_id: f.requestId,
    request_hash: f.requestHash.toString('hex'),
    answer_hash: f.answerHash.toString('hex'),
    params_hash: f.paramsHash.toString('hex'),
    model_id: f.modelId,
    model_hash: f.modelHash.toString('hex'),
    image_hash: f.imageHash.toString('hex'),
    worker_key: f.workerKey.toString('hex'),
    proxy_key: f.proxyKey.toString('hex'),
    prompt_tokens: f.promptTokens,
    cached_tokens: f.cachedTokens,
    completion_tokens: f.completionTokens,
    reasoning_tokens: f.reasoningTokens,
    coefficient: f.coefficient,
    price_per_token_nano: f.pricePerTokenNano.toString(),
    worker_fee_per_token_nano: f.workerFeePerTokenNano.toString(),
    adjusted_tokens: f.adjustedTokens.toString(),
    cost_nano: f.costNano.toString(),
    started_at_ms: f.startedAtMs,
    ...(f.version >= 2 ? { first_token_at_ms: f.firstTokenAtMs } : {}),
    ended_at_ms: f.endedAtMs,
    finish_reason: f.finishReason,
  }
}

// ---------------------------------------------------------------- salted hashes

/** Bytes of the per-request salt the client node generates. */
export const SALT_BYTES = 32

export function newSalt(): Buffer {
  return crypto.randomBytes(SALT_BYTES)
}

function keyed(salt: Buffer, domain: string, data: Buffer | string): Buffer {
  return crypto.createHmac('sha256', salt).update(domain).update(data).digest()
}

/** The request hash: the body bytes the client node sent (after removing its control fields). */
export function requestHash(salt: Buffer, body: Buffer): Buffer {
  return keyed(salt, 'cocoon-request\n', body)
}

/** The answer hash: the answer's text as the app receives it (see answerText in net/openai.ts). */
export function answerHash(salt: Buffer, text: string): Buffer {
  return keyed(salt, 'cocoon-answer\n', Buffer.from(text, 'utf8'))
}

/** Sampling parameters as the worker applied them; absent ones are null. */
export interface SamplingParams {
  temperature: number | null
  top_p: number | null
  seed: number | null
  max_tokens: number | null
  stop: string[] | null
}

/** The params hash: the canonical JSON of the applied sampling parameters (fixed key order). */
export function paramsHash(salt: Buffer, p: SamplingParams): Buffer {
  const canonical = JSON.stringify({ temperature: p.temperature, top_p: p.top_p, seed: p.seed, max_tokens: p.max_tokens, stop: p.stop })
  return keyed(salt, 'cocoon-params\n', canonical)
}

/** The receipt id the app sees: derived from the salt, so the client node knows it before the answer starts and the public log cannot link it. */
export function receiptIdFromSalt(salt: Buffer): string {
  return crypto.createHash('sha256').update('cocoon-receipt-id\n').update(salt).digest('hex').slice(0, 32)
}

// ---------------------------------------------------------------- building one

/** What a signer knows at the end of an answer, from which the receipt's fields follow. */
export interface ReceiptInput {
  signer: ReceiptSigner
  requestId: string
  salt: Buffer
  /** The request body bytes as received. */
  requestBody: Buffer
  /** The answer text as the app receives it. */
  answerText: string
  sampling: SamplingParams
  modelId: string
  /** Hex. */
  modelHash: string
  imageHash: string
  workerKey: Uint8Array
  proxyKey: Uint8Array
  usage: Usage
  coefficient: number
  prices: PriceParams
  startedAtMs: number
  /** When the first token was produced (unix ms); omitted or 0 when unknown (e.g. the proxy signs for a dead worker). */
  firstTokenAtMs?: number
  endedAtMs: number
  finishReason: string
}

function hex32(h: string): Buffer {
  const b = Buffer.from(/^[0-9a-f]{64}$/i.test(h) ? h : '', 'hex')
  return b.length === 32 ? b : Buffer.alloc(32)
}

export function receiptFields(i: ReceiptInput): ReceiptFields {
  const cost = priceRequest(i.usage, i.coefficient, i.prices)
  return {
    version: RECEIPT_VERSION,
    signer: i.signer,
    requestId: i.requestId,
    requestHash: requestHash(i.salt, i.requestBody),
    answerHash: answerHash(i.salt, i.answerText),
    paramsHash: paramsHash(i.salt, i.sampling),
    modelId: i.modelId,
    modelHash: hex32(i.modelHash),
    imageHash: hex32(i.imageHash),
    workerKey: Buffer.from(i.workerKey),
    proxyKey: Buffer.from(i.proxyKey),
    promptTokens: i.usage.promptTokens,
    cachedTokens: i.usage.cachedTokens,
    completionTokens: i.usage.completionTokens,
    reasoningTokens: i.usage.reasoningTokens,
    coefficient: i.coefficient,
    pricePerTokenNano: i.prices.pricePerTokenNano,
    workerFeePerTokenNano: i.prices.workerFeePerTokenNano,
    adjustedTokens: cost.adjustedTokens,
    costNano: cost.clientNano,
    startedAtMs: i.startedAtMs,
    firstTokenAtMs: i.firstTokenAtMs ?? 0,
    endedAtMs: i.endedAtMs,
    finishReason: finishReasonOf(i.finishReason),
  }
}

/** The prices a proxy tells its worker to state in receipts (HEADERS.price). */
export function priceHeader(p: PriceParams): string {
  return [p.pricePerTokenNano, p.workerFeePerTokenNano, p.promptMult, p.cachedMult, p.completionMult, p.reasoningMult, p.audioSecondMult].join(',')
}

/** Six values (no audio price: audio seconds then cost nothing) or seven (with audioSecondMult). */
export function parsePriceHeader(v: unknown): PriceParams | undefined {
  if (typeof v !== 'string' || !/^\d+(,\d+){5,6}$/.test(v)) return undefined
  const [price, fee, pm, cm, com, rm, am] = v.split(',')
  return { pricePerTokenNano: BigInt(price), workerFeePerTokenNano: BigInt(fee), promptMult: Number(pm), cachedMult: Number(cm), completionMult: Number(com), reasoningMult: Number(rm), audioSecondMult: Number(am ?? 0) }
}

/** The salt from HEADERS.salt, if it is 32 bytes of hex. */
export function parseSalt(v: unknown): Buffer | undefined {
  return typeof v === 'string' && /^[0-9a-f]{64}$/i.test(v) ? Buffer.from(v, 'hex') : undefined
}

/** Whether a logged receipt agrees with the signed usage it came with and the proxy's own pricing. Returns the first disagreement. */
export function receiptMismatch(f: ReceiptFields, u: Usage & { requestId: string }, expect: { coefficient: number; prices: PriceParams; workerKey: Uint8Array; proxyKey: Uint8Array }): string | undefined {
  if (f.requestId !== u.requestId) return 'request id'
  if (f.promptTokens !== u.promptTokens || f.cachedTokens !== u.cachedTokens || f.completionTokens !== u.completionTokens || f.reasoningTokens !== u.reasoningTokens) return 'token counts'
  if (f.coefficient !== expect.coefficient) return 'coefficient'
  if (f.pricePerTokenNano !== expect.prices.pricePerTokenNano || f.workerFeePerTokenNano !== expect.prices.workerFeePerTokenNano) return 'prices'
  const cost = priceRequest(u, expect.coefficient, expect.prices)
  if (f.adjustedTokens !== cost.adjustedTokens || f.costNano !== cost.clientNano) return 'cost'
  if (!f.workerKey.equals(Buffer.from(expect.workerKey))) return 'worker key'
  if (!f.proxyKey.equals(Buffer.from(expect.proxyKey))) return 'proxy key'
  return undefined
}
