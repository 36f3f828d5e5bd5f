import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULT_NODE_HEAP_MIB, nodeHeapArgs } from '../../src/core/node-heap.ts'

test('proxy, client and worker nodes get the default heap limit; other commands none', () => {
  for (const role of ['proxy', 'client', 'worker']) assert.deepEqual(nodeHeapArgs(role, {}), [`--max-old-space-size=${DEFAULT_NODE_HEAP_MIB}`])
  for (const cmd of ['chain', 'devnet', 'bench', 'root']) assert.deepEqual(nodeHeapArgs(cmd, {}), [])
})

test('COCOON_NODE_HEAP_MIB sets the limit, 0 removes it, and a limit in NODE_OPTIONS wins', () => {
  assert.deepEqual(nodeHeapArgs('proxy', { COCOON_NODE_HEAP_MIB: '512' }), ['--max-old-space-size=512'])
  assert.deepEqual(nodeHeapArgs('proxy', { COCOON_NODE_HEAP_MIB: '0' }), [])
  assert.deepEqual(nodeHeapArgs('proxy', { NODE_OPTIONS: '--max-old-space-size=1024' }), [])
})

test('a COCOON_NODE_HEAP_MIB that is not a usable limit is refused, naming the variable', () => {
  for (const bad of ['abc', '12', '-1', '1e3', '9999999', 'Infinity']) assert.throws(() => nodeHeapArgs('client', { COCOON_NODE_HEAP_MIB: bad }), /COCOON_NODE_HEAP_MIB/, bad)
})
