// The proxy's Exchange (src/proxy/exchange.ts), each rule on its own: retry before the first byte, the deadline,
// cancel with grace (what the worker produced is billed; a worker that does not stop is reset), and settle-once.
// FAKE worker: a real HTTP/2 server on loopback that answers as each test scripts it and signs usage with its own
// Ed25519 key (the seam next door). The app is a real HTTP/2 stream; admission (AdmissionQueue) and billing
// (ProxyBilling on a real SQLite ledger) are the real classes, wrapped only to count their releases.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import http2 from 'node:http2'
import type net from 'node:net'
import { Exchange, checkMove, IllegalTransitionError, type ExchangeHost, type ExchangeState, type Outcome } from '../../src/proxy/exchange.ts'
import { AdmissionQueue } from '../../src/proxy/admission.ts'
import { WorkerPool, type WorkerConn } from '../../src/proxy/routing.ts'
import { readBody } from '../../src/net/body.ts'
import { HEADERS, PATHS, usageSigningPayload } from '../../src/net/protocol.ts'
import { createIdentity, SimulatedEvidenceProvider, simulatedImageHash, type VerifiedPeer } from '../../src/tee/index.ts'
import { silentLogger } from '../../src/core/log.ts'
import { decodeReceiptBoc, receiptFields, signReceipt } from '../../src/payments/receipts/receipt.ts'
import { offchainBilling } from '../helpers/network.ts'

const MODEL = 'm'
const SSE = 'text/event-stream'

/** A FAKE worker: a real HTTP/2 server whose answers each test scripts. */
class FakeWorker {
  readonly keys = crypto.generateKeyPairSync('ed25519')
  readonly server = http2.createServer()
  readonly requests: Array<{ stream: http2.ServerHttp2Stream; headers: http2.IncomingHttpHeaders; closedWith?: number }> = []
  /** Exchange ids the proxy asked to stop. */
  readonly cancels: string[] = []
  onRequest: (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => void = () => {}
  onCancel: (exchangeId: string) => void = () => {}
  conn!: WorkerConn
  private session!: http2.ClientHttp2Session

  async start(id: string): Promise<this> {
    this.server.on('stream', (stream, headers) => {
      stream.on('error', () => {})
      if (headers[':path'] === PATHS.cancel) {
        stream.resume()
        stream.respond({ ':status': 200 })
        stream.end()
        const ex = String(headers[HEADERS.exchange])
        this.cancels.push(ex)
        this.onCancel(ex)
        return
      }
      const r: FakeWorker['requests'][number] = { stream, headers }
      this.requests.push(r)
      stream.once('close', () => (r.closedWith = stream.rstCode))
      void readBody(stream, 1 << 20).then(() => this.onRequest(stream, headers))
    })
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.session = http2.connect(`http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`)
    this.session.on('error', () => {})
    // DER, not JWK: Node 20 can deadlock exporting a generateKeyPairSync key as JWK (see test/net/hpke-node.test.ts).
    const raw = this.keys.publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
    this.conn = {
      id, session: this.session, key: this.keys.publicKey, account: id, remote: id, connectedAt: Date.now(),
      peer: { publicKey: raw, claims: { modelId: MODEL }, imageHash: '00'.repeat(32), kind: 'simulated' } as unknown as VerifiedPeer,
      info: { protocol: 1, model: { id: MODEL, hash: '' }, coefficient: 1000, maxActiveRequests: 4, maxTokensCap: 64 } as WorkerConn['info'],
      active: 0, avgMs: 1000, failRate: 0, served: 0, failed: 0, tokens: { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 },
    }
    return this
  }

  /** The usage trailers a worker signs for what it produced. */
  usage(requestId: string, completionTokens: number, finishReason = 'stop'): http2.OutgoingHttpHeaders {
    const json = JSON.stringify({ requestId, promptTokens: 5, cachedTokens: 0, completionTokens, reasoningTokens: 0, answer: { id: 'a1', object: 'chat.completion', model: MODEL, created: 1 }, finishReason })
    return { [HEADERS.usage]: json, [HEADERS.usageSig]: crypto.sign(null, usageSigningPayload(json), this.keys.privateKey).toString('base64') }
  }

  /** Answers the whole request at once, with signed usage. */
  answer(s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders, tokens = 3): void {
    s.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true })
    s.once('wantTrailers', () => s.sendTrailers(this.usage(String(h[HEADERS.requestId]), tokens)))
    s.end(JSON.stringify({ choices: [{ message: { content: 'hello' } }] }))
  }

  /** Starts a streamed answer: one event now, the trailers (signed usage for `tokens`) when the stream is ended. */
  startStream(s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders, tokens: number): void {
    s.respond({ ':status': 200, 'content-type': SSE }, { waitForTrailers: true })
    s.once('wantTrailers', () => s.sendTrailers(this.usage(String(h[HEADERS.requestId]), tokens, 'cancelled')))
    s.write('data: {"choices":[{"delta":{"content":"once"}}]}\n\n')
  }

  close(): void {
    this.session.destroy()
    this.server.close()
  }
}

