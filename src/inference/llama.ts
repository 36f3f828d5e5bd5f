// The embedded backend: runs a GGUF model in-process with node-llama-cpp and implements the OpenAI streaming semantics itself.

import os from 'node:os'
import { randomInt } from 'node:crypto'
import { zeroUsage } from '../core/usage.ts'
import type {
  ChatHistoryItem,
  ChatWrapper,
  Llama,
  LlamaContext,
  LlamaContextSequence,
  LlamaEmbeddingContext,
  LlamaGrammar,
  LlamaModel,
  SequenceEvaluateOptions,
  Token,
} from 'node-llama-cpp'
import type { Logger } from '../core/log.ts'
import { ChunkWriter } from './chunks.ts'
import { DEFAULT_CONTEXT_SIZE_TOKENS, DEFAULT_MAX_THREADS, DEFAULT_PARALLEL_SEQUENCES } from './constants.ts'
import { IncrementalDetokenizer } from './detokenizer.ts'
import { StopMatcher } from './stop.ts'
import { JsonEnd } from './json-end.ts'
import { BackendError, type ChatMessage, type InferenceBackend, type InferenceEvent, type InferenceRequest, type ModelInfo, type RequestFeature, type EmbeddingRequest, type EmbeddingResult } from './types.ts'
import { normalize } from './vectors.ts'

/** Compiled JSON-schema grammars kept for reuse, by schema text. */
const MAX_CACHED_GRAMMARS = 32

export interface LlamaBackendOptions {
  /** Path of the GGUF file. */
  modelPath: string
  /** Id shown in /v1/models. */
  modelId: string
  /** SHA-256 of the weights, lowercase hex. */
  modelHash: string
  /** CPU threads for evaluation. Default: min(2, available cores); node-llama-cpp's own default is far slower on small machines. */
  threads?: number
  /** Context window per sequence, in tokens. Default: 2048, or the model's training context if smaller. */
  contextSize?: number
  /** Requests generating at once (context sequences); more wait in a FIFO queue. Default 2. */
  parallel?: number
  /** `false` runs on the CPU; `'auto'` uses a GPU when node-llama-cpp finds one. Default false. */
  gpu?: false | 'auto'
  /** Serve /v1/embeddings from this model too (node-llama-cpp's embedding context, created on first use). Default true. */
  embeddings?: boolean
  /**
   * The model was trained so that a prefix of its vector is itself a good embedding
   * (Matryoshka: nomic-embed-text v1.5, mxbai-embed-large, …), so `dimensions` below the full
   * length is allowed. Default false: only the full length is.
   */
  matryoshka?: boolean
}

/**
 * Prompt format for models whose GGUF carries no chat template. System and developer messages
 * come first as plain paragraphs, then one line per turn, ending with an open assistant turn:
 *
 *     You are terse.
 *
 *     User: Hello
 *     Assistant: Hi!
 *     User: Tell me a story
 *     Assistant:
 *
 * Tool results render as `Tool: …` lines. If the last message is from the assistant, its text
 * is left open so the model continues it. Generation also stops at PLAIN_CHAT_STOP, so the
 * model does not write the user's next turn.
 */
export const PLAIN_CHAT_STOP = '\nUser:'

export function formatPlainChat(messages: readonly ChatMessage[]): string {
  const system: string[] = []
  let turns = ''
  let lastIsAssistant = false
  for (const m of messages) {
    lastIsAssistant = false
    switch (m.role) {
      case 'system':
      case 'developer':
        system.push(m.content)
        break
      case 'user':
        turns += `User: ${m.content}\n`
        break
      case 'tool':
        turns += `Tool: ${m.content}\n`
        break
      case 'assistant':
        turns += `Assistant: ${m.content}\n`
        lastIsAssistant = true
        break
    }
  }
  const head = system.length > 0 ? system.join('\n\n') + '\n\n' : ''
  return lastIsAssistant ? head + turns.slice(0, -1) : head + turns + 'Assistant:'
}

