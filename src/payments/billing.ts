// Proxy-side billing: admission against the client's funds, worst-case reservations, and durable settlement
// of each answer (group-committed, so one fsync covers every answer finished in the same moment).
import type { Logger } from '../core/log.ts'
import type { Counters, Ledger, ReceiptEntry, UsageEvent } from './ledger.ts'
import { priceRequest, type PriceParams, type RequestCost } from './pricing.ts'
import type { Usage } from '../core/usage.ts'

/** The client's funds cannot cover the worst case of this request. */
export class InsufficientQuotaError extends Error {
  readonly name = 'InsufficientQuotaError'
  constructor(
    readonly neededNano: bigint,
    readonly availableNano: bigint,
  ) {
    super(`insufficient funds: this request may cost up to ${neededNano} nanoTON, but only ${availableNano} nanoTON are available; top up the client contract or lower max_tokens`)
  }
}

/** The proxy will not serve now (e.g. its ledger is older than its on-chain commit). */
export class ProxyNotServingError extends Error {
  readonly name = 'ProxyNotServingError'
  constructor(readonly reason: string) {
    super(`the proxy is not serving: ${reason}`)
  }
}

/** The same client already has a request with this id in flight. */
export class DuplicateRequestError extends Error {
  readonly name = 'DuplicateRequestError'
  constructor(readonly requestId: string) {
    super(`a request with request_id '${requestId}' is already in flight from this client; use a unique request_id per request`)
  }
}

/**
 * Funds held for one request until it is settled or released. Its key is made by the proxy (never
 * the app's request_id), so no app can reach another request's reservation, its own or another client's.
 */
export interface Reservation {
  readonly key: string
  readonly client: string
  /** The app's request id, for logs. */
  readonly requestId: string
  readonly nano: bigint
  /** When the request's own deadline passes (ms since epoch); the sweeper frees it after that. */
  readonly deadlineMs: number
}

/** How long past its request's deadline a reservation may live before the sweeper frees it. */
export const RESERVATION_SWEEP_SLACK_MS = 30_000
/** How often the sweeper looks. */
export const RESERVATION_SWEEP_INTERVAL_MS = 10_000

/** A client's position on chain, as its client contract shows it. */
export interface ClientFunds {
  /** Deposited and not yet charged on chain, nanoTON (includes the stake). */
  balanceNano: bigint
  /** Adjusted tokens already charged on chain by vouchers. */
  tokensCharged: bigint
  /** False once the client started closing: no new work is admitted. */
  active: boolean
}

/** Where the proxy learns clients' funds. Absent: an off-chain proxy that admits everyone. */
export interface FundsSource {
  clientFunds(client: string): Promise<ClientFunds | undefined>
}

export interface Settlement {
  cost: RequestCost
  /** The client's and worker's cumulative counters after this answer. */
  client: Counters
  worker: Counters
  /** The answer's receipt number in the log, when a receipt was logged with it. */
  receiptIndex?: number
}

export interface BillingDeps {
  ledger: Ledger
  params: () => PriceParams
  funds?: FundsSource
  log: Logger
}

interface Pending {
  event: UsageEvent
  receipt?: ReceiptEntry
  cost: RequestCost
  resolve: (s: Settlement) => void
  reject: (e: Error) => void
}

export class ProxyBilling {
  private readonly reserved = new Map<string, Reservation>()
  private readonly reservedByClient = new Map<string, bigint>()
  private nextKey = 1
  private readonly sweeper: NodeJS.Timeout
  private queue: Pending[] = []
  private flushScheduled = false
  private notServing: string | undefined

  constructor(private readonly deps: BillingDeps) {
    this.sweeper = setInterval(() => this.sweep(), RESERVATION_SWEEP_INTERVAL_MS)
    this.sweeper.unref()
  }

  /** Stops the sweeper. */
  close(): void {
    clearInterval(this.sweeper)
  }

  get ledger(): Ledger {
    return this.deps.ledger
  }

  params(): PriceParams {
    return this.deps.params()
  }

  /** Stops admitting work, with a reason shown to clients and on /jsonstats. */
  refuseService(reason: string): void {
    this.notServing = reason
  }

  get serving(): { ok: boolean; reason?: string } {
    return this.notServing ? { ok: false, reason: this.notServing } : { ok: true }
  }

  /**
   * Whether the client has any funds with this proxy (a live client contract holding a balance).
   * Always true off-chain. Unfunded clients get metadata calls only.
   */
  async isFunded(client: string): Promise<boolean> {
    if (!this.deps.funds) return true
    const f = await this.deps.funds.clientFunds(client)
    return !!f && f.active && f.balanceNano > 0n
  }

  /** nanoTON the client can still spend: on-chain balance, less what is charged but not yet settled on chain, less reservations. */
  async availableNano(client: string): Promise<bigint | undefined> {
    if (!this.deps.funds) return undefined
    return this.availableGiven(client, await this.deps.funds.clientFunds(client))
  }

  /** Synchronous on purpose: reading reservations and adding one must not be split by an await. */
  private availableGiven(client: string, f: ClientFunds | undefined): bigint {
    if (!f || !f.active) return 0n
    const p = this.params()
    const c = this.deps.ledger.counters('client', client)
    const unsettledTokens = c.tokens > f.tokensCharged ? c.tokens - f.tokensCharged : 0n
    return f.balanceNano - unsettledTokens * p.pricePerTokenNano - (this.reservedByClient.get(client) ?? 0n)
  }

