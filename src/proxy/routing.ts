// Worker selection at the proxy, in one pure module: hard gates (model, coefficient cap, capacity, circuit
// breaker, already tried), then the lowest expected cost from measured quality, then prefix-cache affinity by
// rendezvous hashing among the near-best. The formula, its weights and why: docs/routing.md.
import crypto from 'node:crypto'
import type http2 from 'node:http2'
import type { VerifiedPeer } from '../tee/index.ts'
import { PATHS, type WorkerInfo } from '../net/protocol.ts'
import type { Usage } from '../core/usage.ts'

/** Assumed duration of a request before a worker has been measured. */
export const DEFAULT_REQUEST_MS = 1_000
/** Weight of the newest sample in the moving averages. */
export const EWMA_ALPHA = 0.2
/** Before a worker is measured: time to first token, ms, and decode speed, tokens/s. */
export const PRIOR_TTFT_MS = 500
export const PRIOR_TOKENS_PER_SEC = 20
/** The answer length the cost is computed for (tokens): long enough that decode speed matters. */
export const REFERENCE_COMPLETION_TOKENS = 128
/** Weight of the coefficient in the cost: cost × (coefficient/1000)^COEFFICIENT_WEIGHT. */
export const COEFFICIENT_WEIGHT = 1
/** Workers within this factor of the best cost share prefix-affinity traffic (0.25 = 25% slower at most). */
export const AFFINITY_SLACK = 0.25
/**
 * The reliability score from the proxy's committed record (docs/routing.md): a success rate smoothed toward a
 * prior, times a latency term from the record's p50 time to first token, times an uptime term.
 */
export const RELIABILITY_PRIOR_REQUESTS = 20
export const RELIABILITY_PRIOR_SUCCESS = 0.9
export const RELIABILITY_TTFT_REF_MS = 1_000
/** Half of the uptime term is fixed, so a worker that was away part of a window is penalised, not excluded. */
export const RELIABILITY_UPTIME_FLOOR = 0.5
/** cost ÷ score^RELIABILITY_WEIGHT. */
export const RELIABILITY_WEIGHT = 1
/** Consecutive failures that open a worker's circuit breaker. */
export const BREAKER_THRESHOLD = 3
/** How long an opened breaker stays open, doubling on each re-open, up to the max. */
export const BREAKER_OPEN_MS = 5_000
export const BREAKER_MAX_OPEN_MS = 120_000

/** Measured quality of one worker for the one model it serves (a worker connection serves one model). */
export interface WorkerQuality {
  /** EMA of time to first token, ms; null before the first measured answer. */
  ttftMs: number | null
  /** EMA of decode speed after the first token, tokens/s. */
  tokensPerSec: number | null
  /** EMA of success (1) / failure (0); starts at 1. */
  successRate: number
  consecutiveFailures: number
  breaker: { state: 'closed' | 'open' | 'half-open'; until: number; openMs: number; trialInFlight: boolean }
}

export interface WorkerConn {
  id: string
  session: http2.ClientHttp2Session
  peer: VerifiedPeer
  key: crypto.KeyObject
  /** Who is paid for this worker's answers: its payout wallet, or its key when off-chain. */
  account: string
  info: WorkerInfo
  remote: string
  connectedAt: number
  active: number
  /** Moving average of request duration, ms. */
  avgMs: number
  /** Moving average of failure (1) / success (0). */
  failRate: number
  served: number
  failed: number
  /** Usage metered on this worker's answers (core/usage.ts). */
  tokens: Usage
  /** The worker's certificate (DER), handed to clients with its receipts. */
  certDer?: Uint8Array
  /** Measured quality; created on first use. */
  quality?: WorkerQuality
  /** The worker's newest verified certificate (its session keeps the one it opened with), served to clients for E2EE. */
  currentCert?: { der: Uint8Array; fetchedAtMs: number }
  /** HPKE keys (hex) this worker attested in any certificate of this session: the recipients it can open. */
  hpkeKeys?: Set<string>
  /** Reliability score from the last committed record (reliabilityScore); unset: the prior's score. Set it with setReliability. */
  reliability?: number
  /** The worker's place in a WorkerPool's candidate order, while it is in one (routing's own bookkeeping). */
  route?: PoolEntry
}

