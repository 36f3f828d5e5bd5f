// One app request at the proxy, as an object with states: admitted → dispatched → relaying → settled. One AbortSignal
// (the app went away, the deadline, a cancel) drives every exit. Retry before the first byte (run), cancel with grace
// (stop), billing what was produced (bill) and the settle-once rule (settle) each live in one method here.
import http2 from 'node:http2'
import type { Identity } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'
import { ModelRestartingError, NoWorkerAvailableError, RequestTimeoutError, UpstreamError, errorResponse } from '../net/errors.ts'
import { call, errorReply, Reply, respond, respondError, type CallResponse } from '../net/hop.ts'
import { e2eeTrace } from '../net/e2ee-trace.ts'
import { CANCEL_GRACE_MS, HEADERS, HOP_TIMEOUT_FACTOR, PATHS, requestBounds, type UsageRecord } from '../net/protocol.ts'
import type { HopRouting } from '../net/validate.ts'
import { costTrailer } from '../net/openai.ts'
import { checkUsage } from '../net/usage.ts'
import { E2EE_CONTENT_TYPE, encodeWrappedKeys, type E2eeRoute, type WrappedKey } from '../net/e2ee.ts'
import { decodeReceiptBoc, priceHeader, receiptFields, receiptMismatch, signReceipt, verifyReceiptSignatureAsync, type Receipt } from '../payments/receipts/receipt.ts'
import type { ProxyBilling, Reservation } from '../payments/billing.ts'
import { worstCaseAdjustedTokens } from '../payments/pricing.ts'
import type { SignedUsage, Usage } from '../core/usage.ts'
import { qualityOf, recordOutcome, type WorkerConn, type WorkerPool } from './routing.ts'
import type { AdmissionQueue } from './admission.ts'
import { BaseExchange, type ExchangeState } from '../net/exchange.ts'

export { checkMove, IllegalTransitionError, type ExchangeState } from '../net/exchange.ts'

export type Outcome = 'succeeded' | 'failed' | 'cancelled' | 'timeout' | 'rejected'

/** The app went away: its stream to the proxy closed. */
export class AppGoneError extends Error {
  readonly name = 'AppGoneError'
  constructor() {
    super('client went away')
  }
}

/** An encrypted request as the proxy sees it: the route it may read, and the wrapped keys it may only pass on. */
export interface E2eeRequest {
  route: E2eeRoute
  routeHeader: string
  keys: WrappedKey[]
}

/** What the proxy's route handler parsed from the hop headers (and the body, which it only counts). */
export interface ExchangeRequest {
  path: string
  body: Buffer
  requestId: string
  /** The account the request is billed under. */
  client: string
  routing: HopRouting
  maxCoefficient: number
  prefixKey?: string
  /** A plaintext request's cache scope (hex), passed on to the worker as it came. */
  cacheScope?: string
  /** The app's timeout, ms; this hop keeps HOP_TIMEOUT_FACTOR of it, counted from `startedAt`. */
  timeoutMs: number
  /** When the request arrived (ms since epoch). */
  startedAt: number
  /** Keys the receipt's hashes. */
  salt: Buffer
  /** The app request's content type (transcriptions are multipart). */
  contentType: string
  e2ee?: E2eeRequest
}

/** The proxy's parts an exchange uses. */
export interface ExchangeHost {
  log: Logger
  billing: ProxyBilling
  admission: Pick<AdmissionQueue, 'claim' | 'release'>
  /** Workers tried per request when they fail before the first byte. */
  maxAttempts: number
  /** The connected workers, indexed by the HPKE keys they attested (an encrypted request goes only to those it names). */
  workers: Pick<WorkerPool, 'recipients' | 'get'>
  /** Signs the receipts the proxy states itself. */
  identity(): Identity
  /** The key receipts name this proxy by. */
  proxyKey(): Uint8Array
  /** Counts a request's outcome (once per exchange). */
  outcome(o: Outcome): void
  /** Counts a retry on another worker. */
  retried(): void
  /** Adds billed usage to the proxy's and the worker's token counters. */
  meter(conn: WorkerConn, u: Usage): void
  /** Disconnects a worker that cannot be trusted (and keeps it away with `ban`). */
  dropWorker(conn: WorkerConn, reason: string, ban: boolean): void
  /** How long a worker asked to stop may take to end its answer before its stream is reset. Default CANCEL_GRACE_MS. */
  cancelGraceMs?: number
  /** Told each state an exchange enters (tests, tracing). */
  onState?: (state: ExchangeState) => void
}

