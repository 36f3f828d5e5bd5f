// The client node's ClientExchange (src/client/exchange.ts), each rule on its own: failover between proxies before
// the first byte, the E2EE fresh-recipients retry (once per proxy), the deadline and the app going away through the
// one signal, and settle-once. FAKE: the host's relay (one attempt on one proxy) is scripted per test; the proxies are
// plain names. The real relay over attested HTTP/2 is covered by test/net/network.test.ts and e2ee-network.test.ts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ClientExchange, type AttemptEnd, type ClientExchangeHost, type Outcome } from '../../src/client/exchange.ts'
import type { ExchangeState } from '../../src/net/exchange.ts'
import { silentLogger } from '../../src/core/log.ts'
import { timersLeftBy } from '../helpers/timers.ts'

type Sealed = { recipients: string[] }
type Relay = (link: string, sealed: Sealed | undefined, ex: ClientExchange<string, Sealed, number>, allowFresh: boolean) => Promise<AttemptEnd<number>>

/** A FAKE client node around one exchange: its relay is `relay`, its proxies `links`, and it records what it was told. */
function fakeHost(links: string[], relay: Relay, opts: { seal?: (link: string, exclude: ReadonlySet<string>) => Promise<Sealed | undefined> } = {}) {
  const told = { failovers: [] as string[], failures: [] as string[], fresh: [] as string[], settled: [] as Array<{ outcome: Outcome; link?: string; e2eeRefused: boolean }>, states: [] as ExchangeState[], seals: [] as Array<{ link: string; exclude: string[] }> }
  const host: ClientExchangeHost<string, Sealed, number> = {
    log: silentLogger,
    links: () => links,
    seal: async (link, exclude) => {
      told.seals.push({ link, exclude: [...exclude] })
      return opts.seal ? opts.seal(link, exclude) : undefined
    },
    relay,
    failedOver: (link) => told.failovers.push(link),
    proxyFailed: (link) => told.failures.push(link),
    freshRecipients: (link) => told.fresh.push(link),
    settled: (outcome, answered, e2eeRefused) => told.settled.push({ outcome, link: answered?.link, e2eeRefused: !!e2eeRefused }),
    onState: (s) => told.states.push(s),
  }
  return { host, told }
}

test('fails over to the next proxy when one fails before the first byte, and settles once with the one that answered', async () => {
  const { host, told } = fakeHost(['p1', 'p2'], async (link, _s, ex) => {
    if (link === 'p1') return { kind: 'retry', error: new Error('proxy closed the stream before answering') }
    ex.relaying()
    return { kind: 'done', outcome: 'succeeded' }
  })
  const ex = new ClientExchange(host, 10_000, new AbortController().signal)
  await ex.run()
  assert.deepEqual(told.states, ['admitted', 'dispatched', 'admitted', 'dispatched', 'relaying', 'settled'])
  assert.deepEqual(told.failovers, ['p2'])
  assert.deepEqual(told.failures, ['p1'])
  assert.deepEqual(told.settled, [{ outcome: 'succeeded', link: 'p2', e2eeRefused: false }])
  assert.equal(ex.state, 'settled')
})

test('no proxy answers: the app gets an upstream error naming the last failure, counted once as failed', async () => {
  const { host, told } = fakeHost(['p1', 'p2'], async () => ({ kind: 'retry', error: new Error('reset') }))
  await assert.rejects(new ClientExchange(host, 10_000, new AbortController().signal).run(), (e: Error) => e.name === 'UpstreamError' && /reset/.test(e.message))
  assert.deepEqual(told.settled.map((s) => s.outcome), ['failed'])
})

