// The upstream backend: forwards requests to an OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama) and passes its SSE stream through.

import http from 'node:http'
import https from 'node:https'
import type { Logger } from '../core/log.ts'
import { ESTIMATE_CHARS_PER_TOKEN, UPSTREAM_DRAIN_AFTER_DONE_MS, UPSTREAM_ERROR_BODY_MAX_BYTES, UPSTREAM_HEADERS_TIMEOUT_MS } from './constants.ts'
import { SseParser } from './sse.ts'
import { normalize } from './vectors.ts'
import { zeroUsage } from '../core/usage.ts'
import { BackendError, DEFAULT_CAPABILITIES, type Capability, type EmbeddingRequest, type EmbeddingResult, type TranscriptionRequest, type TranscriptionResult, type InferenceBackend, type InferenceEvent, type InferenceRequest, type ModelInfo, type RequestFeature, type Usage } from './types.ts'

export interface OpenAIUpstreamOptions {
  /** Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted too). */
  baseUrl: string
  /** Bearer token for the upstream. The caller reads it from the environment or a file, never from argv. */
  apiKey?: string
  /** Id shown in /v1/models. */
  modelId: string
  /** Model name sent upstream. Default: modelId. */
  upstreamModel?: string
  /** Time allowed until the upstream's response headers arrive, in ms. Default 60 000. The stream itself is not limited. */
  timeoutMs?: number
  /** SHA-256 of the upstream's weights if the operator knows it. Default '' (unknown). */
  modelHash?: string
  /**
   * What the upstream model serves: e.g. ['embeddings'] for an embedding server, ['transcriptions']
   * for whisper.cpp or faster-whisper-server. Default ['chat', 'completions'].
   */
  capabilities?: readonly Capability[]
  /**
   * Send each request's cache scope upstream as `cache_salt` (vLLM's, and others', prefix-cache isolation), so the
   * upstream reuses a cached prefix only between requests of one app (docs/e2ee.md). Only for an upstream that takes
   * it: OpenAI's own API refuses unknown fields. Default false.
   */
  cacheSalt?: boolean
}

// Cheap per-chunk probes, so that the hot path parses JSON only for the rare chunks that need it.
const USAGE_OBJECT = /"usage"\s*:\s*\{/
const HAS_TEXT = /(?:content|text)"\s*:\s*"[^"]/
const FINISH_REASON = /"finish_reason"\s*:\s*"([^"]+)"/

class UpstreamTimeoutError extends Error {
  readonly name = 'UpstreamTimeoutError'
}

/** The little of a fetch Response this backend reads, over node:http. */
interface UpstreamResponse {
  ok: boolean
  status: number
  statusText: string
  body: { getReader(): BodyReader } | null
}

interface BodyReader {
  read(): Promise<{ done: boolean; value: Uint8Array }>
  cancel(): Promise<void>
}

// Keep-alive pools: one TCP connection per concurrent request, reused across requests. node:http
// instead of fetch keeps the per-chunk cost (WHATWG streams, Response objects) off the hot path.
const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 256 })
const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 256 })

/**
 * POSTs `body` and resolves once the response headers are in; `signal` aborts the request at any
 * point. A pooled connection the upstream closed while idle fails at once: that is retried once
 * on a fresh connection, since nothing reached the upstream.
 */
function post(url: string, headers: Record<string, string>, body: string, signal: AbortSignal, retried = false): Promise<UpstreamResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url)
    const mod = u.protocol === 'https:' ? https : http
    const req = mod.request(u, { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) }, agent: u.protocol === 'https:' ? httpsAgent : httpAgent, signal })
    req.once('error', (err: NodeJS.ErrnoException) => {
      const stale = req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')
      if (stale && !retried && !signal.aborted) post(url, headers, body, signal, true).then(resolve, reject)
      else reject(err)
    })
    req.once('response', (res) => {
      const status = res.statusCode ?? 0
      const it = res[Symbol.asyncIterator]()
      resolve({
        ok: status >= 200 && status < 300,
        status,
        statusText: res.statusMessage ?? '',
        body: {
          getReader: () => ({
            read: () => it.next() as Promise<{ done: boolean; value: Uint8Array }>,
            cancel: async () => void res.destroy(),
          }),
        },
      })
    })
    req.end(body)
  })
}