/** How one worker's attempt ended: `done` settled the exchange; `retry` and `timeout` came before the first byte. */
type AttemptEnd = { kind: 'done' } | { kind: 'retry' | 'timeout'; error: Error }

/** One worker's try at the request: what its stream said so far. */
interface Attempt {
  conn: WorkerConn
  /** Resets the worker's stream (RST_STREAM CANCEL): the deadline before the first byte, a retry, a grace run out. */
  reset: AbortController
  ws?: http2.ClientHttp2Stream
  /** This forward's own id at the worker (request ids come from apps and may repeat across clients). */
  id: string
  /** What was left of the deadline when it was dispatched, ms. */
  budgetMs: number
  maxTokens: number
  maxAudioSeconds: number
  e2ee?: { routeHeader: string; key: WrappedKey }
  t0: number
  firstByteAt?: number
  /** The worker's part ends at its last byte: billing after it is the proxy's time, not the worker's speed. */
  lastByteAt?: number
  status: number
  contentType: string
  /** Relayed as it comes (SSE, or an encrypted answer's records); else held back whole until billed. */
  streamed: boolean
  buffered: Buffer[]
  /** Set once the worker was asked to stop: the outcome then. */
  stopped?: 'cancelled' | 'timeout'
  grace?: NodeJS.Timeout
  receipt?: unknown
  /** The worker's usage as signed, kept with its receipt in the ledger (set only once checked). */
  signedUsage?: SignedUsage
  usage: Promise<UsageRecord | undefined>
  /** Set when the worker signed something it could not honestly sign: it is dropped once the answer ends. */
  lied?: string
  ended: boolean
  resolve: (r: AttemptEnd) => void
}

/** The proxy's side of one app request. Build it from the parsed hop headers, then `run()` it once. */
export class Exchange extends BaseExchange {
  private readonly tried = new Set<string>()
  private readonly log: Logger
  private a?: Attempt
  /** The worker whose admission slot this exchange holds. */
  private slot?: WorkerConn
  private reservation?: Reservation
  private finished!: () => void
  private readonly done = new Promise<void>((r) => (this.finished = r))

  constructor(
    private readonly host: ExchangeHost,
    private readonly cs: http2.ServerHttp2Stream,
    readonly req: ExchangeRequest,
  ) {
    const app = new AbortController()
    const onAppClose = () => app.abort(new AppGoneError())
    if (cs.closed || cs.destroyed) app.abort(new AppGoneError())
    else cs.once('close', onAppClose)
    super(app.signal, req.startedAt + Math.floor(req.timeoutMs * HOP_TIMEOUT_FACTOR), host.onState)
    this.onAppClose = onAppClose
    this.log = host.log.child({ requestId: req.requestId })
    this.signal.addEventListener('abort', this.onAbort, { once: true })
  }

  // cancel() (from BaseExchange) ends the exchange as the app going away would: the worker is asked to stop; what it produced is billed.

