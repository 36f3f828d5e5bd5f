// Spec: end-to-end encryption through a real proxy (RA-TLS, HTTP/2, in process) with a FAKE backend:
// the client node verifies the workers itself, the proxy relays ciphertext, the app sees plain OpenAI answers.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { policyFor, readSse, startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'

/** Until the client node has an attested session to its proxy. */
const connected = (client: { stats(): Record<string, unknown> }) => waitFor(() => (client.stats() as any).proxies.some((p: any) => p.state === 'connected'), 'the client on its proxy')

describe('E2EE through an in-process network', () => {
  const stops: Array<() => unknown> = []
  let proxy: Awaited<ReturnType<typeof startProxy>>
  let url: string
  let client: Awaited<ReturnType<typeof startClient>>['client']
  const backend = new FakeBackend({ chunks: 4 })

  before(async () => {
    proxy = await startProxy()
    stops.push(() => proxy.proxy.stop())
    const w = await startWorker(backend, [proxy.workerPort])
    stops.push(() => w.stop())
    const c = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    client = c.client
    url = c.url
    stops.push(() => client.stop())
    await waitFor(() => (proxy.proxy.stats() as any).workers?.length === 1 || (proxy.proxy.models() as any).data.length === 1, 'worker')
    await connected(client)
  })
  after(async () => {
    for (const s of stops.reverse()) await s()
  })

  it('answers a streamed chat request end to end, with the usage chunk and cost written by the client node', async () => {
    const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hello there' }], stream: true }) })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('x-cocoon-e2ee'), 'on')
    const events = await readSse(res)
    assert.equal(events.at(-1), '[DONE]')
    const usage = JSON.parse(events.at(-2)!)
    assert.ok(usage.usage.cost, 'the usage chunk carries the cost')
    assert.equal(events.length, 4 + 2)
    const s = proxy.proxy.stats() as any
    assert.equal(s.e2ee.requests.on, 1)
  })

  it('answers a non-streamed completions request with usage and cost', async () => {
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'once upon', max_tokens: 3 }) })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('x-cocoon-e2ee'), 'on')
    const j = (await res.json()) as any
    assert.equal(j.object, 'text_completion')
    assert.ok(j.usage.cost)
    assert.equal(j.usage.completion_tokens, 3)
  })

  it('a worker error answer reaches the app as a clear OpenAI error', async () => {
    const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', messages: 'not a list' }) })
    assert.equal(res.status, 400)
    const j = (await res.json()) as any
    assert.ok(j.error.message)
  })

  it('counts requests per mode on /jsonstats of client and proxy', () => {
    const c = client.stats() as any
    assert.ok(c.e2ee.requests.on >= 2)
    assert.equal(c.e2ee.requests.off, 0)
  })
})

describe('E2EE against a worker without an HPKE key (older version)', () => {
  it('is refused by a required-E2EE client, and served in plaintext through the proxy when E2EE is optional', async () => {
    const proxy = await startProxy()
    const w = await startWorker(new FakeBackend({ chunks: 2 }), [proxy.workerPort], { e2ee: false })
    const strict = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    const relaxed = await startClient([proxy.clientPort], { options: { e2ee: 'optional' } })
    try {
      await waitFor(() => (proxy.proxy.models() as any).data.length === 1, 'worker')
      await connected(strict.client)
      await connected(relaxed.client)
      const body = JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] })
      const refused = await fetch(`${strict.url}/v1/chat/completions`, { method: 'POST', body })
      assert.equal(refused.status, 503)
      assert.match(((await refused.json()) as any).error.message, /no verified worker has an end-to-end encryption key/)
      const plain = await fetch(`${relaxed.url}/v1/chat/completions`, { method: 'POST', body })
      assert.equal(plain.status, 200)
      assert.equal(plain.headers.get('x-cocoon-e2ee'), 'off')
      assert.equal((relaxed.client.stats() as any).e2ee.requests.off, 1)
      assert.equal((strict.client.stats() as any).e2ee.requests.refused, 1)
    } finally {
      await strict.client.stop()
      await relaxed.client.stop()
      await w.stop()
      await proxy.proxy.stop()
    }
  })
})

/** A FAKE embeddings backend: one fixed vector per input, and the inputs it was given, to show what the worker read. */
class FakeEmbeddingBackend extends FakeBackend {
  readonly inputs: Array<string | number[]> = []
  constructor() {
    super({ modelId: 'fake-embed' })
    ;(this.model as { capabilities?: readonly string[] }).capabilities = ['embeddings']
  }
  async embed(req: { input: Array<string | number[]> }): Promise<{ vectors: number[][]; promptTokens: number }> {
    this.inputs.push(...req.input)
    return { vectors: req.input.map(() => [0.6, 0.8]), promptTokens: req.input.length }
  }
}

