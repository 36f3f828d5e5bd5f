// Pricing: integer-only, floored once, and the charged = earned + margin invariant.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { adjustedTokens, priceRequest, worstCaseAdjustedTokens, PricingError, type PriceParams } from '../../src/payments/pricing.ts'

const p: PriceParams = { pricePerTokenNano: 20n, workerFeePerTokenNano: 15n, promptMult: 10000, cachedMult: 1000, completionMult: 30000, reasoningMult: 30000, audioSecondMult: 500000 }

test('adjusted tokens follow the design formula', () => {
  // (100-20)*1.0 + 20*0.1 + (50-10)*3.0 + 10*3.0 = 80 + 2 + 120 + 30 = 232, at 1.0x
  assert.equal(adjustedTokens({ promptTokens: 100, cachedTokens: 20, completionTokens: 50, reasoningTokens: 10 }, 1000, p), 232n)
  // at 1.5x: 348
  assert.equal(adjustedTokens({ promptTokens: 100, cachedTokens: 20, completionTokens: 50, reasoningTokens: 10 }, 1500, p), 348n)
})

test('rounding floors once per request, never billing above the exact price', () => {
  // 1 cached token at 0.1x and coefficient 1.0x: exact 0.1 -> 0
  assert.equal(adjustedTokens({ promptTokens: 1, cachedTokens: 1, completionTokens: 0, reasoningTokens: 0 }, 1000, p), 0n)
  // 7 cached tokens at 0.1x, 1.5x: exact 1.05 -> 1 (flooring per kind first would also give 1; per token would give 0)
  assert.equal(adjustedTokens({ promptTokens: 7, cachedTokens: 7, completionTokens: 0, reasoningTokens: 0 }, 1500, p), 1n)
  // 3 prompt tokens at coefficient 1.333x: exact 3.999 -> 3
  assert.equal(adjustedTokens({ promptTokens: 3, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 1333, p), 3n)
})

test('client charged = worker earned + proxy margin, exactly, for many usages', () => {
  let seed = 42
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
  for (let i = 0; i < 2000; i++) {
    const prompt = rnd(5000)
    const completion = rnd(5000)
    const u = { promptTokens: prompt, cachedTokens: rnd(prompt + 1), completionTokens: completion, reasoningTokens: rnd(completion + 1) }
    const c = priceRequest(u, rnd(5000), p)
    assert.equal(c.clientNano, c.workerNano + c.marginNano)
    assert.ok(c.marginNano >= 0n)
    assert.equal(c.clientNano, c.adjustedTokens * p.pricePerTokenNano)
  }
})

test('the worst case covers any usage within the limits', () => {
  const maxPrompt = 300
  const maxCompletion = 200
  const worst = worstCaseAdjustedTokens(maxPrompt, maxCompletion, 2500, p)
  for (const u of [
    { promptTokens: 300, cachedTokens: 0, completionTokens: 200, reasoningTokens: 0 },
    { promptTokens: 300, cachedTokens: 300, completionTokens: 200, reasoningTokens: 200 },
    { promptTokens: 1, cachedTokens: 0, completionTokens: 200, reasoningTokens: 100 },
  ]) {
    for (const coef of [0, 1000, 2500]) assert.ok(adjustedTokens(u, coef, p) <= worst)
  }
})

test('bad input is refused', () => {
  assert.throws(() => adjustedTokens({ promptTokens: 1, cachedTokens: 2, completionTokens: 0, reasoningTokens: 0 }, 1000, p), PricingError)
  assert.throws(() => adjustedTokens({ promptTokens: -1, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 1000, p), PricingError)
  assert.throws(() => adjustedTokens({ promptTokens: 1.5, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 1000, p), PricingError)
  assert.throws(() => priceRequest({ promptTokens: 1, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 1000, { ...p, workerFeePerTokenNano: 21n }), PricingError)
})

test('audio seconds are priced at the root parameter audioSecondMult, in the same adjusted tokens', () => {
  // 12 s at 50 tokens a second (500000 / 10000), 1.0x: 600 adjusted tokens; at 1.5x: 900
  assert.equal(adjustedTokens({ promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0, audioSeconds: 12 }, 1000, p), 600n)
  assert.equal(priceRequest({ promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0, audioSeconds: 12 }, 1500, p).clientNano, 900n * p.pricePerTokenNano)
  // The reservation for 12 s covers them at any coefficient up to the cap.
  assert.ok(worstCaseAdjustedTokens(0, 0, 1500, p, 12) >= 900n)
  assert.throws(() => adjustedTokens({ promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0, audioSeconds: 1.5 }, 1000, p), PricingError)
})
