// Validates an OpenAI request body at the worker and turns it into an InferenceRequest with max_tokens enforced;
// and the hop headers that carry a request's routing data (checked at the proxy, matched against the body at the worker).
import { InvalidRequestError, ModelNotFoundError } from './errors.ts'
import { cappedMaxTokens, HEADERS, MAX_MODEL_ID_CHARS } from './protocol.ts'
import type { ChatMessage, EmbeddingRequest, InferenceKind, InferenceRequest, RequestFeature } from '../inference/index.ts'

export interface ValidateLimits {
  modelId: string
  /** Upper bound for max_tokens, and the default when the app gives none. */
  maxTokensCap: number
  /** Optional features the backend honours (tools, response_format, …); a request using another is refused. */
  features?: ReadonlySet<RequestFeature>
}

const CHAT_ROLES = new Set(['system', 'user', 'assistant', 'developer', 'tool'])
const MAX_STOP_SEQUENCES = 4

function num(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new InvalidRequestError(`'${key}' must be a number between ${min} and ${max}`, key)
  }
  return v
}

function int(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = num(body, key, min, max)
  if (v !== undefined && !Number.isInteger(v)) throw new InvalidRequestError(`'${key}' must be an integer`, key)
  return v
}

function contentText(content: unknown, i: number): string {
  if (typeof content === 'string') return content
  if (content === null || content === undefined) return ''
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        const p = part as { type?: unknown; text?: unknown }
        if (p && p.type === 'text' && typeof p.text === 'string') return p.text
        throw new InvalidRequestError(`'messages[${i}].content[${j}]': only text parts are supported`, `messages[${i}].content`)
      })
      .join('')
  }
  throw new InvalidRequestError(`'messages[${i}].content' must be a string or an array of text parts`, `messages[${i}].content`)
}

function messages(body: Record<string, unknown>): ChatMessage[] {
  const m = body.messages
  if (m === undefined) throw new InvalidRequestError("'messages' is required", 'messages')
  if (!Array.isArray(m) || m.length === 0) throw new InvalidRequestError("'messages' must be a non-empty array", 'messages')
  return m.map((raw, i) => {
    if (!raw || typeof raw !== 'object') throw new InvalidRequestError(`'messages[${i}]' must be an object`, `messages[${i}]`)
    const { role, content, name } = raw as Record<string, unknown>
    if (typeof role !== 'string' || !CHAT_ROLES.has(role)) {
      throw new InvalidRequestError(`'messages[${i}].role' must be one of ${[...CHAT_ROLES].join(', ')}`, `messages[${i}].role`)
    }
    const msg: ChatMessage = { role: role as ChatMessage['role'], content: contentText(content, i) }
    if (typeof name === 'string') msg.name = name
    return msg
  })
}

function prompt(body: Record<string, unknown>): string {
  const p = body.prompt
  if (p === undefined) throw new InvalidRequestError("'prompt' is required", 'prompt')
  if (typeof p === 'string') return p
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') return p[0]
  throw new InvalidRequestError("'prompt' must be a string (or an array of exactly one string)", 'prompt')
}

function stop(body: Record<string, unknown>): string[] | undefined {
  const s = body.stop
  if (s === undefined || s === null) return undefined
  const list = typeof s === 'string' ? [s] : s
  if (!Array.isArray(list) || list.length > MAX_STOP_SEQUENCES || !list.every((x) => typeof x === 'string' && x.length > 0)) {
    throw new InvalidRequestError(`'stop' must be a non-empty string or an array of up to ${MAX_STOP_SEQUENCES} such strings`, 'stop')
  }
  return list as string[]
}

const isSet = (v: unknown) => v !== undefined && v !== null

/**
 * Checks the fields that need a backend feature: each is either well-formed and honoured, or refused
 * with a 400 naming it. A field that asks for nothing (null, false, an empty map, `{type: 'text'}`) passes.
 */