/** What the score reads from a worker's reliability record entry (src/payments/receipts/reliability.ts). */
export interface ReliabilityFigures {
  requests: number
  successes: number
  cancelled: number
  p50_ttft_ms: number | null
  uptime: number | null
}

/**
 * The reliability score, in (0, 1]; higher is better. A worker with no record scores as the priors say.
 *   success = (successes + PRIOR_SUCCESS × PRIOR_REQUESTS) / (requests − cancelled + PRIOR_REQUESTS)
 *   latency = TTFT_REF_MS / (TTFT_REF_MS + p50_ttft_ms)            (p50 unknown: PRIOR_TTFT_MS)
 *   uptime  = UPTIME_FLOOR + (1 − UPTIME_FLOOR) × uptime            (uptime unknown: 1)
 *   score   = success × latency × uptime
 */
export function reliabilityScore(e?: ReliabilityFigures): number {
  const attempts = Math.max(0, (e?.requests ?? 0) - (e?.cancelled ?? 0))
  const successes = Math.min(e?.successes ?? 0, attempts)
  const success = (successes + RELIABILITY_PRIOR_SUCCESS * RELIABILITY_PRIOR_REQUESTS) / (attempts + RELIABILITY_PRIOR_REQUESTS)
  const ttft = Math.max(0, e?.p50_ttft_ms ?? PRIOR_TTFT_MS)
  const latency = RELIABILITY_TTFT_REF_MS / (RELIABILITY_TTFT_REF_MS + ttft)
  const up = Math.min(1, Math.max(0, e?.uptime ?? 1))
  return success * latency * (RELIABILITY_UPTIME_FLOOR + (1 - RELIABILITY_UPTIME_FLOOR) * up)
}

/** The score of a worker with no record yet. */
export const RELIABILITY_PRIOR_SCORE = reliabilityScore()

/** `exhausted`: every worker that could serve was already tried for this request. */
export type Selection = { conn: WorkerConn } | { reason: 'model_not_found' | 'endpoint' | 'coefficient' | 'busy' | 'exhausted'; minCoefficient?: number }

/** The paths a worker serves its model at; workers from before endpoints were advertised serve generation only. */
export function workerEndpoints(info: WorkerInfo): readonly string[] {
  return info.model.endpoints ?? GENERATION_ENDPOINTS
}
const GENERATION_ENDPOINTS: readonly string[] = [PATHS.chat, PATHS.completions]

/** Prefix-cache affinity for one request: a key for its prompt prefix, and who asks (the salt). */
export interface Affinity {
  /** Opaque key of the prompt prefix, computed by the client node (a keyed hash; the proxy never sees the prompt). */
  prefixKey: string
  /** The client's identity at the proxy: salts the hash, so one client's keys map nowhere in particular for another. */
  client: string
}

export interface SelectOptions {
  /** The endpoint asked for; only workers that advertise it qualify. Default: any. */
  path?: string
  /** Only these workers (ids) may take the request, e.g. the recipients an encrypted request names. Default: any. */
  only?: ReadonlySet<string>
  affinity?: Affinity
  now?: number
}

export function qualityOf(c: WorkerConn): WorkerQuality {
  if (!c.quality) {
    c.quality = { ttftMs: null, tokensPerSec: null, successRate: 1, consecutiveFailures: 0, breaker: { state: 'closed', until: 0, openMs: BREAKER_OPEN_MS, trialInFlight: false } }
  }
  return c.quality
}

/**
 * Whether the breaker lets a request through now: closed, or open with its time up (the next request chosen
 * there is its half-open trial), or half-open with no trial running. Reads only: the breaker turns half-open
 * when a worker is chosen (selection visits only some workers, and a visit must not change one).
 */
export function breakerAllows(q: WorkerQuality, now: number): boolean {
  const b = q.breaker
  if (b.state === 'closed') return true
  if (b.state === 'open') return now >= b.until
  // One trial at a time; a trial that never reported back (cancelled, lost) expires after BREAKER_OPEN_MS.
  return !b.trialInFlight || now >= b.until
}

