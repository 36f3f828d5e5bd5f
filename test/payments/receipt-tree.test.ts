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

function dictRoot(cells: Cell[], count: number): Buffer {
  const d = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell())
  for (let i = 0; i < count; i++) d.set(BigInt(i), cells[i])
  return beginCell().storeDictDirect(d).endCell().hash()
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
      }
      const d = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell())
      for (let i = 0; i < count; i++) d.set(BigInt(i), cells[i])
      const theirs = generateMerkleProof(d, [BigInt(count - 1)], Dictionary.Keys.BigUint(64))
      assert.ok(theirs.equals(tree.proof(count - 1, cells[count - 1], count)), `same proof cell as generateMerkleProof at ${count}`)
    }
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