function features(kind: InferenceKind, body: Record<string, unknown>, has: ReadonlySet<RequestFeature>): void {
  const refuse = (field: string, feature: RequestFeature) => {
    if (!has.has(feature)) throw new InvalidRequestError(`'${field}' is not supported by this worker's backend; remove it`, field)
  }
  for (const field of ['tools', 'tool_choice', 'functions', 'function_call'] as const) {
    const v = body[field]
    if (!isSet(v)) continue
    if ((field === 'tools' || field === 'functions') && !Array.isArray(v)) throw new InvalidRequestError(`'${field}' must be an array`, field)
    if (kind !== 'chat') throw new InvalidRequestError(`'${field}' is only valid for chat completions`, field)
    if (Array.isArray(v) && v.length === 0) continue
    refuse(field, 'tools')
  }
  const rf = body.response_format
  if (isSet(rf)) {
    const type = (rf as { type?: unknown }).type
    if (typeof rf !== 'object' || !['text', 'json_object', 'json_schema'].includes(type as string)) {
      throw new InvalidRequestError("'response_format' must be an object with 'type' text, json_object or json_schema", 'response_format')
    }
    if (type === 'json_schema') {
      const js = (rf as { json_schema?: { schema?: unknown } }).json_schema
      if (!js || typeof js !== 'object' || (js.schema !== undefined && (js.schema === null || typeof js.schema !== 'object'))) {
        throw new InvalidRequestError("'response_format' of type json_schema needs 'json_schema' as an object with a 'schema' object", 'response_format')
      }
    }
    if (type !== 'text') refuse('response_format', 'response_format')
  }
  const lb = body.logit_bias
  if (isSet(lb)) {
    if (typeof lb !== 'object' || Array.isArray(lb)) throw new InvalidRequestError("'logit_bias' must be an object mapping token ids to numbers", 'logit_bias')
    for (const [k, b] of Object.entries(lb as Record<string, unknown>)) {
      if (!/^\d+$/.test(k) || typeof b !== 'number' || b < -100 || b > 100) throw new InvalidRequestError("'logit_bias' must map token ids to numbers between -100 and 100", 'logit_bias')
    }
    if (Object.keys(lb).length > 0) refuse('logit_bias', 'logit_bias')
  }
  const lp = body.logprobs
  if (isSet(lp)) {
    if (kind === 'chat' && typeof lp !== 'boolean') throw new InvalidRequestError("'logprobs' must be a boolean", 'logprobs')
    if (kind === 'completion' && (typeof lp !== 'number' || !Number.isInteger(lp) || lp < 0 || lp > 5)) throw new InvalidRequestError("'logprobs' must be an integer between 0 and 5", 'logprobs')
    if (lp !== false) refuse('logprobs', 'logprobs')
  }
  if (isSet(body.top_logprobs)) {
    int(body, 'top_logprobs', 0, 20)
    refuse('top_logprobs', 'logprobs')
  }
}

/**
 * Validates `body` for `kind` and returns the backend request. `max_completion_tokens` wins over
 * `max_tokens`; either is capped at `limits.maxTokensCap`, which is also the default. The
 * returned body carries the effective max_tokens so upstream backends enforce it too.
 */
export function validateRequest(kind: InferenceKind, body: Record<string, unknown>, requestId: string, limits: ValidateLimits): InferenceRequest {
  if (typeof body.model !== 'string' || body.model.length === 0) throw new InvalidRequestError("'model' is required and must be a string", 'model')
  if (body.model !== limits.modelId) throw new ModelNotFoundError(body.model)
  const n = int(body, 'n', 1, 1)
  void n
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw new InvalidRequestError("'stream' must be a boolean", 'stream')
  if (body.stream_options !== undefined && body.stream_options !== null && typeof body.stream_options !== 'object') {
    throw new InvalidRequestError("'stream_options' must be an object", 'stream_options')
  }
  const maxCompletion = int(body, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER)
  const maxTokensAsked = maxCompletion ?? int(body, 'max_tokens', 1, Number.MAX_SAFE_INTEGER)
  const maxTokens = cappedMaxTokens(maxTokensAsked, limits.maxTokensCap)
  const temperature = num(body, 'temperature', 0, 2)
  const topP = num(body, 'top_p', 0, 1)
  const seed = int(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
  num(body, 'frequency_penalty', -2, 2)
  num(body, 'presence_penalty', -2, 2)
  const stops = stop(body)
  features(kind, body, limits.features ?? new Set())
  const forwarded: Record<string, unknown> = { ...body, max_tokens: maxTokens }
  delete forwarded.max_completion_tokens
  const req: InferenceRequest = {
    kind,
    model: limits.modelId,
    maxTokens,
    temperature,
    topP,
    stop: stops,
    seed,
    body: forwarded,
    requestId,
  }
  if (kind === 'chat') req.messages = messages(body)
  else req.prompt = prompt(body)
  return req
}

/** OpenAI's limit on inputs per embeddings request. */
export const MAX_EMBEDDING_INPUTS = 2048
export const TRANSCRIPTION_FORMATS = ['json', 'text', 'verbose_json'] as const
export type TranscriptionFormat = (typeof TRANSCRIPTION_FORMATS)[number]

function isTokenArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === 'number' && Number.isSafeInteger(t) && t >= 0)
}

