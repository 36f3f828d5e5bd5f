// The client's proxy scoreboard: EMAs of RTT and time to first token, decayed success rate, price factor,
// exponential backoff of failing and cheating proxies, and the ranking that picks the best N.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, CHEAT_WEIGHT, PRIOR_RTT_MS, PRIOR_TTFT_MS, ProxyScoreboard, SCORE_ALPHA } from '../../src/client/proxy-scores.ts'

function board() {
  let now = 1_000_000
  const b = new ProxyScoreboard({ now: () => now })
  return { b, tick: (ms: number) => (now += ms) }
}

describe('proxy scoreboard', () => {
  it('starts every proxy at the priors and moves RTT and TTFT as exponential moving averages', () => {
    const { b } = board()
    assert.equal(b.score('a'), (PRIOR_RTT_MS + PRIOR_TTFT_MS) / 0.5)
    b.observeRtt('a', 10)
    b.observeRtt('a', 20)
    assert.equal(b.record('a').rttMs, 10 + SCORE_ALPHA * 10)
    b.observeSuccess('a', 100)
    b.observeSuccess('a', 200)
    assert.equal(b.record('a').ttftMs, 100 + SCORE_ALPHA * 100)
  })

  it('ranks the faster and the more reliable proxy first', () => {
    const { b } = board()
    for (let i = 0; i < 5; i++) {
      b.observeRtt('slow', 80)
      b.observeSuccess('slow', 400)
      b.observeRtt('fast', 5)
      b.observeSuccess('fast', 50)
    }
    assert.deepEqual(b.rank(['slow', 'fast']), ['fast', 'slow'])
    // Equal speed, but one fails half the time: the reliable one wins.
    for (let i = 0; i < 6; i++) {
      b.observeSuccess('steady', 100)
      b.observeSuccess('flaky', 100)
      if (i % 2) b.observeFailure('flaky', 'failed', 'reset')
    }
    assert.ok(b.successRate(b.record('steady')) > b.successRate(b.record('flaky')))
  })

  it('scales the score by price relative to the cheapest candidate', () => {
    const { b } = board()
    b.setPrice('cheap', 1_000n)
    b.setPrice('dear', 3_000n)
    assert.ok(Math.abs(b.score('dear', 1_000n) / b.score('cheap', 1_000n) - 3) < 1e-9)
    assert.deepEqual(b.rank(['dear', 'cheap']), ['cheap', 'dear'])
    assert.equal(b.score('unknown-price', 1_000n), b.score('cheap', 1_000n))
  })

  it('backs a failing proxy off exponentially, up to the cap, and a success resets it', () => {
    const { b, tick } = board()
    b.observeFailure('p', 'refused', 'no')
    assert.equal(b.record('p').backoffUntil - 1_000_000, BACKOFF_BASE_MS)
    assert.equal(b.isBackedOff('p'), true)
    b.observeFailure('p', 'failed', 'reset')
    b.observeFailure('p', 'failed', 'reset')
    assert.equal(b.record('p').backoffUntil - 1_000_000, 4 * BACKOFF_BASE_MS)
    assert.equal(b.backoffMs(40), BACKOFF_MAX_MS)
    tick(4 * BACKOFF_BASE_MS)
    assert.equal(b.isBackedOff('p'), false)
    b.observeSuccess('p', 100)
    assert.equal(b.record('p').consecutiveFailures, 0)
  })

  it('punishes a cheat as many failures at once and keeps backed-off proxies last', () => {
    const { b } = board()
    b.observeFailure('cheat', 'cheated', 'charge went backwards')
    assert.equal(b.record('cheat').consecutiveFailures, CHEAT_WEIGHT)
    assert.equal(b.record('cheat').backoffUntil - 1_000_000, BACKOFF_BASE_MS * 2 ** (CHEAT_WEIGHT - 1))
    b.observeFailure('brief', 'failed', 'x')
    assert.deepEqual(b.rank(['cheat', 'ok', 'brief']), ['ok', 'brief', 'cheat'])
    assert.deepEqual(b.best(['cheat', 'ok', 'brief'], 2), ['ok'])
    const snap = b.snapshot(['cheat', 'ok'])
    assert.equal(snap[1].id, 'cheat')
    assert.equal(snap[1].backedOff, true)
    assert.deepEqual((snap[1].lastFailure as { kind: string }).kind, 'cheated')
  })
})
