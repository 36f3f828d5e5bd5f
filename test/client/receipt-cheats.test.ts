// Receipt failures feed the client's proxy backoff (issue 14: "a proxy that cheats (rollbacks, receipts) is backed
// off exponentially and reported on /jsonstats"). A real proxy always hands over a valid receipt, so the proxy here
// is a FAKE one (an attested proxy identity on real RA-TLS and HTTP/2, answering by hand) in front of the real client
// node: first with valid receipts (no failure), then billing without a receipt, with an unreadable one, with one
// for another request and with a forged signature. Each cheat backs the proxy off as CHEAT_WEIGHT failures at once,
// exponentially longer each time, and shows on /jsonstats. A real proxy rolling back its charge is in
// test/faults/distrust.test.ts; a real proxy's log dropping a receipt in test/e2e/receipts.test.ts.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import http2 from 'node:http2'
import os from 'node:os'
import path from 'node:path'
import { startClient, waitFor } from '../helpers/network.ts'
import { createIdentity } from '../../src/tee/cert.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/simulated.ts'
import { createPeerVerifier } from '../../src/tee/verify.ts'
import { listenAttested } from '../../src/net/attested.ts'
import { HEADERS } from '../../src/net/protocol.ts'
import { receiptFields, signReceipt } from '../../src/payments/receipts/receipt.ts'
import { ReceiptStore } from '../../src/payments/receipts/store.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../../src/payments/pricing.ts'
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, CHEAT_WEIGHT } from '../../src/client/proxy-scores.ts'
import { silentLogger } from '../../src/core/log.ts'

type Mode = 'valid' | 'missing' | 'garbage' | 'other-request' | 'forged'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

/** The FAKE proxy: answers every completion with a charge trailer and, per `mode`, a receipt. */
async function fakeProxy() {
  const image = await simulatedImageHash('')
  const identity = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(image), configHash: '00'.repeat(32) })
  const worker = await createIdentity({ role: 'worker', provider: new SimulatedEvidenceProvider(image), configHash: '00'.repeat(32) })
  const stranger = await createIdentity({ role: 'worker', provider: new SimulatedEvidenceProvider(image), configHash: '00'.repeat(32) })
  const policy = { acceptKinds: ['simulated', 'none'] as const, imageHashes: { proxy: [image], worker: [image], client: '*' as const }, modelHashes: '*' as const, maxCertAgeSec: 86_400 }
  const verify = createPeerVerifier(policy as any, { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 60_000 })
  const state = { mode: 'valid' as Mode, served: 0, tokens: 0 }
  const h2 = http2.createServer()
  h2.on('stream', (stream, headers) => {
    if (headers[':path'] === '/v1/models') {
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      return void stream.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model' }] }))
    }
    stream.resume()
    stream.on('end', async () => {
      state.served++
      state.tokens += 10
      const requestId = String(headers[HEADERS.requestId])
      const salt = Buffer.from(String(headers[HEADERS.salt]), 'hex')
      const text = JSON.stringify({ id: 'cmpl-fake', object: 'text_completion', created: 0, model: 'fake-model', choices: [{ index: 0, text: ' once', finish_reason: 'stop', logprobs: null }], usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 } })
      const fields = receiptFields({
        signer: 'worker', salt, requestId: state.mode === 'other-request' ? 'someone-else' : requestId, requestBody: Buffer.alloc(0), answerText: ' once', sampling: {} as any,
        modelId: 'fake-model', modelHash: '00'.repeat(32), imageHash: image, workerKey: worker.publicKey, proxyKey: identity.publicKey,
        usage: { promptTokens: 5, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0 }, coefficient: 1000, prices: OFFCHAIN_PRICE_PARAMS,
        startedAtMs: Date.now(), endedAtMs: Date.now(), finishReason: 'stop',
      })
      // Forged: names the worker, but signed by another key.
      const receipt = await signReceipt(fields, (d) => (state.mode === 'forged' ? stranger : worker).sign(d))
      const trailers: Record<string, string> = {
        [HEADERS.charged]: JSON.stringify({ client: 'c', tokens: String(state.tokens), nano: String(state.tokens * 1000) }),
        // The billed usage and its cost, as a real proxy passes them on.
        [HEADERS.usage]: JSON.stringify({ requestId, promptTokens: 5, cachedTokens: 0, completionTokens: 5, reasoningTokens: 0, finishReason: 'stop', answer: { id: 'cmpl-fake', object: 'text_completion', model: 'fake-model', created: 0 } }),
        [HEADERS.cost]: JSON.stringify({ nano: '10000', adjusted_tokens: '15', price_per_token_nano: '1000', coefficient: 1000 }),
      }
      if (state.mode === 'garbage') trailers[HEADERS.receipt] = Buffer.from('not a receipt').toString('base64')
      else if (state.mode !== 'missing') trailers[HEADERS.receipt] = receipt.boc.toString('base64')
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers(trailers))
      stream.end(text)
    })
  })
  const server = await listenAttested({ host: '127.0.0.1', port: 0, identity: fixedIdentity(identity), verify: (d, r) => verify(d, r), expectedRole: 'client', log: silentLogger, onPeer: ({ socket }) => h2.emit('connection', socket) })
  return { port: (server.address() as { port: number }).port, state, close: () => void server.close() }
}