  /**
   * Runs the request to its end: claims a worker and reserves the worst case, dispatches, and on a failure before
   * the first byte tries another worker (up to maxAttempts, within the deadline). Resolves once settled.
   */
  async run(): Promise<void> {
    const { host, req } = this
    let lastError: Error | undefined
    for (let attempt = 0; attempt < host.maxAttempts && this.state !== 'settled'; attempt++) {
      if (req.e2ee && this.recipientsAllFailing(req.e2ee)) {
        // Waiting would not help: every worker the request names is failing (breaker open). The client node draws a fresh set.
        if (attempt > 0 && lastError) break
        this.settle('rejected', new NoWorkerAvailableError('every worker this encrypted request names is failing; the client node may name others'))
        return this.done
      }
      let conn: WorkerConn
      try {
        // An encrypted request goes only to a worker it names as a recipient.
        const only = req.e2ee ? host.workers.recipients(req.e2ee.keys.map((k) => k.recipient)) : undefined
        conn = await host.admission.claim({ client: req.client, model: req.routing.model, maxCoefficient: req.maxCoefficient, exclude: this.tried, only, path: req.path, affinity: req.prefixKey ? { prefixKey: req.prefixKey, client: req.client } : undefined }, this.signal)
      } catch (err) {
        const e = err as Error
        if (attempt > 0 && lastError && (e.name === 'WorkersExhaustedError' || e.name === 'ModelNotFoundError' || e instanceof ModelRestartingError)) break
        if (this.abortKind() === 'cancelled') {
          this.settle('cancelled', this.signal.reason)
          return this.done
        }
        if (this.abortKind() === 'timeout' || Date.now() >= this.deadline) break
        this.log.info('request not routed', { model: req.routing.model, reason: e.message })
        this.settle('rejected', e.name === 'WorkersExhaustedError' ? new NoWorkerAvailableError(`no worker for '${req.routing.model}' is left to try`) : e)
        return this.done
      }
      this.slot = conn
      this.tried.add(conn.id)
      const remaining = this.deadline - Date.now()
      if (remaining <= 0) {
        this.releaseSlot()
        break
      }
      // Reserve the worst case before any work: all of max_tokens and a prompt as long as the body, at the
      // dearest multipliers and the app's max_coefficient. The worker never exceeds max_tokens.
      // Embeddings generate nothing; a transcription is billed by its audio seconds, bounded by the upload's size.
      const b = requestBounds(req.path, req.body.length, req.routing.maxTokens, conn.info.maxTokensCap)
      const worst = worstCaseAdjustedTokens(b.maxPromptTokens, b.maxCompletionTokens, req.maxCoefficient, host.billing.params(), b.maxAudioSeconds)
      try {
        this.reservation = await host.billing.reserve({ client: req.client, requestId: req.requestId, worstTokens: worst, deadlineMs: this.deadline })
      } catch (err) {
        this.log.info('request refused at admission', { reason: (err as Error).message })
        this.settle('rejected', err)
        return this.done
      }
      if (attempt > 0) host.retried()
      const key = req.e2ee ? recipientKey(conn, req.e2ee.keys) : undefined
      const end = await this.dispatch(conn, remaining, b.maxCompletionTokens, b.maxAudioSeconds, req.e2ee && key ? { routeHeader: req.e2ee.routeHeader, key } : undefined)
      if (end.kind === 'done') return this.done
      lastError = end.error
      if (end.kind === 'timeout') break
      if (this.abortKind() === 'cancelled') {
        this.settle('cancelled', this.signal.reason)
        return this.done
      }
      this.log.warn('worker failed before the first byte; trying another', { worker: conn.id, error: end.error.message })
      this.to('admitted')
    }
    if (this.state === 'settled') return this.done
    if (this.abortKind() === 'timeout' || Date.now() >= this.deadline || lastError?.name === 'RequestTimeoutError') this.settle('timeout', new RequestTimeoutError(req.timeoutMs))
    else this.settle('failed', new UpstreamError(`no worker could serve the request: ${lastError?.message ?? 'unknown error'}`))
    return this.done
  }

  /** Whether every untried worker an encrypted request names has its breaker open (none of them would be tried soon). */
  private recipientsAllFailing(e2ee: E2eeRequest): boolean {
    const now = Date.now()
    const named = [...this.host.workers.recipients(e2ee.keys.map((k) => k.recipient))].filter((id) => !this.tried.has(id)).map((id) => this.host.workers.get(id)!)
    return named.length > 0 && named.every((w) => qualityOf(w).breaker.state === 'open' && now < qualityOf(w).breaker.until)
  }