/** A tokenized request, ready to evaluate. */
interface Prepared {
  tokens: Token[]
  /** Template-specific stop strings, on top of the request's. */
  stops: string[]
  /** Tokens that end generation besides the vocabulary's EOG set (BOS, template end-of-turn). */
  stopTokens: ReadonlySet<Token>
  /** Constrains sampling (response_format json_object / json_schema). */
  grammar?: LlamaGrammar
}


// One native llama.cpp binding per process and GPU setting: loading it is slow and it is shareable.
const llamaInstances = new Map<string, Promise<Llama>>()

async function sharedLlama(gpu: false | 'auto', log?: Logger): Promise<Llama> {
  const key = String(gpu)
  let p = llamaInstances.get(key)
  if (!p) {
    p = (async () => {
      const { getLlama, LlamaLogLevel } = await import('node-llama-cpp')
      return getLlama({
        gpu,
        build: 'never', // never compile or download at run time: the prebuilt binaries ship in the npm packages
        logLevel: LlamaLogLevel.error,
        logger: (level, message) => log?.warn('llama.cpp', { level, message: message.trim() }),
      })
    })()
    llamaInstances.set(key, p)
    p.catch(() => llamaInstances.delete(key))
  }
  return p
}

/** The scope of a sequence whose KV cache nobody may reuse (no request's scope is this: they are hex, or ''). */
const UNUSABLE_SCOPE = '!'

/** Free context sequences plus a FIFO queue of requests waiting for one. */
class SequencePool {
  private readonly free: LlamaContextSequence[]
  private readonly waiters: Array<{ resolve: (s: LlamaContextSequence) => void; reject: (e: unknown) => void }> = []
  /** The cache scope of the request whose prompt state each sequence holds ('' for requests without one). */
  private readonly scopes = new WeakMap<LlamaContextSequence, string>()

  constructor(sequences: LlamaContextSequence[]) {
    this.free = sequences
  }

  /** How many leading `tokens` a request of `scope` may reuse from `seq`'s KV cache: none across scopes. */
  reusable(seq: LlamaContextSequence, tokens: readonly Token[], scope: string): number {
    if ((this.scopes.get(seq) ?? '') !== scope) return 0
    return seq.compareContextTokens(tokens as Token[]).firstDifferentIndex
  }

  /** Notes that `seq` now holds the prompt state of a request of `scope`. */
  hold(seq: LlamaContextSequence, scope: string): void {
    this.scopes.set(seq, scope)
  }

  /** Picks the free sequence whose KV cache shares the longest prefix with `tokens`, within the request's scope. */
  acquire(tokens: readonly Token[], signal: AbortSignal, scope = ''): Promise<LlamaContextSequence> {
    if (this.free.length > 0) {
      let best = 0
      let bestLen = -1
      for (let i = 0; i < this.free.length; i++) {
        const len = this.reusable(this.free[i], tokens, scope)
        if (len > bestLen) {
          best = i
          bestLen = len
        }
      }
      return Promise.resolve(this.free.splice(best, 1)[0])
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (s: LlamaContextSequence) => {
          signal.removeEventListener('abort', onAbort)
          resolve(s)
        },
        reject: (e: unknown) => {
          signal.removeEventListener('abort', onAbort)
          reject(e)
        },
      }
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter)
        if (i !== -1) this.waiters.splice(i, 1)
        waiter.reject(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  release(seq: LlamaContextSequence): void {
    const next = this.waiters.shift()
    if (next) next.resolve(seq)
    else this.free.push(seq)
  }

  get queued(): number {
    return this.waiters.length
  }

  rejectAll(err: unknown): void {
    for (const w of this.waiters.splice(0)) w.reject(err)
  }
}

export class LlamaBackend implements InferenceBackend {
  readonly model: ModelInfo
  /** `response_format` json_object / json_schema: sampling constrained by a llama.cpp grammar. */
  readonly features: ReadonlySet<RequestFeature> = new Set(['response_format'])
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>()
  private closed = false
  /**
   * Tokens that end generation besides the vocabulary's end-of-generation set: BOS. A sampled
   * BOS starts an unrelated new document (llama2.c-style models such as stories260K separate
   * their training stories with BOS and never emit EOS), so it ends the answer like EOS does.
   */
  private readonly endTokens: ReadonlySet<Token>
  private readonly opts: LlamaBackendOptions
  private embedding?: Promise<LlamaEmbeddingContext>
  /** One embedding evaluation at a time: the embedding context has a single sequence. */
  private embedQueue: Promise<unknown> = Promise.resolve()

