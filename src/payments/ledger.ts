// The proxy's ledger: embedded SQLite (WAL, synchronous FULL), an append-only hash-chained event log plus the
// cumulative counters derived from it, all changed in one transaction per event so a crash never splits them.
import crypto from 'node:crypto'
import type Database from 'better-sqlite3'
import { openSqlite, statementCache } from '../core/sqlite.ts'
import { ReceiptTree } from './receipts/tree.ts'
import type { CellRef } from './receipts/boc.ts'
import type { SignedUsage, Usage, UsageRecord } from '../core/usage.ts'

/** 3: receipts keep the worker's signed usage (usage_json, usage_sig, usage_signer); older ledgers gain the columns on open. */
export const LEDGER_SCHEMA_VERSION = 3
const GENESIS_HASH = '0'.repeat(64)

/** One request's settled usage. Token counts are model tokens; `adjusted` is adjusted tokens; `*Nano` nanoTON. */
export interface UsageEvent extends Usage {
  type: 'usage'
  requestId: string
  client: string
  worker: string
  coefficient: number
  adjusted: string
  clientNano: string
  workerNano: string
  /** Hash (hex) of the receipt logged with this usage, and its number in the receipt log. */
  receipt?: string
  receiptIndex?: number
}

/** A receipt logged without usage (its worker died before signing one; nothing is billed). */
export interface ReceiptEvent {
  type: 'receipt'
  requestId: string
  receipt: string
  receiptIndex: number
}

/** A receipt to add to the log: its BoC, its cell's hash and depth (a Receipt has them), and whose it is (for the client's and the worker's audits). */
export interface ReceiptEntry {
  receipt: CellRef & { boc: Buffer }
  client: string
  /** The worker's account (payout address or key). */
  worker: string
  /** The worker's signed usage the receipt came with, once checked (none when the answer was not billed). */
  signedUsage?: SignedUsage
}

/** A logged receipt as stored. */
export interface LoggedReceipt {
  index: number
  hash: string
  /** The receipt's BoC, as logged. */
  boc: Buffer
  client: string
  worker: string
  at: number
  /** The worker's signed usage billed with it, exactly as signed (so anyone can check it again); absent when nothing was billed. */
  signedUsage?: SignedUsage
}

/** Where a receipt is in the log and whose it is, without its cell. */
export type ReceiptPlace = Pick<LoggedReceipt, 'index' | 'hash' | 'client' | 'worker'>

const RECEIPT_COLUMNS = 'idx, hash, boc, client, worker, at, usage_json, usage_sig, usage_signer'

/** A state commit as recorded: the ledger head, and the receipt log's root and count it carried. */
export interface CommitRecord extends LedgerHead {
  confirmedAt: number
  receiptsRoot: string
  receiptsCount: number
  /** The proxy contract's commit transaction, hex. */
  tx: string | null
}
/** A voucher the proxy signed: cumulative adjusted tokens for one contract. */
export interface VoucherEvent {
  type: 'voucher'
  kind: 'clientCharge' | 'clientFinalCharge' | 'workerPayout'
  target: string
  tokens: string
  signature: string
}

export type LedgerEvent = UsageEvent | VoucherEvent | ReceiptEvent

export interface Counters {
  /** Cumulative adjusted tokens. */
  tokens: bigint
  /** Cumulative nanoTON (charged to a client, or earned by a worker). */
  nano: bigint
  requests: number
  /** Highest voucher issued, in adjusted tokens (0 if none). */
  vouchered: bigint
}

export interface LedgerHead {
  seqno: number
  hash: string
}

export class LedgerRollbackError extends Error {
  readonly name = 'LedgerRollbackError'
  constructor(readonly local: LedgerHead, readonly onChain: LedgerHead) {
    super(`the ledger is older than the chain: local seqno ${local.seqno} (${local.hash.slice(0, 12)}…), on-chain commit seqno ${onChain.seqno} (${onChain.hash.slice(0, 12)}…)`)
  }
}

/** The ledger on disk does not hold together: its hash chain is broken, or its counters are not what its events add up to. */
export class LedgerIntegrityError extends Error {
  readonly name = 'LedgerIntegrityError'
  constructor(readonly file: string, readonly problem: string) {
    super(`${file}: ledger integrity check failed: ${problem}`)
  }
}

