// The embedded llama backend on the real stories260K model: OpenAI semantics, exact usage, determinism, concurrency.

import assert from 'node:assert/strict'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import fs from 'node:fs/promises'
import os from 'node:os'
import { ChatMLChatWrapper, getLlama, LlamaLogLevel, type LlamaModel, type Token } from 'node-llama-cpp'
import { IncrementalDetokenizer } from '../../src/inference/detokenizer.ts'
import { LlamaBackend, PLAIN_CHAT_STOP, formatPlainChat } from '../../src/inference/llama.ts'
import { BackendError } from '../../src/inference/types.ts'
import { backendCompliance, collect, request } from './backend-compliance.ts'
import { ggufWithStringKey } from './gguf-edit.ts'

const MODELS_DIR = process.env.COCOON_MODELS ?? path.resolve(import.meta.dirname, '../../../shared/models')
const MODEL_PATH = path.join(MODELS_DIR, 'stories260K.gguf')
const MODEL_SHA256 = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d'
const KNOWN_GREEDY_PREFIX = ', there was a little girl named Lily'

function create(over: { contextSize?: number; parallel?: number } = {}) {
  return LlamaBackend.create({ modelPath: MODEL_PATH, modelId: 'stories260K', modelHash: MODEL_SHA256, threads: 1, ...over })
}

backendCompliance('llama (stories260K)', async () => ({ backend: await create() }))

