// The base every hop's exchange shares (src/net/exchange.ts): the checked moves between states, the one signal
// composed of the app going away, the deadline and a cancel, and its clean-up (settling leaves no deadline timer
// behind). A minimal subclass drives it; the role exchanges are tested in test/proxy and test/client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BaseExchange, IllegalTransitionError, type ExchangeState } from '../../src/net/exchange.ts'
import { timersLeftBy } from '../helpers/timers.ts'

/** The smallest exchange: it moves where a test tells it to. */
class Ex extends BaseExchange {
  readonly states: ExchangeState[]
  constructor(app: AbortSignal, timeoutMs: number) {
    const states: ExchangeState[] = []
    super(app, Date.now() + timeoutMs, (s) => states.push(s))
    this.states = states
  }
  move(next: ExchangeState): void {
    this.to(next)
  }
}

const aborted = (s: AbortSignal) => new Promise<void>((r) => (s.aborted ? r() : s.addEventListener('abort', () => r(), { once: true })))

test('an exchange reports each state it enters, admitted first, and refuses an illegal move without moving', () => {
  const ex = new Ex(new AbortController().signal, 10_000)
  ex.move('dispatched')
  ex.move('admitted')
  ex.move('dispatched')
  assert.throws(() => ex.move('dispatched'), IllegalTransitionError)
  ex.move('relaying')
  assert.throws(() => ex.move('admitted'), (e: IllegalTransitionError) => e.from === 'relaying' && e.to === 'admitted')
  assert.equal(ex.state, 'relaying')
  ex.move('settled')
  assert.throws(() => ex.move('settled'), IllegalTransitionError)
  assert.deepEqual(ex.states, ['admitted', 'dispatched', 'admitted', 'dispatched', 'relaying', 'settled'])
})

test('the app going away fires the signal with the app reason, as a cancel', async () => {
  const app = new AbortController()
  const ex = new Ex(app.signal, 10_000)
  assert.equal(ex.abortKind(), undefined)
  const gone = new Error('app went away')
  app.abort(gone)
  assert.equal(ex.signal.aborted, true)
  assert.equal(ex.signal.reason, gone)
  assert.equal(ex.abortKind(), 'cancelled')
})

test('an app already gone when the exchange is built gives an aborted signal at once', () => {
  const app = new AbortController()
  const gone = new Error('gone before')
  app.abort(gone)
  const ex = new Ex(app.signal, 10_000)
  assert.equal(ex.signal.reason, gone)
  assert.equal(ex.abortKind(), 'cancelled')
})

test('cancel() fires the signal with its reason; the first reason wins', () => {
  const app = new AbortController()
  const ex = new Ex(app.signal, 10_000)
  const why = new Error('stop')
  ex.cancel(why)
  app.abort(new Error('later'))
  ex.cancel(new Error('later still'))
  assert.equal(ex.signal.reason, why)
  assert.equal(ex.abortKind(), 'cancelled')
})

test('the deadline fires the signal with the same TimeoutError AbortSignal.timeout gives', async () => {
  const ex = new Ex(new AbortController().signal, 20)
  // The deadline's timer is unref'd (it keeps no process alive; a node's servers do): this one stands in for them.
  const alive = setTimeout(() => {}, 5_000)
  await aborted(ex.signal)
  const reason = ex.signal.reason as DOMException
  const reference = AbortSignal.timeout(1)
  await aborted(reference)
  clearTimeout(alive)
  assert.equal(reason.name, 'TimeoutError')
  assert.ok(reason instanceof DOMException)
  assert.equal(reason.message, (reference.reason as DOMException).message)
  assert.equal(reason.code, (reference.reason as DOMException).code)
  assert.equal(ex.abortKind(), 'timeout')
})

test('settling clears the deadline timer: a settled request leaves no timer pending', async () => {
  const left = await timersLeftBy(() => {
    for (let i = 0; i < 20; i++) {
      const ex = new Ex(new AbortController().signal, 600_000)
      ex.move('dispatched')
      ex.move('settled')
    }
  })
  assert.equal(left, 0)
  // The counter itself sees a timer left pending (the kind AbortSignal.timeout leaves for its whole timeout).
  let reference: AbortSignal | undefined
  assert.equal(await timersLeftBy(() => void (reference = AbortSignal.timeout(600_000))), 1)
  assert.equal(reference!.aborted, false)
})

test('a signal that fired (app gone, cancel) clears the deadline timer too', async () => {
  const left = await timersLeftBy(() => {
    const app = new AbortController()
    new Ex(app.signal, 600_000)
    app.abort(new Error('gone'))
    new Ex(new AbortController().signal, 600_000).cancel()
  })
  assert.equal(left, 0)
})

test('a settled exchange lets go of the app signal: the app closing after the answer does not fire it', () => {
  const app = new AbortController()
  const ex = new Ex(app.signal, 10_000)
  ex.move('settled')
  app.abort(new Error('closed after its answer'))
  assert.equal(ex.signal.aborted, false)
  assert.equal(ex.abortKind(), undefined)
})
