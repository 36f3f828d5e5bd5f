// Canonical encoding of the claims a node makes about itself, and the report data that binds them into a quote.

import { createHash } from 'node:crypto'
import { EvidenceRefusedError, type Claims, type Role } from './types.ts'
import { isHex } from './hex.ts'

const ROLES: readonly Role[] = ['client', 'proxy', 'worker']
const HASH_BYTES = 32
const MAX_MODEL_ID_CHARS = 256
const CLAIM_KEYS = new Set(['v', 'role', 'publicKey', 'createdAt', 'configHash', 'paymentKey', 'modelId', 'modelHash', 'hpkeKey'])

/**
 * Canonical JSON: keys sorted by code unit, no whitespace, UTF-8, undefined fields omitted.
 * Validates first, so a node can never put claims in its certificate that peers would refuse to decode.
 */
export function encodeClaims(c: Claims): Uint8Array {
  validateClaims(c)
  return canonicalBytes(c)
}

/**
 * Strict inverse of encodeClaims. Also requires the bytes to be canonical, so that JSON
 * quirks (duplicate keys, where the last one silently wins) cannot make the claims a peer
 * checks differ from what another parser would read.
 */
export function decodeClaims(bytes: Uint8Array): Claims {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    throw new EvidenceRefusedError('claims are not UTF-8 JSON')
  }
  validateClaims(parsed)
  if (!Buffer.from(canonicalBytes(parsed)).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
    throw new EvidenceRefusedError('claims are not canonically encoded')
  }
  return parsed
}

/** The 64 bytes of quote report data that bind `claimsBytes`: SHA-512(claimsBytes). */
export function reportDataFor(claimsBytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha512').update(claimsBytes).digest())
}

function canonicalBytes(c: Claims): Uint8Array {
  const sorted: Record<string, unknown> = {}
  for (const k of Object.keys(c).sort()) {
    const v = (c as unknown as Record<string, unknown>)[k]
    if (v !== undefined) sorted[k] = v
  }
  return new TextEncoder().encode(JSON.stringify(sorted))
}

function validateClaims(x: unknown): asserts x is Claims {
  const refuse = (what: string): never => {
    throw new EvidenceRefusedError(`claims: ${what}`)
  }
  if (typeof x !== 'object' || x === null || Array.isArray(x)) refuse('not an object')
  const c = x as Record<string, unknown>
  for (const k of Object.keys(c)) {
    // Unknown claims are refused rather than ignored: a peer may have meant them to be enforced.
    if (!CLAIM_KEYS.has(k) && c[k] !== undefined) refuse(`unknown field ${JSON.stringify(k)}`)
  }
  if (c.v !== 1) refuse(`unsupported version ${JSON.stringify(c.v)}`)
  if (!ROLES.includes(c.role as Role)) refuse(`invalid role ${JSON.stringify(c.role)}`)
  if (!isHex(c.publicKey, 32)) refuse('publicKey must be 64 lowercase hex chars')
  if (!Number.isSafeInteger(c.createdAt) || (c.createdAt as number) < 0) refuse('createdAt must be a non-negative integer')
  if (!isHex(c.configHash, HASH_BYTES)) refuse('configHash must be 64 lowercase hex chars')
  if (c.paymentKey !== undefined && !isHex(c.paymentKey, 32)) refuse('paymentKey must be 64 lowercase hex chars')
  if (c.modelHash !== undefined && !isHex(c.modelHash, HASH_BYTES)) refuse('modelHash must be 64 lowercase hex chars')
  if (c.hpkeKey !== undefined && !isHex(c.hpkeKey, 32)) refuse('hpkeKey must be 64 lowercase hex chars')
  if (
    c.modelId !== undefined &&
    (typeof c.modelId !== 'string' || c.modelId.length === 0 || c.modelId.length > MAX_MODEL_ID_CHARS)
  ) {
    refuse(`modelId must be a non-empty string of at most ${MAX_MODEL_ID_CHARS} chars`)
  }
}