  /**
   * Sends the request to one worker and relays its answer. Resolves `retry` when the worker failed before
   * sending any body byte (so another worker may be tried), `timeout` when the deadline passed before it, and
   * `done` once the exchange settled. An answer is complete for the app only after its usage is billed.
   */
  private dispatch(conn: WorkerConn, budgetMs: number, maxTokens: number, maxAudioSeconds: number, e2ee: Attempt['e2ee']): Promise<AttemptEnd> {
    return new Promise<AttemptEnd>((resolve) => {
      const req = this.req
      const a: Attempt = (this.a = { conn, reset: new AbortController(), id: crypto.randomUUID(), budgetMs, maxTokens, maxAudioSeconds, e2ee, t0: Date.now(), status: 0, contentType: 'application/json', streamed: false, buffered: [], usage: Promise.resolve(undefined), ended: false, resolve })
      this.to('dispatched')
      if (this.signal.aborted) return this.endAttempt(a, this.abortKind() === 'timeout' ? { kind: 'timeout', error: new RequestTimeoutError(budgetMs) } : { kind: 'retry', error: new AppGoneError() })
      const headers: http2.OutgoingHttpHeaders = {
        'content-type': e2ee ? E2EE_CONTENT_TYPE : req.path === PATHS.transcriptions ? req.contentType : 'application/json',
        [HEADERS.requestId]: req.requestId,
        [HEADERS.exchange]: a.id,
        [HEADERS.model]: req.routing.model,
        [HEADERS.stream]: req.routing.stream ? '1' : '0',
        [HEADERS.coefficient]: String(conn.info.coefficient),
        [HEADERS.maxTokens]: String(maxTokens),
        ...(maxAudioSeconds > 0 ? { [HEADERS.maxAudioSeconds]: String(maxAudioSeconds) } : {}),
        [HEADERS.timeoutMs]: String(Math.floor(budgetMs * HOP_TIMEOUT_FACTOR)),
        [HEADERS.salt]: req.salt.toString('hex'),
        ...(req.cacheScope !== undefined ? { [HEADERS.cacheScope]: req.cacheScope } : {}),
        [HEADERS.price]: priceHeader(this.host.billing.params()),
        // Only the chosen worker's wrapped key goes on: the others' are none of its business.
        ...(e2ee ? { [HEADERS.e2eeRoute]: e2ee.routeHeader, [HEADERS.e2eeKeys]: encodeWrappedKeys([e2ee.key]) } : {}),
      }
      e2eeTrace?.(req.requestId, 'p.forward')
      // Not the exchange's signal: an app going away asks the worker to stop (stop()), it does not reset it at once.
      call(conn.session, req.path, { headers, body: req.body, signal: a.reset.signal }).then(
        (res) => this.onResponse(a, res),
        (err: Error) => {
          // Before the first byte (stream reset, session gone, nothing answered): another worker may do better.
          if (a.ended) return
          recordOutcome(conn, false)
          this.endAttempt(a, { kind: 'retry', error: new Error(`worker failed before answering: ${err.message}`) })
        },
      )
    })
  }