/**
 * Expected milliseconds to finish a reference answer here, with queueing and failures priced in, scaled by
 * the worker's price. Lower is better.
 *   latency = ttft + REFERENCE_COMPLETION_TOKENS / tokensPerSec × 1000
 *   cost    = latency × (1 + active / maxActiveRequests) / successRate × (coefficient / 1000)^COEFFICIENT_WEIGHT
 *             / reliability^RELIABILITY_WEIGHT           (reliability: the committed record's score, see reliabilityScore)
 * Computed as baseCost × loadFactor, so that cost ≥ baseCost exactly (a WorkerPool stops its scan on that bound).
 */
export function routingCost(c: WorkerConn): number {
  return baseCost(c) * loadFactor(c)
}

/** The cost without the load term: what changes only when a worker's measured quality, record or price does. */
export function baseCost(c: WorkerConn): number {
  const q = qualityOf(c)
  const ttft = q.ttftMs ?? PRIOR_TTFT_MS
  const tps = Math.max(q.tokensPerSec ?? PRIOR_TOKENS_PER_SEC, 0.1)
  const latency = ttft + (REFERENCE_COMPLETION_TOKENS / tps) * 1000
  const success = Math.max(q.successRate, 0.05)
  const price = Math.max(c.info.coefficient, 1) / 1000
  const reliability = Math.max(c.reliability ?? RELIABILITY_PRIOR_SCORE, 0.01)
  return (latency * price ** COEFFICIENT_WEIGHT) / success / reliability ** RELIABILITY_WEIGHT
}

/** The load term, in [1, 2): 1 + in flight / capacity. */
export function loadFactor(c: WorkerConn): number {
  return 1 + c.active / Math.max(1, c.info.maxActiveRequests)
}

/** Sets a worker's reliability score (from a committed record); a WorkerPool re-places the worker in its order. */
export function setReliability(c: WorkerConn, score: number | undefined): void {
  if (c.reliability === score) return
  c.reliability = score
  touched(c)
}

/** Kept for callers that want the old notion: expected time until a new request would finish here. */
export function expectedWaitMs(c: WorkerConn): number {
  const slots = Math.max(1, c.info.maxActiveRequests)
  return ((c.active + 1) * c.avgMs * (1 + 4 * c.failRate)) / slots
}

/**
 * Rendezvous (highest random weight) hash of a worker for a salted prefix key, in [0, 2^53). The salted key is
 * hashed once per request (SHA-256 of client ‖ prefixKey), each worker's id once per worker; the weight mixes
 * the two with a 32-bit finalizer, so a decision among 1,000 workers costs 1 SHA-256, not 1,000.
 */
export function rendezvousWeight(a: Affinity, workerId: string): number {
  return mixWeight(affinitySeed(a), idHash(workerId))
}

/**
 * SHA-256(client ‖ 0 ‖ prefixKey), its first 8 bytes as two 32-bit words: secret to anyone but that client.
 * Remembered (bounded): affinity exists because a client repeats its prefixes, and a SHA-256 costs more than
 * the rest of a decision.
 */
function affinitySeed(a: Affinity): [number, number] {
  const key = `${a.client}\0${a.prefixKey}`
  let v = seeds.get(key)
  if (v === undefined) {
    const h = crypto.createHash('sha256').update(a.client).update('\0').update(a.prefixKey).digest()
    v = [h.readUInt32BE(0), h.readUInt32BE(4)]
    if (seeds.size >= SEEDS_MAX) seeds.clear()
    seeds.set(key, v)
  }
  return v
}
const seeds = new Map<string, [number, number]>()
const SEEDS_MAX = 10_000

const idHashes = new Map<string, [number, number]>()
/** SHA-256 of a worker id as two 32-bit words, remembered (ids are few and never reused with another meaning). */
function idHash(id: string): [number, number] {
  let v = idHashes.get(id)
  if (!v) {
    const h = crypto.createHash('sha256').update(id).digest()
    v = [h.readUInt32BE(0), h.readUInt32BE(4)]
    if (idHashes.size >= ID_HASHES_MAX) idHashes.clear()
    idHashes.set(id, v)
  }
  return v
}
const ID_HASHES_MAX = 100_000

