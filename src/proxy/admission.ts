// The proxy's admission queue: a request that finds every suitable worker busy waits for a slot, in a bounded queue
// served round-robin across clients. The slot is claimed in the same synchronous step as the choice of worker.
import { InvalidRequestError, ModelNotFoundError, ModelRestartingError, NoWorkerAvailableError, RequestTimeoutError, TooManyRequestsError } from '../net/errors.ts'
import { MODEL_GONE_RETRY_AFTER_SEC, RecentModels } from './recent-models.ts'
import { selectWorker, WorkerPool, type Affinity, type WorkerConn } from './routing.ts'

/** Requests that may wait for a worker slot, across all clients. */
export const DEFAULT_QUEUE_DEPTH = 256
/** Longest a request waits in the queue before it gets 429. */
export const DEFAULT_QUEUE_MAX_WAIT_MS = 30_000

export interface QueueOptions {
  /** Requests that may wait for a slot, across all clients; 0 turns queueing off. Default 256. */
  depth: number
  /** Longest wait for a slot, ms, before 429 with Retry-After. Default 30 000. */
  maxWaitMs: number
  /** Time every routing decision (selectWorker) and report it in stats (`cocoon bench --scale`). Default off. */
  timeRouting?: boolean
}

/** Routing decisions whose times are kept (the newest; older ones are overwritten). */
export const ROUTING_SAMPLES = 65_536

/** Routing decision times for /jsonstats: how many were timed, and the median, 99th percentile and worst of the newest, µs. */
export interface RoutingTiming {
  decisions: number
  p50Us: number
  p99Us: number
  maxUs: number
  /** Workers connected at the newest decision. */
  workers: number
}

/** Wall time of each selectWorker call, in a fixed ring of the newest ROUTING_SAMPLES. */
class RoutingTimer {
  private readonly us = new Float64Array(ROUTING_SAMPLES)
  private n = 0
  workers = 0

  record(us: number): void {
    this.us[this.n++ % ROUTING_SAMPLES] = us
  }

  stats(): RoutingTiming {
    const kept = this.us.slice(0, Math.min(this.n, ROUTING_SAMPLES)).sort()
    const at = (p: number) => (kept.length === 0 ? 0 : Math.round(kept[Math.min(kept.length - 1, Math.ceil(p * kept.length) - 1)] * 100) / 100)
    return { decisions: this.n, p50Us: at(0.5), p99Us: at(0.99), maxUs: at(1), workers: this.workers }
  }
}

/** Every worker that could take the request was already tried (a retry has nowhere left to go). */
export class WorkersExhaustedError extends Error {
  readonly name = 'WorkersExhaustedError'
  constructor() {
    super('every worker for this model was tried')
  }
}

/** What a request needs from a worker. */
export interface Want {
  client: string
  model: string
  maxCoefficient: number
  /** Workers already tried for this request. */
  exclude: ReadonlySet<string>
  /** Only these workers may take it (ids), e.g. the recipients an encrypted request names. Default: any. */
  only?: ReadonlySet<string>
  /** Prefix-cache affinity: the client's prefix key, salted with the client (docs/routing.md). */
  affinity?: Affinity
  /** The endpoint asked for; only workers that advertise it qualify. Default: any. */
  path?: string
}

interface Waiter {
  want: Want
  enqueuedAt: number
  resolve: (c: WorkerConn) => void
  reject: (e: Error) => void
  cleanup: () => void
}

/** Admission statistics for /jsonstats and /metrics. */
export interface QueueStats {
  depth: number
  maxWaitMs: number
  queued: number
  byClient: Record<string, number>
  admittedAfterWait: number
  rejectedFull: number
  timedOut: number
  /** Moving average of the wait of requests that did wait, ms. */
  avgWaitMs: number
}

/**
 * Hands out worker slots. `claim` either returns a worker whose slot is already taken (its `active`
 * counted) or waits; the caller gives the slot back with `release`. Fairness: each client has its own
 * FIFO, and a freed slot goes to the next client in turn whose head request it fits.
 */
export class AdmissionQueue {
  private readonly byClient = new Map<string, Waiter[]>()
  /** Slots each client holds now; fairness counts these with the client's waiters. */
  private readonly inFlight = new Map<string, number>()
  /** Clients with waiters, in service order; the head is served next. */
  private order: string[] = []
  private queued = 0
  private readonly counts = { admittedAfterWait: 0, rejectedFull: 0, timedOut: 0 }
  private avgWaitMs = 0
  private readonly timer?: RoutingTimer
  /** Models whose workers left lately: asking for one is a 503 to retry, not a 404 (./recent-models.ts). */
  readonly recentModels = new RecentModels()

