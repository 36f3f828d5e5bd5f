// clearableTimeout (src/core/time.ts), the per-request deadline of the worker: it fires as AbortSignal.timeout
// does, and clearing it leaves no timer pending (AbortSignal.timeout's stays for the whole timeout).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { clearableTimeout } from '../../src/core/time.ts'
import { timersLeftBy } from '../helpers/timers.ts'

const aborted = (s: AbortSignal) => new Promise<void>((r) => (s.aborted ? r() : s.addEventListener('abort', () => r(), { once: true })))

test('a clearable deadline fires with the same TimeoutError as AbortSignal.timeout', async () => {
  // Both timers are unref'd (they keep no process alive): this one stands in for a node's servers.
  const alive = setTimeout(() => {}, 5_000)
  const d = clearableTimeout(10)
  const reference = AbortSignal.timeout(10)
  await Promise.all([aborted(d.signal), aborted(reference)])
  clearTimeout(alive)
  const got = d.signal.reason as DOMException
  const want = reference.reason as DOMException
  assert.ok(got instanceof DOMException)
  assert.deepEqual([got.name, got.message, got.code], [want.name, want.message, want.code])
})

test('clearing the deadline when the request ends leaves no timer pending; AbortSignal.timeout leaves one', async () => {
  let d: ReturnType<typeof clearableTimeout> | undefined
  assert.equal(await timersLeftBy(() => (d = clearableTimeout(600_000)).clear()), 0)
  assert.equal(d!.signal.aborted, false)
  assert.equal(await timersLeftBy(() => AbortSignal.timeout(600_000)), 1)
})