function canonical(v: unknown): string {
  return JSON.stringify(v, Object.keys(v as object).sort())
}

export function chainHash(prev: string, body: string): string {
  return crypto.createHash('sha256').update(prev).update('\n').update(body).digest('hex')
}

/** Proofs kept for a second ask against the newest count (about 1 KB each): a commit's worth at a few hundred requests a second. */
export const MAX_CACHED_PROOFS = 8192

/** Most parties whose counters the ledger keeps in memory (the rest are read from the table when asked). */
const MAX_CACHED_COUNTERS = 10_000

/**
 * Opens (creating if needed) the ledger at `file`. Every append is one synchronous SQLite
 * transaction: when `append` returns, the event and the counters it moves are on disk.
 */
export class Ledger {
  private readonly db: Database.Database
  /** Each statement prepared once (see statementCache). */
  private sql!: (sql: string) => Database.Statement
  private head: LedgerHead
  private readonly stmts
  /** The receipt log's Merkle structure (see receipts/tree.ts); it reads old blocks back from the receipts table. */
  readonly tree: ReceiptTree

  constructor(readonly file: string) {
    this.db = openSqlite(file, 'FULL')
    this.sql = statementCache(this.db)
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS events (seqno INTEGER PRIMARY KEY, type TEXT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS counters (
        party TEXT NOT NULL, address TEXT NOT NULL,
        tokens TEXT NOT NULL, nano TEXT NOT NULL, requests INTEGER NOT NULL, vouchered TEXT NOT NULL,
        PRIMARY KEY (party, address));
      CREATE TABLE IF NOT EXISTS commits (seqno INTEGER PRIMARY KEY, hash TEXT NOT NULL, confirmed_at INTEGER);
      CREATE TABLE IF NOT EXISTS receipts (
        idx INTEGER PRIMARY KEY, hash TEXT NOT NULL, depth INTEGER NOT NULL, boc BLOB NOT NULL,
        client TEXT NOT NULL, worker TEXT NOT NULL, at INTEGER NOT NULL,
        usage_json TEXT, usage_sig TEXT, usage_signer TEXT);
      CREATE INDEX IF NOT EXISTS receipts_hash ON receipts (hash);
      CREATE INDEX IF NOT EXISTS receipts_client ON receipts (client, idx);
      CREATE INDEX IF NOT EXISTS receipts_worker ON receipts (worker, idx);
      CREATE TRIGGER IF NOT EXISTS receipts_append_only_u BEFORE UPDATE ON receipts BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
      CREATE TRIGGER IF NOT EXISTS receipts_append_only_d BEFORE DELETE ON receipts BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
      CREATE TRIGGER IF NOT EXISTS events_append_only_u BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
      CREATE TRIGGER IF NOT EXISTS events_append_only_d BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    `)
    const version = this.sql(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined
    if (!version) this.sql(`INSERT INTO meta (key, value) VALUES ('schema', ?)`).run(String(LEDGER_SCHEMA_VERSION))
    else if (Number(version.value) === 1 || Number(version.value) === 2) this.migrate()
    else if (Number(version.value) !== LEDGER_SCHEMA_VERSION) throw new Error(`${file}: ledger schema ${version.value}, this build reads ${LEDGER_SCHEMA_VERSION}`)
    this.receiptColumns()
    this.stmts = {
      insertEvent: this.sql(`INSERT INTO events (seqno, type, body, hash, at) VALUES (?, ?, ?, ?, ?)`),
      getCounter: this.sql(`SELECT tokens, nano, requests, vouchered FROM counters WHERE party = ? AND address = ?`),
      putCounter: this.sql(`INSERT INTO counters (party, address, tokens, nano, requests, vouchered) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (party, address) DO UPDATE SET tokens = excluded.tokens, nano = excluded.nano, requests = excluded.requests, vouchered = excluded.vouchered`),
      hashAt: this.sql(`SELECT hash FROM events WHERE seqno = ?`),
      insertReceipt: this.sql(`INSERT INTO receipts (idx, hash, depth, boc, client, worker, at, usage_json, usage_sig, usage_signer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      receiptAt: this.sql(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE idx = ?`),
      receiptByHash: this.sql(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE hash = ?`),
      receiptPlaceAt: this.sql(`SELECT idx, hash, client, worker FROM receipts WHERE idx = ?`),
      receiptPlaceByHash: this.sql(`SELECT idx, hash, client, worker FROM receipts WHERE hash = ?`),
    }
    this.commitColumns()
    const receiptRefs = this.sql(`SELECT hash, depth FROM receipts WHERE idx >= ? AND idx < ? ORDER BY idx`)
    this.tree = new ReceiptTree({
      source: (from, to) => (receiptRefs.all(from, to) as Array<{ hash: string; depth: number }>).map((r) => ({ hash: Buffer.from(r.hash, 'hex'), depth: r.depth })),
    })
    // The log's Merkle structure is rebuilt from the stored receipt hashes (two hashes per receipt); it holds
    // only the top of the tree and a few blocks' insides, so its memory does not grow with the log.
    for (const r of this.db.prepare(`SELECT hash, depth FROM receipts ORDER BY idx`).iterate() as Iterable<{ hash: string; depth: number }>) {
      this.tree.append({ hash: Buffer.from(r.hash, 'hex'), depth: r.depth })
    }
    const last = this.sql(`SELECT seqno, hash FROM events ORDER BY seqno DESC LIMIT 1`).get() as LedgerHead | undefined
    this.head = last ?? { seqno: 0, hash: GENESIS_HASH }
    this.integrity = this.checkIntegrity()
  }

  /**
   * What the open-time check found: undefined when the hash chain is intact and every stored counter
   * equals what the events add up to; else the first problem. A proxy refuses to serve on a problem.
   */
  readonly integrity: LedgerIntegrityError | undefined

  /** Replays the events: checks the hash chain link by link and recomputes every counter, then compares. */
  private checkIntegrity(): LedgerIntegrityError | undefined {
    const fail = (problem: string) => new LedgerIntegrityError(this.file, problem)
    const expected = new Map<string, Counters>()
    const at = (party: string, address: string) => {
      const k = `${party}\u0000${address}`
      let c = expected.get(k)
      if (!c) expected.set(k, (c = { tokens: 0n, nano: 0n, requests: 0, vouchered: 0n }))
      return c
    }
    const voucherParty = (kind: VoucherEvent['kind']) => (kind === 'workerPayout' ? 'worker' : 'client')
    // Vouchers name their target contract, not the account; the counters row says which account that is.
    const targets = new Map<string, bigint>()
    let prev = GENESIS_HASH
    let n = 0
    for (const r of this.db.prepare(`SELECT seqno, body, hash FROM events ORDER BY seqno`).iterate() as Iterable<{ seqno: number; body: string; hash: string }>) {
      n++
      if (r.seqno !== n) return fail(`event ${n} is missing (found ${r.seqno})`)
      prev = chainHash(prev, r.body)
      if (prev !== r.hash) return fail(`the hash chain breaks at event ${r.seqno}`)
      const e = JSON.parse(r.body) as LedgerEvent
      if (e.type === 'usage') {
        for (const [party, address, nano] of [['client', e.client, e.clientNano], ['worker', e.worker, e.workerNano]] as const) {
          const c = at(party, address)
          c.tokens += BigInt(e.adjusted)
          c.nano += BigInt(nano)
          c.requests++
        }
      } else if (e.type === 'voucher') {
        const key = `${voucherParty(e.kind)}\u0000${e.target}`
        const t = BigInt(e.tokens)
        if (t > (targets.get(key) ?? 0n)) targets.set(key, t)
      }
    }
    const rows = this.sql(`SELECT party, address, tokens, nano, requests, vouchered FROM counters`).all() as Array<{ party: string; address: string; tokens: string; nano: string; requests: number; vouchered: string }>
    for (const r of rows) {
      const c = expected.get(`${r.party}\u0000${r.address}`) ?? { tokens: 0n, nano: 0n, requests: 0, vouchered: 0n }
      if (BigInt(r.tokens) !== c.tokens || BigInt(r.nano) !== c.nano || r.requests !== c.requests) {
        return fail(`the ${r.party} counter of ${r.address} says ${r.tokens} tokens / ${r.nano} nanoTON / ${r.requests} requests, its events add up to ${c.tokens} / ${c.nano} / ${c.requests}`)
      }
      if (BigInt(r.vouchered) > c.tokens) return fail(`the ${r.party} counter of ${r.address} is vouchered beyond its tokens`)
      expected.delete(`${r.party}\u0000${r.address}`)
    }
    for (const [k, c] of expected) if (c.requests > 0) return fail(`the ${k.split('\u0000')[0]} counter of ${k.split('\u0000')[1]} is missing (its events add up to ${c.tokens} tokens)`)
    // Each contract's highest voucher must show in some counter of its party vouchered at least that far.
    for (const [k, tokens] of targets) {
      const party = k.split('\u0000')[0]
      if (!rows.some((r) => r.party === party && BigInt(r.vouchered) >= tokens)) return fail(`a ${party} voucher for ${tokens} tokens is not reflected in any counter`)
    }
    if (prev !== this.head.hash) return fail('the head does not match the hash chain')
    return undefined
  }

  /** An older ledger (schema 1 or 2): its tables gain the new columns (receiptColumns, commitColumns); then it is current. */
  private migrate(): void {
    this.sql(`UPDATE meta SET value = ? WHERE key = 'schema'`).run(String(LEDGER_SCHEMA_VERSION))
  }

  /** Adds the signed-usage columns to a receipts table made before schema 3 (its receipts keep none: NULL). */
  private receiptColumns(): void {
    const cols = new Set((this.sql(`PRAGMA table_info(receipts)`).all() as Array<{ name: string }>).map((c) => c.name))
    for (const c of ['usage_json', 'usage_sig', 'usage_signer']) if (!cols.has(c)) this.db.exec(`ALTER TABLE receipts ADD COLUMN ${c} TEXT`)
  }

  /** Adds the receipt columns to a commits table made by schema 1. */
  private commitColumns(): void {
    const cols = new Set((this.sql(`PRAGMA table_info(commits)`).all() as Array<{ name: string }>).map((c) => c.name))
    if (!cols.has('receipts_root')) this.db.exec(`ALTER TABLE commits ADD COLUMN receipts_root TEXT NOT NULL DEFAULT '${'0'.repeat(64)}'`)
    if (!cols.has('receipts_count')) this.db.exec(`ALTER TABLE commits ADD COLUMN receipts_count INTEGER NOT NULL DEFAULT 0`)
    if (!cols.has('tx')) this.db.exec(`ALTER TABLE commits ADD COLUMN tx TEXT`)
  }

  /** The newest event's seqno and chain hash (0 and the genesis hash when empty). */
  getHead(): LedgerHead {
    return { ...this.head }
  }

  /** The chain hash after event `seqno`, if this ledger has it. */
  hashAt(seqno: number): string | undefined {
    if (seqno === 0) return GENESIS_HASH
    return (this.stmts.hashAt.get(seqno) as { hash: string } | undefined)?.hash
  }

  /** Throws LedgerRollbackError if the chain has a commit this ledger does not contain. */
  checkAgainstCommit(onChain: LedgerHead): void {
    if (onChain.seqno === 0) return
    if (this.head.seqno < onChain.seqno || this.hashAt(onChain.seqno) !== onChain.hash) throw new LedgerRollbackError(this.head, onChain)
  }

  counters(party: 'client' | 'worker', address: string): Counters {
    const key = `${party}\u0000${address}`
    let c = this.counterCache.get(key)
    if (!c) {
      const r = this.stmts.getCounter.get(party, address) as { tokens: string; nano: string; requests: number; vouchered: string } | undefined
      c = r ? { tokens: BigInt(r.tokens), nano: BigInt(r.nano), requests: r.requests, vouchered: BigInt(r.vouchered) } : { tokens: 0n, nano: 0n, requests: 0, vouchered: 0n }
      this.cacheCounters(key, c)
    }
    return { ...c }
  }

  /**
   * Counters as last written, by party and address: every admission and every answer reads them. A write puts its
   * value here inside its transaction, so a transaction that fails clears it all (the next reads go to the table).
   */
  private readonly counterCache = new Map<string, Counters>()

  private cacheCounters(key: string, c: Counters): void {
    this.counterCache.delete(key)
    this.counterCache.set(key, { ...c })
    if (this.counterCache.size > MAX_CACHED_COUNTERS) this.counterCache.delete(this.counterCache.keys().next().value!)
  }

  allCounters(party: 'client' | 'worker'): Array<{ address: string } & Counters> {
    const rows = this.sql(`SELECT address, tokens, nano, requests, vouchered FROM counters WHERE party = ? ORDER BY address`).all(party) as Array<{ address: string; tokens: string; nano: string; requests: number; vouchered: string }>
    return rows.map((r) => ({ address: r.address, tokens: BigInt(r.tokens), nano: BigInt(r.nano), requests: r.requests, vouchered: BigInt(r.vouchered) }))
  }

  private put(party: 'client' | 'worker', address: string, c: Counters): void {
    this.stmts.putCounter.run(party, address, c.tokens.toString(), c.nano.toString(), c.requests, c.vouchered.toString())
    this.cacheCounters(`${party}\u0000${address}`, c)
  }

  private appendEvent(e: LedgerEvent): LedgerHead {
    const body = canonical(e)
    const seqno = this.head.seqno + 1
    const hash = chainHash(this.head.hash, body)
    this.stmts.insertEvent.run(seqno, e.type, body, hash, Date.now())
    return { seqno, hash }
  }

  /** Records a settled request and moves both counters, in one durable transaction. */
  recordUsage(e: UsageEvent, receipt?: ReceiptEntry): { head: LedgerHead; client: Counters; worker: Counters; receiptIndex?: number } {
    return this.recordUsageBatch([e], [receipt])[0]
  }

  /**
   * Records several settled requests in one transaction, so one fsync covers them all (group
   * commit). Results are in the order of `events`.
   */
  recordUsageBatch(events: UsageEvent[], receipts: Array<ReceiptEntry | undefined> = []): Array<{ head: LedgerHead; client: Counters; worker: Counters; receiptIndex?: number }> {
    return this.withReceipts(() => events.map((e, i) => this.applyUsage(e, receipts[i])))
  }

  /**
   * Runs `fn` in one transaction; receipts it logs join the in-memory tree only once the
   * transaction has committed, so a failed write leaves the tree as the database is.
   */
  private withReceipts<T>(fn: () => T): T {
    const before = this.tree.count
    const head = this.head
    this.pending = []
    try {
      const out = this.db.transaction(fn)()
      for (const r of this.pending) this.tree.append(r)
      return out
    } catch (err) {
      this.tree.truncate(before)
      if (this.proofs.count > before) this.proofs.count = -1
      this.head = head
      this.counterCache.clear()
      throw err
    } finally {
      this.pending = []
    }
  }

  private pending: CellRef[] = []

  /** Inserts a receipt row (inside a transaction) and returns its number in the log. */
  private insertReceipt(r: ReceiptEntry): { index: number; hash: string } {
    const index = this.tree.count + this.pending.length
    const ref = { hash: r.receipt.hash, depth: r.receipt.depth }
    const hash = ref.hash.toString('hex')
    const su = r.signedUsage
    this.stmts.insertReceipt.run(index, hash, ref.depth, r.receipt.boc, r.client, r.worker, Date.now(), su?.json ?? null, su?.signature ?? null, su?.signer ?? null)
    this.pending.push(ref)
    return { index, hash }
  }

  /** Logs a receipt without usage (its answer was not billed), in one durable transaction. */
  recordReceipt(requestId: string, receipt: ReceiptEntry): { head: LedgerHead; receiptIndex: number } {
    return this.withReceipts(() => {
      const { index, hash } = this.insertReceipt(receipt)
      const head = this.appendEvent({ type: 'receipt', requestId, receipt: hash, receiptIndex: index })
      this.head = head
      return { head, receiptIndex: index }
    })
  }

  private applyUsage(e: UsageEvent, receipt?: ReceiptEntry): { head: LedgerHead; client: Counters; worker: Counters; receiptIndex?: number } {
    if (receipt) {
      const r = this.insertReceipt(receipt)
      e = { ...e, receipt: r.hash, receiptIndex: r.index }
    }
    const head = this.appendEvent(e)
    const client = this.counters('client', e.client)
    client.tokens += BigInt(e.adjusted)
    client.nano += BigInt(e.clientNano)
    client.requests++
    const worker = this.counters('worker', e.worker)
    worker.tokens += BigInt(e.adjusted)
    worker.nano += BigInt(e.workerNano)
    worker.requests++
    this.put('client', e.client, client)
    this.put('worker', e.worker, worker)
    this.head = head
    return { head, client, worker, ...(e.receiptIndex !== undefined ? { receiptIndex: e.receiptIndex } : {}) }
  }

  /** Records a signed voucher; a voucher never goes below one already issued for the same contract. */
  recordVoucher(e: VoucherEvent, party: 'client' | 'worker', address: string): LedgerHead {
    const head = this.head
    try {
      return this.voucherTransaction(e, party, address)
    } catch (err) {
      // Nothing of a failed transaction stays: not the head, not the counters it wrote.
      this.head = head
      this.counterCache.clear()
      throw err
    }
  }

  private voucherTransaction(e: VoucherEvent, party: 'client' | 'worker', address: string): LedgerHead {
    return this.db.transaction(() => {
      const c = this.counters(party, address)
      const tokens = BigInt(e.tokens)
      if (tokens < c.vouchered) throw new Error(`voucher for ${e.target} would go backwards: ${tokens} < ${c.vouchered}`)
      if (tokens > c.tokens) throw new Error(`voucher for ${e.target} exceeds the counter: ${tokens} > ${c.tokens}`)
      const head = this.appendEvent(e)
      c.vouchered = tokens
      this.put(party, address, c)
      this.head = head
      return head
    })()
  }

  /** Remembers that (seqno, hash) was committed on chain, with the receipt log's root and count, and the commit's transaction. */
  recordCommit(head: LedgerHead, confirmedAt: number | null, receipts?: { root: string; count: number; tx?: string }): void {
    this.sql(
        `INSERT INTO commits (seqno, hash, confirmed_at, receipts_root, receipts_count, tx) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (seqno) DO UPDATE SET confirmed_at = excluded.confirmed_at, receipts_root = excluded.receipts_root, receipts_count = excluded.receipts_count, tx = excluded.tx`,
      )
      .run(head.seqno, head.hash, confirmedAt, receipts?.root ?? '0'.repeat(64), receipts?.count ?? 0, receipts?.tx ?? null)
  }

  /** The newest commits, newest first. */
  commits(limit = 50): Array<LedgerHead & { confirmedAt: number | null }> {
    const rows = this.sql(`SELECT seqno, hash, confirmed_at FROM commits ORDER BY seqno DESC LIMIT ?`).all(limit) as Array<{ seqno: number; hash: string; confirmed_at: number | null }>
    return rows.map((r) => ({ seqno: r.seqno, hash: r.hash, confirmedAt: r.confirmed_at }))
  }

  lastConfirmedCommit(): CommitRecord | undefined {
    const r = this.sql(`SELECT seqno, hash, confirmed_at, receipts_root, receipts_count, tx FROM commits WHERE confirmed_at IS NOT NULL ORDER BY seqno DESC LIMIT 1`).get() as
      | { seqno: number; hash: string; confirmed_at: number; receipts_root: string; receipts_count: number; tx: string | null }
      | undefined
    return r ? { seqno: r.seqno, hash: r.hash, confirmedAt: r.confirmed_at, receiptsRoot: r.receipts_root, receiptsCount: r.receipts_count, tx: r.tx } : undefined
  }

  // ---------------------------------------------------------------- the receipt log

  /** Receipts in the log. */
  receiptCount(): number {
    return this.tree.count
  }

  /** The log's Merkle root over its first `count` receipts (default all), hex; 64 zeros when empty. */
  receiptsRoot(count = this.tree.count): string {
    return this.tree.root(count)?.hash.toString('hex') ?? '0'.repeat(64)
  }

  private receiptRow(r: { idx: number; hash: string; boc: Buffer; client: string; worker: string; at: number; usage_json: string | null; usage_sig: string | null; usage_signer: string | null } | undefined): LoggedReceipt | undefined {
    if (!r) return undefined
    const row: LoggedReceipt = { index: r.idx, hash: r.hash, boc: r.boc, client: r.client, worker: r.worker, at: r.at }
    if (r.usage_json != null && r.usage_sig != null && r.usage_signer != null) {
      row.signedUsage = { usage: JSON.parse(r.usage_json) as UsageRecord, json: r.usage_json, signature: r.usage_sig, signer: r.usage_signer }
    }
    return row
  }

  receipt(index: number): LoggedReceipt | undefined {
    return this.receiptRow(this.stmts.receiptAt.get(index) as never)
  }

  receiptByHash(hash: string): LoggedReceipt | undefined {
    return this.receiptRow(this.stmts.receiptByHash.get(hash) as never)
  }

  /**
   * Where a receipt stands in the log, by number or by hash, without reading its cell: what answering
   * "is it there, and whose is it" needs. Clients and workers ask this of every receipt still waiting for
   * a commit, every few seconds, so decoding each cell for it was a large share of a proxy's CPU.
   */
  receiptPlace(at: { index: number } | { hash: string }): ReceiptPlace | undefined {
    const r = ('index' in at ? this.stmts.receiptPlaceAt.get(at.index) : this.stmts.receiptPlaceByHash.get(at.hash)) as { idx: number; hash: string; client: string; worker: string } | undefined
    return r && { index: r.idx, hash: r.hash, client: r.client, worker: r.worker }
  }

  /** A party's receipts from number `from` on, oldest first, at most `limit`. */
  receiptsOf(party: 'client' | 'worker', address: string, from = 0, limit = 1000): LoggedReceipt[] {
    const rows = this.sql(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE ${party} = ? AND idx >= ? ORDER BY idx LIMIT ?`).all(address, from, limit) as never[]
    return rows.map((r) => this.receiptRow(r)!)
  }

  /** A party's receipts from number `from` on as stored (BoC), oldest first, at most `limit`: for lists, without decoding each cell. */
  receiptBocsOf(party: 'client' | 'worker', address: string, from = 0, limit = 1000): Array<{ index: number; boc: Buffer }> {
    const rows = this.sql(`SELECT idx, boc FROM receipts WHERE ${party} = ? AND idx >= ? ORDER BY idx LIMIT ?`).all(address, from, limit) as Array<{ idx: number; boc: Buffer }>
    return rows.map((r) => ({ index: r.idx, boc: r.boc }))
  }

  /** Receipts numbered [from, to), oldest first. */
  receiptsRange(from: number, to: number): LoggedReceipt[] {
    if (to <= from) return []
    const rows = this.sql(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE idx >= ? AND idx < ? ORDER BY idx`).all(from, to) as never[]
    return rows.map((r) => this.receiptRow(r)!)
  }

  /**
   * Proofs built against one count (the last commit's) and asked for once: the client and the worker of a receipt
   * each ask for its proof against the same commit. Kept until the second ask.
   */
  private readonly proofs = { count: -1, byIndex: new Map<number, Buffer>() }

  /** A Merkle proof (BoC) of receipt `index` against the root of the first `count` receipts. */
  receiptProof(index: number, count = this.tree.count): Buffer {
    const cache = this.proofs
    if (cache.count === count) {
      const hit = cache.byIndex.get(index)
      if (hit) {
        // Both parties have asked now (a receipt has one client and one worker): let it go.
        cache.byIndex.delete(index)
        return hit
      }
    }
    const r = this.sql(`SELECT boc FROM receipts WHERE idx = ?`).get(index) as { boc: Buffer } | undefined
    if (!r) throw new RangeError(`no receipt ${index} in the log`)
    const boc = this.tree.proofBoc(index, r.boc, count)
    if (cache.count !== count) {
      // Proofs against an older count are asked for rarely (a party catching up): they do not displace the newest.
      if (count < cache.count) return boc
      cache.count = count
      cache.byIndex.clear()
    }
    if (cache.byIndex.size >= MAX_CACHED_PROOFS) cache.byIndex.delete(cache.byIndex.keys().next().value!)
    cache.byIndex.set(index, boc)
    return boc
  }

  /** Recomputes the hash chain from the events; true when it matches the stored hashes. */
  verifyChain(): boolean {
    let prev = GENESIS_HASH
    for (const r of this.db.prepare(`SELECT seqno, body, hash FROM events ORDER BY seqno`).iterate() as Iterable<{ seqno: number; body: string; hash: string }>) {
      prev = chainHash(prev, r.body)
      if (prev !== r.hash) return false
    }
    return prev === this.head.hash
  }

  close(): void {
    this.db.close()
  }
}
