// How a client node (or a worker) scores the proxies it can use: measured round-trip time and time to first
// token (exponential moving averages), success rate, and price; a proxy that refuses, fails or cheats is backed
// off exponentially. Pure: no I/O, an injectable clock, so every rule is unit-tested.
//
// score = (rttMs + ttftMs) / successRate × priceFactor   (lower is better: expected milliseconds per success,
//                                                           scaled by how much dearer the proxy is)
// - rttMs, ttftMs: EMAs (alpha 0.3) of measured values; before any measurement, the priors (100 ms, 500 ms).
// - successRate: (successes + 1) / (attempts + 2) over a decaying window (each observation ages the old ones by
//   0.95), so one failure of a new proxy does not condemn it and old history fades.
// - priceFactor: the proxy's price per token over the cheapest candidate's (1 when prices are equal or unknown).
// - Backoff: after the k-th consecutive failure a proxy is skipped for min(base × 2^(k−1), max); a cheat (a charge
//   that went backwards, a bad receipt) counts as CHEAT_WEIGHT failures at once. One success resets the count.

export const SCORE_ALPHA = 0.3
export const PRIOR_RTT_MS = 100
export const PRIOR_TTFT_MS = 500
export const SUCCESS_DECAY = 0.95
export const BACKOFF_BASE_MS = 1_000
export const BACKOFF_MAX_MS = 5 * 60_000
export const CHEAT_WEIGHT = 8

export type FailureKind = 'refused' | 'failed' | 'cheated'

export interface ProxyRecord {
  id: string
  rttMs: number | null
  ttftMs: number | null
  /** Decayed counts. */
  successes: number
  attempts: number
  /** nanoTON per adjusted token, if known. */
  pricePerTokenNano: bigint | null
  consecutiveFailures: number
  /** Epoch ms until which the proxy is skipped (0: not backed off). */
  backoffUntil: number
  lastFailure: { kind: FailureKind; reason: string; at: number } | null
}

export interface ScoreboardOptions {
  now?: () => number
  backoffBaseMs?: number
  backoffMaxMs?: number
}

export class ProxyScoreboard {
  private readonly records = new Map<string, ProxyRecord>()
  private readonly now: () => number
  private readonly baseMs: number
  private readonly maxMs: number

  constructor(o: ScoreboardOptions = {}) {
    this.now = o.now ?? Date.now
    this.baseMs = o.backoffBaseMs ?? BACKOFF_BASE_MS
    this.maxMs = o.backoffMaxMs ?? BACKOFF_MAX_MS
  }

  record(id: string): ProxyRecord {
    let r = this.records.get(id)
    if (!r) {
      r = { id, rttMs: null, ttftMs: null, successes: 0, attempts: 0, pricePerTokenNano: null, consecutiveFailures: 0, backoffUntil: 0, lastFailure: null }
      this.records.set(id, r)
    }
    return r
  }

  forget(id: string): void {
    this.records.delete(id)
  }

  setPrice(id: string, pricePerTokenNano: bigint): void {
    this.record(id).pricePerTokenNano = pricePerTokenNano
  }

  /** A measured round trip (e.g. an HTTP/2 PING, or the attested handshake). */
  observeRtt(id: string, ms: number): void {
    const r = this.record(id)
    r.rttMs = ema(r.rttMs, ms)
  }

  /** A request the proxy answered: its time to first token (or to the answer's headers). */
  observeSuccess(id: string, ttftMs: number): void {
    const r = this.record(id)
    r.ttftMs = ema(r.ttftMs, ttftMs)
    this.count(r, true)
    r.consecutiveFailures = 0
    r.backoffUntil = 0
  }

  /** A refusal, a failure before the first byte, or a cheat: counts against the success rate and backs off. */
  observeFailure(id: string, kind: FailureKind, reason: string): void {
    const r = this.record(id)
    const weight = kind === 'cheated' ? CHEAT_WEIGHT : 1
    for (let i = 0; i < weight; i++) this.count(r, false)
    r.consecutiveFailures += weight
    const now = this.now()
    r.backoffUntil = now + this.backoffMs(r.consecutiveFailures)
    r.lastFailure = { kind, reason: reason.slice(0, 200), at: now }
  }

  backoffMs(consecutiveFailures: number): number {
    if (consecutiveFailures <= 0) return 0
    return Math.min(this.baseMs * 2 ** Math.min(consecutiveFailures - 1, 30), this.maxMs)
  }

  isBackedOff(id: string): boolean {
    const r = this.records.get(id)
    return !!r && r.backoffUntil > this.now()
  }

  successRate(r: ProxyRecord): number {
    return (r.successes + 1) / (r.attempts + 2)
  }

  /** Lower is better. `cheapestNano` is the lowest known price among the candidates. */
  score(id: string, cheapestNano: bigint | null = null): number {
    const r = this.record(id)
    const latency = (r.rttMs ?? PRIOR_RTT_MS) + (r.ttftMs ?? PRIOR_TTFT_MS)
    const priceFactor = r.pricePerTokenNano && cheapestNano && cheapestNano > 0n ? Number(r.pricePerTokenNano) / Number(cheapestNano) : 1
    return (latency / this.successRate(r)) * priceFactor
  }

  /** Candidates best first; backed-off ones last (soonest back first), so failover can still reach them. */
  rank(ids: Iterable<string>): string[] {
    const list = [...ids]
    const cheapest = this.cheapest(list)
    const now = this.now()
    const key = (id: string) => {
      const r = this.record(id)
      return { off: r.backoffUntil > now ? r.backoffUntil : 0, score: this.score(id, cheapest) }
    }
    const keyed = list.map((id) => ({ id, ...key(id) }))
    keyed.sort((a, b) => (a.off && b.off ? a.off - b.off : a.off ? 1 : b.off ? -1 : a.score - b.score || (a.id < b.id ? -1 : 1)))
    return keyed.map((k) => k.id)
  }

  /** The best `n` candidates that are not backed off. */
  best(ids: Iterable<string>, n: number): string[] {
    return this.rank(ids).filter((id) => !this.isBackedOff(id)).slice(0, n)
  }

  /** For /jsonstats and `cocoon client proxies`. */
  snapshot(ids: Iterable<string>): Array<Record<string, unknown>> {
    const list = [...ids]
    const cheapest = this.cheapest(list)
    const now = this.now()
    return this.rank(list).map((id) => {
      const r = this.record(id)
      return {
        id,
        score: round(this.score(id, cheapest)),
        rttMs: r.rttMs === null ? null : round(r.rttMs),
        ttftMs: r.ttftMs === null ? null : round(r.ttftMs),
        successRate: round(this.successRate(r), 3),
        attempts: round(r.attempts, 2),
        pricePerTokenNano: r.pricePerTokenNano?.toString() ?? null,
        consecutiveFailures: r.consecutiveFailures,
        backedOff: r.backoffUntil > now,
        backoffRemainingMs: Math.max(0, r.backoffUntil - now),
        lastFailure: r.lastFailure,
      }
    })
  }

  private cheapest(ids: string[]): bigint | null {
    let min: bigint | null = null
    for (const id of ids) {
      const p = this.records.get(id)?.pricePerTokenNano
      if (p && (min === null || p < min)) min = p
    }
    return min
  }

  private count(r: ProxyRecord, ok: boolean): void {
    r.successes = r.successes * SUCCESS_DECAY + (ok ? 1 : 0)
    r.attempts = r.attempts * SUCCESS_DECAY + 1
  }
}

function ema(prev: number | null, x: number): number {
  return prev === null ? x : prev + SCORE_ALPHA * (x - prev)
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
