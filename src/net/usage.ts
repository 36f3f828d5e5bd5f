// Checking the worker's signed usage trailer with the key from its attested certificate.
import crypto from 'node:crypto'
import { usageSigningPayload, type UsageRecord } from './protocol.ts'

export { ed25519PublicKey } from '../core/ed25519.ts'

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

/** Why a signed usage trailer was refused, or the record it carries. */
export type UsageCheck = { ok: true; usage: UsageRecord } | { ok: false; reason: string }

/**
 * Checks a worker's signed usage trailer: the signature by `key` (the worker's attested key), that it
 * is the record of this request (not one replayed from another), and that the counts are sane
 * (cached ≤ prompt, reasoning ≤ completion). Says why when it refuses.
 */
export async function checkUsage(json: unknown, sigB64: unknown, key: crypto.KeyObject, requestId: string): Promise<UsageCheck> {
  if (typeof json !== 'string' || typeof sigB64 !== 'string') return { ok: false, reason: 'no signed usage trailer' }
  // On libuv's thread pool: the proxy checks one signature per answer, and its event loop is the bottleneck.
  const ok = await new Promise<boolean>((resolve) => crypto.verify(null, usageSigningPayload(json), key, Buffer.from(sigB64, 'base64'), (err, valid) => resolve(!err && valid)))
  if (!ok) return { ok: false, reason: "forged usage: the signature is not by the worker's attested key" }
  const parsed = parseUsageRecord(json)
  if (!parsed.ok) return parsed
  const r = parsed.usage
  if (r.requestId !== requestId) return { ok: false, reason: `replayed usage: the record is for another request (${String(r.requestId).slice(0, 64)})` }
  return { ok: true, usage: r }
}

/**
 * Reads a usage record (UsageRecord JSON, as the worker signs it) and checks its counts are sane (cached ≤
 * prompt, reasoning ≤ completion); does not check any signature.
 */
export function parseUsageRecord(json: string): UsageCheck {
  let r: UsageRecord
  try {
    r = JSON.parse(json) as UsageRecord
  } catch {
    return { ok: false, reason: 'usage is not valid JSON' }
  }
  if (r === null || typeof r !== 'object') return { ok: false, reason: 'usage is not a record' }
  if (![r.promptTokens, r.cachedTokens, r.completionTokens, r.reasoningTokens].every(isCount)) return { ok: false, reason: 'usage counts are not non-negative integers' }
  if (r.cachedTokens > r.promptTokens) return { ok: false, reason: `impossible usage: ${r.cachedTokens} cached tokens > ${r.promptTokens} prompt tokens` }
  if (r.reasoningTokens > r.completionTokens) return { ok: false, reason: `impossible usage: ${r.reasoningTokens} reasoning tokens > ${r.completionTokens} completion tokens` }
  if (r.audioSeconds !== undefined && !isCount(r.audioSeconds)) return { ok: false, reason: 'audio seconds are not a non-negative integer' }
  return { ok: true, usage: r }
}

/** The usage record if checkUsage accepts it, else undefined. */
export async function verifyUsage(json: unknown, sigB64: unknown, key: crypto.KeyObject, requestId: string): Promise<UsageRecord | undefined> {
  const c = await checkUsage(json, sigB64, key, requestId)
  return c.ok ? c.usage : undefined
}

/** Whether a usage record names its answer (id, chunk object, model, creation time) and how it finished, so a usage chunk can be written from it. */
export function namesItsAnswer(r: UsageRecord): boolean {
  const a = r.answer as Partial<UsageRecord['answer']> | undefined
  return !!a && typeof a === 'object' && typeof a.id === 'string' && typeof a.object === 'string' && typeof a.model === 'string' && isCount(a.created) && typeof r.finishReason === 'string'
}