  /**
   * Reserves the worst case (`worstTokens` adjusted tokens) for a request, or throws
   * InsufficientQuotaError before any work is done. Admission is atomic per client: the only await
   * is the funds lookup, and the check against live reservations and the new reservation happen
   * together after it, so concurrent requests can never together reserve more than the balance.
   */
  async reserve(r: { client: string; requestId: string; worstTokens: bigint; deadlineMs: number }): Promise<Reservation> {
    if (this.notServing) throw new ProxyNotServingError(this.notServing)
    const nano = r.worstTokens * this.params().pricePerTokenNano
    if (this.deps.funds) {
      const funds = await this.deps.funds.clientFunds(r.client)
      if (this.notServing) throw new ProxyNotServingError(this.notServing)
      const available = this.availableGiven(r.client, funds)
      if (available < nano) throw new InsufficientQuotaError(nano, available < 0n ? 0n : available)
    }
    const res: Reservation = { key: `r${this.nextKey++}`, client: r.client, requestId: r.requestId, nano, deadlineMs: r.deadlineMs }
    this.reserved.set(res.key, res)
    this.reservedByClient.set(r.client, (this.reservedByClient.get(r.client) ?? 0n) + nano)
    return res
  }

  /** Frees a reservation (the request ended). Idempotent. */
  release(res: Reservation | undefined): void {
    if (!res || this.reserved.get(res.key) !== res) return
    this.reserved.delete(res.key)
    const left = (this.reservedByClient.get(res.client) ?? 0n) - res.nano
    if (left > 0n) this.reservedByClient.set(res.client, left)
    else this.reservedByClient.delete(res.client)
  }

  /** Frees (and logs) reservations whose request is long past its deadline: a leak, whatever caused it. */
  sweep(now = Date.now()): number {
    let freed = 0
    for (const res of [...this.reserved.values()]) {
      if (res.deadlineMs + RESERVATION_SWEEP_SLACK_MS > now) continue
      this.deps.log.warn('freeing a reservation left past its deadline', { client: res.client.slice(0, 80), requestId: res.requestId.slice(0, 128), nano: res.nano.toString(), overdueMs: now - res.deadlineMs })
      this.release(res)
      freed++
    }
    return freed
  }

  /** Reservations held now. */
  get reservations(): number {
    return this.reserved.size
  }

  reservedNano(client?: string): bigint {
    if (client) return this.reservedByClient.get(client) ?? 0n
    let t = 0n
    for (const v of this.reservedByClient.values()) t += v
    return t
  }

  /**
   * Prices a finished (or cancelled) answer and records it durably. Resolves only after the
   * ledger transaction holding it has committed; the reservation is released either way.
   */
  settle(r: { reservation?: Reservation; requestId: string; client: string; worker: string; coefficient: number; usage: Usage; receipt?: ReceiptEntry }): Promise<Settlement> {
    const p = this.params()
    let cost: RequestCost
    try {
      cost = priceRequest(r.usage, r.coefficient, p)
    } catch (err) {
      this.release(r.reservation)
      return Promise.reject(err)
    }
    const event: UsageEvent = {
      type: 'usage',
      requestId: r.requestId,
      client: r.client,
      worker: r.worker,
      coefficient: r.coefficient,
      promptTokens: r.usage.promptTokens,
      cachedTokens: r.usage.cachedTokens,
      completionTokens: r.usage.completionTokens,
      reasoningTokens: r.usage.reasoningTokens,
      ...(r.usage.audioSeconds ? { audioSeconds: r.usage.audioSeconds } : {}),
      adjusted: cost.adjustedTokens.toString(),
      clientNano: cost.clientNano.toString(),
      workerNano: cost.workerNano.toString(),
    }
    return new Promise<Settlement>((resolve, reject) => {
      this.queue.push({ event, receipt: r.receipt, cost, resolve, reject })
      if (!this.flushScheduled) {
        this.flushScheduled = true
        // Everything that finishes in this turn of the event loop shares one transaction.
        setImmediate(() => this.flush())
      }
    }).finally(() => this.release(r.reservation))
  }

  /** Logs a receipt for an answer that is not billed (its worker died before signing usage). */
  logReceipt(requestId: string, receipt: ReceiptEntry): number {
    return this.deps.ledger.recordReceipt(requestId, receipt).receiptIndex
  }

  private flush(): void {
    this.flushScheduled = false
    const batch = this.queue
    this.queue = []
    if (batch.length === 0) return
    try {
      const results = this.deps.ledger.recordUsageBatch(
        batch.map((b) => b.event),
        batch.map((b) => b.receipt),
      )
      batch.forEach((b, i) => b.resolve({ cost: b.cost, client: results[i].client, worker: results[i].worker, ...(results[i].receiptIndex !== undefined ? { receiptIndex: results[i].receiptIndex } : {}) }))
    } catch (err) {
      this.deps.log.error('ledger write failed; the answers in this batch are not billed and will be refused', { error: err, batch: batch.length })
      for (const b of batch) b.reject(err as Error)
    }
  }
}
