// The apps behind one client node: API keys (stored hashed, each with a spend limit per day or month and
// allowed models) and the history of answered requests, for the dashboard and for each key's usage.
import crypto from 'node:crypto'
import fs from 'node:fs'
import type Database from 'better-sqlite3'
import { openSqlite, statementCache } from '../core/sqlite.ts'
import { ONE_TON_NANO } from '../ton/contracts/index.ts'

/** How an API key looks: a fixed prefix, then 32 random bytes in base64url. */
export const API_KEY_PREFIX = 'sk-cocoon-'
/** Requests kept in the history (oldest dropped first). */
export const REQUEST_HISTORY_MAX = 10_000
/** The history is trimmed once per this many requests, so it holds up to REQUEST_HISTORY_MAX + REQUEST_TRIM_EVERY - 1 rows. */
export const REQUEST_TRIM_EVERY = 500

export type LimitPeriod = 'day' | 'month'

export interface ApiKeyInfo {
  id: string
  name: string
  /** The first characters of the key, to recognise it; the key itself is never stored. */
  prefix: string
  /** Spend limit per period in nanoTON; null = no limit. */
  limitNano: string | null
  period: LimitPeriod
  /** Models the key may use; empty = all. */
  models: string[]
  createdAt: number
  revokedAt: number | null
  /** Spent in the current period, nanoTON. */
  spentNano: string
  requests: number
}

export interface NewApiKey {
  name: string
  limitNano?: bigint | null
  period?: LimitPeriod
  models?: string[]
}

/** One answered (or failed) app request, as the dashboard lists it. */
export interface RequestRecord {
  id: string
  at: number
  model: string
  keyId: string | null
  status: number
  outcome: string
  promptTokens: number
  completionTokens: number
  costNano: string
  latencyMs: number
  stream: boolean
  /** The answer's receipt id (see docs/receipts.md), when it has one. */
  receiptId: string | null
}

/** The key is missing or unknown (401 invalid_api_key, in OpenAI's shape). */
export class InvalidApiKeyError extends Error {
  readonly name = 'InvalidApiKeyError'
  constructor(message = 'Incorrect or missing API key. Send it as "Authorization: Bearer sk-cocoon-…" (cocoon client keys create).') {
    super(message)
  }
}

/** The key spent its limit for this period (429 insufficient_quota, naming the limit). */
export class ApiKeyQuotaError extends Error {
  readonly name = 'ApiKeyQuotaError'
  constructor(
    readonly keyName: string,
    readonly limitNano: bigint,
    readonly period: LimitPeriod,
    readonly spentNano: bigint,
    /** The worst case of the key's requests still in flight, counted against the limit with what it spent. */
    readonly inFlightNano = 0n,
  ) {
    const held = inFlightNano > 0n ? `, and up to ${formatTonText(inFlightNano)} TON more for its requests in flight` : ''
    super(`API key '${keyName}' reached its spend limit of ${formatTonText(limitNano)} TON per ${period} (spent ${formatTonText(spentNano)} TON this ${period}${held})`)
  }
}

/** The key may not use this model (403, naming the model). */
export class ModelNotAllowedError extends Error {
  readonly name = 'ModelNotAllowedError'
  constructor(readonly keyName: string, readonly model: string) {
    super(`API key '${keyName}' may not use the model '${model}'`)
  }
}

function formatTonText(nano: bigint): string {
  const frac = (nano % ONE_TON_NANO).toString().padStart(9, '0').replace(/0+$/, '')
  return `${nano / ONE_TON_NANO}${frac ? '.' + frac : ''}`
}

export function hashApiKey(key: string): string {
  return crypto.createHash('sha256').update(key).digest('hex')
}

/** Start of the current period (UTC), ms. */
export function periodStart(period: LimitPeriod, now: number): number {
  const d = new Date(now)
  return period === 'day' ? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) : Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
}

interface TotalsRow {
  key_id: string
  requests: number
  period_start: number
  period_spent_nano: string
}

interface KeyRow {
  id: string
  name: string
  hash: string
  prefix: string
  limit_nano: string | null
  period: LimitPeriod
  models: string
  created_at: number
  revoked_at: number | null
}