/** Validates an embeddings body: `input` as a string, strings, a token array or token arrays; `encoding_format`; `dimensions`. */
export function validateEmbeddingRequest(
  body: Record<string, unknown>,
  requestId: string,
  limits: { modelId: string },
): { req: EmbeddingRequest; encoding: 'float' | 'base64' } {
  if (typeof body.model !== 'string' || body.model.length === 0) throw new InvalidRequestError("'model' is required and must be a string", 'model')
  if (body.model !== limits.modelId) throw new ModelNotFoundError(body.model)
  const raw = body.input
  let input: Array<string | number[]>
  if (typeof raw === 'string') input = [raw]
  else if (isTokenArray(raw)) input = [raw]
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => typeof x === 'string')) input = raw as string[]
  else if (Array.isArray(raw) && raw.length > 0 && raw.every(isTokenArray)) input = raw as number[][]
  else throw new InvalidRequestError("'input' must be a string, an array of strings, an array of token ids, or an array of token-id arrays (none empty)", 'input')
  if (input.length > MAX_EMBEDDING_INPUTS) throw new InvalidRequestError(`'input' may hold at most ${MAX_EMBEDDING_INPUTS} items`, 'input')
  input.forEach((x, i) => {
    if (x.length === 0) throw new InvalidRequestError(`'input[${i}]' is empty`, 'input')
  })
  const enc = body.encoding_format ?? 'float'
  if (enc !== 'float' && enc !== 'base64') throw new InvalidRequestError("'encoding_format' must be 'float' or 'base64'", 'encoding_format')
  const dimensions = int(body, 'dimensions', 1, 1 << 16)
  if (body.user !== undefined && typeof body.user !== 'string') throw new InvalidRequestError("'user' must be a string", 'user')
  return { req: { model: limits.modelId, input, dimensions, body, requestId }, encoding: enc }
}

/** A transcription form, checked: the audio file and the options (the audio itself is probed later). */
export interface TranscriptionForm {
  file: File
  responseFormat: TranscriptionFormat
  language?: string
  prompt?: string
  temperature?: number
}

function formString(form: FormData, key: string): string | undefined {
  const v = form.get(key)
  if (v === null) return undefined
  if (typeof v !== 'string') throw new InvalidRequestError(`'${key}' must be a text field`, key)
  return v
}

/** Validates the multipart fields of /v1/audio/transcriptions (OpenAI's names). */
export function validateTranscriptionForm(form: FormData, limits: { modelId: string }): TranscriptionForm {
  const model = formString(form, 'model')
  if (!model) throw new InvalidRequestError("'model' is required", 'model')
  if (model !== limits.modelId) throw new ModelNotFoundError(model)
  const file = form.get('file')
  if (file === null || typeof file === 'string') throw new InvalidRequestError("'file' is required and must be an uploaded file", 'file')
  if (file.size === 0) throw new InvalidRequestError("'file' is empty", 'file')
  const fmt = formString(form, 'response_format') ?? 'json'
  if (!(TRANSCRIPTION_FORMATS as readonly string[]).includes(fmt)) {
    throw new InvalidRequestError(`'response_format' must be one of ${TRANSCRIPTION_FORMATS.join(', ')}`, 'response_format')
  }
  const language = formString(form, 'language') || undefined
  if (language !== undefined && !/^[a-zA-Z]{2,3}$/.test(language)) throw new InvalidRequestError("'language' must be an ISO-639-1 code such as 'en'", 'language')
  const t = formString(form, 'temperature')
  let temperature: number | undefined
  if (t !== undefined && t !== '') {
    temperature = Number(t)
    if (!Number.isFinite(temperature) || temperature < 0 || temperature > 1) throw new InvalidRequestError("'temperature' must be a number between 0 and 1", 'temperature')
  }
  return { file, responseFormat: fmt as TranscriptionFormat, language, prompt: formString(form, 'prompt'), temperature }
}

/**
 * The completion tokens an OpenAI body asks for, as validateRequest reads them: `max_completion_tokens`
 * when set, else `max_tokens`. Undefined when it asks none or the value is not a positive safe integer
 * (validateRequest then refuses the body).
 */
export function askedMaxTokens(body: Record<string, unknown>): number | undefined {
  const v = body.max_completion_tokens ?? body.max_tokens
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined
}