describe('E2EE for embeddings against workers with and without an HPKE key', () => {
  it('is sealed to a worker with a key; refused by a required-E2EE client and plaintext under optional for one without', async () => {
    const proxy = await startProxy()
    const sealedBackend = new FakeEmbeddingBackend()
    const oldBackend = new FakeEmbeddingBackend()
    const withKey = await startWorker(sealedBackend, [proxy.workerPort])
    const strict = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    const relaxed = await startClient([proxy.clientPort], { options: { e2ee: 'optional' } })
    const body = JSON.stringify({ model: 'fake-embed', input: 'canary-embed' })
    let old: Awaited<ReturnType<typeof startWorker>> | undefined
    try {
      await waitFor(() => (proxy.proxy.models() as any).data.length === 1, 'worker')
      await connected(strict.client)
      await connected(relaxed.client)
      const sealed = await fetch(`${strict.url}/v1/embeddings`, { method: 'POST', body })
      assert.equal(sealed.status, 200)
      assert.equal(sealed.headers.get('x-cocoon-e2ee'), 'on')
      const j = (await sealed.json()) as any
      assert.deepEqual(j.data[0].embedding, [0.6, 0.8])
      assert.ok(j.usage.cost, 'the client node wrote the billed cost into the decrypted answer')
      assert.deepEqual(sealedBackend.inputs, ['canary-embed'], 'the worker opened and ran the request')
      // Now only a worker without a key (an older version) serves the model.
      await withKey.stop()
      old = await startWorker(oldBackend, [proxy.workerPort], { e2ee: false })
      await waitFor(() => (proxy.proxy.stats() as any).e2ee.workersWithKey === 0 && (proxy.proxy.models() as any).data.length === 1, 'the old worker alone')
      const refused = await fetch(`${strict.url}/v1/embeddings`, { method: 'POST', body })
      assert.equal(refused.status, 503)
      assert.match(((await refused.json()) as any).error.message, /end-to-end encryption key/)
      const plain = await fetch(`${relaxed.url}/v1/embeddings`, { method: 'POST', body })
      assert.equal(plain.status, 200)
      assert.equal(plain.headers.get('x-cocoon-e2ee'), 'off')
      assert.deepEqual(oldBackend.inputs, ['canary-embed'])
      assert.equal((strict.client.stats() as any).e2ee.requests.on, 1)
      assert.equal((strict.client.stats() as any).e2ee.requests.refused, 1)
      assert.equal((relaxed.client.stats() as any).e2ee.requests.off, 1)
      const p = (proxy.proxy.stats() as any).e2ee.requests
      // The strict client may first try the stopped worker from its cached list (the proxy counts that sealed attempt), then refuses.
      assert.ok(p.on >= 1)
      assert.equal(p.off, 1)
    } finally {
      await strict.client.stop()
      await relaxed.client.stop()
      await old?.stop()
      await proxy.proxy.stop()
    }
  })
})