  /**
   * `workers`: the connected workers. A WorkerPool (the proxy's) lets each decision visit only the workers that
   * could win it; any other iterable is scanned in full.
   */
  constructor(
    private readonly workers: () => Iterable<WorkerConn> | WorkerPool,
    private readonly o: QueueOptions,
  ) {
    if (o.timeRouting) this.timer = new RoutingTimer()
  }

  /**
   * The error for a model no connected worker serves: 503 with Retry-After when a worker of it left lately
   * (it is restarting, or its link dropped), else 404 model_not_found.
   */
  modelUnavailable(model: string): Error {
    const ago = this.recentModels.secondsSinceLeft(model)
    if (ago === undefined) return new ModelNotFoundError(model)
    return new ModelRestartingError(`no worker for '${model.slice(0, 200)}' is connected right now (the last one left ${ago} s ago); retry shortly`, MODEL_GONE_RETRY_AFTER_SEC)
  }

  /** selectWorker over the connected workers, timed when timeRouting is on. */
  private select(want: Want) {
    const opts = { path: want.path, affinity: want.affinity, only: want.only }
    if (!this.timer) return selectWorker(this.workers(), want.model, want.maxCoefficient, want.exclude, opts)
    const start = performance.now()
    const sel = selectWorker(this.workers(), want.model, want.maxCoefficient, want.exclude, opts)
    this.timer.record((performance.now() - start) * 1000)
    return sel
  }

  /** Routing decision times, when timeRouting is on. */
  routingTiming(workers: number): RoutingTiming | undefined {
    if (!this.timer) return undefined
    this.timer.workers = workers
    return this.timer.stats()
  }

