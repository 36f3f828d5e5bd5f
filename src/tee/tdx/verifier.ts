// The TDX EvidenceVerifier: collateral from a PCCS (cached until it expires) or fixed, and verdicts cached by quote hash with a TTL.

import { raceSignal } from '../../core/time.ts'
import { createHash } from 'node:crypto'
import { EvidenceRefusedError, type EvidenceVerifier, type VerifiedEvidence } from '../types.ts'
import { TDX_FAILURE_TTL_MS, TDX_RESULT_CACHE_MAX_ENTRIES, TDX_RESULT_TTL_MS } from './constants.ts'
import type { TdxCollateral } from './collateral.ts'
import { CollateralFetchError, QuoteFormatError, TdxVerificationError } from './errors.ts'
import { collateralExpiry, PccsClient, quotePlatform, type TdxPlatform } from './pccs.ts'
import { verifyTdxQuote, type TdxVerifiedQuote } from './verify.ts'

export interface TdxVerifierOptions {
  /** PCCS base URL (Intel PCS v4 API). Default INTEL_PCS_URL. Ignored when `collateral` is set. */
  pccsUrl?: string
  /** Static collateral, never refreshed (tests, offline CLI use). Default: fetch from the PCCS. */
  collateral?: TdxCollateral
  /** Where the root CA CRL comes from; see PccsOptions.rootCaCrlUrl. */
  rootCaCrlUrl?: string
  /** Per-request PCCS budget. Default PCCS_FETCH_TIMEOUT_MS. */
  fetchTimeoutMs?: number
  /** How long a successful verdict is reused; never beyond the collateral's expiry. Default TDX_RESULT_TTL_MS. */
  resultTtlMs?: number
  /** How long a refusal is reused. Fetch failures are never cached. Default TDX_FAILURE_TTL_MS. */
  failureTtlMs?: number
  /** Bound on cached verdicts. Default TDX_RESULT_CACHE_MAX_ENTRIES. */
  maxCachedResults?: number
}

export interface TdxVerifierDeps {
  /** Default globalThis.fetch. */
  fetch?: typeof fetch
  /** Milliseconds since the epoch. Default Date.now. */
  clock?: () => number
}

export interface TdxVerifierStats {
  /** Verdicts served from the cache. */
  cacheHits: number
  /** Quotes fully verified. */
  verifications: number
  /** Collateral sets fetched from the PCCS. */
  collateralFetches: number
  cachedResults: number
}

interface CachedVerdict {
  verifiedAt: number
  expiresAt: number
  result?: TdxVerifiedQuote
  error?: Error
}

interface CachedCollateral {
  collateral: TdxCollateral
  expiresAt: number
}

/** Verifies TDX quotes; see verifyTdxQuote for the checks. Refusals are EvidenceRefusedError with the TDX error as `cause`. */
export class TdxEvidenceVerifier implements EvidenceVerifier {
  readonly kind = 'tdx' as const
  private readonly opts: Required<Pick<TdxVerifierOptions, 'resultTtlMs' | 'failureTtlMs' | 'maxCachedResults'>>
  private readonly staticCollateral?: TdxCollateral
  private readonly pccs: PccsClient
  private readonly clock: () => number
  private readonly results = new Map<string, CachedVerdict>()
  private readonly inflight = new Map<string, Promise<TdxVerifiedQuote>>()
  private readonly collateral = new Map<string, CachedCollateral>()
  private readonly collateralInflight = new Map<string, Promise<CachedCollateral>>()
  private readonly counters = { cacheHits: 0, verifications: 0, collateralFetches: 0 }

  constructor(opts: TdxVerifierOptions = {}, deps: TdxVerifierDeps = {}) {
    this.opts = {
      resultTtlMs: opts.resultTtlMs ?? TDX_RESULT_TTL_MS,
      failureTtlMs: opts.failureTtlMs ?? TDX_FAILURE_TTL_MS,
      maxCachedResults: opts.maxCachedResults ?? TDX_RESULT_CACHE_MAX_ENTRIES,
    }
    this.staticCollateral = opts.collateral
    this.pccs = new PccsClient({ url: opts.pccsUrl, timeoutMs: opts.fetchTimeoutMs, rootCaCrlUrl: opts.rootCaCrlUrl }, { fetch: deps.fetch })
    this.clock = deps.clock ?? Date.now
  }