/** murmur3's 32-bit finalizer on each word of seed XOR id: a 53-bit weight. */
function mixWeight(seed: [number, number], id: [number, number]): number {
  return mixWords(seed, id[0], id[1])
}

function mixWords(seed: [number, number], id0: number, id1: number): number {
  return fmix32(seed[0] ^ id0) * 2 ** 21 + (fmix32(seed[1] ^ id1) >>> 11)
}

function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * Scratch space of selection, reused by every call so that a decision allocates nothing per worker. Selection
 * is synchronous, so no two calls ever share it; it is cleared after each call (no closed worker is kept alive).
 */
const scratchConns: WorkerConn[] = []
const scratchCosts: number[] = []
const scratchEntries: PoolEntry[] = []

/**
 * Picks the worker for `model`, never one in `exclude` (nor, with `only`, one outside it). Over a WorkerPool only
 * the candidates that could still win are visited (WorkerPool.select); over any other iterable every worker is
 * scanned. Both give the same answer (test/proxy/routing.test.ts checks it on randomized worker sets).
 */
export function selectWorker(conns: Iterable<WorkerConn> | WorkerPool, model: string, maxCoefficient: number, exclude: ReadonlySet<string>, options: SelectOptions | string = {}): Selection {
  const opts: SelectOptions = typeof options === 'string' ? { path: options } : options
  if (conns instanceof WorkerPool) return conns.select(model, maxCoefficient, exclude, opts)
  return scanWorkers(conns, model, maxCoefficient, exclude, opts)
}

/** The reference selection: every worker is visited. */
function scanWorkers(conns: Iterable<WorkerConn>, model: string, maxCoefficient: number, exclude: ReadonlySet<string>, opts: SelectOptions): Selection {
  const now = opts.now ?? Date.now()
  const path = opts.path
  const only = opts.only
  let n = 0
  let best = -1
  let seenModel = false
  let seenEndpoint = false
  let minCoefficient = Infinity
  let withinCoefficient = false
  let untried = false
  for (const c of conns) {
    if (c.info.model.id !== model) continue
    seenModel = true
    if (path !== undefined && !workerEndpoints(c.info).includes(path)) continue
    seenEndpoint = true
    if (c.info.coefficient > maxCoefficient) {
      minCoefficient = Math.min(minCoefficient, c.info.coefficient)
      continue
    }
    withinCoefficient = true
    const down = c.session.closed || c.session.destroyed
    const excluded = (exclude.size > 0 && exclude.has(c.id)) || (only !== undefined && !only.has(c.id))
    if (!excluded && !down) untried = true
    if (excluded || down || c.active >= c.info.maxActiveRequests) continue
    if (!breakerAllows(qualityOf(c), now)) continue
    const cost = routingCost(c)
    scratchConns[n] = c
    scratchCosts[n] = cost
    if (best < 0 || cost < scratchCosts[best] || (cost === scratchCosts[best] && tieBreak(c, scratchConns[best]) < 0)) best = n
    n++
  }
  if (n > 0) {
    let chosen = scratchConns[best]
    if (opts.affinity && n > 1) {
      // Among the near-best, the prefix's rendezvous winner: the same client's same prefix lands on the same
      // worker (its KV cache is warm there) while that worker stays within the slack of the best.
      const limit = scratchCosts[best] * (1 + AFFINITY_SLACK)
      const seed = affinitySeed(opts.affinity)
      let top = -1
      for (let i = 0; i < n; i++) {
        if (scratchCosts[i] > limit) continue
        const w = mixWeight(seed, idHash(scratchConns[i].id))
        if (w > top) {
          top = w
          chosen = scratchConns[i]
        }
      }
    }
    scratchConns.fill(undefined as unknown as WorkerConn, 0, n)
    return chosenOne(chosen, now)
  }
  if (!seenModel) return { reason: 'model_not_found' }
  if (!seenEndpoint) return { reason: 'endpoint' }
  if (!withinCoefficient) return { reason: 'coefficient', minCoefficient }
  if (!untried) return { reason: 'exhausted' }
  return { reason: 'busy' }
}

