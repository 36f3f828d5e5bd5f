// The devnet chain's parts on their own: toncenter stack format, the bounded transaction log, the chain clock.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { beginCell, type TupleItem } from '@ton/core'
import { DevnetClock } from '../../src/ton/chain/clock.ts'
import { ChainTimeError, InvalidParamsError } from '../../src/ton/chain/errors.ts'
import { parseStackParam, renderStack } from '../../src/ton/chain/stack.ts'
import { TransactionIndex, type IndexedTransaction } from '../../src/ton/chain/txindex.ts'
import { tempDir } from './helpers.ts'

describe('toncenter stack format', () => {
  const cell = beginCell().storeUint(0xabcd, 16).endCell()
  const b64 = cell.toBoc().toString('base64')

  it('reads the stack TonClient sends: decimal and hex numbers, cells, slices, builders', () => {
    const items = parseStackParam([
      ['num', '123'],
      ['num', '-0x10'],
      ['num', 7],
      ['tvm.Cell', b64],
      ['tvm.Slice', b64],
      ['tvm.Builder', b64],
    ])
    assert.deepEqual(
      items.map((i) => i.type),
      ['int', 'int', 'int', 'cell', 'slice', 'builder'],
    )
    assert.deepEqual(
      items.slice(0, 3).map((i) => (i as { value: bigint }).value),
      [123n, -16n, 7n],
    )
    assert.ok((items[3] as { cell: typeof cell }).cell.equals(cell))
  })

  it('rejects malformed stack entries with InvalidParamsError', () => {
    for (const bad of [[['num', '12x']], [['tvm.Cell', 'not a boc']], [['tuple', []]], 'nope', [[1, 2]]]) {
      assert.throws(() => parseStackParam(bad), InvalidParamsError, JSON.stringify(bad))
    }
  })

  it('renders results like toncenter: hex numbers, cells with bytes, tuples of typed entries, null as an empty list', () => {
    const items: TupleItem[] = [
      { type: 'int', value: 255n },
      { type: 'int', value: -1n },
      { type: 'cell', cell },
      { type: 'slice', cell },
      { type: 'null' },
      { type: 'tuple', items: [{ type: 'int', value: 5n }, { type: 'cell', cell }, { type: 'tuple', items: [] }] },
    ]
    assert.deepEqual(renderStack(items), [
      ['num', '0xff'],
      ['num', '-0x1'],
      ['cell', { bytes: b64 }],
      ['cell', { bytes: b64 }],
      ['list', { '@type': 'tvm.list', elements: [] }],
      [
        'tuple',
        {
          '@type': 'tvm.tuple',
          elements: [
            { '@type': 'tvm.stackEntryNumber', number: { '@type': 'tvm.numberDecimal', number: '5' } },
            { '@type': 'tvm.stackEntryCell', cell: { '@type': 'tvm.cell', bytes: b64 } },
            { '@type': 'tvm.stackEntryTuple', tuple: { '@type': 'tvm.tuple', elements: [] } },
          ],
        },
      ],
    ])
  })
})

function entry(account: string, lt: bigint): IndexedTransaction {
  const hash = Buffer.alloc(32)
  hash.writeBigUInt64BE(lt, 24)
  hash.write(account.slice(2, 10), 0, 'hex')
  return { account, lt, hash, utime: 1_700_000_000 + Number(lt), boc: 'te6c' }
}

describe('bounded transaction index', () => {
  const A = '0:' + 'aa'.repeat(32)
  const B = '0:' + 'bb'.repeat(32)

  it('keeps the newest N per account and pages newest first by (lt, hash) and to_lt', () => {
    const dir = tempDir()
    try {
      const index = TransactionIndex.open(dir, 3, 1_000n)
      index.record([1n, 2n, 3n, 4n, 5n].map((lt) => entry(A, lt)))
      index.record([entry(B, 6n)])
      assert.equal(index.size, 4)
      assert.deepEqual(
        index.list(A, { limit: 10 }).map((e) => e.lt),
        [5n, 4n, 3n],
      )
      assert.deepEqual(
        index.list(A, { limit: 10, lt: 4n, hash: entry(A, 4n).hash }).map((e) => e.lt),
        [4n, 3n],
      )
      assert.deepEqual(
        index.list(A, { limit: 10, toLt: 3n }).map((e) => e.lt),
        [5n, 4n],
      )
      assert.deepEqual(
        index.list(A, { limit: 1, lt: 4n }).map((e) => e.lt),
        [4n],
      )
      assert.throws(() => index.list(A, { limit: 1, lt: 1n, hash: entry(A, 1n).hash }), { name: 'TransactionNotFoundError' })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('on open drops a torn last line and transactions newer than the saved state, then rewrites the log', () => {
    const dir = tempDir()
    try {
      const index = TransactionIndex.open(dir, 10, 1_000n)
      index.record([entry(A, 1n), entry(A, 2n), entry(A, 3n)])
      const file = path.join(dir, 'transactions.jsonl')
      fs.appendFileSync(file, '{"a":"0:aa","lt":"4","h":"AAAA')
      const reopened = TransactionIndex.open(dir, 10, 2n)
      assert.deepEqual(
        reopened.list(A, { limit: 10 }).map((e) => e.lt),
        [2n, 1n],
      )
      assert.equal(fs.readFileSync(file, 'utf8').trim().split('\n').length, 2)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('devnet clock', () => {
  it('follows the wall clock, freezes, advances, and never goes back', () => {
    let wall = 1_000
    const clock = new DevnetClock({}, () => wall)
    assert.equal(clock.now(), 1_000)
    wall = 1_005
    assert.equal(clock.now(), 1_005)
    clock.set(2_000)
    wall = 1_010
    assert.equal(clock.now(), 2_000)
    assert.equal(clock.advance(30), 2_030)
    assert.throws(() => clock.set(1_500), ChainTimeError)
    clock.follow()
    wall = 1_020
    assert.equal(clock.now(), 2_040, 'continues from chain time at wall-clock pace')
    const restored = new DevnetClock(clock.state(), () => 0)
    assert.equal(restored.now(), 2_040, 'a restart with a wall clock behind never moves time back')
  })
})
