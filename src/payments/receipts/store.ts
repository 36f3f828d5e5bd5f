// The client node's receipts: one row per answer, with the salt only it and the app know, and, once committed, the proof.
import type Database from 'better-sqlite3'
import { openSqlite, statementCache } from '../../core/sqlite.ts'
import { decodeReceiptBoc, receiptFieldsJson, type Receipt } from './receipt.ts'
import { level0, parseBoc } from './boc.ts'

/** Where a receipt's proof was checked: the commit that holds it. */
export interface ReceiptCommit {
  seqno: number
  /** Hex. */
  root: string
  /** The proxy contract's address. */
  proxy: string
  /** The commit transaction's hash, hex. */
  tx: string | null
}

/** How many receipts are held, committed, verified, waiting for a proof (`pending`), and whose answer text did not match. */
export interface ReceiptCounts {
  held: number
  committed: number
  verified: number
  pending: number
  answerMismatches: number
}

export interface HeldReceipt {
  id: string
  proxyId: string
  requestId: string
  /** The API key of the app that asked (null: a request without one). Only that key reads the receipt when keys are on. */
  keyId: string | null
  salt: Buffer
  /** The receipt's BoC, as the proxy handed it over (canonical: decodeReceiptBoc checked it). */
  boc: Buffer
  /** The receipt cell's hash: its key in the proxy's log. */
  readonly hash: Buffer
  index: number | null
  /** The signer's certificate, DER. */
  cert: Buffer | null
  at: number
  /** Whether the text the app received matched the receipt's answer hash (null: no answer text was seen). */
  answerMatches: boolean | null
  proof: Buffer | null
  commit: ReceiptCommit | null
  /** The proof was checked against the root the proxy contract holds on chain. */
  verified: boolean
}

type Row = {
  id: string
  proxy: string
  request_id: string
  key_id: string | null
  salt: string
  boc: Buffer
  idx: number | null
  cert: Buffer | null
  at: number
  answer_ok: number | null
  proof: Buffer | null
  commit_json: string | null
  verified: number
}

export class ReceiptStore {
  private readonly db: Database.Database
  /** Each statement prepared once (see statementCache). */
  private sql!: (sql: string) => Database.Statement

  constructor(readonly file: string) {
    // A receipt lost in a power cut can be fetched again from the proxy's log; no fsync per answer.
    this.db = openSqlite(file, 'NORMAL')
    this.sql = statementCache(this.db)
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS receipts (
        id TEXT PRIMARY KEY, proxy TEXT NOT NULL, request_id TEXT NOT NULL, salt TEXT NOT NULL, boc BLOB NOT NULL,
        idx INTEGER, cert BLOB, at INTEGER NOT NULL, answer_ok INTEGER, proof BLOB, commit_json TEXT, verified INTEGER NOT NULL DEFAULT 0);
      CREATE INDEX IF NOT EXISTS receipts_at ON receipts (at);
      CREATE INDEX IF NOT EXISTS receipts_pending ON receipts (proxy, verified);
    `)
    // A file from before receipts were kept per API key: its receipts have none (only a reader of all receipts sees them).
    if (!(this.db.prepare(`PRAGMA table_info(receipts)`).all() as Array<{ name: string }>).some((c) => c.name === 'key_id')) this.db.exec(`ALTER TABLE receipts ADD COLUMN key_id TEXT`)
    this.db.exec(`CREATE INDEX IF NOT EXISTS receipts_key_at ON receipts (key_id, at)`)
  }

  private row(r: Row | undefined): HeldReceipt | undefined {
    if (!r) return undefined
    // The hash is computed when first read: the receipt sync reads every receipt still waiting for a commit each
    // round, and needs it only for those it gets a proof for.
    let hash: Buffer | undefined
    return {
      id: r.id,
      proxyId: r.proxy,
      requestId: r.request_id,
      keyId: r.key_id,
      salt: Buffer.from(r.salt, 'hex'),
      boc: r.boc,
      get hash(): Buffer {
        return (hash ??= bocRootHash(r.boc))
      },
      index: r.idx,
      cert: r.cert,
      at: r.at,
      answerMatches: r.answer_ok === null ? null : r.answer_ok === 1,
      proof: r.proof,
      commit: r.commit_json ? (JSON.parse(r.commit_json) as ReceiptCommit) : null,
      verified: r.verified === 1,
    }
  }

  /** Keeps a receipt the proxy handed over with an answer. A second copy under the same id is ignored. */
  add(r: { id: string; proxyId: string; requestId: string; keyId?: string | null; salt: Buffer; boc: Buffer; index: number | null; cert: Buffer | null; answerMatches: boolean | null }): void {
    const added = this.sql(`INSERT OR IGNORE INTO receipts (id, proxy, request_id, key_id, salt, boc, idx, cert, at, answer_ok) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(r.id, r.proxyId, r.requestId, r.keyId ?? null, r.salt.toString('hex'), r.boc, r.index, r.cert, Date.now(), r.answerMatches === null ? null : r.answerMatches ? 1 : 0).changes
    if (added && this.tally) {
      this.tally.held++
      if (r.index !== null) this.tally.pending++
      if (r.answerMatches === false) this.tally.answerMismatches++
    }
  }

  get(id: string): HeldReceipt | undefined {
    return this.row(this.sql(`SELECT * FROM receipts WHERE id = ?`).get(id) as Row | undefined)
  }