/** The chosen worker; if its breaker is not closed, this request is its one half-open trial. */
function chosenOne(chosen: WorkerConn, now: number): Selection {
  const q = qualityOf(chosen)
  if (q.breaker.state !== 'closed') Object.assign(q.breaker, { state: 'half-open', trialInFlight: true, until: now + BREAKER_OPEN_MS })
  return { conn: chosen }
}

function tieBreak(a: WorkerConn, b: WorkerConn): number {
  // Equal otherwise, the earlier connected worker keeps the request (iteration order).
  return a.info.coefficient - b.info.coefficient || a.served - b.served
}

/** A worker's place in its model's candidate order in a WorkerPool. */
export interface PoolEntry {
  conn: WorkerConn
  /** Order of joining the pool (the Map's iteration order): the last tie-break, as in a full scan. */
  seq: number
  /** baseCost(conn) when the entry was last placed; stale only while `dirty`. */
  base: number
  dirty: boolean
  /** conn.id, and idHash(conn.id) for the affinity pass. */
  id: string
  h0: number
  h1: number
  /** The worker's fixed info, copied here so that a visit reads one object (fewer cache misses in a big heap). */
  endpoints: ReadonlySet<string>
  coefficient: number
  capacity: number
  /** Whether the breaker was closed when the entry was last placed; it can only open in recordOutcome (which re-places). */
  breakerClosed: boolean
  model: ModelOrder
}

/** One model's workers, ordered by (base cost, seq), and those whose base cost changed since they were placed. */
interface ModelOrder {
  order: PoolEntry[]
  dirty: PoolEntry[]
}

/** Marks a worker's base cost as changed: its pool re-places it before the next decision for its model. */
function touched(c: WorkerConn): void {
  const e = c.route
  if (e !== undefined && !e.dirty) {
    e.dirty = true
    e.model.dirty.push(e)
  }
}

/** Reads what placement needs from the worker: its base cost and whether its breaker is closed. */
function settle(e: PoolEntry): void {
  e.base = baseCost(e.conn)
  e.breakerClosed = qualityOf(e.conn).breaker.state === 'closed'
  e.dirty = false
}

const byBase = (a: PoolEntry, b: PoolEntry): number => a.base - b.base || a.seq - b.seq

/** First index in `order` whose entry does not sort before (base, seq). */
function lowerBound(order: PoolEntry[], base: number, seq: number): number {
  let lo = 0
  let hi = order.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const m = order[mid]
    if (m.base < base || (m.base === base && m.seq < seq)) lo = mid + 1
    else hi = mid
  }
  return lo
}

function placeIn(order: PoolEntry[], e: PoolEntry): void {
  order.splice(lowerBound(order, e.base, e.seq), 0, e)
}

function takeOut(order: PoolEntry[], e: PoolEntry): void {
  let i = lowerBound(order, e.base, e.seq)
  if (order[i] !== e) i = order.indexOf(e)
  if (i >= 0) order.splice(i, 1)
}

/**
 * The proxy's connected workers (a Map by id, in connection order) with an index that lets a routing decision
 * visit only the workers that could win it. Per model, workers are kept ordered by their base cost (the cost
 * without its load term, which is in [1, 2)); a worker whose base cost changes (recordOutcome, setReliability)
 * is re-placed before the next decision. A decision walks that order and stops at the first worker whose base
 * cost exceeds the best cost found so far (with prefix affinity: the best cost × (1 + AFFINITY_SLACK)): no
 * worker from there on can win. It also finds the workers that can open an encrypted request by its recipient
 * keys, without a scan. A worker's info (model, coefficient, capacity, endpoints) is fixed while it is in the pool.
 */
export class WorkerPool extends Map<string, WorkerConn> {
  private readonly models = new Map<string, ModelOrder>()
  private readonly byHpkeKey = new Map<string, Set<WorkerConn>>()
  private readonly endpointSets = new Map<string, ReadonlySet<string>>()
  private nextSeq = 0

