// Proxy-side billing: admission against the client's funds, worst-case reservations, and durable settlement
// of each answer (group-committed, so one fsync covers every answer finished in the same moment).
import type { Logger } from '../node/log.ts'
import type { Counters, Ledger, ReceiptEntry, UsageEvent } from './ledger.ts'
import { priceRequest, type PriceParams, type RequestCost, type TokenUsage } from './pricing.ts'

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
  private readonly reserved = new Map<string, { client: string; nano: bigint }>()
  private readonly reservedByClient = new Map<string, bigint>()
  private queue: Pending[] = []
  private flushScheduled = false
  private notServing: string | undefined

  constructor(private readonly deps: BillingDeps) {}

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

  /** nanoTON the client can still spend: on-chain balance, less what is charged but not yet settled on chain, less reservations. */
  async availableNano(client: string): Promise<bigint | undefined> {
    if (!this.deps.funds) return undefined
    const f = await this.deps.funds.clientFunds(client)
    if (!f || !f.active) return 0n
    const p = this.params()
    const c = this.deps.ledger.counters('client', client)
    const unsettledTokens = c.tokens > f.tokensCharged ? c.tokens - f.tokensCharged : 0n
    return f.balanceNano - unsettledTokens * p.pricePerTokenNano - (this.reservedByClient.get(client) ?? 0n)
  }

  /**
   * Reserves the worst case (`worstTokens` adjusted tokens) for a request, or throws
   * InsufficientQuotaError before any work is done.
   */
  async reserve(requestId: string, client: string, worstTokens: bigint): Promise<void> {
    if (this.notServing) throw new ProxyNotServingError(this.notServing)
    const nano = worstTokens * this.params().pricePerTokenNano
    const available = await this.availableNano(client)
    if (available !== undefined && available < nano) throw new InsufficientQuotaError(nano, available < 0n ? 0n : available)
    this.reserved.set(requestId, { client, nano })
    this.reservedByClient.set(client, (this.reservedByClient.get(client) ?? 0n) + nano)
  }

  /** Frees a reservation (the request ended). Idempotent. */
  release(requestId: string): void {
    const r = this.reserved.get(requestId)
    if (!r) return
    this.reserved.delete(requestId)
    const left = (this.reservedByClient.get(r.client) ?? 0n) - r.nano
    if (left > 0n) this.reservedByClient.set(r.client, left)
    else this.reservedByClient.delete(r.client)
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
  settle(r: { requestId: string; client: string; worker: string; coefficient: number; usage: TokenUsage; receipt?: ReceiptEntry }): Promise<Settlement> {
    const p = this.params()
    let cost: RequestCost
    try {
      cost = priceRequest(r.usage, r.coefficient, p)
    } catch (err) {
      this.release(r.requestId)
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
    }).finally(() => this.release(r.requestId))
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
