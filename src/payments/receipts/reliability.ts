// The proxy's reliability record: per worker and model, what its receipts show (requests, successes, p50 time
// to first token, decode speed) and the proxy's statement of uptime. Pure: anyone holding the receipts can
// recompute the receipt-derived part. Canonical JSON and its SHA-256, which goes into the commit on chain.
// Layout, definitions and how to check it: docs/receipts.md ("Reliability record").
import crypto from 'node:crypto'
import type { FinishReason, ReceiptFields } from './receipt.ts'

/** Bumped on any change to the record's fields or their definitions. */
export const RELIABILITY_RECORD_VERSION = 1
/** The record covers at most this many receipts: the newest of the log as of the commit. */
export const RELIABILITY_WINDOW_RECEIPTS = 10_000
/** Finish reasons that count as a success: the worker produced a complete answer. */
export const SUCCESS_FINISHES: readonly FinishReason[] = ['stop', 'length', 'tool_calls', 'content_filter']

/** One worker's record for one model. */
export interface ReliabilityEntry {
  /** The worker's attested key (hex), as its receipts name it. */
  worker_key: string
  model_id: string
  /** Receipts in the window for this worker and model. */
  requests: number
  /** Of those, signed by the worker with a success finish (stop, length, tool_calls, content_filter). */
  successes: number
  /** Of those, cancelled (by the app or its client): neither a success nor held against the worker. */
  cancelled: number
  /** Median (lower) of first_token_at_ms − started_at_ms over successes that state a first token time; null if none. */
  p50_ttft_ms: number | null
  /** Σ(completion_tokens − 1) / Σ(ended_at_ms − first_token_at_ms) × 1000 over those successes with ≥ 2 tokens; 2 decimals; null if none. */
  tokens_per_sec: number | null
  /** The proxy's statement: share of the uptime window the worker had a session at the proxy, 4 decimals; null when not stated. */
  uptime: number | null
}

export interface ReliabilityRecord {
  version: number
  /** The proxy's payment key (hex), as its receipts name it. */
  proxy_key: string
  /** The state commit this record goes with. */
  seqno: number
  /** Receipt numbers [from, to) the record is derived from: the newest RELIABILITY_WINDOW_RECEIPTS of the log as committed. */
  receipts: { from: number; to: number }
  /** The uptime window, unix ms: from the previous commit (or the proxy's start) to this one. */
  uptime_window: { start_ms: number; end_ms: number }
  /** Sorted by worker_key, then model_id. */
  workers: ReliabilityEntry[]
}

/** The receipt range a record as of `count` receipts covers. */
export function reliabilityWindow(count: number): { from: number; to: number } {
  return { from: Math.max(0, count - RELIABILITY_WINDOW_RECEIPTS), to: count }
}

const entryKey = (workerKey: string, modelId: string) => `${workerKey}\n${modelId}`

/**
 * Builds the record from the window's receipts (in any order) and the proxy's uptime statement
 * (connected share per `worker_key \n model_id`; workers connected without receipts are listed too).
 */