  async verify(quote: Uint8Array, opts: { now?: Date; signal?: AbortSignal } = {}): Promise<VerifiedEvidence> {
    try {
      const r = await this.verifyDetailed(quote, opts)
      return { kind: 'tdx', imageHash: r.imageHash, reportData: r.reportData, tcbStatus: r.tcbStatus, advisoryIds: [...r.advisoryIds] }
    } catch (err) {
      if (err instanceof TdxVerificationError || err instanceof QuoteFormatError || err instanceof CollateralFetchError) {
        throw Object.assign(new EvidenceRefusedError(err.message), { cause: err })
      }
      throw err
    }
  }

  /** Like verify, with everything verifyTdxQuote returns. Throws the TDX errors themselves. */
  async verifyDetailed(input: Uint8Array, opts: { now?: Date; signal?: AbortSignal } = {}): Promise<TdxVerifiedQuote> {
    opts.signal?.throwIfAborted()
    const quote = new Uint8Array(input) // hashed and verified bytes must be the same bytes
    const now = opts.now ?? new Date(this.clock())
    const key = createHash('sha256').update(quote).digest('hex')
    const hit = this.results.get(key)
    if (hit && now.getTime() >= hit.verifiedAt && now.getTime() < hit.expiresAt) {
      this.counters.cacheHits++
      this.results.delete(key) // re-insert: most recently used last
      this.results.set(key, hit)
      if (hit.error) throw hit.error
      return hit.result as TdxVerifiedQuote
    }
    // Concurrent handshakes with the same peer share one verification. The shared work ignores
    // any one caller's signal (it has its own fetch timeout); each caller stops waiting on its own.
    let pending = this.inflight.get(key)
    if (!pending) {
      pending = this.verifyUncached(key, quote, now).finally(() => this.inflight.delete(key))
      this.inflight.set(key, pending)
    }
    return opts.signal ? raceSignal(pending, opts.signal) : pending
  }

  private async verifyUncached(key: string, quote: Uint8Array, now: Date): Promise<TdxVerifiedQuote> {
    try {
      const collateral = await this.collateralFor(quote, now)
      this.counters.verifications++
      const result = await verifyTdxQuote(quote, collateral, { now })
      this.remember(key, { verifiedAt: now.getTime(), expiresAt: Math.min(now.getTime() + this.opts.resultTtlMs, result.validUntil.getTime()), result })
      return result
    } catch (err) {
      // A broken PCCS says nothing about the quote; only verdicts are cached.
      if (err instanceof TdxVerificationError || err instanceof QuoteFormatError) {
        this.remember(key, { verifiedAt: now.getTime(), expiresAt: now.getTime() + this.opts.failureTtlMs, error: err })
      }
      throw err
    }
  }

  private remember(key: string, v: CachedVerdict): void {
    this.results.delete(key)
    this.results.set(key, v)
    while (this.results.size > this.opts.maxCachedResults) {
      const oldest = this.results.keys().next().value as string
      this.results.delete(oldest)
    }
  }

  private async collateralFor(quote: Uint8Array, now: Date): Promise<TdxCollateral> {
    if (this.staticCollateral) return this.staticCollateral
    const platform = quotePlatform(quote)
    const key = `${platform.ca}:${platform.fmspc}`
    const cached = this.collateral.get(key)
    if (cached && now.getTime() < cached.expiresAt) return cached.collateral
    let pending = this.collateralInflight.get(key)
    if (!pending) {
      pending = this.fetchCollateral(platform).finally(() => this.collateralInflight.delete(key))
      this.collateralInflight.set(key, pending)
    }
    const fresh = await pending
    this.collateral.set(key, fresh)
    return fresh.collateral
  }

  private async fetchCollateral(platform: TdxPlatform): Promise<CachedCollateral> {
    this.counters.collateralFetches++
    const collateral = await this.pccs.getCollateral(platform)
    let expiresAt: number
    try {
      expiresAt = collateralExpiry(collateral).getTime()
    } catch {
      expiresAt = 0 // unreadable: use once, let verification name the problem, fetch again next time
    }
    return { collateral, expiresAt }
  }

  stats(): TdxVerifierStats {
    return { ...this.counters, cachedResults: this.results.size }
  }

  /** Forgets all cached verdicts and collateral. */
  clear(): void {
    this.results.clear()
    this.collateral.clear()
  }
}