  /**
   * A worker for `want`, its slot claimed. Throws at once when no worker could ever take it (unknown model,
   * coefficient above the cap), and TooManyRequestsError when the queue is full or the wait too long.
   */
  claim(want: Want, signal: AbortSignal): Promise<WorkerConn> {
    // Only when nobody waits may a newcomer take a free slot directly; otherwise it queues behind them.
    if (this.queued === 0) {
      const sel = this.select(want)
      if ('conn' in sel) {
        this.take(sel.conn, want.client)
        return Promise.resolve(sel.conn)
      }
      if (sel.reason === 'model_not_found') return Promise.reject(this.modelUnavailable(want.model))
      if (sel.reason === 'endpoint') return Promise.reject(endpointNotServed(want))
      if (sel.reason === 'exhausted') return Promise.reject(new WorkersExhaustedError())
      if (sel.reason === 'coefficient') return Promise.reject(new NoWorkerAvailableError(`no worker for '${want.model}' at max_coefficient ${want.maxCoefficient}; the cheapest asks ${sel.minCoefficient}`))
    } else {
      const sel = this.select(want)
      if (!('conn' in sel) && sel.reason === 'model_not_found') return Promise.reject(this.modelUnavailable(want.model))
      if (!('conn' in sel) && sel.reason === 'endpoint') return Promise.reject(endpointNotServed(want))
      if (!('conn' in sel) && sel.reason === 'exhausted') return Promise.reject(new WorkersExhaustedError())
    }
    if (signal.aborted) return Promise.reject(signal.reason ?? new Error('aborted'))
    if (!this.makeRoom(want.client)) {
      this.counts.rejectedFull++
      return Promise.reject(new TooManyRequestsError(`every worker for '${want.model}' is busy and the queue is full (${this.o.depth} waiting); retry later`, this.retryAfterSec()))
    }
    return new Promise<WorkerConn>((resolve, reject) => {
      const waiter: Waiter = {
        want,
        enqueuedAt: Date.now(),
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer)
          signal.removeEventListener('abort', onAbort)
        },
      }
      const timer = setTimeout(() => {
        if (!this.remove(waiter)) return
        this.counts.timedOut++
        reject(new TooManyRequestsError(`every worker for '${want.model}' stayed busy for ${this.o.maxWaitMs} ms; retry later`, this.retryAfterSec()))
      }, this.o.maxWaitMs)
      const onAbort = () => {
        if (this.remove(waiter)) reject(signal.reason instanceof Error ? signal.reason : new RequestTimeoutError(0))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      let list = this.byClient.get(want.client)
      if (!list) {
        this.byClient.set(want.client, (list = []))
        this.order.push(want.client)
      }
      list.push(waiter)
      this.queued++
      this.pump()
    })
  }

  /** Gives `client`'s slot back and lets the queue use it. */
  release(conn: WorkerConn, client: string): void {
    conn.active--
    const n = (this.inFlight.get(client) ?? 1) - 1
    if (n > 0) this.inFlight.set(client, n)
    else this.inFlight.delete(client)
    this.pump()
  }

  private take(conn: WorkerConn, client: string): void {
    conn.active++
    this.inFlight.set(client, (this.inFlight.get(client) ?? 0) + 1)
  }

  /** What a client holds: its slots and its places in the queue. */
  private held(client: string): number {
    return (this.inFlight.get(client) ?? 0) + (this.byClient.get(client)?.length ?? 0)
  }

  /**
   * Serves waiters while slots are free: clients in turn, each one's oldest request first. A client whose
   * head request fits no free worker is passed over for this round, not skipped for good.
   */
  pump(): void {
    let progress = true
    while (progress && this.queued > 0) {
      progress = false
      for (let i = 0; i < this.order.length; i++) {
        const client = this.order[i]
        const list = this.byClient.get(client)!
        const head = list[0]
        const sel = this.select(head.want)
        if (!('conn' in sel)) {
          if (sel.reason === 'busy') continue
          // Its model or price is gone (the workers left): it can never be served from this queue.
          this.remove(head)
          head.reject(
            sel.reason === 'model_not_found' ? this.modelUnavailable(head.want.model) : sel.reason === 'endpoint' ? endpointNotServed(head.want) : sel.reason === 'exhausted' ? new WorkersExhaustedError() : new NoWorkerAvailableError(`no worker for '${head.want.model}' at max_coefficient ${head.want.maxCoefficient}`),
          )
          progress = true
          break
        }
        this.take(sel.conn, client)
        this.remove(head)
        // Served: this client goes to the back of the line.
        if (this.byClient.has(client)) this.order = [...this.order.filter((c) => c !== client), client]
        const waited = Date.now() - head.enqueuedAt
        this.avgWaitMs = this.counts.admittedAfterWait === 0 ? waited : this.avgWaitMs * 0.8 + waited * 0.2
        this.counts.admittedAfterWait++
        head.resolve(sel.conn)
        progress = true
        break
      }
    }
  }

  /**
   * Makes room for one more of `client`'s requests: yes while the queue has room. When it is full, what each
   * client holds is counted as its slots plus its places in the queue (so a client that grabbed the free slots
   * first does not also get an equal share of the queue): a client holding at least two fewer than the
   * client holding the most takes the place of that client's newest waiting request.
   */
  private makeRoom(client: string): boolean {
    if (this.o.depth <= 0) return false
    if (this.queued < this.o.depth) return true
    const mine = this.held(client)
    let hog: string | undefined
    let most = -1
    for (const c of this.byClient.keys()) {
      const h = this.held(c)
      if (h > most) [hog, most] = [c, h]
    }
    if (hog === undefined || hog === client || mine + 1 >= most) return false
    const list = this.byClient.get(hog)!
    const evicted = list[list.length - 1]
    this.remove(evicted)
    this.counts.rejectedFull++
    evicted.reject(new TooManyRequestsError('the queue is full and this client holds more than its share of it; retry later', this.retryAfterSec()))
    return true
  }

  private remove(w: Waiter): boolean {
    const list = this.byClient.get(w.want.client)
    const i = list?.indexOf(w) ?? -1
    if (!list || i < 0) return false
    list.splice(i, 1)
    this.queued--
    w.cleanup()
    if (list.length === 0) {
      this.byClient.delete(w.want.client)
      this.order = this.order.filter((c) => c !== w.want.client)
    }
    return true
  }

  /** A fair guess at when a slot frees for a newcomer: the queue ahead, over every slot, at the measured speed. */
  private retryAfterSec(): number {
    let slots = 0
    let ms = 0
    const ws = this.workers()
    for (const w of ws instanceof WorkerPool ? ws.values() : ws) {
      slots += w.info.maxActiveRequests
      ms += w.avgMs * w.info.maxActiveRequests
    }
    const avg = slots > 0 ? ms / slots : 1_000
    return Math.max(1, Math.min(60, Math.ceil(((this.queued + 1) * avg) / Math.max(1, slots) / 1000)))
  }

  stats(): QueueStats {
    const byClient: Record<string, number> = {}
    for (const [c, l] of this.byClient) byClient[c] = l.length
    return { depth: this.o.depth, maxWaitMs: this.o.maxWaitMs, queued: this.queued, byClient, ...this.counts, avgWaitMs: Math.round(this.avgWaitMs) }
  }
}

/** The model exists here, but none of its workers serves the endpoint asked for. */
function endpointNotServed(want: Want): InvalidRequestError {
  return new InvalidRequestError(`model '${want.model}' is not served at ${want.path}; see the endpoints /v1/models lists for it`, 'model')
}
