// The InferenceBackend compliance suite: the contract every backend must meet, run against each implementation.

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InferenceBackend, InferenceEvent, InferenceRequest } from '../../src/inference/types.ts'

export interface ComplianceTarget {
  backend: InferenceBackend
  close?: () => Promise<void>
}

type UsageEvent = Extract<InferenceEvent, { type: 'usage' }>

export interface Collected {
  events: InferenceEvent[]
  chunks: Array<Record<string, any>>
  text: string
  usage: UsageEvent
}

let seq = 0
export function request(kind: 'chat' | 'completion', over: Partial<InferenceRequest> = {}): InferenceRequest {
  const requestId = over.requestId ?? `req${++seq}`
  return {
    kind,
    model: 'm',
    messages: kind === 'chat' ? [{ role: 'user', content: 'Tell me a story about a girl' }] : undefined,
    prompt: kind === 'completion' ? 'Once upon a time' : undefined,
    maxTokens: 16,
    temperature: 0,
    body:
      kind === 'chat'
        ? { model: 'm', messages: over.messages ?? [{ role: 'user', content: 'Tell me a story about a girl' }], max_tokens: over.maxTokens ?? 16 }
        : { model: 'm', prompt: over.prompt ?? 'Once upon a time', max_tokens: over.maxTokens ?? 16 },
    requestId,
    ...over,
  }
}

/** Runs a request to the end; `onChunk` may abort. Asserts the stream's framing on the way. */
export async function collect(
  backend: InferenceBackend,
  req: InferenceRequest,
  opts: { signal?: AbortSignal; onChunk?: (n: number) => void } = {},
): Promise<Collected> {
  const events: InferenceEvent[] = []
  const chunks: Array<Record<string, any>> = []
  let text = ''
  for await (const ev of backend.run(req, { signal: opts.signal ?? new AbortController().signal })) {
    assert.ok(!events.some((e) => e.type === 'usage'), 'no event may follow the usage event')
    events.push(ev)
    if (ev.type === 'chunk') {
      const c = JSON.parse(ev.json) as Record<string, any>
      chunks.push(c)
      const choice = c.choices?.[0]
      text += (req.kind === 'chat' ? choice?.delta?.content : choice?.text) ?? ''
      opts.onChunk?.(chunks.length)
    }
  }
  const usages = events.filter((e): e is UsageEvent => e.type === 'usage')
  assert.equal(usages.length, 1, 'exactly one usage event')
  assert.equal(events[events.length - 1].type, 'usage', 'the usage event comes last')
  return { events, chunks, text, usage: usages[0] }
}

export function backendCompliance(name: string, setup: () => Promise<ComplianceTarget>): void {
  describe(`InferenceBackend compliance: ${name}`, () => {
    let t: ComplianceTarget
    before(async () => {
      t = await setup()
    })
    after(async () => {
      await t.backend.close()
      await t.close?.()
    })

    it('has a model id and a hash field', () => {
      assert.ok(t.backend.model.id.length > 0)
      assert.equal(typeof t.backend.model.hash, 'string')
    })

    it('streams a chat completion: role chunk, content deltas, a finish chunk, then one usage event', async () => {
      const r = await collect(t.backend, request('chat'))
      assert.ok(r.chunks.length >= 3)
      for (const c of r.chunks) {
        assert.equal(c.object, 'chat.completion.chunk')
        assert.match(c.id, /^chatcmpl-/)
        assert.equal(typeof c.created, 'number')
        assert.equal(typeof c.model, 'string')
        assert.equal(c.usage ?? null, null, 'chunks carry no usage')
        assert.equal(c.choices.length, 1)
        assert.equal(c.choices[0].index, 0)
      }
      assert.equal(r.chunks[0].choices[0].delta.role, 'assistant')
      const last = r.chunks[r.chunks.length - 1]
      assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason))
      for (const c of r.chunks.slice(0, -1)) assert.equal(c.choices[0].finish_reason, null)
      assert.ok(r.text.length > 0)
      assert.equal(r.usage.finishReason, last.choices[0].finish_reason)
      assert.ok(r.usage.usage.promptTokens > 0)
      assert.ok(r.usage.usage.completionTokens > 0 && r.usage.usage.completionTokens <= 16)
      assert.ok(r.usage.usage.cachedTokens <= r.usage.usage.promptTokens)
      assert.ok(r.usage.usage.reasoningTokens <= r.usage.usage.completionTokens)
    })

    it('streams a text completion with text_completion chunks', async () => {
      const r = await collect(t.backend, request('completion'))
      for (const c of r.chunks) {
        assert.equal(c.object, 'text_completion')
        assert.match(c.id, /^cmpl-/)
        assert.equal(typeof c.choices[0].text, 'string')
        assert.equal(c.usage ?? null, null)
      }
      assert.ok(r.text.length > 0)
      assert.ok(['stop', 'length'].includes(r.chunks[r.chunks.length - 1].choices[0].finish_reason))
      assert.ok(r.usage.usage.completionTokens > 0)
    })

    it('never produces more completion tokens than maxTokens, and says length', async () => {
      for (const maxTokens of [1, 5]) {
        const r = await collect(t.backend, request('completion', { maxTokens }))
        assert.ok(r.usage.usage.completionTokens <= maxTokens, `${r.usage.usage.completionTokens} <= ${maxTokens}`)
        assert.equal(r.usage.finishReason, 'length')
        const textChunks = r.chunks.filter((c) => c.choices[0].text).length
        assert.ok(textChunks <= maxTokens)
      }
    })

    it('stops promptly when aborted mid-stream and still ends with a usage event', async () => {
      const ac = new AbortController()
      let abortedAt = 0
      const r = await collect(t.backend, request('chat', { maxTokens: 1000 }), {
        signal: ac.signal,
        onChunk: (n) => {
          if (n === 3) {
            abortedAt = Date.now()
            ac.abort()
          }
        },
      })
      assert.ok(abortedAt > 0)
      assert.ok(Date.now() - abortedAt < 1_000, 'ended promptly after the abort')
      assert.equal(r.usage.finishReason, 'cancelled')
      assert.ok(r.chunks.length <= 4, `at most one chunk after the abort, got ${r.chunks.length}`)
      assert.ok(r.usage.usage.completionTokens < 50)
    })

    it('ends with only a cancelled usage event when the signal is aborted before the start', async () => {
      const ac = new AbortController()
      ac.abort()
      const r = await collect(t.backend, request('completion'), { signal: ac.signal })
      assert.equal(r.chunks.length, 0)
      assert.equal(r.usage.finishReason, 'cancelled')
      assert.equal(r.usage.usage.completionTokens, 0)
    })

    it('runs two requests at once', async () => {
      const [a, b] = await Promise.all([collect(t.backend, request('completion')), collect(t.backend, request('chat'))])
      assert.ok(a.text.length > 0 && b.text.length > 0)
    })
  })
}
