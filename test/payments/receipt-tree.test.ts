// The receipt log's incremental Merkle structure is exactly a TON Dictionary<uint64, Cell>, and its proofs are native Merkle proofs.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { beginCell, Cell, Dictionary, generateMerkleProof } from '@ton/core'
import { ReceiptTree } from '../../src/payments/receipts/tree.ts'
import { ReceiptProofError, verifyReceiptProof } from '../../src/payments/receipts/proof.ts'

function receiptCell(i: number): Cell {
  // Cells of varying depth, as real receipts (which hold refs) have.
  const inner = beginCell().storeUint(i * 7919, 32).endCell()
  return i % 3 === 0 ? beginCell().storeUint(i, 64).endCell() : beginCell().storeUint(i, 64).storeRef(inner).endCell()
}

/** @ton/core's own Dictionary<uint64, Cell> of the first `count` cells. */
function dict(cells: Cell[], count: number) {
  const d = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell())
  for (let i = 0; i < count; i++) d.set(BigInt(i), cells[i])
  return d
}

function dictRoot(cells: Cell[], count: number): Buffer {
  return beginCell().storeDictDirect(dict(cells, count)).endCell().hash()
}

/** @ton/core's Merkle proof of key `i` in that dictionary, serialized: the reference the tree's proofs must equal. */
function theirProof(cells: Cell[], count: number, i: number): Buffer {
  return generateMerkleProof(dict(cells, count), [BigInt(i)], Dictionary.Keys.BigUint(64)).toBoc()
}

describe('receipt tree', () => {
  const cells = Array.from({ length: 70 }, (_, i) => receiptCell(i))
  const tree = new ReceiptTree()
  for (const c of cells) tree.append({ hash: c.hash(), depth: c.depth() })

  it('has the root @ton/core Dictionary computes, for every count', () => {
    assert.equal(tree.root(0), undefined)
    for (let count = 1; count <= cells.length; count++) {
      assert.equal(tree.root(count)!.hash.toString('hex'), dictRoot(cells, count).toString('hex'), `count ${count}`)
    }
  })

  it('builds proofs that verify against the root of any count that holds the receipt, and match @ton/core\'s', () => {
    for (const count of [1, 2, 3, 5, 8, 33, 64, 70]) {
      const root = tree.root(count)!.hash
      for (let i = 0; i < count; i++) {
        const proof = tree.proof(i, cells[i], count)
        const got = verifyReceiptProof(Cell.fromBoc(proof.toBoc())[0], root, i, cells[i].hash())
        assert.ok(got.equals(cells[i]))
        assert.deepEqual(proof.toBoc(), theirProof(cells, count, i), `same proof as generateMerkleProof: receipt ${i} of ${count}`)
      }
    }
  })

  it('writes each proof byte for byte as @ton/core\'s generateMerkleProof(...).toBoc(), without building its cells', () => {
    for (const count of [1, 2, 3, 5, 8, 33, 64, 70]) {
      for (let i = 0; i < count; i++) {
        assert.deepEqual(tree.proofBoc(i, cells[i].toBoc(), count), theirProof(cells, count, i), `receipt ${i} of ${count}`)
      }
    }
    // A receipt of three cells, one of them referred to twice (as a receipt's cells may be).
    const shared = beginCell().storeUint(77, 16).endCell()
    const odd = beginCell().storeUint(5, 3).storeRef(shared).storeRef(beginCell().storeRef(shared).endCell()).endCell()
    const withOdd = cells.slice(0, 9).map((c, i) => (i === 4 ? odd : c))
    const t = new ReceiptTree()
    for (const c of withOdd) t.append({ hash: c.hash(), depth: c.depth() })
    assert.deepEqual(t.proofBoc(4, odd.toBoc()), theirProof(withOdd, 9, 4))
    assert.throws(() => t.proofBoc(4, Buffer.from('not a cell')), /not a well-formed cell/)
  })

  it('refuses a proof for another root, another key, another receipt or a pruned key', () => {
    const root = tree.root()!.hash
    const proof = tree.proof(5, cells[5])
    assert.throws(() => verifyReceiptProof(proof, tree.root(69)!.hash, 5), ReceiptProofError)
    assert.throws(() => verifyReceiptProof(proof, root, 6), /pruned|not in/)
    assert.throws(() => verifyReceiptProof(proof, root, 5, cells[6].hash()), /another receipt/)
    assert.throws(() => verifyReceiptProof(proof.refs[0], root, 5), /not a Merkle-proof/)
    assert.throws(() => verifyReceiptProof(tree.proof(5, cells[6]), root, 5), /root/)
  })

  it('truncates back to an earlier count', () => {
    const t = new ReceiptTree()
    for (const c of cells.slice(0, 9)) t.append({ hash: c.hash(), depth: c.depth() })
    t.truncate(6)
    assert.equal(t.count, 6)
    t.append({ hash: cells[6].hash(), depth: cells[6].depth() })
    assert.deepEqual(t.root()!.hash, dictRoot(cells, 7))
  })
})

