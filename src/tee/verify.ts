// Decides whether a peer's RA-TLS certificate satisfies a policy: pure checks, plus a small cache of successes.

import { createHash } from 'node:crypto'
import { parseAttestedCert, type AttestedCert } from './cert.ts'
import { reportDataFor } from './claims.ts'
import { MAX_CLOCK_SKEW_SEC, VERIFICATION_CACHE_MAX_ENTRIES, VERIFICATION_CACHE_TTL_MS } from './constants.ts'
import { toHex } from './hex.ts'
import {
  EvidenceRefusedError,
  type EvidenceKind,
  type EvidenceVerifier,
  type Policy,
  type Role,
  type VerifiedEvidence,
  type VerifiedPeer,
} from './types.ts'

const DEFAULT_TCB_STATUSES = ['UpToDate']

export interface VerifyPeerOptions {
  /** Roles the peer may have. Absent: any role. */
  expectedRole?: Role | Role[]
  /** One verifier per evidence kind the caller can check. */
  verifiers: Partial<Record<EvidenceKind, EvidenceVerifier>>
  /** Clock for the validity window, certificate age and quote collateral. Default: system clock. */
  now?: () => Date
  signal?: AbortSignal
}

/**
 * Verifies a peer certificate (DER) against `policy`. Cheap checks run before the quote is
 * verified, so a stale or misdirected certificate costs no collateral fetch. Throws
 * EvidenceRefusedError with a reason naming the failed check. See docs/ra-tls.md for the order.
 */
export async function verifyPeer(der: Uint8Array, policy: Policy, opts: VerifyPeerOptions): Promise<VerifiedPeer> {
  return verifyAttestedCert(await parseAttestedCert(der), policy, opts)
}

/** verifyPeer for a certificate already parsed (and so already signature-checked) by parseAttestedCert. */
async function verifyAttestedCert(cert: AttestedCert, policy: Policy, opts: VerifyPeerOptions): Promise<VerifiedPeer> {
  const now = (opts.now ?? (() => new Date()))()
  const nowSec = Math.floor(now.getTime() / 1000)
  const refuse = (reason: string): never => {
    throw new EvidenceRefusedError(reason)
  }
  const { claims, kind } = cert
  if (now < cert.notBefore) refuse(`certificate not valid before ${cert.notBefore.toISOString()}`)
  if (now > cert.notAfter) refuse(`certificate expired at ${cert.notAfter.toISOString()}`)
  if (claims.publicKey !== toHex(cert.publicKey)) refuse('claims.publicKey is not the certificate key')
  const expected = opts.expectedRole === undefined ? undefined : [opts.expectedRole].flat()
  if (expected && !expected.includes(claims.role)) refuse(`role ${claims.role}, expected ${expected.join(' or ')}`)
  if (!policy.acceptKinds.includes(kind)) refuse(`evidence kind ${kind} not accepted (policy accepts ${policy.acceptKinds.join(', ') || 'nothing'})`)
  if (nowSec - claims.createdAt > policy.maxCertAgeSec) {
    refuse(`certificate created ${nowSec - claims.createdAt}s ago, older than ${policy.maxCertAgeSec}s`)
  }
  if (claims.createdAt - nowSec > MAX_CLOCK_SKEW_SEC) refuse(`certificate created ${claims.createdAt - nowSec}s in the future`)

  let imageHash = ''
  if (kind === 'none') {
    // Unattested evidence only ever stands for a client: no proxy or worker may skip attestation.
    if (claims.role !== 'client') refuse(`evidence kind none is only accepted from clients, not a ${claims.role}`)
  } else {
    const evidence = await verifyQuote(cert.quote, kind, opts, now)
    if (evidence.reportData !== toHex(reportDataFor(cert.claimsBytes))) refuse('quote report data does not match the claims')
    imageHash = evidence.imageHash
    const images = policy.imageHashes[claims.role]
    if (images === undefined) refuse(`policy lists no image hashes for role ${claims.role}`)
    if (images !== '*' && !images!.includes(imageHash)) refuse(`image hash ${imageHash} not allowed for role ${claims.role}`)
    if (kind === 'tdx') {
      const allowed = policy.tcbStatuses ?? DEFAULT_TCB_STATUSES
      if (!allowed.includes(evidence.tcbStatus ?? '')) refuse(`TCB status ${evidence.tcbStatus ?? 'missing'} not accepted`)
    }
  }
  if (claims.role === 'worker') {
    const models = policy.modelHashes ?? '*'
    if (models !== '*' && !(claims.modelHash !== undefined && models.includes(claims.modelHash))) {
      refuse(`model hash ${claims.modelHash ?? 'missing'} not allowed`)
    }
  }
  return { kind, role: claims.role, imageHash, claims, publicKey: cert.publicKey }
}