  private constructor(
    private readonly llama: Llama,
    private readonly llamaModel: LlamaModel,
    private readonly context: LlamaContext,
    private readonly pool: SequencePool,
    private readonly chatWrapper: ChatWrapper | undefined,
    private readonly log: Logger | undefined,
    opts: LlamaBackendOptions,
  ) {
    const embeddings = opts.embeddings ?? true
    this.model = {
      id: opts.modelId,
      hash: opts.modelHash,
      contextSize: context.contextSize,
      capabilities: embeddings ? ['chat', 'completions', 'embeddings'] : ['chat', 'completions'],
      ...(embeddings ? { embeddingDimensions: llamaModel.embeddingVectorSize } : {}),
    }
    this.opts = opts
    const bos = llamaModel.tokens.bos
    this.endTokens = new Set(bos != null ? [bos] : [])
  }

  static async create(opts: LlamaBackendOptions, deps: { log?: Logger } = {}): Promise<LlamaBackend> {
    const gpu = opts.gpu ?? false
    const threads = opts.threads ?? Math.min(DEFAULT_MAX_THREADS, os.availableParallelism())
    const parallel = opts.parallel ?? DEFAULT_PARALLEL_SEQUENCES
    const llama = await sharedLlama(gpu, deps.log)
    const model = await llama.loadModel({ modelPath: opts.modelPath, gpuLayers: gpu === false ? 0 : 'auto' })
    try {
      const contextSize = opts.contextSize ?? Math.min(DEFAULT_CONTEXT_SIZE_TOKENS, model.trainContextSize || DEFAULT_CONTEXT_SIZE_TOKENS)
      const context = await model.createContext({ contextSize, sequences: parallel, threads })
      const sequences: LlamaContextSequence[] = []
      for (let i = 0; i < parallel; i++) sequences.push(context.getSequence())
      const chatWrapper = await resolveTemplate(model)
      deps.log?.info('llama backend ready', {
        model: opts.modelId,
        contextSize: context.contextSize,
        parallel,
        threads,
        gpu: llama.gpu,
        chatTemplate: chatWrapper ? chatWrapper.wrapperName : 'plain',
      })
      return new LlamaBackend(llama, model, context, new SequencePool(sequences), chatWrapper, deps.log, opts)
    } catch (err) {
      await model.dispose()
      throw err
    }
  }

  /** Requests waiting for a free sequence. */
  get queued(): number {
    return this.pool.queued
  }

  async *run(req: InferenceRequest, opts: { signal: AbortSignal }): AsyncIterable<InferenceEvent> {
    if (this.closed) throw new BackendError('the llama backend is closed', 503)
    const { signal } = opts
    const prepared = this.prepare(req)
    prepared.grammar = await this.grammarFor(req)
    if (signal.aborted) {
      yield cancelledBeforeStart()
      return
    }
    let seq: LlamaContextSequence
    try {
      seq = await this.pool.acquire(prepared.tokens, signal, req.cacheScope ?? '')
    } catch (err) {
      if (signal.aborted) {
        yield cancelledBeforeStart()
        return
      }
      throw err
    }
    try {
      if (signal.aborted) {
        yield cancelledBeforeStart()
        return
      }
      yield* this.generate(seq, req, prepared, signal)
    } finally {
      this.pool.release(seq)
    }
  }