  private onResponse(a: Attempt, res: CallResponse): void {
    const ws = (a.ws = res.body)
    if (a.ended) return void a.reset.abort()
    a.status = res.status
    if (a.status >= 500 && a.status !== 504) {
      // Before the first byte: another worker may do better.
      a.reset.abort()
      recordOutcome(a.conn, false)
      return this.endAttempt(a, { kind: 'retry', error: new Error(`worker answered ${a.status}`) })
    }
    this.to('relaying')
    a.contentType = String(res.headers['content-type'] ?? 'application/json')
    // An encrypted answer is relayed record by record as it comes, streamed or not: the proxy cannot add the cost into it.
    a.streamed = (a.contentType.startsWith('text/event-stream') || (a.e2ee !== undefined && a.contentType === E2EE_CONTENT_TYPE)) && a.status === 200
    const cs = this.cs
    if (a.streamed && this.appOpen()) cs.respond({ ':status': 200, 'content-type': a.contentType, 'cache-control': 'no-cache', [HEADERS.worker]: a.conn.id, [HEADERS.e2ee]: a.e2ee ? 'on' : 'off' }, { waitForTrailers: true })
    ws.on('data', (chunk: Buffer) => {
      a.firstByteAt ??= Date.now()
      if (!a.streamed) {
        // A whole answer: held back, unread, until its usage is billed.
        a.buffered.push(chunk)
        return
      }
      if (!this.appOpen()) return
      if (!cs.write(chunk)) {
        ws.pause()
        cs.once('drain', () => ws.resume())
      }
    })
    a.usage = res.trailers.then(
      (t) => this.checkTrailers(a, t),
      () => undefined,
    )
    // The answer ends at its last byte (read, after its trailers); a stream cut before that fails the trailers.
    ws.once('end', () => {
      a.lastByteAt = Date.now()
      void a.usage.then((u) => this.onWorkerEnd(a, u))
    })
    res.trailers.catch(() => this.onWorkerCut(a))
  }

  /** The worker's usage and receipt trailers: the usage if its signature, request and model check out. */
  private checkTrailers(a: Attempt, t: http2.IncomingHttpHeaders): Promise<UsageRecord | undefined> {
    const { conn } = a
    a.receipt = t[HEADERS.receipt]
    return checkUsage(t[HEADERS.usage], t[HEADERS.usageSig], conn.key, this.req.requestId).then((c) => {
      if (c.ok && c.usage.answer?.model !== conn.peer.claims.modelId) {
        // It answered as a model it did not attest: nothing it says can be trusted; bill nothing, drop it.
        const reason = `worker answered as model '${String(c.usage.answer?.model)}' but attested '${conn.peer.claims.modelId}'`
        this.log.warn('refused the usage a worker signed', { worker: conn.id, reason })
        a.lied = reason
        return undefined
      }
      if (c.ok) {
        a.signedUsage = { usage: c.usage, json: t[HEADERS.usage] as string, signature: t[HEADERS.usageSig] as string, signer: Buffer.from(conn.peer.publicKey).toString('hex') }
        return c.usage
      }
      // Refused usage bills nothing; the answer is withheld as failed and the worker marked down.
      if (t[HEADERS.usage] !== undefined) this.log.warn('refused the usage a worker signed', { worker: conn.id, reason: c.reason })
      return undefined
    })
  }

  /** The worker's answer ended (its usage, if any, checked). */
  private onWorkerEnd(a: Attempt, usage: UsageRecord | undefined): void {
    if (a.ended) return
    const { conn } = a
    if (usage) return this.bill(a, usage)
    this.releaseReservation()
    if (a.status === 200) {
      // A finished answer always carries signed usage; without it the worker died or lied.
      recordOutcome(conn, false)
      this.log.warn('worker answer ended without signed usage', { worker: conn.id })
      void this.unbilledReceipt(a).then((rt) => {
        this.endWithError(a, new UpstreamError(`worker ${conn.id} ended the answer without signed usage`), rt)
        if (a.lied) this.host.dropWorker(conn, a.lied, true)
        this.endAttempt(a, { kind: 'done' }, 'failed')
      })
      return
    }
    // An error answer (e.g. a 400 from validation): pass it through.
    if (this.appOpen()) respond(this.cs, new Reply(a.status, Buffer.concat(a.buffered), { 'content-type': a.contentType }))
    recordOutcome(conn, a.status < 500)
    this.endAttempt(a, { kind: 'done' }, a.stopped ?? (a.status < 400 ? 'succeeded' : 'failed'))
  }