export class AppAccounts {
  private readonly db: Database.Database
  /** Each statement prepared once (see statementCache). */
  private sql!: (sql: string) => Database.Statement
  /** The worst case of each key's requests in flight (admitted, not yet answered), nanoTON. */
  private readonly inFlight = new Map<string, bigint>()

  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {
    this.db = openSqlite(file, 'NORMAL')
    this.sql = statementCache(this.db)
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
        limit_nano TEXT, period TEXT NOT NULL, models TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
      CREATE TABLE IF NOT EXISTS requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, at INTEGER NOT NULL, model TEXT NOT NULL, key_id TEXT,
        status INTEGER NOT NULL, outcome TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        cost_nano TEXT NOT NULL, latency_ms INTEGER NOT NULL, stream INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS requests_key_at ON requests (key_id, at);
    `)
    const cols = this.sql(`PRAGMA table_info(requests)`).all() as Array<{ name: string }>
    if (!cols.some((c) => c.name === 'receipt_id')) this.db.exec(`ALTER TABLE requests ADD COLUMN receipt_id TEXT`)
    // Each key's running totals, kept as requests are recorded: its spend limit is checked on every request, and the
    // history above is trimmed to its last REQUEST_HISTORY_MAX rows, so neither may read the history.
    this.db.exec(`CREATE TABLE IF NOT EXISTS key_totals (
      key_id TEXT PRIMARY KEY, requests INTEGER NOT NULL, period_start INTEGER NOT NULL, period_spent_nano TEXT NOT NULL)`)
    this.backfillTotals()
    fs.chmodSync(file, 0o600)
  }

  /** Totals for keys that have none (a file from before key_totals): counted once from the history it still holds. */
  private backfillTotals(): void {
    const keys = this.sql(`SELECT id, period FROM api_keys WHERE id NOT IN (SELECT key_id FROM key_totals)`).all() as Array<{ id: string; period: LimitPeriod }>
    this.db.transaction(() => {
      for (const k of keys) {
        const since = periodStart(k.period, this.now())
        const spent = (this.sql(`SELECT cost_nano FROM requests WHERE key_id = ? AND at >= ?`).all(k.id, since) as Array<{ cost_nano: string }>).reduce((t, x) => t + BigInt(x.cost_nano), 0n)
        const n = (this.sql(`SELECT count(*) AS n FROM requests WHERE key_id = ?`).get(k.id) as { n: number }).n
        this.sql(`INSERT INTO key_totals (key_id, requests, period_start, period_spent_nano) VALUES (?, ?, ?, ?)`).run(k.id, n, since, spent.toString())
      }
    })()
  }

  close(): void {
    this.db.close()
  }

  /** Creates a key; the returned `key` is shown once and never stored. */
  createKey(k: NewApiKey): { key: string; info: ApiKeyInfo } {
    const name = k.name.trim()
    if (!name || name.length > 64) throw new RangeError('the key name must be 1-64 characters')
    if (k.limitNano != null && k.limitNano <= 0n) throw new RangeError('the spend limit must be positive (or absent)')
    const period = k.period ?? 'month'
    if (period !== 'day' && period !== 'month') throw new RangeError("the period must be 'day' or 'month'")
    const key = API_KEY_PREFIX + crypto.randomBytes(32).toString('base64url')
    const id = crypto.randomBytes(6).toString('hex')
    this.sql(`INSERT INTO api_keys (id, name, hash, prefix, limit_nano, period, models, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)`)
      .run(id, name, hashApiKey(key), key.slice(0, API_KEY_PREFIX.length + 4), k.limitNano == null ? null : k.limitNano.toString(), period, JSON.stringify(k.models ?? []), this.now())
    return { key, info: this.keyInfo(id)! }
  }

  revokeKey(idOrName: string): ApiKeyInfo | undefined {
    const row = this.row(idOrName)
    if (!row) return undefined
    if (row.revoked_at == null) this.sql(`UPDATE api_keys SET revoked_at = ? WHERE id = ?`).run(this.now(), row.id)
    return this.keyInfo(row.id)
  }

  listKeys(): ApiKeyInfo[] {
    const rows = this.sql(`SELECT id FROM api_keys ORDER BY created_at`).all() as Array<{ id: string }>
    return rows.map((r) => this.keyInfo(r.id)!)
  }

  /** Active (not revoked) keys exist. */
  hasKeys(): boolean {
    return !!this.sql(`SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1`).get()
  }

  private row(idOrName: string): KeyRow | undefined {
    return this.sql(`SELECT * FROM api_keys WHERE id = ? OR name = ? ORDER BY revoked_at IS NULL DESC LIMIT 1`).get(idOrName, idOrName) as KeyRow | undefined
  }

  private keyInfo(id: string): ApiKeyInfo | undefined {
    const r = this.sql(`SELECT * FROM api_keys WHERE id = ?`).get(id) as KeyRow | undefined
    if (!r) return undefined
    const t = this.sql(`SELECT * FROM key_totals WHERE key_id = ?`).get(id) as TotalsRow | undefined
    const spent = t && t.period_start === periodStart(r.period, this.now()) ? t.period_spent_nano : '0'
    return {
      id: r.id,
      name: r.name,
      prefix: r.prefix,
      limitNano: r.limit_nano,
      period: r.period,
      models: JSON.parse(r.models) as string[],
      createdAt: r.created_at,
      revokedAt: r.revoked_at,
      spentNano: spent,
      requests: t?.requests ?? 0,
    }
  }

  /**
   * Who is asking. With `required`, a missing or unknown key is InvalidApiKeyError. Without it, a
   * known key still counts (and is limited), and anything else (the SDK's placeholder) is anonymous.
   * A revoked key is refused either way. Throws ApiKeyQuotaError over the limit, ModelNotAllowedError.
   */
  authorize(authorization: string | undefined, model: string, required: boolean): ApiKeyInfo | undefined {
    const row = this.keyRow(authorization, required)
    if (!row) return undefined
    const info = this.keyInfo(row.id)!
    if (info.models.length && !info.models.includes(model)) throw new ModelNotAllowedError(info.name, model)
    const held = this.inFlight.get(info.id) ?? 0n
    if (info.limitNano != null && BigInt(info.spentNano) + held >= BigInt(info.limitNano)) throw new ApiKeyQuotaError(info.name, BigInt(info.limitNano), info.period, BigInt(info.spentNano), held)
    return info
  }

  /** The row of the valid, unrevoked key in `Authorization: Bearer …`; none: undefined, or InvalidApiKeyError when one is required. */
  private keyRow(authorization: string | undefined, required: boolean): KeyRow | undefined {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')
    const row = m ? (this.sql(`SELECT * FROM api_keys WHERE hash = ?`).get(hashApiKey(m[1])) as KeyRow | undefined) : undefined
    if (!row) {
      if (required) throw new InvalidApiKeyError()
      return undefined
    }
    if (row.revoked_at != null) throw new InvalidApiKeyError(`API key '${row.name}' was revoked`)
    return row
  }

  /** The id of the valid key in `Authorization` (a model list or a spent limit do not matter): InvalidApiKeyError without one. */
  keyOf(authorization: string | undefined): string {
    return this.keyRow(authorization, true)!.id
  }

  /**
   * Admits a request as authorize() does, and holds `worstNano()` (the most the request can cost; worked out only
   * for a key with a limit) against the key's limit until `release()`, called once the answer is recorded (or the request ends without one). Without this,
   * every request in flight was admitted against the same spend: a key could open hundreds at once and pay for
   * all of them past its limit. With it, the key's spend can pass its limit by one request's worst case at most.
   */
  admit(authorization: string | undefined, model: string, required: boolean, worstNano: () => bigint): { keyId: string | null; release: () => void } {
    const info = this.authorize(authorization, model, required)
    if (!info) return { keyId: null, release: () => {} }
    const worst = info.limitNano == null ? 0n : worstNano()
    if (worst <= 0n) return { keyId: info.id, release: () => {} }
    const id = info.id
    this.inFlight.set(id, (this.inFlight.get(id) ?? 0n) + worst)
    let released = false
    return {
      keyId: id,
      release: () => {
        if (released) return
        released = true
        const left = (this.inFlight.get(id) ?? 0n) - worst
        if (left > 0n) this.inFlight.set(id, left)
        else this.inFlight.delete(id)
      },
    }
  }

  /** Records an answered request in the history and, with a key, in the key's totals (one transaction). */
  record(r: Omit<RequestRecord, 'at' | 'receiptId'> & { at?: number; receiptId?: string | null }): void {
    const at = r.at ?? this.now()
    this.db.transaction(() => {
      const { lastInsertRowid } = this.sql(`INSERT INTO requests (id, at, model, key_id, status, outcome, prompt_tokens, completion_tokens, cost_nano, latency_ms, stream, receipt_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(r.id, at, r.model.slice(0, 128), r.keyId, r.status, r.outcome, r.promptTokens, r.completionTokens, r.costNano, Math.round(r.latencyMs), r.stream ? 1 : 0, r.receiptId ?? null)
      if (r.keyId) this.addToTotals(r.keyId, at, /^\d+$/.test(r.costNano) ? BigInt(r.costNano) : 0n)
      // The oldest rows go REQUEST_TRIM_EVERY at a time, not one per request.
      if (Number(lastInsertRowid) % REQUEST_TRIM_EVERY === 0) this.sql(`DELETE FROM requests WHERE seq <= ?`).run(Number(lastInsertRowid) - REQUEST_HISTORY_MAX)
    })()
  }

  private addToTotals(keyId: string, at: number, costNano: bigint): void {
    const k = this.sql(`SELECT period FROM api_keys WHERE id = ?`).get(keyId) as { period: LimitPeriod } | undefined
    if (!k) return
    const start = periodStart(k.period, at)
    const t = this.sql(`SELECT * FROM key_totals WHERE key_id = ?`).get(keyId) as TotalsRow | undefined
    // A new period starts from zero; a request stamped in a period already past counts only in `requests`.
    const spent = !t || start > t.period_start ? costNano : start === t.period_start ? BigInt(t.period_spent_nano) + costNano : BigInt(t.period_spent_nano)
    this.sql(`INSERT INTO key_totals (key_id, requests, period_start, period_spent_nano) VALUES (?, 1, ?, ?)
      ON CONFLICT (key_id) DO UPDATE SET requests = requests + 1, period_start = excluded.period_start, period_spent_nano = excluded.period_spent_nano`)
      .run(keyId, t ? Math.max(start, t.period_start) : start, spent.toString())
  }

  recent(limit = 50, keyId?: string): RequestRecord[] {
    const rows = (
      keyId
        ? this.sql(`SELECT * FROM requests WHERE key_id = ? ORDER BY seq DESC LIMIT ?`).all(keyId, limit)
        : this.sql(`SELECT * FROM requests ORDER BY seq DESC LIMIT ?`).all(limit)
    ) as Array<Record<string, any>>
    return rows.map((r) => ({
      id: r.id,
      at: r.at,
      model: r.model,
      keyId: r.key_id,
      status: r.status,
      outcome: r.outcome,
      promptTokens: r.prompt_tokens,
      completionTokens: r.completion_tokens,
      costNano: r.cost_nano,
      latencyMs: r.latency_ms,
      stream: r.stream === 1,
      receiptId: r.receipt_id ?? null,
    }))
  }

  /** Spend per time bucket (ms), oldest first, over the last `spanMs`; for the chart. */
  spendSeries(bucketMs: number, spanMs: number, keyId?: string): Array<{ t: number; costNano: string; requests: number }> {
    const since = this.now() - spanMs
    const rows = (
      keyId
        ? this.sql(`SELECT at, cost_nano FROM requests WHERE at >= ? AND key_id = ? ORDER BY at`).all(since, keyId)
        : this.sql(`SELECT at, cost_nano FROM requests WHERE at >= ? ORDER BY at`).all(since)
    ) as Array<{ at: number; cost_nano: string }>
    const buckets = new Map<number, { cost: bigint; n: number }>()
    for (const r of rows) {
      const t = Math.floor(r.at / bucketMs) * bucketMs
      const b = buckets.get(t) ?? { cost: 0n, n: 0 }
      b.cost += BigInt(r.cost_nano)
      b.n++
      buckets.set(t, b)
    }
    return [...buckets.entries()].map(([t, b]) => ({ t, costNano: b.cost.toString(), requests: b.n }))
  }
}