export function buildReliabilityRecord(input: {
  proxyKey: string
  seqno: number
  receipts: { from: number; to: number }
  fields: Iterable<ReceiptFields>
  uptime?: ReadonlyMap<string, number>
  uptimeWindow: { startMs: number; endMs: number }
}): ReliabilityRecord {
  const acc = new Map<string, { workerKey: string; modelId: string; requests: number; successes: number; cancelled: number; ttfts: number[]; decodeTokens: number; decodeMs: number }>()
  const slot = (workerKey: string, modelId: string) => {
    const k = entryKey(workerKey, modelId)
    let a = acc.get(k)
    if (!a) acc.set(k, (a = { workerKey, modelId, requests: 0, successes: 0, cancelled: 0, ttfts: [], decodeTokens: 0, decodeMs: 0 }))
    return a
  }
  for (const f of input.fields) {
    const a = slot(f.workerKey.toString('hex'), f.modelId)
    a.requests++
    if (f.finishReason === 'cancelled') {
      a.cancelled++
      continue
    }
    if (f.signer !== 'worker' || !SUCCESS_FINISHES.includes(f.finishReason)) continue
    a.successes++
    if (f.firstTokenAtMs <= 0 || f.firstTokenAtMs < f.startedAtMs) continue
    a.ttfts.push(f.firstTokenAtMs - f.startedAtMs)
    if (f.completionTokens >= 2 && f.endedAtMs > f.firstTokenAtMs) {
      a.decodeTokens += f.completionTokens - 1
      a.decodeMs += f.endedAtMs - f.firstTokenAtMs
    }
  }
  for (const k of input.uptime?.keys() ?? []) {
    const [workerKey, modelId] = k.split('\n')
    slot(workerKey, modelId)
  }
  const workers: ReliabilityEntry[] = [...acc.values()]
    .sort((x, y) => (x.workerKey < y.workerKey ? -1 : x.workerKey > y.workerKey ? 1 : x.modelId < y.modelId ? -1 : x.modelId > y.modelId ? 1 : 0))
    .map((a) => {
      const sorted = a.ttfts.sort((x, y) => x - y)
      const up = input.uptime?.get(entryKey(a.workerKey, a.modelId))
      return {
        worker_key: a.workerKey,
        model_id: a.modelId,
        requests: a.requests,
        successes: a.successes,
        cancelled: a.cancelled,
        p50_ttft_ms: sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : null,
        tokens_per_sec: a.decodeMs > 0 ? round((a.decodeTokens * 1000) / a.decodeMs, 2) : null,
        uptime: up === undefined ? null : round(Math.min(1, Math.max(0, up)), 4),
      }
    })
  return {
    version: RELIABILITY_RECORD_VERSION,
    proxy_key: input.proxyKey,
    seqno: input.seqno,
    receipts: { from: input.receipts.from, to: input.receipts.to },
    uptime_window: { start_ms: input.uptimeWindow.startMs, end_ms: input.uptimeWindow.endMs },
    workers,
  }
}

function round(x: number, digits: number): number {
  const m = 10 ** digits
  return Math.round(x * m) / m
}

export class ReliabilityFormatError extends Error {
  readonly name = 'ReliabilityFormatError'
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ReliabilityFormatError(`${what} is not a non-negative integer`)
  return v
}
function num(v: unknown, what: string): number | null {
  if (v === null) return null
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ReliabilityFormatError(`${what} is not a non-negative number or null`)
  return v
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new ReliabilityFormatError(`${what} is not a string`)
  return v
}
function obj(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ReliabilityFormatError(`${what} is not an object`)
  return v as Record<string, unknown>
}

/**
 * The canonical serialization: JSON (ECMAScript JSON.stringify, no spaces) with the keys in the documented
 * order, and nothing else. Accepts a record as parsed from anyone's JSON; throws ReliabilityFormatError when
 * a field is missing or of the wrong type.
 */
export function canonicalReliabilityJson(record: unknown): string {
  const r = obj(record, 'the record')
  const receipts = obj(r.receipts, 'receipts')
  const window = obj(r.uptime_window, 'uptime_window')
  if (!Array.isArray(r.workers)) throw new ReliabilityFormatError('workers is not a list')
  const canonical = {
    version: int(r.version, 'version'),
    proxy_key: str(r.proxy_key, 'proxy_key'),
    seqno: int(r.seqno, 'seqno'),
    receipts: { from: int(receipts.from, 'receipts.from'), to: int(receipts.to, 'receipts.to') },
    uptime_window: { start_ms: int(window.start_ms, 'uptime_window.start_ms'), end_ms: int(window.end_ms, 'uptime_window.end_ms') },
    workers: r.workers.map((w, i) => {
      const e = obj(w, `workers[${i}]`)
      return {
        worker_key: str(e.worker_key, `workers[${i}].worker_key`),
        model_id: str(e.model_id, `workers[${i}].model_id`),
        requests: int(e.requests, `workers[${i}].requests`),
        successes: int(e.successes, `workers[${i}].successes`),
        cancelled: int(e.cancelled, `workers[${i}].cancelled`),
        p50_ttft_ms: num(e.p50_ttft_ms, `workers[${i}].p50_ttft_ms`),
        tokens_per_sec: num(e.tokens_per_sec, `workers[${i}].tokens_per_sec`),
        uptime: num(e.uptime, `workers[${i}].uptime`),
      }
    }),
  }
  return JSON.stringify(canonical)
}