export class OpenAIUpstreamBackend implements InferenceBackend {
  readonly model: ModelInfo
  /** The upstream server gets these fields as the app sent them, and its answer carries their results. */
  readonly features: ReadonlySet<RequestFeature> = new Set(['tools', 'response_format', 'logit_bias', 'logprobs'])
  private readonly base: string
  private readonly chatUrl: string
  private readonly completionUrl: string
  private readonly headers: Record<string, string>
  private readonly upstreamModel: string
  private readonly cacheSalt: boolean
  private readonly timeoutMs: number
  private readonly inflight = new Set<AbortController>()
  private readonly log?: Logger

  constructor(opts: OpenAIUpstreamOptions, deps: { log?: Logger } = {}) {
    try {
      new URL(opts.baseUrl)
    } catch {
      throw new TypeError(`the openai backend's baseUrl '${opts.baseUrl}' is not a URL`)
    }
    let base = opts.baseUrl.replace(/\/+$/, '')
    if (!base.endsWith('/v1')) base += '/v1'
    this.base = base
    this.chatUrl = `${base}/chat/completions`
    this.completionUrl = `${base}/completions`
    this.headers = { 'content-type': 'application/json', accept: 'text/event-stream' }
    if (opts.apiKey) this.headers.authorization = `Bearer ${opts.apiKey}`
    this.upstreamModel = opts.upstreamModel ?? opts.modelId
    this.cacheSalt = opts.cacheSalt === true
    this.timeoutMs = opts.timeoutMs ?? UPSTREAM_HEADERS_TIMEOUT_MS
    this.model = { id: opts.modelId, hash: opts.modelHash ?? '', capabilities: opts.capabilities ?? DEFAULT_CAPABILITIES }
    this.log = deps.log
  }