/** Real admission and billing around the exchanges of one test, counting what they release. */
async function harness(workers: FakeWorker[], opts: { maxAttempts?: number; cancelGraceMs?: number } = {}) {
  const billing = offchainBilling()
  const pool = new WorkerPool()
  for (const w of workers) pool.set(w.conn.id, w.conn)
  const queue = new AdmissionQueue(() => pool, { depth: 16, maxWaitMs: 10_000 })
  const counts = { slotReleases: 0, reservationReleases: 0, retries: 0 }
  const releaseReservation = billing.release.bind(billing)
  billing.release = (r) => {
    const before = billing.reservations
    releaseReservation(r)
    if (billing.reservations < before) counts.reservationReleases++
  }
  const outcomes: Outcome[] = []
  const states: ExchangeState[] = []
  const identity = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32) })
  const host: ExchangeHost = {
    log: silentLogger,
    billing,
    admission: {
      claim: (want, signal) => queue.claim(want, signal),
      release: (conn, client) => {
        counts.slotReleases++
        queue.release(conn, client)
      },
    },
    maxAttempts: opts.maxAttempts ?? 3,
    workers: pool,
    identity: () => identity,
    proxyKey: () => identity.publicKey,
    outcome: (o) => outcomes.push(o),
    retried: () => counts.retries++,
    meter: () => {},
    dropWorker: () => {},
    cancelGraceMs: opts.cancelGraceMs,
    onState: (s) => states.push(s),
  }
  const exchanges: Array<{ ex: Exchange; run: Promise<void> }> = []
  const server = http2.createServer()
  server.on('stream', (cs, headers) => {
    cs.on('error', () => {})
    void readBody(cs, 1 << 20).then((body) => {
      const ex = new Exchange(host, cs, {
        path: PATHS.chat,
        body,
        requestId: String(headers[HEADERS.requestId]),
        client: 'app',
        routing: { model: MODEL, stream: headers[HEADERS.stream] === '1', maxTokens: 16 },
        maxCoefficient: 4000,
        timeoutMs: Number(headers[HEADERS.timeoutMs] ?? 10_000),
        startedAt: Date.now(),
        salt: Buffer.alloc(32, 1),
        contentType: 'application/json',
      })
      exchanges.push({ ex, run: ex.run() })
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const app = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
  app.on('error', () => {})
  /** The app's request; resolves with the answer once it ends or is reset. */
  const request = (h: Record<string, string> = {}) => {
    const req = app.request({ ':method': 'POST', ':path': PATHS.chat, [HEADERS.requestId]: `r${crypto.randomUUID()}`, ...h })
    req.on('error', () => {})
    req.end('{"messages":[]}')
    const answer = new Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders }>((resolve) => {
      let status = 0
      let trailers: http2.IncomingHttpHeaders = {}
      const chunks: Buffer[] = []
      req.on('response', (rh) => (status = Number(rh[':status'])))
      req.on('trailers', (t) => (trailers = t))
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('close', () => resolve({ status, body: Buffer.concat(chunks).toString(), trailers }))
    })
    return { req, answer }
  }
  const settled = async () => {
    await until(() => exchanges.length > 0)
    await Promise.all(exchanges.map((e) => e.run))
  }
  const close = () => {
    app.destroy()
    server.close()
    for (const w of workers) w.close()
  }
  return { billing, counts, outcomes, states, exchanges, request, settled, close, pool, proxyKey: identity.publicKey }
}

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}

test('an exchange moves only admitted → dispatched → relaying → settled, and back to admitted only for a retry', () => {
  for (const [from, to] of [['admitted', 'dispatched'], ['dispatched', 'relaying'], ['relaying', 'settled'], ['dispatched', 'admitted'], ['admitted', 'settled'], ['dispatched', 'settled']] as const) checkMove(from, to)
  for (const [from, to] of [['relaying', 'admitted'], ['relaying', 'dispatched'], ['settled', 'settled'], ['settled', 'admitted'], ['admitted', 'relaying']] as const) {
    assert.throws(() => checkMove(from, to), IllegalTransitionError)
  }
})

test('retries on another worker when the first fails before the first byte', async () => {
  const ws = [await new FakeWorker().start('w1'), await new FakeWorker().start('w2')]
  let served = 0
  // Whichever worker is asked first fails before sending a byte; the next one answers.
  for (const w of ws) w.onRequest = (s, h) => (served++ === 0 ? (s.respond({ ':status': 503 }), s.end()) : w.answer(s, h))
  const t = await harness(ws)
  try {
    const { answer } = t.request()
    const a = await answer
    await t.settled()
    assert.equal(a.status, 200)
    assert.match(a.body, /hello/)
    assert.ok(a.trailers[HEADERS.charged], 'the answer ends with the billed running total')
    assert.equal(ws[0].requests.length + ws[1].requests.length, 2)
    assert.equal(ws[0].requests.length, 1, 'the retry went to the other worker')
    assert.deepEqual(t.states, ['admitted', 'dispatched', 'admitted', 'dispatched', 'relaying', 'settled'])
    assert.deepEqual(t.outcomes, ['succeeded'])
    assert.equal(t.counts.retries, 1)
    // Each attempt's slot and reservation went back exactly once; the usage was billed once.
    assert.equal(t.counts.slotReleases, 2)
    assert.equal(t.counts.reservationReleases, 2)
    assert.ok(ws.every((w) => w.conn.active === 0))
    assert.equal(t.billing.reservations, 0)
    assert.equal(t.billing.ledger.counters('client', 'app').requests, 1)
  } finally {
    t.close()
  }
})

test("a retry after the only affordable worker failed and left, with the others dearer than the app's max_coefficient, is a 503 saying so", async () => {
  const ws = [await new FakeWorker().start('w1'), await new FakeWorker().start('w2')]
  // w2 asks more than the app's max_coefficient (4000), so only w1 is eligible; w1 fails before the first byte and leaves.
  ws[1].conn.info = { ...ws[1].conn.info, coefficient: 5000 }
  ws[1].onRequest = (s, h) => ws[1].answer(s, h)
  const t = await harness(ws)
  ws[0].onRequest = (s) => {
    t.pool.delete('w1')
    s.respond({ ':status': 503 })
    s.end()
  }
  try {
    const a = await t.request().answer
    await t.settled()
    assert.equal(a.status, 503)
    assert.match(a.body, /no_worker_available/)
    assert.match(a.body, /max_coefficient 4000/)
    assert.equal(ws[1].requests.length, 0, 'the dearer worker was never asked')
    assert.equal(t.billing.reservations, 0)
  } finally {
    t.close()
  }
})

test('a worker that never answers is reset at the deadline and the app gets 504', async () => {
  const w = await new FakeWorker().start('w1')
  w.onRequest = () => {} // hangs
  const t = await harness([w])
  try {
    const { answer } = t.request({ [HEADERS.timeoutMs]: '300' })
    const a = await answer
    await t.settled()
    assert.equal(a.status, 504)
    assert.equal(JSON.parse(a.body).error.code, 'timeout')
    await until(() => w.requests[0]?.closedWith !== undefined)
    assert.equal(w.requests[0].closedWith, http2.constants.NGHTTP2_CANCEL, "the worker's stream was reset")
    assert.equal(w.requests.length, 1, 'a deadline is not retried')
    assert.deepEqual(t.states, ['admitted', 'dispatched', 'settled'])
    assert.deepEqual(t.outcomes, ['timeout'])
    assert.equal(t.exchanges[0].ex.state, 'settled')
    assert.equal(t.counts.slotReleases, 1)
    assert.equal(t.counts.reservationReleases, 1)
    assert.equal(w.conn.active, 0)
  } finally {
    t.close()
  }
})

test('an app that goes away mid-stream: the worker is asked to stop, and what it produced is billed', async () => {
  const w = await new FakeWorker().start('w1')
  w.onRequest = (s, h) => w.startStream(s, h, 2)
  // Asked to stop, this worker ends its answer at once with usage for what it produced.
  w.onCancel = (id) => w.requests.find((r) => r.headers[HEADERS.exchange] === id)?.stream.end()
  const t = await harness([w])
  try {
    const { req } = t.request({ [HEADERS.stream]: '1' })
    await new Promise((r) => req.once('data', r))
    req.close(http2.constants.NGHTTP2_CANCEL)
    await t.settled()
    assert.deepEqual(w.cancels, [w.requests[0].headers[HEADERS.exchange]])
    assert.deepEqual(t.outcomes, ['cancelled'])
    assert.deepEqual(t.states, ['admitted', 'dispatched', 'relaying', 'settled'])
    const billed = t.billing.ledger.counters('client', 'app')
    assert.equal(billed.requests, 1, 'the produced tokens are billed')
    assert.ok(billed.tokens > 0n)
    assert.equal(t.counts.slotReleases, 1)
    assert.equal(t.counts.reservationReleases, 1)
    assert.equal(w.conn.active, 0)
  } finally {
    t.close()
  }
})

test('a worker that does not stop within the grace is reset, and nothing unsigned is billed', async () => {
  const w = await new FakeWorker().start('w1')
  w.onRequest = (s, h) => w.startStream(s, h, 2) // and ignores the cancel
  const t = await harness([w], { cancelGraceMs: 150 })
  try {
    const { req } = t.request({ [HEADERS.stream]: '1' })
    await new Promise((r) => req.once('data', r))
    req.close(http2.constants.NGHTTP2_CANCEL)
    await t.settled()
    assert.equal(w.cancels.length, 1)
    await until(() => w.requests[0].closedWith !== undefined)
    assert.equal(w.requests[0].closedWith, http2.constants.NGHTTP2_CANCEL)
    assert.deepEqual(t.outcomes, ['cancelled'])
    assert.equal(t.billing.ledger.counters('client', 'app').requests, 0)
    assert.equal(t.counts.slotReleases, 1)
    assert.equal(t.counts.reservationReleases, 1)
    assert.equal(t.billing.reservations, 0)
  } finally {
    t.close()
  }
})

test('a worker failing while the app goes away and a cancel lands settles once: one outcome, slot and reservation released once', async () => {
  const w = await new FakeWorker().start('w1')
  w.onRequest = (s, h) => w.startStream(s, h, 2)
  const t = await harness([w], { cancelGraceMs: 100 })
  try {
    const { req } = t.request({ [HEADERS.stream]: '1' })
    await new Promise((r) => req.once('data', r))
    await until(() => t.exchanges.length === 1)
    // All three at once: the worker dies mid-answer, the app resets its stream, and the exchange is cancelled.
    w.requests[0].stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
    req.close(http2.constants.NGHTTP2_CANCEL)
    t.exchanges[0].ex.cancel()
    await t.settled()
    // Late events (the grace timer, the worker's close) must not settle it again.
    await new Promise((r) => setTimeout(r, 250))
    assert.equal(t.outcomes.length, 1, `outcomes: ${t.outcomes.join(', ')}`)
    assert.equal(t.states.filter((s) => s === 'settled').length, 1)
    assert.equal(t.counts.slotReleases, 1)
    assert.equal(t.counts.reservationReleases, 1)
    assert.equal(w.conn.active, 0)
    assert.equal(t.billing.reservations, 0)
    assert.equal(t.billing.ledger.counters('client', 'app').requests, 0, 'nothing signed, nothing billed')
  } finally {
    t.close()
  }
})

test("the worker's receipt is logged only when that worker signed it; one signed by another key is replaced by the proxy's own", async () => {
  const w = await new FakeWorker().start('w1')
  const stranger = crypto.generateKeyPairSync('ed25519')
  let signWith = w.keys.privateKey
  const t = await harness([w])
  // The receipt a worker signs for what it produced: the fields the proxy checks against its signed usage and prices.
  w.onRequest = (s, h) => {
    const requestId = String(h[HEADERS.requestId])
    s.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true })
    s.once('wantTrailers', async () => {
      const fields = receiptFields({
        signer: 'worker', requestId, salt: Buffer.alloc(32, 1), requestBody: Buffer.from('{}'), answerText: 'hello',
        sampling: { temperature: null, top_p: null, seed: null, max_tokens: null, stop: null }, modelId: MODEL, modelHash: '', imageHash: '',
        workerKey: w.conn.peer.publicKey, proxyKey: t.proxyKey, usage: { promptTokens: 5, cachedTokens: 0, completionTokens: 3, reasoningTokens: 0 },
        coefficient: 1000, prices: t.billing.params(), startedAtMs: Date.now(), endedAtMs: Date.now(), finishReason: 'stop',
      })
      const receipt = await signReceipt(fields, (d) => crypto.sign(null, d, signWith))
      s.sendTrailers({ ...w.usage(requestId, 3), [HEADERS.receipt]: receipt.boc.toString('base64') })
    })
    s.end(JSON.stringify({ choices: [{ message: { content: 'hello' } }] }))
  }
  try {
    const signerOf = async () => {
      const a = await t.request().answer
      assert.equal(a.status, 200)
      return decodeReceiptBoc(String(a.trailers[HEADERS.receipt])).fields.signer
    }
    assert.equal(await signerOf(), 'worker', "the worker's own receipt is logged")
    signWith = stranger.privateKey
    assert.equal(await signerOf(), 'proxy', 'a receipt signed by another key is refused, and the proxy states one itself')
    await t.settled()
    assert.equal(t.billing.ledger.receiptCount(), 2)
  } finally {
    t.close()
  }
})
