// The receipt log at scale: appending, committing (the Merkle root) and proving, at 1,000,000 receipts.
//
// The log is the incremental structure in src/payments/receipts/tree.ts. A commit computes the
// root for the current count (the right edge of the tree: O(log n) cell hashes) and builds the
// commit message; a proof is the path to one receipt with everything else pruned. Leaves are
// synthetic receipt hashes, except at the sampled indices, which hold real cells so their proofs
// can be verified too. As in the proxy's ledger, the receipt hashes sit in a SQLite table and the
// tree reads a block of them back when a proof needs the inside of a block it no longer holds; the
// sampled receipts are spread over the whole log, so most proofs here pay that read. Reading the
// receipt's own row, which a proof also needs, is a primary-key lookup and is not included.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { beginCell, Cell } from '@ton/core'
import { ReceiptTree, type CellRef } from '../payments/receipts/tree.ts'
import { openSqlite } from '../core/sqlite.ts'
import { verifyReceiptProofBoc } from '../payments/receipts/proof.ts'
import { commitStateBody } from '../ton/contracts/index.ts'
import type { BenchResult } from './schema.ts'
import { percentile, round } from './stats.ts'

export interface ReceiptsBenchOptions {
  count: number
  proofs: number
  say: (line: string) => void
}

function cpuMs(fn: () => void): number {
  const t0 = process.cpuUsage()
  fn()
  const d = process.cpuUsage(t0)
  return (d.user + d.system) / 1000
}

export function measureReceipts(o: ReceiptsBenchOptions): { receipts: BenchResult['receipts']; notes: string[] } {
  o.say(`receipt log: appending ${o.count} receipts`)
  const samples = new Map<number, Cell>()
  while (samples.size < Math.min(o.proofs, o.count)) {
    const i = crypto.randomInt(o.count)
    samples.set(i, beginCell().storeUint(i, 64).storeRef(beginCell().storeBuffer(crypto.randomBytes(32)).endCell()).endCell())
  }
  const synthetic = crypto.randomBytes(32)
  const leaf = (i: number): CellRef => {
    const c = samples.get(i)
    if (c) return { hash: c.hash(), depth: c.depth() }
    synthetic.writeUInt32BE(i, 0)
    return { hash: Buffer.from(synthetic), depth: 2 }
  }
  // The ledger's receipts table, reduced to the columns the tree reads back (written untimed).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-bench-receipts-'))
  const db = openSqlite(path.join(dir, 'receipts.sqlite'), 'NORMAL')
  try {
    db.exec(`CREATE TABLE receipts (idx INTEGER PRIMARY KEY, hash TEXT NOT NULL, depth INTEGER NOT NULL)`)
    const insert = db.prepare(`INSERT INTO receipts (idx, hash, depth) VALUES (?, ?, ?)`)
    db.transaction(() => {
      for (let i = 0; i < o.count; i++) {
        const r = leaf(i)
        insert.run(i, r.hash.toString('hex'), r.depth)
      }
    })()
    const readBack = db.prepare(`SELECT hash, depth FROM receipts WHERE idx >= ? AND idx < ? ORDER BY idx`)
    const tree = new ReceiptTree({ source: (from, to) => (readBack.all(from, to) as Array<{ hash: string; depth: number }>).map((r) => ({ hash: Buffer.from(r.hash, 'hex'), depth: r.depth })) })
    return measureTree(o, tree, leaf, samples)
  } finally {
    db.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function measureTree(o: ReceiptsBenchOptions, tree: ReceiptTree, leaf: (i: number) => CellRef, samples: Map<number, Cell>): { receipts: BenchResult['receipts']; notes: string[] } {
  const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < o.count; i++) tree.append(leaf(i))
  const appendMs = Number(process.hrtime.bigint() - t0) / 1e6
  const mem = process.memoryUsage()
  const memMiB = (mem.heapUsed + mem.arrayBuffers - heapBefore) / 2 ** 20

  o.say('receipt log: commit (root + commit message), one new receipt since the last')
  const commits: number[] = []
  for (let k = 0; k < 20; k++) {
    tree.append({ hash: crypto.randomBytes(32), depth: 2 })
    commits.push(
      cpuMs(() => {
        const root = tree.root()!
        commitStateBody({ seqno: BigInt(k + 1), stateHash: Buffer.alloc(32), receipts: { root: root.hash, count: BigInt(tree.count) } })
      }),
    )
  }
  const root = tree.root(o.count)!.hash

  o.say(`receipt log: ${samples.size} proofs against the root of the first ${o.count}`)
  const proofMs: number[] = []
  const verifyMs: number[] = []
  let proofBytes = 0
  for (const [i, cell] of samples) {
    // As the proxy does: the receipt's BoC as its ledger stores it, the proof written straight as bytes.
    const receiptBoc = cell.toBoc()
    const t1 = process.hrtime.bigint()
    const boc = tree.proofBoc(i, receiptBoc, o.count)
    proofMs.push(Number(process.hrtime.bigint() - t1) / 1e6)
    proofBytes = Math.max(proofBytes, boc.length)
    const t2 = process.hrtime.bigint()
    verifyReceiptProofBoc(boc, root, i, cell.hash())
    verifyMs.push(Number(process.hrtime.bigint() - t2) / 1e6)
  }
  return {
    receipts: {
      count: o.count,
      appendUs: round((appendMs * 1000) / o.count, 3),
      commitCpuMs: round(percentile(commits, 50), 3),
      commitCpuMaxMs: round(Math.max(...commits), 3),
      proofP50Ms: round(percentile(proofMs, 50), 3),
      proofP99Ms: round(percentile(proofMs, 99), 3),
      verifyP50Ms: round(percentile(verifyMs, 50), 3),
      proofMaxBytes: proofBytes,
      rebuildMs: round(appendMs, 1),
      memMiB: round(memMiB, 1),
    },
    notes: [`receipts: ${o.count} receipts; a commit is the Merkle root plus the commit message (CPU time); a proof is built and serialized (wall time), most of them reading their block of receipt hashes back from SQLite; memMiB is the heap's growth over the appends (garbage not yet collected included); rebuildMs is what a proxy restart spends rebuilding the tree from its stored receipt hashes`],
  }
}