test('every recipient failing before the first byte draws a fresh set once per proxy, excluding the ones tried', async () => {
  let n = 0
  const calls: Array<{ link: string; recipients: string[]; allowFresh: boolean }> = []
  const { host, told } = fakeHost(
    ['p1', 'p2'],
    async (link, sealed, ex, allowFresh) => {
      calls.push({ link, recipients: sealed!.recipients, allowFresh })
      // p1: every set fails as the recipients' failure; p2 answers.
      if (link === 'p1') return { kind: 'retry', fresh: true, error: new Error('proxy answered 503: no_worker_available') }
      ex.relaying()
      return { kind: 'done', outcome: 'succeeded' }
    },
    { seal: async () => ({ recipients: [`k${++n}`] }) },
  )
  await new ClientExchange(host, 10_000, new AbortController().signal).run()
  assert.deepEqual(calls, [
    { link: 'p1', recipients: ['k1'], allowFresh: true },
    { link: 'p1', recipients: ['k2'], allowFresh: false },
    { link: 'p2', recipients: ['k3'], allowFresh: true },
  ])
  assert.deepEqual(told.fresh, ['p1'], 'a fresh set is drawn once per proxy')
  assert.deepEqual(told.seals[1], { link: 'p1', exclude: ['k1'] }, 'the fresh set leaves out the recipients that failed')
  assert.deepEqual(told.settled, [{ outcome: 'succeeded', link: 'p2', e2eeRefused: false }])
})

test('the deadline fires the one signal: the attempt sees a timeout and the exchange settles once as timed out', async () => {
  const { host, told } = fakeHost(['p1'], (_l, _s, ex) => new Promise((resolve) => ex.signal.addEventListener('abort', () => resolve({ kind: 'done', outcome: ex.abortKind() === 'timeout' ? 'timeout' : 'cancelled' }))))
  const ex = new ClientExchange(host, 50, new AbortController().signal)
  // The deadline's timer is unref'd (it keeps no process alive; a node's servers do): this test's timer stands in for them.
  const alive = setTimeout(() => {}, 5_000)
  await ex.run()
  clearTimeout(alive)
  assert.equal(ex.abortKind(), 'timeout')
  assert.deepEqual(told.settled.map((s) => s.outcome), ['timeout'])
})

test('the app going away while the attempt also fails settles once, as cancelled, with no failover', async () => {
  const app = new AbortController()
  const { host, told } = fakeHost(['p1', 'p2'], (_l, _s, ex) => {
    // Both at the same moment: the app closes, and the proxy fails before answering.
    app.abort(new Error('app went away'))
    ex.cancel()
    return Promise.resolve({ kind: 'retry', error: new Error('reset') })
  })
  const ex = new ClientExchange(host, 10_000, app.signal)
  await ex.run()
  assert.equal(ex.abortKind(), 'cancelled')
  assert.deepEqual(told.settled.map((s) => s.outcome), ['cancelled'])
  assert.deepEqual(told.failovers, [], 'a request whose app went away is not sent to another proxy')
  assert.equal(told.states.filter((s) => s === 'settled').length, 1)
})

test('no worker can be encrypted to on any proxy: the refusal reaches the app, counted once as rejected', async () => {
  const { host, told } = fakeHost(['p1'], async () => assert.fail('nothing is sent'), {
    seal: async () => {
      throw Object.assign(new Error('no verified worker'), { name: 'NoWorkerAvailableError' })
    },
  })
  await assert.rejects(new ClientExchange(host, 10_000, new AbortController().signal).run(), /no verified worker/)
  assert.deepEqual(told.settled, [{ outcome: 'rejected', link: undefined, e2eeRefused: true }])
})

test('an answered request leaves no deadline timer pending (the deadline does not outlive its request)', async () => {
  const { host, told } = fakeHost(['p1'], async (_l, _s, ex) => {
    ex.relaying()
    return { kind: 'done', outcome: 'succeeded' }
  })
  assert.equal(await timersLeftBy(() => new ClientExchange(host, 600_000, new AbortController().signal).run()), 0)
  assert.deepEqual(told.settled.map((s) => s.outcome), ['succeeded'])
})