  private async *generate(seq: LlamaContextSequence, req: InferenceRequest, p: Prepared, signal: AbortSignal): AsyncGenerator<InferenceEvent> {
    const model = this.llamaModel
    const tokens = p.tokens
    // Reuse the KV cache of a shared prefix (multi-turn chats, repeated system prompts), only within the request's
    // cache scope: across apps, cached_tokens and the time to first token would tell one app what another sent. At
    // least one prompt token must be evaluated to get logits for the first sampled token.
    const scope = req.cacheScope ?? ''
    let cached = this.pool.reusable(seq, tokens, scope)
    if (cached >= tokens.length) cached = tokens.length - 1
    try {
      if (seq.nextTokenIndex > cached) await seq.eraseContextTokenRanges([{ start: cached, end: seq.nextTokenIndex }])
    } catch (err) {
      // What the sequence holds is unknown now: no scope may reuse it.
      this.pool.hold(seq, UNUSABLE_SCOPE)
      throw new BackendError(`llama.cpp failed to reset the context: ${(err as Error).message}`, 500)
    }
    // From here the sequence holds this request's prompt state.
    this.pool.hold(seq, scope)

    // Stop before the sequence is full: node-llama-cpp would otherwise shift the context and
    // silently drop the start of the prompt.
    const maxNew = Math.min(req.maxTokens, seq.contextSize - tokens.length)
    const writer = new ChunkWriter(req.kind, req.requestId, req.model || this.model.id)
    const usage = (completionTokens: number, finishReason: string): InferenceEvent => ({
      type: 'usage',
      usage: { promptTokens: tokens.length, cachedTokens: cached, completionTokens, reasoningTokens: 0 },
      finishReason,
    })
    if (maxNew <= 0) {
      const role = writer.role()
      if (role) yield { type: 'chunk', json: role }
      yield { type: 'chunk', json: writer.finish('length') }
      yield usage(0, 'length')
      return
    }

    const sampling = samplingOptions(req)
    let jsonEnd: JsonEnd | undefined
    if (p.grammar) {
      const { LlamaGrammarEvaluationState } = await import('node-llama-cpp')
      sampling.grammarEvaluationState = new LlamaGrammarEvaluationState({ model, grammar: p.grammar })
      jsonEnd = new JsonEnd()
    }
    const it = seq.evaluate(tokens.slice(cached), sampling)
    const detok = new IncrementalDetokenizer(model, tokens)
    const stop = new StopMatcher(p.stops.length > 0 ? (req.stop ?? []).concat(p.stops) : req.stop)
    let completion = 0
    let finish = 'length'
    let stoppedByString = false
    try {
      // The first step evaluates the prompt; a failure here is still "before any chunk".
      let r: IteratorResult<Token, void>
      try {
        r = await it.next()
      } catch (err) {
        throw new BackendError(`llama.cpp failed to evaluate the prompt: ${(err as Error).message}`, 500)
      }
      const role = writer.role()
      if (role) yield { type: 'chunk', json: role }
      try {
        for (;;) {
          if (r.done) {
            finish = 'stop'
            break
          }
          const token = r.value
          completion++ // an end-of-generation token was sampled too, so it counts
          if (model.isEogToken(token) || p.stopTokens.has(token)) {
            finish = 'stop'
            break
          }
          const piece = detok.push(token)
          if (piece.length > 0) {
            const out = stop.push(piece)
            if (out.emit.length > 0) yield { type: 'chunk', json: writer.content(out.emit) }
            if (out.stopped) {
              finish = 'stop'
              stoppedByString = true
              break
            }
            // The JSON value is whole: the grammar would only allow whitespace from here.
            if (jsonEnd?.push(piece)) {
              finish = 'stop'
              break
            }
          }
          if (completion >= maxNew) {
            finish = 'length'
            break
          }
          if (signal.aborted) {
            finish = 'cancelled'
            break
          }
          r = await it.next()
        }
      } catch (err) {
        // Chunks are already out, so the stream ends cleanly and says what was produced.
        this.log?.error('llama generation failed mid-stream', { requestId: req.requestId, err })
        yield usage(completion, 'error')
        return
      }
      if (finish !== 'cancelled') {
        if (!stoppedByString) {
          const rest = detok.flush()
          const out = rest.length > 0 ? stop.push(rest) : { emit: '', stopped: false }
          const tail = out.stopped ? out.emit : out.emit + stop.flush()
          if (out.stopped) finish = 'stop'
          if (tail.length > 0) yield { type: 'chunk', json: writer.content(tail) }
        }
        yield { type: 'chunk', json: writer.finish(finish) }
      }
      yield usage(completion, finish)
    } finally {
      await it.return()
    }
  }