/** What the client node puts in the hop headers for the proxy to route, reserve and bill by: the proxy reads no body. */
export interface HopRouting {
  model: string
  /** The completion tokens the app asked for; undefined when it asked none (then the worker's cap applies). */
  maxTokens?: number
  stream: boolean
}

type HeaderBag = Record<string, string | string[] | undefined>

const MODEL_ID = new RegExp(`^[\\x21-\\x7e]{1,${MAX_MODEL_ID_CHARS}}$`)
/** A header integer: plain decimal digits, at most 15 of them (so it is a safe integer); no sign, exponent, space or hex. */
const HEADER_INT = /^[0-9]{1,15}$/

/** Whether `model` can name a model on the wire (printable ASCII without spaces, at most MAX_MODEL_ID_CHARS). */
export function isWireModelId(model: string): boolean {
  return MODEL_ID.test(model)
}

/**
 * A non-negative integer header, checked like outside input: absent gives `dflt`; anything but plain
 * decimal digits within [min, max] (huge, negative, fractional, exponent, hex, repeated) is a 400 naming `field`.
 */
export function intHeader(v: string | string[] | undefined, dflt: number | undefined, field: string, bounds: { min?: number; max?: number } = {}): number | undefined {
  if (v === undefined) return dflt
  const min = bounds.min ?? 0
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER
  if (typeof v !== 'string' || !HEADER_INT.test(v) || Number(v) < min || Number(v) > max) {
    throw new InvalidRequestError(`'${field}' must be an integer between ${min} and ${max}`, field)
  }
  return Number(v)
}

/**
 * The routing data of an inference request, from the hop headers the client node set: model (required),
 * stream (required, `1` or `0`) and the app's max_tokens (optional). Throws InvalidRequestError (400) on
 * anything missing or malformed. The body is not looked at.
 */
export function parseHopRouting(headers: HeaderBag): HopRouting {
  const model = headers[HEADERS.model]
  if (model === undefined) throw new InvalidRequestError(`'model' is required (header ${HEADERS.model})`, 'model')
  if (typeof model !== 'string' || !MODEL_ID.test(model)) throw new InvalidRequestError(`'model' (header ${HEADERS.model}) must be 1-${MAX_MODEL_ID_CHARS} printable characters without spaces`, 'model')
  const stream = headers[HEADERS.stream]
  if (stream === undefined) throw new InvalidRequestError(`'stream' is required (header ${HEADERS.stream})`, 'stream')
  if (stream !== '1' && stream !== '0') throw new InvalidRequestError(`'stream' (header ${HEADERS.stream}) must be 1 or 0`, 'stream')
  const maxTokens = intHeader(headers[HEADERS.maxTokens], undefined, 'max_tokens', { min: 1 })
  return { model, stream: stream === '1', ...(maxTokens === undefined ? {} : { maxTokens }) }
}

/**
 * At the worker: refuses (400) a body that disagrees with the hop headers the proxy routed and reserved by,
 * so nobody can bill for one request and run another. `maxTokensCap` is the worker's own cap for generating
 * paths (the header must equal the body's ask capped at it, or the cap when the body asks none); omit it
 * on paths that generate nothing. `bodyStream` is false for bodies that cannot stream.
 */
export function checkHopAgreement(headers: HeaderBag, body: { model: unknown; stream: boolean; maxTokens?: number }, maxTokensCap?: number): void {
  const model = headers[HEADERS.model]
  if (typeof model !== 'string' || model !== body.model) {
    throw new InvalidRequestError(`the body's model '${String(body.model).slice(0, 64)}' disagrees with the routed model '${String(model ?? '').slice(0, 64)}' (header ${HEADERS.model})`, 'model')
  }
  const stream = headers[HEADERS.stream]
  if (stream !== (body.stream ? '1' : '0')) {
    throw new InvalidRequestError(`the body's stream (${body.stream}) disagrees with the routed stream '${String(stream ?? '').slice(0, 8)}' (header ${HEADERS.stream})`, 'stream')
  }
  if (maxTokensCap === undefined) return
  const expected = cappedMaxTokens(body.maxTokens, maxTokensCap)
  const reserved = headers[HEADERS.maxTokens]
  if (reserved !== String(expected)) {
    throw new InvalidRequestError(`the body's max_tokens (${expected} after the cap) disagrees with the reserved max_tokens '${String(reserved ?? '').slice(0, 20)}' (header ${HEADERS.maxTokens})`, 'max_tokens')
  }
}