  /** The worker's answer was cut off after its headers (stream reset, session gone). */
  private onWorkerCut(a: Attempt): void {
    if (a.ended) return
    const { conn } = a
    this.releaseReservation()
    recordOutcome(conn, false)
    if (a.stopped) return this.endAttempt(a, { kind: 'done' }, a.stopped)
    this.log.warn('worker failed mid-stream', { worker: conn.id, rstCode: a.ws!.rstCode })
    // The worker died before signing: the proxy logs a receipt for what the app was sent (nothing is billed).
    void this.unbilledReceipt(a).then((rt) => {
      this.endWithError(a, new UpstreamError(`worker ${conn.id} failed mid-answer (stream reset ${a.ws!.rstCode})`), rt)
      this.endAttempt(a, { kind: 'done' }, 'failed')
    })
  }

  /** The signal fired while a worker has the request: on the deadline the app is told; either way the worker is asked to stop. */
  private readonly onAbort = (): void => {
    const a = this.a
    if (!a || a.ended || (this.state !== 'dispatched' && this.state !== 'relaying')) return
    if (this.abortKind() === 'timeout') {
      if (this.state === 'dispatched') {
        a.reset.abort()
        return this.endAttempt(a, { kind: 'timeout', error: new RequestTimeoutError(a.budgetMs) })
      }
      this.endWithError(a, new RequestTimeoutError(a.budgetMs))
      return this.stop(a, 'timeout')
    }
    this.log.info('client went away; cancelling on the worker', { worker: a.conn.id })
    this.stop(a, 'cancelled')
  }
  private readonly onAppClose: () => void

  /**
   * Cancel with grace: asks the worker to stop, which then ends its answer normally with usage for what it
   * produced (billed as usual); if it has not ended after CANCEL_GRACE_MS, its stream is reset.
   */
  private stop(a: Attempt, why: 'cancelled' | 'timeout'): void {
    if (a.stopped) return
    a.stopped = why
    cancelOnWorker(a.conn, a.id)
    a.grace = setTimeout(() => {
      a.reset.abort()
      this.endAttempt(a, { kind: 'done' }, why)
    }, this.host.cancelGraceMs ?? CANCEL_GRACE_MS)
  }