  /** One whole JSON (or multipart) exchange with the upstream; its 4xx come back as 4xx, anything else as 502/504. */
  private async exchange(path: string, body: string | FormData, signal: AbortSignal): Promise<Record<string, any>> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (typeof body === 'string') headers['content-type'] = 'application/json'
    if (this.headers.authorization) headers.authorization = this.headers.authorization
    const timeout = AbortSignal.timeout(this.timeoutMs)
    let res: Response
    try {
      res = await fetch(`${this.base}${path}`, { method: 'POST', headers, body, signal: AbortSignal.any([signal, timeout]) })
    } catch (err) {
      if (timeout.aborted && !signal.aborted) throw new BackendError(`upstream did not respond within ${this.timeoutMs} ms`, 504)
      throw new BackendError(`request to upstream ${new URL(this.base).origin} failed: ${causeMessage(err)}`, signal.aborted ? 499 : 502)
    }
    const text = await res.text()
    if (!res.ok) {
      let message = text.slice(0, 500)
      try {
        message = JSON.parse(text).error?.message ?? message
      } catch {
        // not JSON: the text says it
      }
      throw new BackendError(`upstream returned HTTP ${res.status}: ${message}`, res.status >= 400 && res.status < 500 ? res.status : 502)
    }
    try {
      return JSON.parse(text) as Record<string, any>
    } catch {
      throw new BackendError('upstream answered with something other than JSON', 502)
    }
  }

  /** Forwards to the upstream's /v1/embeddings, always as floats (the worker encodes as the app asked). */
  async embed(req: EmbeddingRequest, opts: { signal: AbortSignal }): Promise<EmbeddingResult> {
    const body = { ...req.body, model: this.upstreamModel, encoding_format: 'float' }
    const r = await this.exchange('/embeddings', JSON.stringify(body), opts.signal)
    const data = Array.isArray(r.data) ? [...r.data].sort((a, b) => (a?.index ?? 0) - (b?.index ?? 0)) : []
    if (data.length !== req.input.length || !data.every((d) => Array.isArray(d?.embedding) && d.embedding.every((x: unknown) => typeof x === 'number'))) {
      throw new BackendError(`upstream returned ${data.length} embeddings for ${req.input.length} inputs`, 502)
    }
    const tokens = r.usage?.prompt_tokens
    const promptTokens = Number.isSafeInteger(tokens) && tokens >= 0 ? tokens : Math.ceil(JSON.stringify(req.input).length / ESTIMATE_CHARS_PER_TOKEN)
    return { vectors: data.map((d) => normalize(d.embedding as number[])), promptTokens }
  }

  /** Forwards to the upstream's /v1/audio/transcriptions as verbose_json, so the worker can give any response_format. */
  async transcribe(req: TranscriptionRequest, opts: { signal: AbortSignal }): Promise<TranscriptionResult> {
    const form = new FormData()
    form.set('file', new Blob([new Uint8Array(req.audio)]), req.filename)
    form.set('model', this.upstreamModel)
    form.set('response_format', 'verbose_json')
    if (req.language) form.set('language', req.language)
    if (req.prompt) form.set('prompt', req.prompt)
    if (req.temperature !== undefined) form.set('temperature', String(req.temperature))
    const r = await this.exchange('/audio/transcriptions', form, opts.signal)
    if (typeof r.text !== 'string') throw new BackendError('upstream transcription has no text', 502)
    const segments = Array.isArray(r.segments)
      ? r.segments.map((s: any, i: number) => ({ id: i, start: Number(s?.start) || 0, end: Number(s?.end) || 0, text: String(s?.text ?? '').trim() }))
      : [{ id: 0, start: 0, end: req.durationSec, text: r.text.trim() }]
    const lang = typeof r.language === 'string' ? r.language : (req.language ?? '')
    return { text: r.text.trim(), language: LANGUAGE_CODES[lang.toLowerCase()] ?? lang, segments }
  }

  async *run(req: InferenceRequest, opts: { signal: AbortSignal }): AsyncIterable<InferenceEvent> {
    const { signal } = opts
    if (signal.aborted) {
      yield { type: 'usage', usage: zeroUsage(), finishReason: 'cancelled', estimated: true }
      return
    }
    const body: Record<string, unknown> = { ...req.body }
    const so = body.stream_options
    body.model = this.upstreamModel
    body.stream = true
    body.stream_options = { ...(so && typeof so === 'object' ? so : {}), include_usage: true }
    body.max_tokens = req.maxTokens
    // One limit only: upstreams differ on which of the two wins when both are present.
    delete body.max_completion_tokens
    if (this.cacheSalt) {
      // The app's cache scope, never a cache_salt of the app's own choosing: one app must not pick another's.
      delete body.cache_salt
      if (req.cacheScope) body.cache_salt = req.cacheScope
    }

    const ctrl = new AbortController()
    const onAbort = () => ctrl.abort(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    this.inflight.add(ctrl)
    const timer = setTimeout(() => ctrl.abort(new UpstreamTimeoutError()), this.timeoutMs)
    const url = req.kind === 'chat' ? this.chatUrl : this.completionUrl
    let reader: BodyReader | undefined
    let finished = false
    try {
      let res: UpstreamResponse
      try {
        res = await post(url, this.headers, JSON.stringify(body), ctrl.signal)
      } catch (err) {
        if (signal.aborted) {
          yield { type: 'usage', usage: zeroUsage(), finishReason: 'cancelled', estimated: true }
          return
        }
        if (ctrl.signal.reason instanceof UpstreamTimeoutError) throw new BackendError(`upstream did not respond within ${this.timeoutMs} ms`, 504)
        throw new BackendError(`request to upstream ${new URL(url).origin} failed: ${causeMessage(err)}`, 502)
      } finally {
        clearTimeout(timer)
      }
      if (!res.ok || !res.body) {
        const message = await errorMessage(res)
        throw new BackendError(`upstream returned HTTP ${res.status}: ${message}`, res.status >= 400 && res.status < 500 ? res.status : 502)
      }

      reader = res.body.getReader()
      const decoder = new TextDecoder()
      const parser = new SseParser()
      let usage: Usage | undefined
      let finishReason: string | undefined
      let textChunks = 0
      let sentAny = false
      let outcome: 'done' | 'eof' | 'cancelled' | 'error' | 'length' = 'eof'
      try {
        read: for (;;) {
          const { done, value } = await reader.read()
          if (done) {
            finished = true
            break
          }
          for (const data of parser.push(decoder.decode(value, { stream: true }))) {
            if (data === '[DONE]') {
              outcome = 'done'
              break read
            }
            let json = data
            if ((data.includes('"usage"') && USAGE_OBJECT.test(data)) || !data.includes('"choices"')) {
              const parsed = parseChunk(data)
              if (parsed.error !== undefined) {
                if (!sentAny) throw new BackendError(`upstream error: ${parsed.error}`, 502)
                this.log?.warn('upstream sent an error mid-stream', { requestId: req.requestId, error: parsed.error })
                outcome = 'error'
                break read
              }
              if (parsed.usage) usage = parsed.usage
              if (parsed.forward === undefined) continue
              json = parsed.forward
            }
            if (HAS_TEXT.test(json)) {
              // Each text chunk carries at least one token: more than max_tokens of them means
              // the upstream ignored the limit, and we must not pass the excess on.
              if (textChunks === req.maxTokens) {
                outcome = 'length'
                break read
              }
              textChunks++
            }
            const fr = FINISH_REASON.exec(json)
            if (fr) finishReason = fr[1]
            sentAny = true
            yield { type: 'chunk', json }
            if (signal.aborted) {
              outcome = 'cancelled'
              break read
            }
          }
        }
      } catch (err) {
        if (err instanceof BackendError) throw err
        if (signal.aborted) outcome = 'cancelled'
        else if (!sentAny) throw new BackendError(`upstream stream failed: ${causeMessage(err)}`, 502)
        else {
          this.log?.warn('upstream stream broke mid-response', { requestId: req.requestId, err })
          outcome = 'error'
        }
      }
      if (signal.aborted) outcome = 'cancelled'
      else if (outcome === 'done') finished = await drain(reader)

      const reason =
        outcome === 'cancelled' ? 'cancelled' : outcome === 'error' ? 'error' : outcome === 'length' ? 'length' : (finishReason ?? (outcome === 'eof' ? 'error' : 'stop'))
      if (usage) {
        // Bill no more than the limit we asked for, whatever the upstream claims.
        if (usage.completionTokens > req.maxTokens) usage.completionTokens = req.maxTokens
        if (usage.reasoningTokens > usage.completionTokens) usage.reasoningTokens = usage.completionTokens
        yield { type: 'usage', usage, finishReason: reason }
      } else {
        yield {
          type: 'usage',
          usage: { promptTokens: estimatePromptTokens(req), cachedTokens: 0, completionTokens: Math.min(textChunks, req.maxTokens), reasoningTokens: 0 },
          finishReason: reason,
          estimated: true,
        }
      }
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      this.inflight.delete(ctrl)
      // Stopping early must close the upstream request so it stops generating (and billing).
      if (reader && !finished) {
        ctrl.abort()
        reader.cancel().catch(() => {})
      }
    }
  }

  async close(): Promise<void> {
    for (const c of this.inflight) c.abort(new BackendError('the openai backend is closed', 503))
    this.inflight.clear()
  }
}

