// The one way a SQLite file is opened (ledgers, receipts, API keys): its folder created, WAL mode, and the durability the caller states.
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'

/**
 * FULL: every commit is fsynced, for state that moves money (the proxy's ledger).
 * NORMAL: survives a killed process, not a power cut, without an fsync per write (a party's own records).
 */
export type SqliteDurability = 'FULL' | 'NORMAL'

export function openSqlite(file: string, durability: SqliteDurability): Database.Database {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${durability}`)
  return db
}

/**
 * Prepared statements by their SQL, each prepared once: preparing costs more than running a short
 * statement, and request paths run the same few again and again. Not for statements held open by
 * `iterate()` (a statement serves one iteration at a time): prepare those where they are used.
 */
export function statementCache(db: Database.Database): (sql: string) => Database.Statement {
  const cache = new Map<string, Database.Statement>()
  return (sql) => {
    let s = cache.get(sql)
    if (!s) cache.set(sql, (s = db.prepare(sql)))
    return s
  }
}