async function verifyQuote(
  quote: Uint8Array | undefined,
  kind: EvidenceKind,
  opts: VerifyPeerOptions,
  now: Date,
): Promise<VerifiedEvidence> {
  const verifier = opts.verifiers[kind]
  if (!verifier || verifier.kind !== kind) throw new EvidenceRefusedError(`no verifier for evidence kind ${kind}`)
  if (!quote) throw new EvidenceRefusedError(`certificate of kind ${kind} carries no quote`)
  let evidence: VerifiedEvidence
  try {
    evidence = await verifier.verify(quote, { now, signal: opts.signal })
  } catch (e) {
    if (e instanceof EvidenceRefusedError) throw e
    // A verifier that cannot reach a verdict (e.g. collateral unavailable) still means "not trusted".
    throw new EvidenceRefusedError(`${kind} quote could not be verified: ${(e as Error).message}`)
  }
  if (evidence.kind !== kind) throw new EvidenceRefusedError(`${kind} verifier returned evidence of kind ${evidence.kind}`)
  return evidence
}

export interface VerificationCacheOptions {
  /** How long a success is reused. */
  ttlMs: number
  /** Default VERIFICATION_CACHE_MAX_ENTRIES; the oldest entry is evicted first. */
  maxEntries?: number
  /** Milliseconds clock. Default Date.now. */
  now?: () => number
}

/**
 * Remembers successful verifications by SHA-256 of the certificate DER, so reconnects do not
 * re-verify quotes. An entry never outlives its TTL nor the certificate's own deadline.
 */
export class VerificationCache {
  readonly #entries = new Map<string, { peer: VerifiedPeer; expiresAtMs: number }>()
  readonly #ttlMs: number
  readonly #maxEntries: number
  readonly #now: () => number

  constructor(opts: VerificationCacheOptions) {
    this.#ttlMs = opts.ttlMs
    this.#maxEntries = opts.maxEntries ?? VERIFICATION_CACHE_MAX_ENTRIES
    this.#now = opts.now ?? Date.now
  }

  get size(): number {
    return this.#entries.size
  }

  get(der: Uint8Array): VerifiedPeer | undefined {
    const key = cacheKey(der)
    const e = this.#entries.get(key)
    if (!e) return undefined
    if (this.#now() >= e.expiresAtMs) {
      this.#entries.delete(key)
      return undefined
    }
    return e.peer
  }

  /** @param deadlineMs when the verdict stops holding regardless of TTL (certificate expiry or maximum age). */
  set(der: Uint8Array, peer: VerifiedPeer, deadlineMs = Infinity): void {
    if (this.#ttlMs <= 0 || this.#maxEntries <= 0) return
    const key = cacheKey(der)
    this.#entries.delete(key)
    while (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!)
    this.#entries.set(key, { peer, expiresAtMs: Math.min(this.#now() + this.#ttlMs, deadlineMs) })
  }

  clear(): void {
    this.#entries.clear()
  }
}

function cacheKey(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex')
}

/**
 * A `(der, expectedRole) => Promise<VerifiedPeer>` bound to one policy and set of verifiers,
 * caching successes for `cacheTtlMs` (default VERIFICATION_CACHE_TTL_MS; 0 disables the cache).
 * The role is re-checked on every hit, since one certificate may be looked up under different expectations.
 */
export function createPeerVerifier(
  policy: Policy,
  verifiers: Partial<Record<EvidenceKind, EvidenceVerifier>>,
  opts: { cacheTtlMs?: number; maxEntries?: number; now?: () => Date } = {},
): (der: Uint8Array, expectedRole?: Role | Role[]) => Promise<VerifiedPeer> {
  const clock = opts.now ?? (() => new Date())
  const cache = new VerificationCache({ ttlMs: opts.cacheTtlMs ?? VERIFICATION_CACHE_TTL_MS, maxEntries: opts.maxEntries, now: () => clock().getTime() })
  return async (der, expectedRole) => {
    const expected = expectedRole === undefined ? undefined : [expectedRole].flat()
    const hit = cache.get(der)
    if (hit) {
      if (expected && !expected.includes(hit.role)) throw new EvidenceRefusedError(`role ${hit.role}, expected ${expected.join(' or ')}`)
      return hit
    }
    const cert = await parseAttestedCert(der)
    const peer = await verifyAttestedCert(cert, policy, { expectedRole, verifiers, now: clock })
    const deadlineMs = Math.min(cert.notAfter.getTime(), (peer.claims.createdAt + policy.maxCertAgeSec) * 1000)
    cache.set(der, peer, deadlineMs)
    return peer
  }
}
