// Request pricing in integers only: adjusted tokens from metered usage, then nanoTON for the client and the worker.
//
// Units: a *token count* is a plain number of model tokens; *adjusted tokens* are what the
// contracts count (tokens scaled by the worker coefficient and the per-kind multiplier);
// *nano* amounts are nanoTON. All money is bigint.
//
// Rounding (documented in docs/payments.md): the exact adjusted amount of a request is
//   Σ_kind n_kind × coefficient × mult_kind / (1000 × 10000)
// computed as one integer numerator and floored once, so a request is never billed more
// than its exact price and at most one adjusted token is lost per request. Then
//   client pays  = adjusted × pricePerTokenNano
//   worker earns = adjusted × workerFeePerTokenNano
//   proxy margin = client pays − worker earns = adjusted × (price − fee) ≥ 0
// which makes `client charged = worker earned + proxy margin` hold exactly, by construction.

import type { Params } from '../ton/contracts/index.ts'
import type { Usage } from '../core/usage.ts'

/** 1000 = a coefficient of 1.0x. */
export const COEFFICIENT_ONE = 1000n
/** 10000 = a multiplier of 1.0x. */
export const MULT_ONE = 10000n
const DENOM = COEFFICIENT_ONE * MULT_ONE

/**
 * Prices used when a proxy runs without a chain (tests, a devnet without payments). With a
 * chain, the root contract's parameters apply.
 */
export const OFFCHAIN_PRICE_PARAMS: PriceParams = {
  pricePerTokenNano: 1_000n,
  workerFeePerTokenNano: 800n,
  promptMult: 10_000,
  cachedMult: 1_000,
  completionMult: 10_000,
  reasoningMult: 10_000,
  audioSecondMult: 1_000_000,
}

/** The parts of the root parameters pricing needs. */
export type PriceParams = Pick<Params, 'pricePerTokenNano' | 'workerFeePerTokenNano' | 'promptMult' | 'cachedMult' | 'completionMult' | 'reasoningMult' | 'audioSecondMult'>

export interface RequestCost {
  adjustedTokens: bigint
  clientNano: bigint
  workerNano: bigint
  marginNano: bigint
}

export class PricingError extends Error {
  readonly name = 'PricingError'
}

function count(n: number, what: string): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new PricingError(`${what} must be a non-negative integer, got ${n}`)
  return BigInt(n)
}

/** Adjusted tokens for `usage` at `coefficient` (1000 = 1.0x), floored once. */
export function adjustedTokens(usage: Usage, coefficient: number, p: PriceParams): bigint {
  const prompt = count(usage.promptTokens, 'promptTokens')
  const cached = count(usage.cachedTokens, 'cachedTokens')
  const completion = count(usage.completionTokens, 'completionTokens')
  const reasoning = count(usage.reasoningTokens, 'reasoningTokens')
  if (cached > prompt) throw new PricingError('cachedTokens exceed promptTokens')
  if (reasoning > completion) throw new PricingError('reasoningTokens exceed completionTokens')
  const audio = count(usage.audioSeconds ?? 0, 'audioSeconds')
  const coef = count(coefficient, 'coefficient')
  const numerator =
    (prompt - cached) * BigInt(p.promptMult) +
    cached * BigInt(p.cachedMult) +
    (completion - reasoning) * BigInt(p.completionMult) +
    reasoning * BigInt(p.reasoningMult) +
    audio * BigInt(p.audioSecondMult)
  return (numerator * coef) / DENOM
}

/** Prices a request. Throws if the parameters would give the proxy a negative margin. */
export function priceRequest(usage: Usage, coefficient: number, p: PriceParams): RequestCost {
  if (p.workerFeePerTokenNano > p.pricePerTokenNano) throw new PricingError('worker fee per token exceeds the price per token')
  const adjusted = adjustedTokens(usage, coefficient, p)
  const clientNano = adjusted * p.pricePerTokenNano
  const workerNano = adjusted * p.workerFeePerTokenNano
  return { adjustedTokens: adjusted, clientNano, workerNano, marginNano: clientNano - workerNano }
}

/**
 * The most a request can cost, in adjusted tokens: every prompt token at the dearer of the
 * prompt and cached multipliers, every completion token at the dearer of the completion and
 * reasoning multipliers, and every audio second, at the app's max_coefficient; rounded up.
 */
export function worstCaseAdjustedTokens(maxPromptTokens: number, maxCompletionTokens: number, maxCoefficient: number, p: PriceParams, maxAudioSeconds = 0): bigint {
  const promptMult = BigInt(Math.max(p.promptMult, p.cachedMult))
  const completionMult = BigInt(Math.max(p.completionMult, p.reasoningMult))
  const numerator =
    (count(maxPromptTokens, 'maxPromptTokens') * promptMult +
      count(maxCompletionTokens, 'maxCompletionTokens') * completionMult +
      count(maxAudioSeconds, 'maxAudioSeconds') * BigInt(p.audioSecondMult)) *
    count(maxCoefficient, 'maxCoefficient')
  return (numerator + DENOM - 1n) / DENOM
}