  override set(id: string, conn: WorkerConn): this {
    const old = super.get(id)
    if (old === conn) return this
    // Replacing a value keeps the key's place in the Map's order, so the new worker keeps the old one's seq.
    const seq = old?.route?.seq ?? this.nextSeq++
    if (old) this.leave(old)
    super.set(id, conn)
    this.join(conn, seq)
    return this
  }

  override delete(id: string): boolean {
    const c = super.get(id)
    if (c === undefined) return false
    this.leave(c)
    return super.delete(id)
  }

  override clear(): void {
    for (const c of super.values()) this.leave(c)
    super.clear()
  }

  /** Adds an HPKE key the worker attested (e.g. in a newer certificate), so that `recipients` finds it. */
  addHpkeKey(conn: WorkerConn, key: string): void {
    ;(conn.hpkeKeys ??= new Set()).add(key)
    if (super.get(conn.id) === conn) this.indexKey(key, conn)
  }

  /** The ids of the workers that can open a request sealed to any of these recipient (HPKE) keys. */
  recipients(keys: Iterable<string>): Set<string> {
    const out = new Set<string>()
    for (const k of keys) for (const c of this.byHpkeKey.get(k) ?? []) out.add(c.id)
    return out
  }

  /** selectWorker over this pool: visits the model's workers cheapest base cost first, and stops when none left can win. */
  select(model: string, maxCoefficient: number, exclude: ReadonlySet<string>, opts: SelectOptions = {}): Selection {
    const mo = this.models.get(model)
    if (mo === undefined) return { reason: 'model_not_found' }
    this.replace(mo)
    const now = opts.now ?? Date.now()
    // Sessions are looked at only for the best and the chosen worker (reading an HTTP/2 session's state is the
    // dearest part of a visit). A down worker that is neither changes nothing; if either is down, look again,
    // checking every visited worker's session, as a full scan does.
    return this.walk(mo, maxCoefficient, exclude, opts, now, false) ?? this.walk(mo, maxCoefficient, exclude, opts, now, true)!
  }

  private walk(mo: ModelOrder, maxCoefficient: number, exclude: ReadonlySet<string>, opts: SelectOptions, now: number, checkSessions: boolean): Selection | undefined {
    const { path, only, affinity } = opts
    const slack = affinity ? 1 + AFFINITY_SLACK : 1
    // With an allow-list, only its entries are visited (few: an encrypted request names at most a handful).
    let list = mo.order
    let len = list.length
    if (only !== undefined) {
      len = 0
      for (const id of only) {
        const e = super.get(id)?.route
        if (e !== undefined && e.model === mo) scratchEntries[len++] = e
      }
      list = scratchEntries.slice(0, len)
      scratchEntries.fill(undefined as unknown as PoolEntry, 0, len)
    }
    let n = 0
    let best: PoolEntry | undefined
    let bestCost = Infinity
    let bound = Infinity
    let lastEndpoints: ReadonlySet<string> | undefined
    let pathServed = false
    for (let i = 0; i < len; i++) {
      const e = list[i]
      // cost = base × load ≥ base: from here on (in base order) nobody beats the best or comes within the slack.
      if (e.base > bound) {
        if (only === undefined) break
        continue
      }
      if (e.coefficient > maxCoefficient) continue
      if (path !== undefined) {
        // Workers share endpoint sets (one per distinct list): look the path up once per set met.
        if (e.endpoints !== lastEndpoints) {
          lastEndpoints = e.endpoints
          pathServed = lastEndpoints.has(path)
        }
        if (!pathServed) continue
      }
      const active = e.conn.active
      if (active >= e.capacity) continue
      if (exclude.size > 0 && exclude.has(e.id)) continue
      if (!e.breakerClosed && !breakerAllows(qualityOf(e.conn), now)) continue
      if (checkSessions && down(e.conn)) continue
      const cost = e.base * (1 + active / Math.max(1, e.capacity))
      scratchEntries[n] = e
      scratchCosts[n] = cost
      n++
      if (best === undefined || cost < bestCost || (cost === bestCost && before(e, best))) {
        best = e
        bestCost = cost
        bound = cost * slack
      }
    }
    if (best === undefined) return this.reason(mo, maxCoefficient, exclude, opts)
    let chosen = best
    if (affinity && n > 1) {
      const limit = bestCost * (1 + AFFINITY_SLACK)
      const seed = affinitySeed(affinity)
      let top = -1
      for (let i = 0; i < n; i++) {
        if (scratchCosts[i] > limit) continue
        const e = scratchEntries[i]
        const w = mixWords(seed, e.h0, e.h1)
        if (w > top || (w === top && e.seq < chosen.seq)) {
          top = w
          chosen = e
        }
      }
    }
    scratchEntries.fill(undefined as unknown as PoolEntry, 0, n)
    if (!checkSessions && (down(best.conn) || down(chosen.conn))) return undefined
    return chosenOne(chosen.conn, now)
  }

