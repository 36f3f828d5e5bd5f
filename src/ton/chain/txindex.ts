// Our bounded per-account transaction index (the sandbox snapshot carries no history), backed by an append-only log.
import fs from 'node:fs'
import path from 'node:path'
import { TransactionNotFoundError } from './errors.ts'
import { TX_LOG_FILE, writeFileAtomic } from './store.ts'
import { TX_LOG_COMPACT_SLACK_LINES } from './constants.ts'

export interface IndexedTransaction {
  /** The account in raw form, `wc:hex`. */
  account: string
  lt: bigint
  hash: Buffer
  /** Unix seconds the transaction ran at. */
  utime: number
  /** The transaction as a base64 BOC, exactly as the emulator produced it. */
  boc: string
}

/** toncenter getTransactions semantics: newest first, starting at (lt, hash) inclusive, stopping above `toLt`. */
export interface TransactionQuery {
  limit: number
  lt?: bigint
  hash?: Buffer
  /** Only transactions with lt strictly greater than this; 0 or undefined means no bound. */
  toLt?: bigint
}

interface LogLine {
  a: string
  lt: string
  h: string
  u: number
  b: string
}

function toLine(e: IndexedTransaction): string {
  const line: LogLine = { a: e.account, lt: e.lt.toString(), h: e.hash.toString('base64'), u: e.utime, b: e.boc }
  return JSON.stringify(line) + '\n'
}

function fromLine(text: string): IndexedTransaction | undefined {
  try {
    const l = JSON.parse(text) as LogLine
    if (typeof l.a !== 'string' || typeof l.lt !== 'string' || typeof l.h !== 'string' || typeof l.b !== 'string') return undefined
    return { account: l.a, lt: BigInt(l.lt), hash: Buffer.from(l.h, 'base64'), utime: Number(l.u), boc: l.b }
  } catch {
    return undefined
  }
}

export class TransactionIndex {
  private readonly byAccount = new Map<string, IndexedTransaction[]>()
  private retained = 0
  private logLines = 0

  private constructor(
    private readonly file: string,
    /** Transactions kept per account; older ones are dropped. */
    readonly perAccount: number,
  ) {}

  /**
   * Loads the log under `dir`. Lines that do not parse (a write torn by kill -9) and transactions
   * newer than `maxLt` (from a batch whose account state was never saved) are dropped, then the
   * log is rewritten clean so it agrees with the state it is paired with.
   */
  static open(dir: string, perAccount: number, maxLt: bigint): TransactionIndex {
    const index = new TransactionIndex(path.join(dir, TX_LOG_FILE), perAccount)
    let text = ''
    try {
      text = fs.readFileSync(index.file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const seen = new Set<string>()
    for (const raw of text.split('\n')) {
      if (raw.length === 0) continue
      const e = fromLine(raw)
      if (!e || e.lt > maxLt) continue
      const key = e.hash.toString('hex')
      if (seen.has(key)) continue
      seen.add(key)
      index.addToMemory(e)
    }
    index.compact()
    return index
  }

  /** Appends to the log first, then to memory, so what a reader sees is already on disk. */
  record(entries: IndexedTransaction[]): void {
    if (entries.length === 0) return
    fs.appendFileSync(this.file, entries.map(toLine).join(''))
    this.logLines += entries.length
    for (const e of entries) this.addToMemory(e)
    if (this.logLines > 2 * this.retained + TX_LOG_COMPACT_SLACK_LINES) this.compact()
  }

  list(account: string, q: TransactionQuery): IndexedTransaction[] {
    const txs = this.byAccount.get(account) ?? []
    let start = txs.length - 1
    if (q.hash !== undefined) {
      while (start >= 0 && !(txs[start].hash.equals(q.hash) && (q.lt === undefined || txs[start].lt === q.lt))) start--
      if (start < 0) throw new TransactionNotFoundError(q.lt?.toString(), q.hash.toString('base64'), this.perAccount)
    } else if (q.lt !== undefined) {
      while (start >= 0 && txs[start].lt > q.lt) start--
    }
    const out: IndexedTransaction[] = []
    for (let i = start; i >= 0 && out.length < q.limit; i--) {
      if (q.toLt !== undefined && q.toLt > 0n && txs[i].lt <= q.toLt) break
      out.push(txs[i])
    }
    return out
  }

  /** Rewrites the log with only what the index keeps. */
  compact(): void {
    const all: IndexedTransaction[] = []
    for (const txs of this.byAccount.values()) all.push(...txs)
    all.sort((a, b) => (a.lt < b.lt ? -1 : a.lt > b.lt ? 1 : 0))
    writeFileAtomic(this.file, all.map(toLine).join(''))
    this.logLines = all.length
  }

  /** Transactions held in memory (and in the log after compaction). */
  get size(): number {
    return this.retained
  }

  get accounts(): number {
    return this.byAccount.size
  }

  private addToMemory(e: IndexedTransaction): void {
    let txs = this.byAccount.get(e.account)
    if (!txs) {
      txs = []
      this.byAccount.set(e.account, txs)
    }
    txs.push(e)
    this.retained++
    if (txs.length > this.perAccount) this.retained -= txs.splice(0, txs.length - this.perAccount).length
  }
}
