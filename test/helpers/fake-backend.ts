// FAKE inference backend for protocol tests: deterministic chunks with optional delays and failures. Not a model.
import { BackendError, type InferenceBackend, type InferenceEvent, type InferenceRequest, type ModelInfo } from '../../src/inference/types.ts'

export interface FakeBackendOptions {
  modelId?: string
  /** Chunks to emit (each counts as one completion token). Default 5. */
  chunks?: number
  /** Delay before each chunk, ms. Default 0. */
  delayMs?: number
  /** Delay before the first chunk, ms. Default 0. */
  firstDelayMs?: number
  /** Throw BackendError(status) before the first chunk. */
  failBeforeFirst?: number
}

/** Records what it was asked and whether runs were aborted, so tests can assert on the far end. */
export class FakeBackend implements InferenceBackend {
  readonly model: ModelInfo
  readonly seen: InferenceRequest[] = []
  aborted = 0
  completed = 0
  constructor(readonly o: FakeBackendOptions = {}) {
    this.model = { id: o.modelId ?? 'fake-model', hash: 'ab'.repeat(32) }
  }

  async *run(req: InferenceRequest, { signal }: { signal: AbortSignal }): AsyncIterable<InferenceEvent> {
    this.seen.push(req)
    const n = Math.min(this.o.chunks ?? 5, req.maxTokens)
    const promptTokens = (req.prompt ?? req.messages?.map((m) => m.content).join(' ') ?? '').split(/\s+/).filter(Boolean).length
    if (this.o.failBeforeFirst) throw new BackendError('fake backend failure', this.o.failBeforeFirst)
    const created = 1_700_000_000
    let produced = 0
    for (let i = 0; i < n; i++) {
      const wait = i === 0 ? (this.o.firstDelayMs ?? 0) + (this.o.delayMs ?? 0) : (this.o.delayMs ?? 0)
      if (wait) await abortableDelay(wait, signal)
      if (signal.aborted) break
      produced++
      const text = `tok${i} `
      yield {
        type: 'chunk',
        json:
          req.kind === 'chat'
            ? JSON.stringify({ id: `chatcmpl-${req.requestId}`, object: 'chat.completion.chunk', created, model: req.model, choices: [{ index: 0, delta: i === 0 ? { role: 'assistant', content: text } : { content: text }, finish_reason: null }] })
            : JSON.stringify({ id: `cmpl-${req.requestId}`, object: 'text_completion', created, model: req.model, choices: [{ index: 0, text, logprobs: null, finish_reason: null }] }),
      }
    }
    if (signal.aborted) this.aborted++
    else this.completed++
    const finishReason = signal.aborted ? 'cancelled' : n < (this.o.chunks ?? 5) ? 'length' : 'stop'
    yield { type: 'usage', usage: { promptTokens, cachedTokens: 0, completionTokens: produced, reasoningTokens: 0 }, finishReason }
  }

  async close(): Promise<void> {}
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}