  /** Why no worker of a known model can take the request now (as the full scan would say). */
  private reason(mo: ModelOrder, maxCoefficient: number, exclude: ReadonlySet<string>, opts: SelectOptions): Selection {
    const { path, only } = opts
    let seenEndpoint = false
    let withinCoefficient = false
    let minCoefficient = Infinity
    for (const e of mo.order) {
      const c = e.conn
      if (path !== undefined && !e.endpoints.has(path)) continue
      seenEndpoint = true
      if (c.info.coefficient > maxCoefficient) {
        minCoefficient = Math.min(minCoefficient, c.info.coefficient)
        continue
      }
      withinCoefficient = true
      const excluded = (exclude.size > 0 && exclude.has(c.id)) || (only !== undefined && !only.has(c.id))
      // Someone could take it but is busy (or its breaker is open): wait.
      if (!excluded && !(c.session.closed || c.session.destroyed)) return { reason: 'busy' }
    }
    if (!seenEndpoint) return { reason: 'endpoint' }
    if (!withinCoefficient) return { reason: 'coefficient', minCoefficient }
    return { reason: 'exhausted' }
  }

  /** Re-places the workers whose base cost changed since the last decision for this model. */
  private replace(mo: ModelOrder): void {
    const d = mo.dirty
    if (d.length === 0) return
    if (d.length > 16) {
      // Many at once (a burst of answers): merge the re-placed ones, sorted, into the rest in one pass.
      const rest = mo.order.filter((e) => !e.dirty)
      for (const e of d) settle(e)
      d.sort(byBase)
      const order = mo.order
      order.length = 0
      let i = 0
      let j = 0
      while (i < rest.length || j < d.length) order.push(j >= d.length || (i < rest.length && byBase(rest[i], d[j]) < 0) ? rest[i++] : d[j++])
    } else {
      for (const e of d) {
        takeOut(mo.order, e)
        settle(e)
        placeIn(mo.order, e)
      }
    }
    d.length = 0
  }

  private join(conn: WorkerConn, seq: number): void {
    const model = conn.info.model.id
    let mo = this.models.get(model)
    if (mo === undefined) this.models.set(model, (mo = { order: [], dirty: [] }))
    const [h0, h1] = idHash(conn.id)
    const e: PoolEntry = {
      conn, seq, base: 0, dirty: false, id: conn.id, h0, h1, endpoints: this.endpointSet(conn.info), coefficient: conn.info.coefficient, capacity: conn.info.maxActiveRequests, breakerClosed: true, model: mo,
    }
    settle(e)
    conn.route = e
    placeIn(mo.order, e)
    for (const k of conn.hpkeKeys ?? []) this.indexKey(k, conn)
  }

  private leave(conn: WorkerConn): void {
    const e = conn.route
    if (e !== undefined) {
      const mo = e.model
      takeOut(mo.order, e)
      if (e.dirty) mo.dirty.splice(mo.dirty.indexOf(e), 1)
      if (mo.order.length === 0) this.models.delete(conn.info.model.id)
      conn.route = undefined
    }
    for (const k of conn.hpkeKeys ?? []) {
      const s = this.byHpkeKey.get(k)
      s?.delete(conn)
      if (s?.size === 0) this.byHpkeKey.delete(k)
    }
  }