describe('LlamaBackend', () => {
  let backend: LlamaBackend
  let small: LlamaBackend // one sequence, the smallest context node-llama-cpp allocates (256 tokens)
  let vocab: LlamaModel // tokenizer only, to count tokens independently of the backend

  before(async () => {
    backend = await create()
    small = await create({ contextSize: 256, parallel: 1 })
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error })
    vocab = await llama.loadModel({ modelPath: MODEL_PATH, vocabOnly: true })
  })
  after(async () => {
    await backend.close()
    await small.close()
    await vocab.dispose()
  })

  it('reports the model id, hash and context size', () => {
    assert.deepEqual(backend.model, { id: 'stories260K', hash: MODEL_SHA256, contextSize: 2048, capabilities: ['chat', 'completions', 'embeddings'], embeddingDimensions: 64 })
  })

  it('completes "Once upon a time" greedily with the known story', async () => {
    const r = await collect(backend, request('completion', { maxTokens: 20 }))
    assert.ok(r.text.startsWith(KNOWN_GREEDY_PREFIX), r.text)
  })

  it('is deterministic at temperature 0: twice on one backend and across two backends', async () => {
    const req = () => request('completion', { prompt: 'The little dog', maxTokens: 60 })
    const a = await collect(backend, req())
    const b = await collect(backend, req())
    const other = await create()
    try {
      const c = await collect(other, req())
      assert.equal(a.text, b.text)
      assert.equal(a.text, c.text)
      assert.equal(a.usage.usage.completionTokens, c.usage.usage.completionTokens)
    } finally {
      await other.close()
    }
  })

  it('counts prompt tokens exactly: the tokenizer count plus BOS', async () => {
    const prompt = 'Once upon a time, in a big forest'
    const r = await collect(small, request('completion', { prompt, maxTokens: 3 }))
    assert.equal(r.usage.usage.promptTokens, vocab.tokenize(prompt).length + 1)
    assert.equal(r.usage.usage.completionTokens, 3)
    assert.equal(r.usage.usage.reasoningTokens, 0)

    const messages = [
      { role: 'system' as const, content: 'You tell stories.' },
      { role: 'user' as const, content: 'A story about a cat' },
    ]
    const c = await collect(small, request('chat', { messages, maxTokens: 3 }))
    assert.equal(c.usage.usage.promptTokens, vocab.tokenize(formatPlainChat(messages)).length + 1)
  })

  it('formats chats without a template as plain User/Assistant turns', () => {
    assert.equal(
      formatPlainChat([
        { role: 'system', content: 'Be kind.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Story?' },
      ]),
      'Be kind.\n\nUser: Hi\nAssistant: Hello!\nUser: Story?\nAssistant:',
    )
    assert.equal(formatPlainChat([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Once' }]), 'User: Hi\nAssistant: Once')
    assert.equal(PLAIN_CHAT_STOP, '\nUser:')
  })

  it("formats chats with the GGUF's own chat template when it has one", async () => {
    const chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cocoon-template-'))
    const file = path.join(dir, 'stories260K-chatml.gguf')
    await ggufWithStringKey(MODEL_PATH, file, 'tokenizer.chat_template', chatml)
    const templated = await LlamaBackend.create({ modelPath: file, modelId: 't', modelHash: '', threads: 1, contextSize: 256, parallel: 1 })
    try {
      const messages = [
        { role: 'system' as const, content: 'Be kind.' },
        { role: 'user' as const, content: 'Tell me a story' },
      ]
      const r = await collect(templated, request('chat', { messages, maxTokens: 20 }))
      const expected = new ChatMLChatWrapper()
        .generateContextState({ chatHistory: [{ type: 'system', text: 'Be kind.' }, { type: 'user', text: 'Tell me a story' }, { type: 'model', response: [] }] })
        .contextText.tokenize(vocab.tokenizer)
      assert.equal(r.usage.usage.promptTokens, expected.length)
      assert.notEqual(r.usage.usage.promptTokens, vocab.tokenize(formatPlainChat(messages)).length + 1)
      assert.ok(!r.text.includes('<|im_end|>'))
    } finally {
      await templated.close()
      await fs.rm(dir, { recursive: true, force: true })
    }
  })

  it('reuses the KV cache for a repeated prefix and reports it as cached tokens', async () => {
    const prompt = 'Tom and Sue went to the park to play'
    const first = await collect(small, request('completion', { prompt, maxTokens: 4 }))
    const second = await collect(small, request('completion', { prompt, maxTokens: 4 }))
    assert.equal(second.usage.usage.promptTokens, first.usage.usage.promptTokens)
    assert.equal(second.usage.usage.cachedTokens, second.usage.usage.promptTokens - 1)
    assert.equal(second.text, first.text)
  })

  it('reuses cached prompt state only within a cache scope: another app learns nothing from cached_tokens', async () => {
    const prompt = 'Sam had a red ball and a blue kite'
    const a = 'aa'.repeat(16)
    const b = 'bb'.repeat(16)
    const first = await collect(small, { ...request('completion', { prompt, maxTokens: 4 }), cacheScope: a })
    // Another scope sending the same prompt (or probing a guess of it) finds nothing cached, and is answered the same.
    const probe = await collect(small, { ...request('completion', { prompt, maxTokens: 4 }), cacheScope: b })
    assert.equal(probe.usage.usage.cachedTokens, 0, 'no reuse across scopes')
    assert.equal(probe.text, first.text)
    // Nor does a request without a scope reuse a scoped one's state.
    const unscoped = await collect(small, request('completion', { prompt, maxTokens: 4 }))
    assert.equal(unscoped.usage.usage.cachedTokens, 0)
    // The same scope twice in a row reuses it, as without scopes.
    await collect(small, { ...request('completion', { prompt, maxTokens: 4 }), cacheScope: a })
    const again = await collect(small, { ...request('completion', { prompt, maxTokens: 4 }), cacheScope: a })
    assert.equal(again.usage.usage.cachedTokens, again.usage.usage.promptTokens - 1)
    // With several sequences free, a request is given the one its own scope left, not another scope's longer match.
    const many = await create({ contextSize: 1024, parallel: 2 })
    try {
      await collect(many, { ...request('completion', { prompt, maxTokens: 2 }), cacheScope: a })
      const other = await collect(many, { ...request('completion', { prompt: prompt + ' in the sun', maxTokens: 2 }), cacheScope: b })
      assert.equal(other.usage.usage.cachedTokens, 0, 'b does not get a\'s sequence though it shares the prefix')
      const mine = await collect(many, { ...request('completion', { prompt: prompt + ' in the sun', maxTokens: 2 }), cacheScope: a })
      assert.ok(mine.usage.usage.cachedTokens >= first.usage.usage.promptTokens - 1, `a reuses its own prefix: ${mine.usage.usage.cachedTokens}`)
    } finally {
      await many.close()
    }
  })

  it('cuts at a stop string, never emitting it, also when it spans tokens', async () => {
    for (const stop of ['Lily', ' named Li', 'girl n']) {
      const r = await collect(backend, request('completion', { stop: [stop], maxTokens: 40 }))
      const expected = KNOWN_GREEDY_PREFIX.slice(0, KNOWN_GREEDY_PREFIX.indexOf(stop))
      assert.equal(r.text, expected, `stop ${JSON.stringify(stop)}`)
      assert.equal(r.usage.finishReason, 'stop')
      assert.equal(r.chunks[r.chunks.length - 1].choices[0].finish_reason, 'stop')
    }
  })

  it('picks the earliest of several stop strings and ignores stop strings that never occur', async () => {
    const r = await collect(backend, request('completion', { stop: ['named', 'little', 'zzz'], maxTokens: 40 }))
    assert.equal(r.text, ', there was a ')
    const n = await collect(backend, request('completion', { stop: ['zzz'], maxTokens: 12 }))
    assert.equal(n.usage.finishReason, 'length')
    assert.ok(n.text.startsWith(', there was'))
  })

  it('samples reproducibly with a seed', async () => {
    const req = (seed: number) => request('completion', { temperature: 1, seed, maxTokens: 40, prompt: 'One day' })
    const a = await collect(backend, req(42))
    const b = await collect(backend, req(42))
    assert.equal(a.text, b.text)
    const others = new Set<string>()
    for (const seed of [1, 2, 3]) others.add((await collect(backend, req(seed))).text)
    others.add(a.text)
    assert.ok(others.size >= 2, 'different seeds give different samples')
  })

  it('completes two concurrent requests, and queues a third until a sequence frees up', async () => {
    const reqs = [0, 1, 2].map(() => request('completion', { maxTokens: 30 }))
    const results = await Promise.all(reqs.map((r) => collect(backend, r)))
    for (const r of results) {
      assert.ok(r.text.startsWith(KNOWN_GREEDY_PREFIX))
      assert.equal(r.usage.usage.completionTokens, 30)
    }
  })

  it('lets a queued request be aborted: it ends at once with a zero usage', async () => {
    const busy = collect(small, request('completion', { maxTokens: 40 }))
    const ac = new AbortController()
    const queued = collect(small, request('completion', { maxTokens: 40 }), { signal: ac.signal })
    ac.abort()
    const q = await queued
    assert.equal(q.usage.finishReason, 'cancelled')
    assert.deepEqual(q.usage.usage, { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 })
    assert.equal((await busy).usage.finishReason, 'length')
  })

  it('rejects a prompt longer than the context with BackendError 400', async () => {
    const prompt = 'the cat sat on the mat and '.repeat(60)
    await assert.rejects(collect(small, request('completion', { prompt })), (err: unknown) => {
      assert.ok(err instanceof BackendError)
      assert.equal(err.status, 400)
      assert.match(err.message, /context window/)
      return true
    })
  })

  it('stops at the end of the context with finish_reason length', async () => {
    const r = await collect(small, request('completion', { prompt: 'Once upon a time', maxTokens: 1000 }))
    assert.equal(r.usage.finishReason, 'length')
    assert.ok(r.usage.usage.promptTokens + r.usage.usage.completionTokens <= small.model.contextSize!)
    assert.ok(r.usage.usage.completionTokens > 100)
  })

  it('ends with finish_reason stop when the story ends (this model ends a story with BOS)', async () => {
    // Greedy "Once upon a time" samples BOS as its 342nd token on stories260K.
    const r = await collect(backend, request('completion', { maxTokens: 600 }))
    assert.equal(r.usage.finishReason, 'stop')
    assert.equal(r.usage.usage.completionTokens, 342)
    assert.equal(r.chunks[r.chunks.length - 1].choices[0].finish_reason, 'stop')
  })

  it('decodes multi-byte UTF-8 split across byte tokens without emitting U+FFFD halves', () => {
    const text = 'héllo wörld 🎉 日本'
    const tokens = vocab.tokenize(text)
    assert.ok(tokens.length > text.split(' ').length, 'the vocabulary splits these characters into byte tokens')
    const detok = new IncrementalDetokenizer(vocab, [vocab.tokens.bos as Token])
    const pieces = tokens.map((t) => detok.push(t))
    pieces.push(detok.flush())
    for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)}`)
    assert.equal(pieces.join(''), vocab.detokenize(tokens))
  })

  it('keeps word-leading spaces when decoding token by token', () => {
    const prompt = vocab.tokenize('Once')
    const detok = new IncrementalDetokenizer(vocab, prompt)
    const rest = vocab.tokenize('Once upon a time').slice(prompt.length)
    assert.equal(rest.map((t) => detok.push(t)).join(''), ' upon a time')
  })
})
