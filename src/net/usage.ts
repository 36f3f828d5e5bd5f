// Checking the worker's signed usage trailer with the key from its attested certificate.
import crypto from 'node:crypto'
import { usageSigningPayload, type UsageRecord } from './protocol.ts'

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** A KeyObject for a raw 32-byte Ed25519 public key. */
export function ed25519PublicKey(raw: Uint8Array): crypto.KeyObject {
  return crypto.createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(raw)]), format: 'der', type: 'spki' })
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

/**
 * Returns the usage record if the signature by `key` is valid, the request id matches and
 * the counts are sane (cached ≤ prompt, reasoning ≤ completion); otherwise undefined.
 */
export async function verifyUsage(json: unknown, sigB64: unknown, key: crypto.KeyObject, requestId: string): Promise<UsageRecord | undefined> {
  if (typeof json !== 'string' || typeof sigB64 !== 'string') return undefined
  // On libuv's thread pool: the proxy checks one signature per answer, and its event loop is the bottleneck.
  const ok = await new Promise<boolean>((resolve) => crypto.verify(null, usageSigningPayload(json), key, Buffer.from(sigB64, 'base64'), (err, valid) => resolve(!err && valid)))
  if (!ok) return undefined
  let r: UsageRecord
  try {
    r = JSON.parse(json) as UsageRecord
  } catch {
    return undefined
  }
  if (r.requestId !== requestId) return undefined
  if (![r.promptTokens, r.cachedTokens, r.completionTokens, r.reasoningTokens].every(isCount)) return undefined
  if (r.cachedTokens > r.promptTokens || r.reasoningTokens > r.completionTokens) return undefined
  if (r.audioSeconds !== undefined && !isCount(r.audioSeconds)) return undefined
  return r
}