  /**
   * Embeds each input with node-llama-cpp's embedding context (same weights, same threads),
   * L2-normalized like OpenAI's. Greedy evaluation of the same tokens gives the same vector.
   */
  async embed(req: EmbeddingRequest, opts: { signal: AbortSignal }): Promise<EmbeddingResult> {
    if (this.closed) throw new BackendError('the llama backend is closed', 503)
    if (!this.model.capabilities?.includes('embeddings')) throw new BackendError(`model '${this.model.id}' does not serve embeddings here`, 400)
    const native = this.llamaModel.embeddingVectorSize
    const dims = req.dimensions ?? native
    if (dims !== native && !(this.opts.matryoshka && dims >= 1 && dims < native)) {
      throw new BackendError(
        this.opts.matryoshka
          ? `'dimensions' must be between 1 and ${native} for model '${this.model.id}'`
          : `model '${this.model.id}' produces ${native}-dimensional vectors and cannot shorten them; omit 'dimensions' or set it to ${native}`,
        400,
      )
    }
    const inputs = req.input.map((x, i) => this.embeddingTokens(x, i))
    this.embedding ??= this.llamaModel.createEmbeddingContext({
      threads: this.opts.threads ?? Math.min(DEFAULT_MAX_THREADS, os.availableParallelism()),
      contextSize: this.context.contextSize,
    })
    const ctx = await this.embedding
    const run = this.embedQueue.then(async () => {
      const vectors: number[][] = []
      for (const tokens of inputs) {
        if (opts.signal.aborted) throw new BackendError('the request was cancelled', 499)
        const e = await ctx.getEmbeddingFor(tokens)
        vectors.push(normalize(Array.from(e.vector).slice(0, dims)))
      }
      return vectors
    })
    this.embedQueue = run.catch(() => {})
    const vectors = await run
    return { vectors, promptTokens: inputs.reduce((n, t) => n + t.length, 0) }
  }

  /** One input's tokens: text is tokenized as the model reads it (BOS included); token ids are checked against the vocabulary. */
  private embeddingTokens(input: string | number[], i: number): Token[] {
    const model = this.llamaModel
    let tokens: Token[]
    if (typeof input === 'string') {
      const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : []
      tokens = bos.concat(model.tokenize(input, false))
    } else {
      const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length
      // An id outside the vocabulary would crash llama.cpp, not just fail the request.
      const bad = input.find((t) => !Number.isSafeInteger(t) || t < 0 || (vocab !== undefined && t >= vocab))
      if (bad !== undefined || vocab === undefined) throw new BackendError(`'input[${i}]' holds token id ${bad ?? '?'}, outside the vocabulary of model '${this.model.id}' (${vocab ?? 'unknown'} tokens)`, 400)
      tokens = input as Token[]
    }
    if (tokens.length === 0) throw new BackendError(`'input[${i}]' is empty`, 400)
    if (tokens.length > this.context.contextSize) {
      throw new BackendError(`'input[${i}]' is ${tokens.length} tokens, but model '${this.model.id}' reads at most ${this.context.contextSize}`, 400)
    }
    return tokens
  }

  /** The grammar `response_format` asks for, compiled once per schema; undefined for plain text. */
  private async grammarFor(req: InferenceRequest): Promise<LlamaGrammar | undefined> {
    const rf = req.body.response_format as { type?: string; json_schema?: { schema?: unknown } } | undefined | null
    if (!rf || rf.type === 'text' || rf.type === undefined) return undefined
    const key = rf.type === 'json_schema' ? JSON.stringify(rf.json_schema?.schema ?? {}) : ':json'
    let g = this.grammars.get(key)
    if (!g) {
      g = rf.type === 'json_schema' ? this.llama.createGrammarForJsonSchema((rf.json_schema?.schema ?? {}) as never) : this.llama.getGrammarFor('json')
      if (this.grammars.size >= MAX_CACHED_GRAMMARS) this.grammars.delete(this.grammars.keys().next().value!)
      this.grammars.set(key, g)
      g.catch(() => this.grammars.delete(key))
    }
    try {
      return await g
    } catch (err) {
      throw new BackendError(`'response_format': this JSON schema cannot be turned into a grammar: ${(err as Error).message.slice(0, 300)}`, 400)
    }
  }