  /** One shared set per distinct endpoint list (workers of a model mostly serve the same ones). */
  private endpointSet(info: WorkerInfo): ReadonlySet<string> {
    const list = workerEndpoints(info)
    const key = list.join('\n')
    let set = this.endpointSets.get(key)
    if (set === undefined) this.endpointSets.set(key, (set = new Set(list)))
    return set
  }

  private indexKey(key: string, conn: WorkerConn): void {
    let s = this.byHpkeKey.get(key)
    if (s === undefined) this.byHpkeKey.set(key, (s = new Set()))
    s.add(conn)
  }
}

function down(c: WorkerConn): boolean {
  return c.session.closed || c.session.destroyed
}

/** Whether `a` wins a tie in cost against `b`: the full scan's tie-break, then the earlier connected. */
function before(a: PoolEntry, b: PoolEntry): boolean {
  const t = tieBreak(a.conn, b.conn)
  return t < 0 || (t === 0 && a.seq < b.seq)
}

/** What the proxy measured of one answer. */
export interface AnswerSample {
  /** From sending the request to the answer's first byte, ms. */
  ttftMs?: number
  completionTokens?: number
}

export function recordOutcome(c: WorkerConn, ok: boolean, durationMs?: number, sample: AnswerSample = {}, now = Date.now()): void {
  c.failRate = c.failRate * (1 - EWMA_ALPHA) + (ok ? 0 : 1) * EWMA_ALPHA
  if (ok) c.served++
  else c.failed++
  if (ok && durationMs !== undefined) c.avgMs = c.served === 1 ? durationMs : c.avgMs * (1 - EWMA_ALPHA) + durationMs * EWMA_ALPHA

  const q = qualityOf(c)
  touched(c)
  q.successRate = q.successRate * (1 - EWMA_ALPHA) + (ok ? 1 : 0) * EWMA_ALPHA
  const b = q.breaker
  if (ok) {
    q.consecutiveFailures = 0
    if (b.state !== 'closed') Object.assign(b, { state: 'closed', until: 0, openMs: BREAKER_OPEN_MS, trialInFlight: false })
    if (sample.ttftMs !== undefined) q.ttftMs = ewma(q.ttftMs, sample.ttftMs)
    if (durationMs !== undefined && sample.ttftMs !== undefined && sample.completionTokens && sample.completionTokens > 1) {
      const decodeMs = Math.max(1, durationMs - sample.ttftMs)
      q.tokensPerSec = ewma(q.tokensPerSec, ((sample.completionTokens - 1) * 1000) / decodeMs)
    }
    return
  }
  q.consecutiveFailures++
  if (b.state === 'half-open') {
    // The trial failed: open again, for twice as long.
    b.openMs = Math.min(b.openMs * 2, BREAKER_MAX_OPEN_MS)
    Object.assign(b, { state: 'open', until: now + b.openMs, trialInFlight: false })
  } else if (b.state === 'closed' && q.consecutiveFailures >= BREAKER_THRESHOLD) {
    Object.assign(b, { state: 'open', until: now + b.openMs, trialInFlight: false })
  }
}

/** For /jsonstats: the worker's quality record as routing sees it. */
export function qualityStats(c: WorkerConn): Record<string, unknown> {
  const q = qualityOf(c)
  return {
    ttftMs: q.ttftMs === null ? null : Math.round(q.ttftMs),
    tokensPerSec: q.tokensPerSec === null ? null : Math.round(q.tokensPerSec * 10) / 10,
    successRate: Math.round(q.successRate * 1000) / 1000,
    inFlight: c.active,
    capacity: c.info.maxActiveRequests,
    breaker: q.breaker.state,
    reliability: Math.round((c.reliability ?? RELIABILITY_PRIOR_SCORE) * 1000) / 1000,
    cost: Math.round(routingCost(c)),
  }
}

function ewma(prev: number | null, x: number): number {
  return prev === null ? x : prev * (1 - EWMA_ALPHA) + x * EWMA_ALPHA
}
