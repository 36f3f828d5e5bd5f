// Per-client budget of error answers: a client that keeps sending bad requests is slowed with 429s before
// the proxy reads, parses or logs anything of them, so hostile input cannot buy unbounded work or log volume.
// The client node keeps one per app too (src/client/client.ts), so one app cannot spend its node's budget at a proxy.

/** Error answers a client may get in a burst before it is slowed down. */
export const CLIENT_ERROR_BURST = 20
/** Error answers per second a client earns back once its burst is spent. */
export const CLIENT_ERRORS_PER_SEC = 2
/** A limited client is logged at most once per this interval. */
export const CLIENT_LIMIT_LOG_INTERVAL_MS = 60_000
/** Clients tracked at most; the stalest are forgotten first. */
const MAX_TRACKED_CLIENTS = 10_000

export interface ErrorBudgetOptions {
  /** Default CLIENT_ERROR_BURST. */
  burst?: number
  /** Default CLIENT_ERRORS_PER_SEC. */
  perSec?: number
  now?: () => number
}

/** A token bucket per client, spent by error answers. */
export class ErrorBudget {
  private readonly buckets = new Map<string, { tokens: number; at: number; limitedSince?: number; loggedAt?: number }>()
  private readonly burst: number
  private readonly perSec: number
  private readonly now: () => number

  constructor(o: ErrorBudgetOptions = {}) {
    this.burst = o.burst ?? CLIENT_ERROR_BURST
    this.perSec = o.perSec ?? CLIENT_ERRORS_PER_SEC
    this.now = o.now ?? Date.now
  }

  private bucket(client: string) {
    const now = this.now()
    let b = this.buckets.get(client)
    if (!b) {
      if (this.buckets.size >= MAX_TRACKED_CLIENTS) this.buckets.delete(this.buckets.keys().next().value!)
      b = { tokens: this.burst, at: now }
      this.buckets.set(client, b)
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSec)
    b.at = now
    return b
  }

  /**
   * Seconds until this client may be served again, or 0 if it may be served now. `first` is true
   * for the refusal worth logging: the first one in CLIENT_LIMIT_LOG_INTERVAL_MS for this client.
   */
  check(client: string): { waitSec: number; first: boolean } {
    const b = this.bucket(client)
    if (b.tokens >= 1) {
      b.limitedSince = undefined
      return { waitSec: 0, first: false }
    }
    const now = this.now()
    b.limitedSince ??= now
    const first = b.loggedAt === undefined || now - b.loggedAt >= CLIENT_LIMIT_LOG_INTERVAL_MS
    if (first) b.loggedAt = now
    return { waitSec: Math.max(1, Math.ceil((1 - b.tokens) / this.perSec)), first }
  }

  /** Errors `client` may still get before it is slowed (fractional while it earns them back). */
  tokens(client: string): number {
    return this.bucket(client).tokens
  }

  /** Spends one token for an error answer sent to `client`. */
  spend(client: string): void {
    const b = this.bucket(client)
    b.tokens = Math.max(0, b.tokens - 1)
  }

  /** Clients currently limited, for /jsonstats. */
  limitedClients(): number {
    let n = 0
    for (const b of this.buckets.values()) if (b.limitedSince !== undefined) n++
    return n
  }
}