  /** Formats and tokenizes the request; a prompt that cannot fit is the caller's error (400). */
  private prepare(req: InferenceRequest): Prepared {
    const model = this.llamaModel
    let tokens: Token[]
    let stops: string[] = []
    let stopTokens = this.endTokens
    const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : []
    if (req.kind === 'chat') {
      const messages = req.messages ?? []
      if (this.chatWrapper) {
        const state = this.chatWrapper.generateContextState({ chatHistory: toChatHistory(messages) })
        tokens = state.contextText.tokenize(model.tokenizer)
        const st = new Set<Token>(this.endTokens)
        for (const trigger of state.stopGenerationTriggers) {
          const t = trigger.tokenize(model.tokenizer)
          if (t.length === 1 && model.isSpecialToken(t[0])) st.add(t[0])
          else {
            const s = trigger.toString()
            if (s.length > 0 && !stops.includes(s)) stops.push(s)
          }
        }
        stopTokens = st
      } else {
        tokens = bos.concat(model.tokenize(formatPlainChat(messages), false))
        stops = [PLAIN_CHAT_STOP]
      }
    } else {
      // Special-token text in a prompt stays literal text: a user must not be able to inject control tokens.
      tokens = bos.concat(model.tokenize(req.prompt ?? '', false))
    }
    if (tokens.length === 0) throw new BackendError('the prompt is empty and the model has no BOS token to start from', 400)
    const ctx = this.context.contextSize
    if (tokens.length >= ctx) {
      throw new BackendError(
        `the prompt is ${tokens.length} tokens, but the context window of model '${this.model.id}' is ${ctx} tokens (including the completion)`,
        400,
      )
    }
    return { tokens, stops, stopTokens }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.pool.rejectAll(new BackendError('the llama backend is closed', 503))
    if (this.embedding) await (await this.embedding.catch(() => undefined))?.dispose()
    await this.context.dispose()
    await this.llamaModel.dispose()
  }
}

function cancelledBeforeStart(): InferenceEvent {
  return { type: 'usage', usage: zeroUsage(), finishReason: 'cancelled' }
}

function samplingOptions(req: InferenceRequest): SequenceEvaluateOptions {
  const temperature = req.temperature ?? 1
  // yieldEogToken: we want to see the end token, to count it and to tell 'stop' from other ends.
  if (temperature <= 0) return { temperature: 0, yieldEogToken: true }
  return {
    temperature,
    topP: req.topP ?? 1, // OpenAI's default; node-llama-cpp's would be 0.95
    topK: 0, // OpenAI has no top-k; 0 disables it (node-llama-cpp defaults to 40)
    minP: 0,
    // node-llama-cpp's default seed is the current second, so two requests in one second would
    // sample alike; draw a fresh one unless the request pins it.
    seed: req.seed !== undefined ? req.seed >>> 0 : randomInt(0x7fffffff),
    yieldEogToken: true,
  }
}

function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const out: ChatHistoryItem[] = []
  for (const m of messages) {
    if (m.role === 'system' || m.role === 'developer') out.push({ type: 'system', text: m.content })
    else if (m.role === 'assistant') out.push({ type: 'model', response: [m.content] })
    else out.push({ type: 'user', text: m.content }) // tool results are shown to the model as user turns
  }
  // An open model turn is what the wrapper renders the generation prompt for.
  if (out.length === 0 || out[out.length - 1].type !== 'model') out.push({ type: 'model', response: [] })
  return out
}

/** The GGUF's own chat template, through node-llama-cpp's wrappers; undefined means the plain format. */
async function resolveTemplate(model: LlamaModel): Promise<ChatWrapper | undefined> {
  const template = model.fileInfo.metadata?.tokenizer?.chat_template
  if (typeof template !== 'string' || template.length === 0) return undefined
  const { resolveChatWrapper } = await import('node-llama-cpp')
  return resolveChatWrapper(model, { fallbackToOtherWrappersOnJinjaError: true }) ?? undefined
}
