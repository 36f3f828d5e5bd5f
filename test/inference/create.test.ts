// createBackend: the factory wires model resolution to the llama backend, and config to the openai backend.

import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createBackend, type BackendConfig } from '../../src/inference/create.ts'
import { LlamaBackend } from '../../src/inference/llama.ts'
import { OpenAIUpstreamBackend } from '../../src/inference/openai.ts'
import { collect, request } from './backend-compliance.ts'

describe('createBackend', () => {
  // createBackend uses the default cache dir: point it at a scratch dir so tests leave nothing in ~/.cache.
  const saved = { xdg: process.env.XDG_CACHE_HOME, models: process.env.COCOON_MODELS }
  let tmp: string
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'cocoon-create-'))
    process.env.XDG_CACHE_HOME = tmp
    process.env.COCOON_MODELS ??= path.resolve(import.meta.dirname, '../../../shared/models')
  })
  after(async () => {
    if (saved.xdg === undefined) delete process.env.XDG_CACHE_HOME
    else process.env.XDG_CACHE_HOME = saved.xdg
    if (saved.models === undefined) delete process.env.COCOON_MODELS
    await fs.rm(tmp, { recursive: true, force: true })
  })

  it('resolves an hf: spec through COCOON_MODELS and starts the llama backend with its id and hash', async () => {
    const backend = await createBackend({ kind: 'llama', model: 'hf:ggml-org/tiny-llamas/stories260K.gguf', threads: 1, contextSize: 256, parallel: 1 })
    try {
      assert.ok(backend instanceof LlamaBackend)
      assert.deepEqual(backend.model, { id: 'stories260K', hash: '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d', contextSize: 256, capabilities: ['chat', 'completions', 'embeddings'], embeddingDimensions: 64 })
      const r = await collect(backend, request('completion', { maxTokens: 8 }))
      assert.ok(r.text.startsWith(', there was'))
    } finally {
      await backend.close()
    }
  })

  it('builds the openai backend with the model id, and requires baseUrl', async () => {
    const b = await createBackend({ kind: 'openai', model: 'qwen3', baseUrl: 'http://127.0.0.1:1' }, {})
    assert.ok(b instanceof OpenAIUpstreamBackend)
    assert.deepEqual(b.model, { id: 'qwen3', hash: '', capabilities: ['chat', 'completions'] })
    await assert.rejects(createBackend({ kind: 'openai', model: 'qwen3' } as unknown as BackendConfig), /baseUrl/)
  })
})
