// The openai upstream backend against a fake OpenAI-compatible server on loopback: SSE parsing, usage mapping, forced fields, errors, abort.

import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, beforeEach, describe, it } from 'node:test'
import { OpenAIUpstreamBackend } from '../../src/inference/openai.ts'
import { BackendError } from '../../src/inference/types.ts'
import { backendCompliance, collect, request } from './backend-compliance.ts'
import { FakeUpstream, fakeWord } from './fake-upstream.ts'

backendCompliance('openai upstream (fake server)', async () => {
  const fake = await new FakeUpstream().start()
  fake.behaviour = { length: 40, delayMs: 2 }
  return { backend: new OpenAIUpstreamBackend({ baseUrl: fake.url, modelId: 'fake-model' }), close: () => fake.stop() }
})

/** Resolves with `p`, or fails after `ms` without leaving a timer behind. */
async function within(p: Promise<unknown>, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([p, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

describe('OpenAIUpstreamBackend', () => {
  let fake: FakeUpstream
  let backend: OpenAIUpstreamBackend
  const expectedText = (n: number) => Array.from({ length: n }, (_, i) => fakeWord(i)).join('')

  before(async () => {
    fake = await new FakeUpstream().start()
    backend = new OpenAIUpstreamBackend({ baseUrl: fake.url, modelId: 'cocoon-model', upstreamModel: 'upstream-model', apiKey: 'sk-test' })
  })
  after(async () => {
    await backend.close()
    await fake.stop()
  })
  beforeEach(() => {
    fake.behaviour = {}
    fake.received.length = 0
    fake.closedEarly = 0
  })

  it('passes chunks through unchanged and turns the usage-only chunk into the usage event', async () => {
    const r = await collect(backend, request('chat', { maxTokens: 100 }))
    assert.equal(r.text, expectedText(20))
    assert.equal(r.chunks[0].model, 'upstream-model')
    assert.equal(r.chunks.length, 22) // role, 20 deltas, finish
    assert.ok(r.chunks.every((c) => c.choices.length === 1))
    assert.equal(r.usage.finishReason, 'stop')
    assert.equal(r.usage.estimated, undefined)
    assert.deepEqual(r.usage.usage, { promptTokens: 7, cachedTokens: 0, completionTokens: 20, reasoningTokens: 0 })
  })

  it('reuses the keep-alive connection for consecutive requests, also when the response ends a moment after [DONE]', async () => {
    fake.behaviour = { endDelayMs: 30 }
    await collect(backend, request('chat'))
    const before = fake.connections
    for (let i = 0; i < 3; i++) await collect(backend, request('completion'))
    assert.equal(fake.connections, before)
  })

  it('forces stream, include_usage, max_tokens and the upstream model name, and sends the API key', async () => {
    const req = request('chat', { maxTokens: 7 })
    req.body = { ...req.body, model: 'cocoon-model', stream: false, stream_options: { include_usage: false, extra: 1 }, max_completion_tokens: 999, temperature: 0.5 }
    await collect(backend, req)
    const got = fake.received[0]
    assert.equal(got.path, '/v1/chat/completions')
    assert.equal(got.headers.authorization, 'Bearer sk-test')
    assert.equal(got.body.model, 'upstream-model')
    assert.equal(got.body.stream, true)
    assert.deepEqual(got.body.stream_options, { include_usage: true, extra: 1 })
    assert.equal(got.body.max_tokens, 7)
    assert.equal('max_completion_tokens' in got.body, false)
    assert.equal(got.body.temperature, 0.5)
  })

  it('sends the cache scope upstream as cache_salt when told to, in place of any the app sent; otherwise the body as it was', async () => {
    const salted = new OpenAIUpstreamBackend({ baseUrl: fake.url, modelId: 'cocoon-model', cacheSalt: true })
    try {
      const scope = 'ab'.repeat(16)
      const req = { ...request('chat', { maxTokens: 3 }), cacheScope: scope }
      req.body = { ...req.body, cache_salt: 'an-app-picked-this' }
      await collect(salted, req)
      assert.equal(fake.received[0].body.cache_salt, scope)
      const unscoped = request('chat', { maxTokens: 3 })
      unscoped.body = { ...unscoped.body, cache_salt: 'an-app-picked-this' }
      await collect(salted, unscoped)
      assert.equal('cache_salt' in fake.received[1].body, false, 'no scope: no salt, not the app’s')
    } finally {
      await salted.close()
    }
    // Off (the default, for upstreams that refuse unknown fields): nothing added, nothing taken away.
    const plain = { ...request('chat', { maxTokens: 3 }), cacheScope: 'cd'.repeat(16) }
    await collect(backend, plain)
    assert.equal('cache_salt' in fake.received[2].body, false)
  })

  it('posts completions to /v1/completions, also when baseUrl already ends in /v1', async () => {
    const b = new OpenAIUpstreamBackend({ baseUrl: fake.url + '/v1/', modelId: 'm' })
    const r = await collect(b, request('completion', { maxTokens: 3 }))
    assert.equal(fake.received[0].path, '/v1/completions')
    assert.equal(r.text, expectedText(3))
    assert.equal(r.usage.finishReason, 'length')
  })

  it('parses SSE events split mid-event across writes', async () => {
    fake.behaviour = { splitWrites: true, length: 8 }
    const r = await collect(backend, request('chat'))
    assert.equal(r.text, expectedText(8))
    assert.equal(r.usage.usage.completionTokens, 8)
  })

  it('parses CRLF line endings, comments and multi-line data fields', async () => {
    fake.behaviour = { eol: '\r\n', comments: true, multiDataLines: true, splitWrites: true, length: 6 }
    const r = await collect(backend, request('completion'))
    assert.equal(r.text, expectedText(6))
    assert.equal(r.usage.usage.completionTokens, 6)
    assert.equal(r.usage.estimated, undefined)
  })

  it('maps cached and reasoning tokens from the usage details', async () => {
    fake.behaviour = { length: 5, cachedTokens: 4, reasoningTokens: 2 }
    const r = await collect(backend, request('chat'))
    assert.deepEqual(r.usage.usage, { promptTokens: 7, cachedTokens: 4, completionTokens: 5, reasoningTokens: 2 })
  })

  it('maps top-level reasoning_tokens too', async () => {
    fake.behaviour = { length: 5, reasoningTokens: 3, topLevelReasoning: true }
    const r = await collect(backend, request('chat'))
    assert.equal(r.usage.usage.reasoningTokens, 3)
  })

  it('strips usage from a chunk that carries both choices and usage', async () => {
    fake.behaviour = { length: 4, usageOnLastChoiceChunk: true, omitUsage: true }
    const r = await collect(backend, request('chat'))
    assert.equal(r.text, expectedText(4))
    for (const c of r.chunks) assert.equal('usage' in c, false)
    assert.equal(r.usage.usage.completionTokens, 4)
    assert.equal(r.usage.estimated, undefined)
  })

  it('estimates usage from the text chunks when the upstream sends none', async () => {
    fake.behaviour = { length: 9, omitUsage: true }
    const r = await collect(backend, request('chat'))
    assert.equal(r.usage.estimated, true)
    assert.equal(r.usage.usage.completionTokens, 9)
    assert.ok(r.usage.usage.promptTokens > 0)
  })

  it('cuts off an upstream that ignores max_tokens', async () => {
    fake.behaviour = { length: 30, ignoreMaxTokens: true }
    const r = await collect(backend, request('completion', { maxTokens: 5 }))
    assert.equal(r.text, expectedText(5))
    assert.equal(r.usage.finishReason, 'length')
    assert.ok(r.usage.usage.completionTokens <= 5)
  })

  it('turns an upstream 500 into BackendError 502 with the upstream message', async () => {
    fake.behaviour = { failStatus: 500 }
    await assert.rejects(collect(backend, request('chat')), (err: unknown) => {
      assert.ok(err instanceof BackendError)
      assert.equal(err.status, 502)
      assert.match(err.message, /HTTP 500.*fake upstream failure 500/)
      return true
    })
  })

  it('keeps an upstream 4xx status', async () => {
    fake.behaviour = { failStatus: 400 }
    await assert.rejects(collect(backend, request('chat')), (err: unknown) => err instanceof BackendError && err.status === 400)
  })

  it('turns a refused connection into BackendError 502', async () => {
    const srv = http.createServer()
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    const port = (srv.address() as AddressInfo).port
    await new Promise<void>((r) => srv.close(() => r()))
    const b = new OpenAIUpstreamBackend({ baseUrl: `http://127.0.0.1:${port}`, modelId: 'm' })
    await assert.rejects(collect(b, request('chat')), (err: unknown) => {
      assert.ok(err instanceof BackendError)
      assert.equal(err.status, 502)
      assert.match(err.message, /ECONNREFUSED/)
      return true
    })
  })

  it('turns an error event before any chunk into BackendError, and one after chunks into finish_reason error', async () => {
    fake.behaviour = { errorEventAfter: 3 }
    const r = await collect(backend, request('completion'))
    assert.equal(r.text, expectedText(3))
    assert.equal(r.usage.finishReason, 'error')
    fake.behaviour = { errorEventAfter: 0 }
    await assert.rejects(collect(backend, request('completion')), (err: unknown) => err instanceof BackendError && /fake upstream broke/.test(err.message))
  })

  it('ends with an estimated usage and finish_reason error when the upstream drops mid-stream', async () => {
    fake.behaviour = { dropAfter: 4 }
    const r = await collect(backend, request('completion'))
    assert.equal(r.text, expectedText(4))
    assert.equal(r.usage.finishReason, 'error')
    assert.equal(r.usage.estimated, true)
    assert.equal(r.usage.usage.completionTokens, 4)
  })

  it('closes the upstream connection when aborted, so the upstream stops generating', async () => {
    fake.behaviour = { length: 1000, delayMs: 5 }
    const closed = fake.nextEarlyClose()
    const ac = new AbortController()
    const r = await collect(backend, request('chat', { maxTokens: 1000 }), {
      signal: ac.signal,
      onChunk: (n) => {
        if (n === 5) ac.abort()
      },
    })
    assert.equal(r.usage.finishReason, 'cancelled')
    assert.equal(r.usage.estimated, true)
    assert.equal(r.usage.usage.completionTokens, 4)
    await within(closed, 2_000, 'upstream never saw the close')
    assert.equal(fake.closedEarly, 1)
  })

  it('closes the upstream connection when the consumer stops iterating', async () => {
    fake.behaviour = { length: 1000, delayMs: 5 }
    const closed = fake.nextEarlyClose()
    let n = 0
    for await (const ev of backend.run(request('chat', { maxTokens: 1000 }), { signal: new AbortController().signal })) {
      if (ev.type === 'chunk' && ++n === 3) break
    }
    await within(closed, 2_000, 'upstream never saw the close')
  })

  it('reports a timeout waiting for headers as BackendError 504', async () => {
    const srv = http.createServer(() => {}) // accepts and never answers
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    const b = new OpenAIUpstreamBackend({ baseUrl: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, modelId: 'm', timeoutMs: 100 })
    try {
      await assert.rejects(collect(b, request('chat')), (err: unknown) => err instanceof BackendError && err.status === 504)
    } finally {
      srv.closeAllConnections()
      await new Promise<void>((r) => srv.close(() => r()))
    }
  })
})

describe('keep-alive to the upstream', () => {
  it('retries once on a fresh connection when a pooled one turns out to be closed', async () => {
    // FAKE upstream that answers once per connection and resets any connection reused after
    // that, as an upstream that timed out an idle keep-alive socket at the wrong moment would.
    const served = new WeakSet<object>()
    let resets = 0
    const server = http.createServer((req, res) => {
      if (served.has(req.socket)) {
        resets++
        req.socket.destroy()
        return
      }
      served.add(req.socket)
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'keep-alive' })
        res.write(`data: ${JSON.stringify({ id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [{ index: 0, text: 'hi', finish_reason: 'stop' }] })}\n\n`)
        res.write(`data: ${JSON.stringify({ id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } })}\n\n`)
        res.end('data: [DONE]\n\n')
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    try {
      const backend = new OpenAIUpstreamBackend({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, modelId: 'm' })
      for (let i = 0; i < 3; i++) {
        const r = await collect(backend, request('completion'))
        assert.equal(r.usage?.usage.completionTokens, 1, `request ${i}`)
      }
      assert.ok(resets >= 1, 'a pooled connection was reset and the request retried')
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })
})