interface ParsedChunk {
  usage?: Usage
  /** JSON text to pass on (usage stripped), or undefined to pass nothing. */
  forward?: string
  /** The upstream reported an error in the stream. */
  error?: string
}

/** The slow path, for chunks that carry usage or no choices at all (usage-only or error events). */
function parseChunk(data: string): ParsedChunk {
  let obj: Record<string, unknown>
  try {
    obj = JSON.parse(data) as Record<string, unknown>
  } catch {
    return { error: `unparseable stream event: ${data.slice(0, 200)}` }
  }
  if (obj === null || typeof obj !== 'object') return { error: `unexpected stream event: ${data.slice(0, 200)}` }
  if (obj.error !== undefined && obj.error !== null) {
    const e = obj.error as { message?: unknown }
    return { error: typeof e === 'object' && typeof e.message === 'string' ? e.message : JSON.stringify(obj.error) }
  }
  const out: ParsedChunk = {}
  if (obj.usage && typeof obj.usage === 'object') out.usage = mapUsage(obj.usage as Record<string, unknown>)
  if (Array.isArray(obj.choices) && obj.choices.length > 0) {
    if (out.usage) {
      delete obj.usage
      out.forward = JSON.stringify(obj)
    } else {
      out.forward = data
    }
  }
  return out
}

