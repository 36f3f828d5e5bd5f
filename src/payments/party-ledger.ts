// The small ledger a client or a worker keeps of what each proxy told it and what was paid on chain,
// so a proxy that later reports less (a rolled-back or dishonest proxy) is caught and dropped.
import type Database from 'better-sqlite3'
import { openSqlite, statementCache } from '../core/sqlite.ts'

/** What a proxy has stated about this party, cumulative. Adjusted tokens and nanoTON. */
export interface ProxyStatement {
  tokens: bigint
  nano: bigint
}

export interface ProxyRecord {
  proxy: string
  /** The highest statement received so far. */
  told: ProxyStatement
  /** The highest voucher received (worker) or seen charged on chain (client), adjusted tokens. */
  vouchered: bigint
  voucher: string | null
  /** Adjusted tokens settled on chain (charged to the client contract / paid to the worker contract). */
  onChainTokens: bigint
  /** Set when the proxy reported less than before; it is not used again. */
  distrusted: string | null
}

/** The proxy stated less than it had already stated: its ledger went back, or it lies. */
export class ProxyRegressionError extends Error {
  readonly name = 'ProxyRegressionError'
  constructor(
    readonly proxy: string,
    readonly before: ProxyStatement,
    readonly now: ProxyStatement,
  ) {
    super(`proxy ${proxy} reported ${now.tokens} tokens / ${now.nano} nanoTON after reporting ${before.tokens} / ${before.nano}: it went backwards`)
  }
}

export class PartyLedger {
  private readonly db: Database.Database
  /** Each statement prepared once (see statementCache). */
  private sql!: (sql: string) => Database.Statement

  constructor(readonly file: string) {
    // NORMAL in WAL mode survives a killed process (not a power cut) without an fsync per answer:
    // at worst a power cut forgets the newest statements, which only delays catching a regression.
    this.db = openSqlite(file, 'NORMAL')
    this.sql = statementCache(this.db)
    this.db.exec(`CREATE TABLE IF NOT EXISTS proxies (
      proxy TEXT PRIMARY KEY, told_tokens TEXT NOT NULL, told_nano TEXT NOT NULL,
      vouchered TEXT NOT NULL, voucher TEXT, onchain_tokens TEXT NOT NULL, distrusted TEXT)`)
  }

  get(proxy: string): ProxyRecord {
    const r = this.sql(`SELECT * FROM proxies WHERE proxy = ?`).get(proxy) as Record<string, string | null> | undefined
    if (!r) return { proxy, told: { tokens: 0n, nano: 0n }, vouchered: 0n, voucher: null, onChainTokens: 0n, distrusted: null }
    return {
      proxy,
      told: { tokens: BigInt(r.told_tokens!), nano: BigInt(r.told_nano!) },
      vouchered: BigInt(r.vouchered!),
      voucher: r.voucher,
      onChainTokens: BigInt(r.onchain_tokens!),
      distrusted: r.distrusted,
    }
  }

  all(): ProxyRecord[] {
    return (this.sql(`SELECT proxy FROM proxies ORDER BY proxy`).all() as Array<{ proxy: string }>).map((r) => this.get(r.proxy))
  }

  private put(r: ProxyRecord): void {
    this.sql(
        `INSERT INTO proxies (proxy, told_tokens, told_nano, vouchered, voucher, onchain_tokens, distrusted) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (proxy) DO UPDATE SET told_tokens = excluded.told_tokens, told_nano = excluded.told_nano, vouchered = excluded.vouchered,
           voucher = excluded.voucher, onchain_tokens = excluded.onchain_tokens, distrusted = excluded.distrusted`,
      )
      .run(r.proxy, r.told.tokens.toString(), r.told.nano.toString(), r.vouchered.toString(), r.voucher, r.onChainTokens.toString(), r.distrusted)
  }

  /**
   * Records a cumulative statement from `proxy`. A statement below one already recorded marks
   * the proxy distrusted (durably) and throws ProxyRegressionError.
   */
  recordStatement(proxy: string, s: ProxyStatement): ProxyRecord {
    // The distrust mark must commit, so the error is thrown only after the transaction.
    const out = this.db.transaction((): ProxyRecord | ProxyRegressionError => {
      const r = this.get(proxy)
      if (s.tokens < r.told.tokens || s.nano < r.told.nano) {
        const err = new ProxyRegressionError(proxy, r.told, s)
        r.distrusted = err.message
        this.put(r)
        return err
      }
      r.told = s
      this.put(r)
      return r
    })()
    if (out instanceof ProxyRegressionError) throw out
    return out
  }

  /** Keeps the newest voucher (cumulative adjusted tokens); older ones are ignored. Returns whether it was newer. */
  recordVoucher(proxy: string, tokens: bigint, voucher: string): boolean {
    return this.db.transaction(() => {
      const r = this.get(proxy)
      if (tokens <= r.vouchered) return false
      r.vouchered = tokens
      r.voucher = voucher
      this.put(r)
      return true
    })()
  }

  /**
   * Forgets `voucher` if it is still the kept one (it turned out invalid), falling back to what is paid
   * on chain, so it cannot shadow the correct vouchers that follow.
   */
  dropVoucher(proxy: string, voucher: string): void {
    this.db.transaction(() => {
      const r = this.get(proxy)
      if (r.voucher !== voucher) return
      r.voucher = null
      r.vouchered = r.onChainTokens
      this.put(r)
    })()
  }

  recordOnChain(proxy: string, tokens: bigint): void {
    this.db.transaction(() => {
      const r = this.get(proxy)
      if (tokens > r.onChainTokens) {
        r.onChainTokens = tokens
        this.put(r)
      }
    })()
  }

  /** Marks a proxy distrusted (durably), e.g. when its receipt log omits a receipt this node holds. */
  distrust(proxy: string, reason: string): void {
    this.db.transaction(() => {
      const r = this.get(proxy)
      r.distrusted = reason
      this.put(r)
    })()
  }

  isDistrusted(proxy: string): string | null {
    return this.get(proxy).distrusted
  }

  close(): void {
    this.db.close()
  }
}
