// The proxy's reliability record, published: built from the receipt log with each state commit (its hash
// goes into the commit), kept on disk once the commit is confirmed, served publicly at
// GET /cocoon/v1/reliability, and turned into each worker's routing score. docs/receipts.md, docs/routing.md.
import fs from 'node:fs'
import type { Logger } from '../core/log.ts'
import { pacer } from '../core/time.ts'
import type { Ledger } from '../payments/ledger.ts'
import type { ReliabilityCommitter } from '../payments/proxy-settlement.ts'
import { decodeReceiptBoc, type ReceiptFields } from '../payments/receipts/receipt.ts'
import { buildReliabilityRecord, reliabilityHash, reliabilityWindow, UptimeTracker, type ReliabilityEntry, type ReliabilityRecord } from '../payments/receipts/reliability.ts'
import { reliabilityScore } from './routing.ts'

/** Receipts decoded before the event loop gets a turn. */
const DECODES_PER_TURN = 64

/** The public path of the committed record (served on the proxy's stats port, like /jsonstats). */
export const RELIABILITY_PATH = '/cocoon/v1/reliability'

/** What the endpoint serves: the record as committed, its hash and the commit that carried it. */
export interface CommittedReliability {
  /** The commit seqno, as get_reliability_hash returns it. */
  seqno: number
  /** SHA-256 of the record's canonical JSON, hex. */
  hash: string
  /** The commit's transaction hash (hex), when known. */
  tx: string | null
  /** The proxy contract the commit went to. */
  contract: string
  record: ReliabilityRecord
}

export class ReliabilityPublisher implements ReliabilityCommitter {
  readonly uptime = new UptimeTracker()
  private pending?: { seqno: number; hash: Buffer; record: ReliabilityRecord; endMs: number }
  private last?: CommittedReliability
  private readonly scores = new Map<string, number>()
  /** Decoded receipts of the current window, by number: each is decoded once. */
  private readonly decoded = new Map<number, ReceiptFields | null>()
  private readonly listeners: Array<() => void> = []

  constructor(
    private readonly deps: { ledger: Ledger; proxyKey: string; contract: () => string; file?: string; log: Logger },
  ) {
    this.load()
  }

  async prepare(seqno: number, count: number): Promise<{ hash: Buffer }> {
    const window = reliabilityWindow(count)
    for (const k of this.decoded.keys()) if (k < window.from) this.decoded.delete(k)
    const missing = [...Array(window.to - window.from).keys()].map((i) => window.from + i).filter((i) => !this.decoded.has(i))
    if (missing.length) {
      // The receipts since the last commit (thousands at a busy proxy) are decoded a few dozen at a time, with the requests going on in between.
      const pace = pacer(DECODES_PER_TURN)
      for (const r of this.deps.ledger.receiptsRange(missing[0], window.to)) {
        await pace()
        if (this.decoded.has(r.index)) continue
        try {
          this.decoded.set(r.index, decodeReceiptBoc(r.boc).fields)
        } catch {
          this.decoded.set(r.index, null) // not a receipt this build reads: not counted
        }
      }
    }
    const fields: ReceiptFields[] = []
    for (let i = window.from; i < window.to; i++) {
      const f = this.decoded.get(i)
      if (f) fields.push(f)
    }
    const shares = this.uptime.shares(Date.now())
    const record = buildReliabilityRecord({ proxyKey: this.deps.proxyKey, seqno, receipts: window, fields, uptime: shares.uptime, uptimeWindow: { startMs: shares.startMs, endMs: shares.endMs } })
    const hash = reliabilityHash(record)
    this.pending = { seqno, hash, record, endMs: shares.endMs }
    return { hash }
  }

  committed(seqno: number, tx?: string): void {
    const p = this.pending
    if (!p || p.seqno !== seqno) return
    this.pending = undefined
    this.uptime.advance(p.endMs)
    this.last = { seqno, hash: p.hash.toString('hex'), tx: tx ?? null, contract: this.deps.contract(), record: p.record }
    this.applyScores()
    this.save()
  }

  /** The committed record, as served. */
  current(): CommittedReliability | undefined {
    return this.last
  }

  /** The receipt cells (base64 BoC) the current record was derived from, oldest first. */
  receipts(): string[] {
    if (!this.last) return []
    const { from, to } = this.last.record.receipts
    return this.deps.ledger.receiptsRange(from, to).map((r) => r.boc.toString('base64'))
  }

  /** The routing score of a worker for a model, from the committed record; undefined: no record (the prior applies). */
  scoreOf(workerKey: string, modelId: string): number | undefined {
    return this.scores.get(`${workerKey}\n${modelId}`)
  }

  /** Called after each new committed record (the proxy re-reads the scores). */
  onRecord(f: () => void): void {
    this.listeners.push(f)
  }

  private applyScores(): void {
    this.scores.clear()
    for (const e of this.last?.record.workers ?? []) this.scores.set(`${e.worker_key}\n${e.model_id}`, reliabilityScore(scoreFigures(e)))
    for (const f of this.listeners) f()
  }

  private load(): void {
    if (!this.deps.file) return
    try {
      const c = JSON.parse(fs.readFileSync(this.deps.file, 'utf8')) as CommittedReliability
      if (reliabilityHash(c.record).toString('hex') !== c.hash) throw new Error('the stored record does not match its hash')
      this.last = c
      this.applyScores()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.log.warn('ignoring the stored reliability record', { error: (err as Error).message })
    }
  }

  private save(): void {
    if (!this.deps.file || !this.last) return
    try {
      fs.writeFileSync(`${this.deps.file}.tmp`, JSON.stringify(this.last))
      fs.renameSync(`${this.deps.file}.tmp`, this.deps.file)
    } catch (err) {
      this.deps.log.warn('could not save the reliability record', { error: (err as Error).message })
    }
  }
}

function scoreFigures(e: ReliabilityEntry) {
  return { requests: e.requests, successes: e.successes, cancelled: e.cancelled, p50_ttft_ms: e.p50_ttft_ms, uptime: e.uptime }
}