function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0
}

/** Maps OpenAI usage, including the fields vLLM and others put elsewhere (top-level reasoning_tokens). */
export function mapUsage(u: Record<string, unknown>): Usage {
  const pd = u.prompt_tokens_details as Record<string, unknown> | undefined | null
  const cd = u.completion_tokens_details as Record<string, unknown> | undefined | null
  const promptTokens = count(u.prompt_tokens)
  const completionTokens = count(u.completion_tokens)
  return {
    promptTokens,
    cachedTokens: Math.min(promptTokens, count(pd?.cached_tokens)),
    completionTokens,
    reasoningTokens: Math.min(completionTokens, count(cd?.reasoning_tokens ?? u.reasoning_tokens)),
  }
}

/** A rough prompt size, used only when the upstream reported no usage (flagged `estimated`). */
function estimatePromptTokens(req: InferenceRequest): number {
  let chars = req.prompt?.length ?? 0
  for (const m of req.messages ?? []) chars += m.content.length
  return Math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN)
}

/**
 * Reads the (normally empty) rest of the body after [DONE], so the keep-alive connection goes
 * back to the pool instead of being torn down; gives up after a short wait.
 */
async function drain(reader: BodyReader): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), UPSTREAM_DRAIN_AFTER_DONE_MS)))
  try {
    for (;;) {
      const r = await Promise.race([reader.read(), timeout])
      if (r === false) return false
      if (r.done) return true
    }
  } catch {
    return false
  } finally {
    clearTimeout(timer)
  }
}

/** The upstream's error message (OpenAI envelope or plain text), read with a size bound. */
async function errorMessage(res: UpstreamResponse): Promise<string> {
  if (!res.body) return res.statusText || 'no body'
  const reader = res.body.getReader()
  const parts: Uint8Array[] = []
  let size = 0
  try {
    while (size < UPSTREAM_ERROR_BODY_MAX_BYTES) {
      const { done, value } = await reader.read()
      if (done) break
      parts.push(value)
      size += value.byteLength
    }
  } catch {
    // a truncated error body still says something
  } finally {
    reader.cancel().catch(() => {})
  }
  const text = Buffer.concat(parts).toString('utf8').slice(0, UPSTREAM_ERROR_BODY_MAX_BYTES).trim()
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown; detail?: unknown }
    if (typeof j.error === 'string') return j.error
    if (j.error && typeof j.error.message === 'string') return j.error.message
    if (typeof j.message === 'string') return j.message
    if (typeof j.detail === 'string') return j.detail
  } catch {
    // not JSON
  }
  return text || res.statusText || 'no body'
}

function causeMessage(err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } }
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)
}

/** Whisper servers name the language in English in verbose_json; the backend reports ISO-639-1 codes. */
const LANGUAGE_CODES: Readonly<Record<string, string>> = {
  english: 'en', german: 'de', french: 'fr', spanish: 'es', italian: 'it', portuguese: 'pt', russian: 'ru', ukrainian: 'uk',
  chinese: 'zh', japanese: 'ja', korean: 'ko', arabic: 'ar', turkish: 'tr', dutch: 'nl', polish: 'pl', persian: 'fa', hindi: 'hi',
}