describe('receipt tree with a bounded memory', () => {
  const cells = Array.from({ length: 70 }, (_, i) => receiptCell(i))
  const refs = cells.map((c) => ({ hash: c.hash(), depth: c.depth() }))

  /** A tree of 4-receipt blocks, keeping one complete block's inside, reading old blocks from `refs` (and recording each read). */
  function bounded(count = cells.length) {
    const reads: Array<[number, number]> = []
    const tree = new ReceiptTree({
      blockBits: 2,
      cachedBlocks: 1,
      source: (from, to) => {
        reads.push([from, to])
        return refs.slice(from, Math.min(to, count))
      },
    })
    for (const r of refs.slice(0, count)) tree.append(r)
    return { tree, reads }
  }

  it('keeps the inside of only the block being filled and the cached blocks, and reads the others back in whole blocks', () => {
    const { tree, reads } = bounded()
    assert.equal(tree.cachedBlockCount, 1)
    assert.deepEqual(reads, [], 'appending never reads back')
    assert.equal(tree.root()!.hash.toString('hex'), dictRoot(cells, cells.length).toString('hex'))
    assert.deepEqual(reads, [], 'the root of the current count needs only the top and the block being filled')
    tree.proof(5, cells[5])
    assert.deepEqual(reads, [[4, 8]], 'a proof in an old block reads that block once')
    tree.proof(6, cells[6])
    assert.deepEqual(reads, [[4, 8]], 'and the next proof in it is served from the cache')
    assert.equal(tree.cachedBlockCount, 1)
  })

  it('gives the same roots and proofs as the tree that holds everything', () => {
    const { tree } = bounded()
    const full = new ReceiptTree()
    for (const r of refs) full.append(r)
    for (let count = 1; count <= cells.length; count++) {
      const root = tree.root(count)!.hash
      assert.equal(root.toString('hex'), dictRoot(cells, count).toString('hex'), `count ${count}`)
      for (const i of new Set([0, Math.floor(count / 2), count - 1])) {
        const boc = tree.proofBoc(i, cells[i].toBoc(), count)
        const got = verifyReceiptProof(Cell.fromBoc(boc)[0], root, i, cells[i].hash())
        assert.ok(got.equals(cells[i]), `receipt ${i} of ${count}`)
        assert.deepEqual(boc, full.proofBoc(i, cells[i].toBoc(), count))
        assert.deepEqual(tree.proof(i, cells[i], count).toBoc(), boc)
      }
    }
  })

  it('truncates across a block boundary, rebuilding the block being filled from the source', () => {
    for (const [count, to] of [[70, 61], [70, 64], [13, 12], [9, 2]]) {
      const { tree } = bounded(count)
      tree.truncate(to)
      assert.equal(tree.count, to)
      if (to > 0) assert.equal(tree.root()!.hash.toString('hex'), dictRoot(cells, to).toString('hex'), `${count} → ${to}`)
      tree.append(refs[to])
      assert.equal(tree.root()!.hash.toString('hex'), dictRoot(cells, to + 1).toString('hex'), `${count} → ${to}, then one more`)
    }
  })

  it('fails loudly when the source is short of receipts', () => {
    const tree = new ReceiptTree({ blockBits: 2, cachedBlocks: 0, source: () => refs.slice(0, 1) })
    for (const r of refs.slice(0, 12)) tree.append(r)
    assert.throws(() => tree.proof(1, cells[1]), /the receipt source gave 1 receipts for \[\d+, \d+\), not 4/)
    assert.throws(() => new ReceiptTree({ blockBits: 0 }), /blockBits/)
  })
})