test('a proxy that bills without a valid receipt is backed off as a cheat, exponentially, and shown on /jsonstats', async () => {
  const fake = await fakeProxy()
  stops.push(() => fake.close())
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-receipt-cheats-'))
  const receipts = new ReceiptStore(path.join(dir, 'receipts.sqlite'))
  // The fake serves no worker list to encrypt to: plaintext requests (E2EE is not what is tested here).
  const c = await startClient([fake.port], { deps: { receipts }, options: { e2ee: 'off' } })
  stops.push(() => fs.rmSync(dir, { recursive: true, force: true }), () => receipts.close(), () => c.client.stop())
  await waitFor(() => c.client.health().ok, 'the client on the fake proxy')
  const ask = async () => {
    const r = await fetch(c.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x', max_tokens: 5 }) })
    const body = await r.text()
    assert.equal(r.status, 200, body)
  }
  const row = async () => ((await (await fetch(c.url + '/jsonstats')).json()) as any).proxies[0]
  const stats = async () => (await (await fetch(c.url + '/jsonstats')).json()) as any

  // Valid receipts: no failure (the check does not flag honest answers).
  for (let i = 0; i < 2; i++) await ask()
  assert.equal(fake.state.served, 2)
  let r = await row()
  assert.equal(r.score.lastFailure, null, JSON.stringify(r))
  assert.equal(r.score.consecutiveFailures, 0)
  assert.equal((await stats()).receipts.invalid, 0)

  const cases: Array<[Mode, RegExp]> = [
    ['missing', /billed an answer without its receipt/],
    ['garbage', /invalid receipt/],
    ['other-request', /invalid receipt: the receipt is for request someone-else/],
    ['forged', /invalid receipt: the receipt's worker signature does not verify/],
  ]
  let lastBackoff = 0
  for (const [i, [mode, reason]] of cases.entries()) {
    fake.state.mode = mode
    await ask()
    r = await row()
    assert.equal(r.score.lastFailure?.kind, 'cheated', `${mode}: ${JSON.stringify(r.score)}`)
    assert.match(r.score.lastFailure.reason, reason)
    assert.equal(r.score.consecutiveFailures, CHEAT_WEIGHT * (i + 1), `${mode}: counted once, as a cheat`)
    assert.equal(r.score.backedOff, true)
    // Exponential in the consecutive failures, up to the cap: base × 2^(8k−1) ms, at most BACKOFF_MAX_MS.
    const expected = Math.min(BACKOFF_BASE_MS * 2 ** (CHEAT_WEIGHT * (i + 1) - 1), BACKOFF_MAX_MS)
    assert.ok(r.score.backoffRemainingMs <= expected && r.score.backoffRemainingMs > expected - 5_000, `${mode}: backoff ${r.score.backoffRemainingMs} ms, expected ${expected}`)
    assert.ok(r.score.backoffRemainingMs > lastBackoff || expected === BACKOFF_MAX_MS, `${mode}: the backoff grows`)
    lastBackoff = r.score.backoffRemainingMs
    assert.equal((await stats()).receipts.invalid, i + 1)
  }
})