  /** Receipts kept at or after `sinceMs` (unix ms), oldest first: all of them, or only those of API key `keyId`. */
  since(sinceMs: number, limit = 1000, keyId?: string): HeldReceipt[] {
    const rows = keyId === undefined
      ? this.sql(`SELECT * FROM receipts WHERE at >= ? ORDER BY at, id LIMIT ?`).all(sinceMs, limit)
      : this.sql(`SELECT * FROM receipts WHERE key_id = ? AND at >= ? ORDER BY at, id LIMIT ?`).all(keyId, sinceMs, limit)
    return (rows as Row[]).map((r) => this.row(r)!)
  }

  /** A proxy's receipts whose proof is not yet checked, oldest first. */
  unverified(proxyId: string, limit = 500): HeldReceipt[] {
    return (this.sql(`SELECT * FROM receipts WHERE proxy = ? AND verified = 0 AND idx IS NOT NULL ORDER BY idx LIMIT ?`).all(proxyId, limit) as Row[]).map((r) => this.row(r)!)
  }

  /** The log numbers this node holds for a proxy (to spot receipts it never got, e.g. of cancelled answers). */
  indicesOf(proxyId: string): Set<number> {
    return new Set((this.sql(`SELECT idx FROM receipts WHERE proxy = ? AND idx IS NOT NULL`).all(proxyId) as Array<{ idx: number }>).map((r) => r.idx))
  }

  /** Marks receipts verified against one commit, in one transaction. */
  markVerifiedMany(list: Array<{ id: string; proof: Buffer }>, commit: ReceiptCommit): void {
    if (list.length === 0) return
    const before = this.sql(`SELECT verified, commit_json IS NOT NULL AS committed, idx IS NOT NULL AS numbered FROM receipts WHERE id = ?`)
    const update = this.sql(`UPDATE receipts SET proof = ?, commit_json = ?, verified = 1 WHERE id = ?`)
    const json = JSON.stringify(commit)
    const delta = { committed: 0, verified: 0, pending: 0 }
    this.db.transaction(() => {
      for (const r of list) {
        const was = before.get(r.id) as { verified: number; committed: number; numbered: number } | undefined
        if (!was) continue
        update.run(r.proof, json, r.id)
        if (!was.committed) delta.committed++
        if (!was.verified) {
          delta.verified++
          if (was.numbered) delta.pending--
        }
      }
    })()
    if (this.tally) {
      this.tally.committed += delta.committed
      this.tally.verified += delta.verified
      this.tally.pending += delta.pending
    }
  }

  /** Sum of the costs (nanoTON) and of the adjusted tokens of a proxy's receipts. */
  totals(proxyId: string): { costNano: bigint; adjustedTokens: bigint; count: number } {
    let costNano = 0n
    let adjustedTokens = 0n
    let count = 0
    for (const r of this.db.prepare(`SELECT boc FROM receipts WHERE proxy = ?`).iterate(proxyId) as Iterable<{ boc: Buffer }>) {
      const f = decodeReceiptBoc(r.boc).fields
      costNano += f.costNano
      adjustedTokens += f.adjustedTokens
      count++
    }
    return { costNano, adjustedTokens, count }
  }

  /** `pending`: receipts with a log number whose proof is not yet checked (what the receipt sync works through). */
  counts(): ReceiptCounts {
    // Counted once, then kept as receipts are added and verified: /jsonstats asks for these on every call, and a scan
    // of every receipt held (millions, in time) each time would stall the node.
    this.tally ??= this.countAll()
    return { ...this.tally }
  }

  private tally?: ReceiptCounts

  private countAll(): ReceiptCounts {
    const r = this.sql(`SELECT COUNT(*) AS held, SUM(commit_json IS NOT NULL) AS committed, SUM(verified) AS verified, SUM(verified = 0 AND idx IS NOT NULL) AS pending, SUM(answer_ok = 0) AS bad FROM receipts`)
      .get() as { held: number; committed: number | null; verified: number | null; pending: number | null; bad: number | null }
    return { held: r.held, committed: r.committed ?? 0, verified: r.verified ?? 0, pending: r.pending ?? 0, answerMismatches: r.bad ?? 0 }
  }

  close(): void {
    this.db.close()
  }
}

/** The JSON the client node serves at GET /v1/receipts/{id}: exactly the documented shape. */
export function heldReceiptJson(h: HeldReceipt, decoded: Receipt = decodeReceiptBoc(h.boc)): Record<string, unknown> {
  const fields: Record<string, unknown> = receiptFieldsJson(decoded.fields)
  fields.signature = decoded.signature.toString('hex')
  // The signer's certificate travels with the decoded fields, so a verifier can check the key and its evidence.
  fields.signer_certificate = h.cert ? h.cert.toString('base64') : null
  return {
    id: h.id,
    receipt: h.boc.toString('base64'),
    fields,
    salt: h.salt.toString('hex'),
    index: h.index,
    proof: h.proof ? h.proof.toString('base64') : null,
    commit: h.commit ? { seqno: h.commit.seqno, root: h.commit.root, proxy: h.commit.proxy, tx: h.commit.tx } : null,
  }
}

/** The hash of a stored receipt's root cell, from its bytes. */
function bocRootHash(boc: Buffer): Buffer {
  const fail = (why: string): never => {
    throw new Error(`a stored receipt is not a bag of cells: ${why}`)
  }
  const { cells, root } = parseBoc(boc, fail)
  return level0(cells, root, fail).hash
}