  /**
   * Bills what was produced: meters the worker's signed usage, logs its receipt (or one the proxy states), records
   * the usage durably, and only then ends the app's answer, with the receipt, usage, cost and running total as trailers.
   */
  private bill(a: Attempt, u: UsageRecord): void {
    const { conn } = a
    const req = this.req
    this.host.meter(conn, u)
    // The worker's receipt is logged if it is signed by the worker and agrees with its signed usage
    // and the proxy's prices; otherwise the proxy states one itself, so no answer goes unlogged.
    const prices = this.host.billing.params()
    const workerReceipt = async (): Promise<{ receipt: Receipt; cert?: Uint8Array }> => {
      const r = decodeReceiptBoc(String(a.receipt ?? ''))
      const bad = receiptMismatch(r.fields, u, { coefficient: conn.info.coefficient, prices, workerKey: conn.peer.publicKey, proxyKey: this.host.proxyKey() })
      if (bad) throw new Error(`receipt disagrees with the signed usage or prices: ${bad}`)
      // The signature is checked on the thread pool, like the usage's: one per answer, off the event loop.
      if (!(await verifyReceiptSignatureAsync(r, conn.peer.publicKey))) throw new Error('receipt not signed by this worker')
      return { receipt: r, cert: conn.certDer }
    }
    const receiptP = workerReceipt().catch((err: Error) => {
      if (a.receipt !== undefined) this.log.warn('worker receipt refused; the proxy states its own', { worker: conn.id, reason: err.message })
      return this.proxyReceipt(a, u, u.finishReason)
    })
    const signedUsage = a.signedUsage!
    receiptP
      .then((rc) =>
        this.host.billing
          .settle({ reservation: this.reservation, requestId: req.requestId, client: req.client, worker: conn.account, coefficient: conn.info.coefficient, usage: u, receipt: { receipt: rc.receipt, client: req.client, worker: conn.account, signedUsage } })
          .then((s) => ({ ...s, rc })),
      )
      .then(
        ({ cost, receiptIndex, rc }) => {
          const costInfo = { nano: cost.clientNano, adjustedTokens: cost.adjustedTokens, coefficient: conn.info.coefficient, pricePerTokenNano: prices.pricePerTokenNano }
          // What the proxy knows about the answer travels as trailers; the client node writes the app's final
          // usage (with the cost) into the answer itself: the proxy never rewrites an answer body.
          const receiptTrailers = { ...receiptTrailersOf(rc, receiptIndex), [HEADERS.usage]: signedUsage.json, [HEADERS.usageSig]: signedUsage.signature, [HEADERS.cost]: costTrailer(costInfo) }
          // The client's running total, read when the trailer is actually sent: answers on one
          // session finish in any order, and the client checks the totals never go down.
          const charged = () => {
            const c = this.host.billing.ledger.counters('client', req.client)
            return { [HEADERS.charged]: JSON.stringify({ client: req.client, tokens: c.tokens.toString(), nano: c.nano.toString() }), ...receiptTrailers }
          }
          recordOutcome(conn, true, (a.lastByteAt ?? Date.now()) - a.t0, { ttftMs: a.firstByteAt === undefined ? undefined : a.firstByteAt - a.t0, completionTokens: u.completionTokens })
          if (this.appOpen()) {
            if (a.streamed) {
              this.cs.once('wantTrailers', () => this.cs.sendTrailers(charged()))
              this.cs.end()
            } else {
              respond(this.cs, new Reply(a.status, Buffer.concat(a.buffered), { 'content-type': a.contentType }, charged))
            }
          }
          this.endAttempt(a, { kind: 'done' }, a.stopped ?? (u.finishReason === 'error' || a.status >= 400 ? 'failed' : 'succeeded'))
        },
        (err: Error) => {
          this.log.error('could not bill the answer; withholding it', { error: err })
          this.endWithError(a, new UpstreamError('the answer could not be billed'))
          this.endAttempt(a, { kind: 'done' }, 'failed')
        },
      )
  }

  /** Ends a worker's attempt once: its slot goes back; before the first byte its reservation too, and `done` settles the exchange. */
  private endAttempt(a: Attempt, end: AttemptEnd, outcome?: Outcome): void {
    if (a.ended) return
    a.ended = true
    clearTimeout(a.grace)
    this.releaseSlot()
    if (end.kind === 'done') this.settle(outcome ?? 'failed')
    else this.releaseReservation()
    a.resolve(end)
  }

  /**
   * The one exit, taken once: the admission slot and the reservation still held are released (each exactly
   * once), the outcome is counted once, and `error` answers the app if it is still there and nothing was sent to it yet.
   */
  private settle(outcome: Outcome, error?: unknown): void {
    if (this.state === 'settled') return
    this.to('settled')
    this.signal.removeEventListener('abort', this.onAbort)
    this.cs.off('close', this.onAppClose)
    this.releaseSlot()
    this.releaseReservation()
    this.host.outcome(outcome)
    if (error !== undefined && this.appOpen()) respondError(this.cs, error)
    this.finished()
  }

  private releaseSlot(): void {
    const conn = this.slot
    this.slot = undefined
    if (conn) this.host.admission.release(conn, this.req.client)
  }

  private releaseReservation(): void {
    const r = this.reservation
    this.reservation = undefined
    this.host.billing.release(r)
  }

  private appOpen(): boolean {
    return !this.cs.closed && !this.cs.destroyed
  }