/** The record's hash, as committed on chain: SHA-256 of its canonical JSON (UTF-8). */
export function reliabilityHash(record: unknown): Buffer {
  return crypto.createHash('sha256').update(canonicalReliabilityJson(record), 'utf8').digest()
}

/**
 * Where a served record and one recomputed from the same receipts (without uptime) disagree, field by field;
 * empty when they agree. Uptime is the proxy's statement and is not compared.
 */
export function compareRecomputed(served: ReliabilityRecord, recomputed: ReliabilityRecord): string[] {
  const problems: string[] = []
  const strip = (r: ReliabilityRecord) => new Map(r.workers.filter((w) => w.requests > 0).map((w) => [entryKey(w.worker_key, w.model_id), { ...w, uptime: null }]))
  const a = strip(served)
  const b = strip(recomputed)
  for (const [k, w] of b) {
    const s = a.get(k)
    const name = `${w.worker_key.slice(0, 16)}…/${w.model_id}`
    if (!s) problems.push(`${name}: missing from the served record`)
    else for (const f of ['requests', 'successes', 'cancelled', 'p50_ttft_ms', 'tokens_per_sec'] as const) if (s[f] !== w[f]) problems.push(`${name}: ${f} served ${s[f]}, receipts give ${w[f]}`)
  }
  for (const [k, s] of a) if (!b.has(k)) problems.push(`${s.worker_key.slice(0, 16)}…/${s.model_id}: ${s.requests} requests served, no receipts in the window`)
  return problems
}

// ---------------------------------------------------------------- uptime (the proxy's statement)

/**
 * Tracks, per `worker_key \n model_id`, how long the worker had at least one session at the proxy. `take`
 * gives each one's connected share of the window so far; `advance` starts the next window.
 */
export class UptimeTracker {
  private readonly open = new Map<string, { sessions: number; since: number }>()
  private readonly connectedMs = new Map<string, number>()
  private windowStart: number

  constructor(startMs = Date.now()) {
    this.windowStart = startMs
  }

  get start(): number {
    return this.windowStart
  }

  connected(workerKey: string, modelId: string, at = Date.now()): void {
    const k = entryKey(workerKey, modelId)
    const o = this.open.get(k)
    if (o) o.sessions++
    else this.open.set(k, { sessions: 1, since: at })
  }

  disconnected(workerKey: string, modelId: string, at = Date.now()): void {
    const k = entryKey(workerKey, modelId)
    const o = this.open.get(k)
    if (!o) return
    if (--o.sessions > 0) return
    this.open.delete(k)
    this.connectedMs.set(k, (this.connectedMs.get(k) ?? 0) + Math.max(0, at - Math.max(o.since, this.windowStart)))
  }

  /** Connected shares over [start, end] (the window so far; nothing changes). */
  shares(end = Date.now()): { startMs: number; endMs: number; uptime: Map<string, number> } {
    const startMs = this.windowStart
    const span = Math.max(1, end - startMs)
    const ms = new Map(this.connectedMs)
    for (const [k, o] of this.open) ms.set(k, (ms.get(k) ?? 0) + Math.max(0, end - Math.max(o.since, startMs)))
    const uptime = new Map<string, number>()
    for (const [k, v] of ms) uptime.set(k, Math.min(1, v / span))
    return { startMs, endMs: end, uptime }
  }

  /** Starts the next window at `end` (after a commit that stated the shares up to it). */
  advance(end: number): void {
    this.connectedMs.clear()
    for (const o of this.open.values()) o.since = Math.max(o.since, end)
    this.windowStart = end
  }
}
