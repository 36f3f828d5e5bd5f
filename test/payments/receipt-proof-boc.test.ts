// verifyReceiptProofBoc (the check client nodes and workers run on every receipt's proof, straight from its bytes)
// accepts and refuses exactly what verifyReceiptProof on @ton/core's parsed cells does: on every proof of a log,
// for wrong roots, keys and receipts; and of the single-bit changes of a proof's bytes it passes none that check refuses.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell, Cell } from '@ton/core'
import { ReceiptTree } from '../../src/payments/receipts/tree.ts'
import { ReceiptProofError, verifyReceiptProof, verifyReceiptProofBoc } from '../../src/payments/receipts/proof.ts'

function receiptCell(i: number): Cell {
  const inner = beginCell().storeUint(i * 7919, 32).endCell()
  return i % 3 === 0 ? beginCell().storeUint(i, 64).endCell() : beginCell().storeUint(i, 64).storeRef(inner).storeRef(beginCell().storeRef(inner).endCell()).endCell()
}

/** What @ton/core's path says of a BoC: the reason it refuses, or 'ok'. */
function slow(boc: Buffer, root: Buffer, index: number, hash: Buffer): string {
  try {
    verifyReceiptProof(Cell.fromBoc(boc)[0], root, index, hash)
    return 'ok'
  } catch (err) {
    return (err as Error).message
  }
}

function fast(boc: Buffer, root: Buffer, index: number, hash: Buffer): string {
  try {
    verifyReceiptProofBoc(boc, root, index, hash)
    return 'ok'
  } catch (err) {
    assert.ok(err instanceof ReceiptProofError, `a ReceiptProofError, not ${(err as Error).stack}`)
    return err.message
  }
}

describe('receipt proofs checked from their bytes', () => {
  const cells = Array.from({ length: 300 }, (_, i) => receiptCell(i))
  const tree = new ReceiptTree()
  for (const c of cells) tree.append({ hash: c.hash(), depth: c.depth() })

  it('accepts every proof the tree builds, and refuses another root, key or receipt, as the cell-based check does', () => {
    for (const count of [1, 2, 3, 7, 64, 65, 129, 300]) {
      const root = tree.root(count)!.hash
      for (let i = 0; i < count; i += count > 70 ? 7 : 1) {
        const boc = tree.proof(i, cells[i], count).toBoc()
        assert.equal(fast(boc, root, i, cells[i].hash()), 'ok', `receipt ${i} of ${count}`)
        const other = (i + 1) % count
        for (const [r, k, h] of [[tree.root(300)!.hash, i, cells[i].hash()], [root, other, cells[i].hash()], [root, i, cells[other].hash()]] as const) {
          if (count === 1 || (r.equals(root) && k === i && h.equals(cells[i].hash()))) continue
          assert.notEqual(fast(boc, r, k, h), 'ok', `refused: receipt ${i} of ${count} as ${k}`)
          assert.notEqual(slow(boc, r, k, h), 'ok')
        }
      }
    }
  })

  it('refuses what is not a proof: empty, garbage, a plain cell, a receipt, a proof cut short', () => {
    const root = tree.root()!.hash
    const boc = tree.proof(5, cells[5]).toBoc()
    for (const bad of [Buffer.alloc(0), Buffer.from('hello world'), beginCell().storeUint(1, 8).endCell().toBoc(), cells[5].toBoc(), boc.subarray(0, boc.length - 10), Buffer.concat([boc, Buffer.alloc(1)])]) {
      assert.throws(() => verifyReceiptProofBoc(bad, root, 5, cells[5].hash()), ReceiptProofError)
    }
  })

  it('passes no single-bit change of a proof that the cell-based check refuses', () => {
    for (const [i, count] of [[0, 300], [150, 300], [64, 65]]) {
      const root = tree.root(count)!.hash
      // Without the trailing CRC-32C, so that @ton/core judges each changed bag by its content, as the bytes check does.
      const boc = tree.proof(i, cells[i], count).toBoc({ idx: false, crc32: false })
      let accepted = 0
      const stricter: string[] = []
      for (let byte = 0; byte < boc.length; byte++) {
        for (let bit = 0; bit < 8; bit++) {
          const m = Buffer.from(boc)
          m[byte] ^= 1 << bit
          const f = fast(m, root, i, cells[i].hash())
          const s = slow(m, root, i, cells[i].hash())
          // Never weaker: what passes from the bytes passes as cells too.
          if (f === 'ok') assert.equal(s, 'ok', `bit ${bit} of byte ${byte}: passes from the bytes, but the cells say ${s}`)
          if (f === 'ok') accepted++
          if (f !== 'ok' && s === 'ok') stricter.push(`${byte}.${bit}`)
        }
      }
      // Those that pass both ways change nothing a hash covers (a stated level mask of an ordinary cell, which both recompute).
      assert.ok(accepted < 8 * boc.length / 10, `${accepted} changes pass`)
      // Stricter only on the bag's encoding (flags and sizes in its header), never on a cell's content.
      assert.ok(stricter.every((at) => Number(at.split('.')[0]) < 16), `stricter at ${stricter.join(', ')}`)
    }
  })
})