describe('E2EE never encrypts to a worker whose evidence the client refuses', () => {
  it('a worker the proxy trusts but the client does not is never a recipient', async () => {
    // The proxy accepts images '' and 'rogue'; the client only ''.
    const proxy = await startProxy({ policy: await policyFor({ workerTags: ['', 'rogue'] }) })
    const good = new FakeBackend({ chunks: 1 })
    const rogue = new FakeBackend({ chunks: 1 })
    // The rogue worker is cheaper, so the proxy would pick it whenever it is allowed to.
    const w1 = await startWorker(good, [proxy.workerPort], { options: { coefficient: 2000 } })
    const w2 = await startWorker(rogue, [proxy.workerPort], { imageTag: 'rogue', policy: await policyFor(), options: { coefficient: 100 } })
    const c = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    try {
      await waitFor(() => (proxy.proxy.models() as any).data[0]?.workers.length === 2, 'two workers')
      await connected(c.client)
      for (let i = 0; i < 6; i++) {
        const res = await fetch(`${c.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: `p${i}`, max_tokens: 1 }) })
        assert.equal(res.status, 200, `body: ${await res.clone().text()}`)
        assert.equal(res.headers.get('x-cocoon-e2ee'), 'on')
        await res.arrayBuffer()
      }
      assert.equal(rogue.seen.length, 0, 'the refused worker got no request')
      assert.equal(good.seen.length, 6)
    } finally {
      await c.client.stop()
      await w1.stop()
      await w2.stop()
      await proxy.proxy.stop()
    }
  })
})

describe('a proxy that substitutes a key of its own', () => {
  it('fails the request: the client verifies every certificate it is offered and never encrypts to the proxy', async () => {
    const { createIdentity } = await import('../../src/tee/cert.ts')
    const { SimulatedEvidenceProvider, simulatedImageHash } = await import('../../src/tee/simulated.ts')
    const { HpkeKeyRing } = await import('../../src/net/e2ee.ts')
    const proxy = await startProxy()
    const backend = new FakeBackend({ chunks: 1 })
    const w = await startWorker(backend, [proxy.workerPort])
    const c = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    try {
      await waitFor(() => (proxy.proxy as any).models().data.length === 1, 'worker')
      await connected(c.client)
      // The proxy's own key, in certificates it can make: its own identity (role proxy), and a "worker"
      // certificate of an image the policy does not allow (it cannot forge an allowed worker's evidence).
      const own = new HpkeKeyRing(3_600_000)
      const hpkeKey = await own.rotate()
      const asProxy = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), hpkeKey })
      const asWorker = await createIdentity({ role: 'worker', provider: new SimulatedEvidenceProvider(await simulatedImageHash('proxy-made')), configHash: '00'.repeat(32), modelId: 'fake-model', modelHash: 'ab'.repeat(32), hpkeKey })
      const der = (pem: string) => pem.replace(/-----[^-]+-----|\s/g, '')
      ;(proxy.proxy as any).candidates = async (model: string) => ({ model, workers: [asProxy, asWorker].map((id) => ({ certificate: der(id.certPem), coefficient: 1000 })) })
      const res = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'secret' }] }) })
      assert.equal(res.status, 503)
      assert.match(((await res.json()) as any).error.message, /failed this client's verification/)
      assert.equal(backend.seen.length, 0)
    } finally {
      await c.client.stop()
      await w.stop()
      await proxy.proxy.stop()
    }
  })
})

describe('E2EE retries', () => {
  it('when every recipient fails before the first byte, the client node retries once with a fresh set; the app sees one answer', async () => {
    const proxy = await startProxy()
    // The failing worker is cheaper, so the proxy tries it first whenever it is a recipient.
    const failing = new FakeBackend({ chunks: 1, failBeforeFirst: 500 })
    const healthy = new FakeBackend({ chunks: 2 })
    const w1 = await startWorker(failing, [proxy.workerPort], { options: { coefficient: 100 } })
    const w2 = await startWorker(healthy, [proxy.workerPort], { options: { coefficient: 2000 } })
    // One recipient per request, so "all recipients failed" is one failure.
    const c = await startClient([proxy.clientPort], { options: { e2ee: 'required', e2eeRecipients: 1 } })
    try {
      await waitFor(() => (proxy.proxy as any).models().data[0]?.workers.length === 2, 'two workers')
      await connected(c.client)
      // Recipients are drawn at random: over 10 requests the failing worker is drawn (all but surely).
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: `hi ${i}` }], stream: true }) })
        assert.equal(res.status, 200, `body: ${await res.clone().text()}`)
        assert.equal(res.headers.get('x-cocoon-e2ee'), 'on')
        const events = await readSse(res)
        assert.equal(events.at(-1), '[DONE]')
      }
      const s = c.client.stats() as any
      assert.equal(s.e2ee.requests.on, 10)
      assert.equal(healthy.seen.length, 10)
      assert.ok(failing.seen.length > 0)
      // Each request that drew the failing worker was retried with a fresh set, invisibly (once its breaker is open
      // the proxy refuses such a request at once, without trying the worker again).
      assert.ok(s.e2ee.requests.freshRecipientRetries >= failing.seen.length, JSON.stringify(s.e2ee.requests))
    } finally {
      await c.client.stop()
      await w1.stop()
      await w2.stop()
      await proxy.proxy.stop()
    }
  })

  it('the proxy retries another named recipient when the first fails before the first byte', async () => {
    const proxy = await startProxy()
    const failing = new FakeBackend({ chunks: 1, failBeforeFirst: 500 })
    const healthy = new FakeBackend({ chunks: 2 })
    const w1 = await startWorker(failing, [proxy.workerPort], { options: { coefficient: 100 } })
    const w2 = await startWorker(healthy, [proxy.workerPort], { options: { coefficient: 2000 } })
    const c = await startClient([proxy.clientPort], { options: { e2ee: 'required' } })
    try {
      await waitFor(() => (proxy.proxy as any).models().data[0]?.workers.length === 2, 'two workers')
      await connected(c.client)
      const res = await fetch(`${c.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: 'fake-model', prompt: 'x', max_tokens: 2 }) })
      assert.equal(res.status, 200, `body: ${await res.clone().text()}`)
      await res.arrayBuffer()
      assert.equal(failing.seen.length, 1)
      assert.equal(healthy.seen.length, 1)
      assert.equal((proxy.proxy.stats() as any).requests.retries, 1)
      assert.equal((c.client.stats() as any).e2ee.requests.freshRecipientRetries, 0)
    } finally {
      await c.client.stop()
      await w1.stop()
      await w2.stop()
      await proxy.proxy.stop()
    }
  })
})
