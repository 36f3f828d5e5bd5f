// The receipt: one TON cell per answered request, signed by the worker's attested key (TL-B in docs/receipts.md).
import crypto from 'node:crypto'
import { beginCell, Cell, type Slice } from '@ton/core'
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

/** A receipt as it travels and is stored: the cell, decoded, with the signature over its body. */
export interface Receipt {
  cell: Cell
  fields: ReceiptFields
  signature: Buffer
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

function storeText(s: string): Cell {
  return beginCell().storeStringTail(s).endCell()
}

/** The body cell: everything the signature covers. */
export function receiptBodyCell(f: ReceiptFields): Cell {
  const ids = beginCell().storeBuffer(f.modelHash, 32).storeRef(storeText(f.requestId)).storeRef(storeText(f.modelId)).endCell()
  const parties = beginCell().storeBuffer(f.imageHash, 32).storeBuffer(f.workerKey, 32).storeBuffer(f.proxyKey, 32).endCell()
  const usage = beginCell()
    .storeUint(f.promptTokens, 32)
    .storeUint(f.cachedTokens, 32)
    .storeUint(f.completionTokens, 32)
    .storeUint(f.reasoningTokens, 32)
    .storeUint(f.coefficient, 32)
    .storeCoins(f.pricePerTokenNano)
    .storeCoins(f.workerFeePerTokenNano)
    .storeUint(f.adjustedTokens, 64)
    .storeCoins(f.costNano)
    .endCell()
  const b = beginCell()
    .storeUint(RECEIPT_BODY_TAG, 32)
    .storeUint(f.version, 8)
    .storeUint(SIGNERS.indexOf(f.signer), 8)
    .storeUint(FINISH_REASONS.indexOf(f.finishReason), 8)
    .storeBuffer(f.requestHash, 32)
    .storeBuffer(f.answerHash, 32)
    .storeBuffer(f.paramsHash, 32)
    .storeUint(f.startedAtMs, 64)
    .storeUint(f.endedAtMs, 64)
  if (f.version >= 2) b.storeUint(f.firstTokenAtMs, 64)
  return b
    .storeRef(ids)
    .storeRef(parties)
    .storeRef(usage)
    .endCell()
}

/** The bytes a receipt signature covers. */
export function receiptSigningPayload(body: Cell): Buffer {
  return Buffer.concat([RECEIPT_SIG_DOMAIN, body.hash()])
}

/** The receipt cell: the signature, then the body as a ref. */
export function receiptCell(body: Cell, signature: Uint8Array): Cell {
  if (signature.length !== 64) throw new ReceiptFormatError('a receipt signature is 64 bytes')
  return beginCell().storeBuffer(Buffer.from(signature), 64).storeRef(body).endCell()
}

/** Builds and signs a receipt with `sign` (the signer's Ed25519 key). */
export async function signReceipt(f: ReceiptFields, sign: (data: Uint8Array) => Promise<Uint8Array> | Uint8Array): Promise<Receipt> {
  const body = receiptBodyCell(f)
  const signature = Buffer.from(await sign(receiptSigningPayload(body)))
  return { cell: receiptCell(body, signature), fields: f, signature }
}

function loadText(s: Slice): string {
  return s.loadRef().beginParse().loadStringTail()
}

/** Decodes a receipt cell; throws ReceiptFormatError when it is not one. */
export function decodeReceipt(cell: Cell): Receipt {
  try {
    const s = cell.beginParse()
    const signature = s.loadBuffer(64)
    const body = s.loadRef()
    s.endParse()
    const b = body.beginParse()
    if (b.loadUint(32) !== RECEIPT_BODY_TAG) throw new ReceiptFormatError('not a receipt (bad tag)')
    const version = b.loadUint(8)
    if (!RECEIPT_VERSIONS_READ.includes(version)) throw new ReceiptFormatError(`receipt version ${version}, this build reads ${RECEIPT_VERSIONS_READ.join(' and ')}`)
    const signer = SIGNERS[b.loadUint(8)]
    const finishReason = FINISH_REASONS[b.loadUint(8)]
    if (!signer || !finishReason) throw new ReceiptFormatError('unknown signer or finish reason')
    const requestHash = b.loadBuffer(32)
    const answerHash = b.loadBuffer(32)
    const paramsHash = b.loadBuffer(32)
    const startedAtMs = Number(b.loadUintBig(64))
    const endedAtMs = Number(b.loadUintBig(64))
    const firstTokenAtMs = version >= 2 ? Number(b.loadUintBig(64)) : 0
    const ids = b.loadRef().beginParse()
    const parties = b.loadRef().beginParse()
    const u = b.loadRef().beginParse()
    b.endParse()
    const modelHash = ids.loadBuffer(32)
    const requestId = loadText(ids)
    const modelId = loadText(ids)
    const fields: ReceiptFields = {
      version,
      signer,
      requestId,
      requestHash,
      answerHash,
      paramsHash,
      modelId,
      modelHash,
      imageHash: parties.loadBuffer(32),
      workerKey: parties.loadBuffer(32),
      proxyKey: parties.loadBuffer(32),
      promptTokens: u.loadUint(32),
      cachedTokens: u.loadUint(32),
      completionTokens: u.loadUint(32),
      reasoningTokens: u.loadUint(32),
      coefficient: u.loadUint(32),
      pricePerTokenNano: u.loadCoins(),
      workerFeePerTokenNano: u.loadCoins(),
      adjustedTokens: u.loadUintBig(64),
      costNano: u.loadCoins(),
      startedAtMs,
      firstTokenAtMs,
      endedAtMs,
      finishReason,
    }
    return { cell, fields, signature }
  } catch (err) {
    if (err instanceof ReceiptFormatError) throw err
    throw new ReceiptFormatError(`not a receipt cell: ${(err as Error).message}`)
  }
}

export function decodeReceiptBoc(boc: Buffer | string): Receipt {
  let cells: Cell[]
  try {
    cells = Cell.fromBoc(typeof boc === 'string' ? Buffer.from(boc, 'base64') : boc)
  } catch (err) {
    throw new ReceiptFormatError(`not a BoC: ${(err as Error).message}`)
  }
  if (cells.length !== 1) throw new ReceiptFormatError('a receipt BoC holds one root cell')
  return decodeReceipt(cells[0])
}

/** True when the receipt's signature verifies against `publicKey` (raw 32-byte Ed25519). */
export function verifyReceiptSignature(r: Receipt, publicKey: Uint8Array): boolean {
  try {
    return crypto.verify(null, receiptSigningPayload(r.cell.refs[0]), ed25519PublicKey(publicKey), r.signature)
  } catch {
    return false
  }
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