  /** Tells the app the answer failed: an error answer if nothing was sent; mid-stream an SSE error event (plaintext only). */
  private endWithError(a: Attempt, err: Error, trailers?: http2.OutgoingHttpHeaders): void {
    const cs = this.cs
    if (!this.appOpen()) return
    if (!cs.headersSent) {
      const r = errorReply(err)
      return respond(cs, trailers ? new Reply(r.status, r.body, r.headers, trailers) : r)
    }
    if (a.streamed) {
      cs.once('wantTrailers', () => cs.sendTrailers(trailers ?? {}))
      // Nothing in clear may follow encrypted records: the answer simply ends without its final record, and the client node reports it cut off.
      cs.end(a.e2ee ? undefined : `data: ${JSON.stringify(errorResponse(err).body)}\n\n`)
    } else cs.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
  }

  /**
   * A receipt the proxy signs itself, for an answer whose worker did not give a valid one (it died mid-answer,
   * or its receipt was refused). It states what the proxy saw: the worker, the request's bytes, and `usage`
   * (zero when nothing is billed); the proxy never reads an answer, so its answer hash is of the empty text.
   * Sampling parameters are unknown here.
   */
  private async proxyReceipt(a: Attempt, usage: Usage, finishReason: string): Promise<{ receipt: Receipt; cert: Uint8Array }> {
    const { conn } = a
    const id = this.host.identity()
    const now = Date.now()
    const fields = receiptFields({
      signer: 'proxy',
      requestId: this.req.requestId,
      salt: this.req.salt,
      requestBody: this.req.body,
      answerText: '',
      sampling: { temperature: null, top_p: null, seed: null, max_tokens: null, stop: null },
      modelId: conn.info.model.id,
      modelHash: conn.info.model.hash,
      imageHash: conn.peer.imageHash,
      workerKey: conn.peer.publicKey,
      proxyKey: this.host.proxyKey(),
      usage,
      coefficient: conn.info.coefficient,
      prices: this.host.billing.params(),
      startedAtMs: a.t0,
      endedAtMs: now,
      finishReason,
    })
    const receipt = await signReceipt(fields, (d) => id.signAsync(d))
    return { receipt, cert: Buffer.from(id.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64') }
  }

  /** Logs a proxy-signed receipt for an answer that is not billed; resolves to the trailers that carry it (none if logging failed). */
  private async unbilledReceipt(a: Attempt): Promise<http2.OutgoingHttpHeaders | undefined> {
    try {
      const rc = await this.proxyReceipt(a, { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 'error')
      const index = this.host.billing.logReceipt(this.req.requestId, { receipt: rc.receipt, client: this.req.client, worker: a.conn.account })
      return receiptTrailersOf(rc, index)
    } catch (err) {
      this.log.error('could not log a receipt for a failed answer', { error: err })
      return undefined
    }
  }
}

/** Asks the worker to stop a request; it then ends the answer normally, with usage for what it produced. */
function cancelOnWorker(conn: WorkerConn, exchangeId: string): void {
  if (conn.session.closed || conn.session.destroyed) return
  // If the session is going away, the worker aborts when its stream is reset.
  call(conn.session, PATHS.cancel, { method: 'POST', headers: { [HEADERS.exchange]: exchangeId } }).then((r) => void r.body.resume(), noop)
}

function noop(): void {}

/** The wrapped key for one of the HPKE keys this worker attested, or undefined when the request does not name it as a recipient. */
export function recipientKey(w: WorkerConn, keys: WrappedKey[]): WrappedKey | undefined {
  return keys.find((k) => w.hpkeKeys?.has(k.recipient))
}

/** The receipt trailers the client node keeps: the cell, its number in the log, the signer's certificate. */
function receiptTrailersOf(rc: { receipt: Receipt; cert?: Uint8Array }, index: number | undefined): http2.OutgoingHttpHeaders {
  const t: http2.OutgoingHttpHeaders = { [HEADERS.receipt]: rc.receipt.boc.toString('base64') }
  if (index !== undefined) t[HEADERS.receiptIndex] = String(index)
  if (rc.cert) t[HEADERS.receiptCert] = Buffer.from(rc.cert).toString('base64')
  return t
}
