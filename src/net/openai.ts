// OpenAI response shapes shared by the nodes: the usage object (with Cocoon's cost), the final usage chunk, whole non-streamed answers.
import type { InferenceKind, Usage } from '../inference/index.ts'

/** What the request cost: priced by the proxy, sent as a trailer, written into the usage object by the client node. */
export interface UsageCost {
  /** nanoTON charged to the client. */
  nano: bigint
  /** Adjusted tokens (tokens × coefficient × multipliers), the unit the contracts count. */
  adjustedTokens: bigint
  coefficient: number
  pricePerTokenNano: bigint
  /** The answer's receipt id (GET /v1/receipts/{id} on the client node). */
  receiptId?: string
}

/** UsageCost as the proxy sends it to the client node (HEADERS.cost trailer): JSON, amounts as decimal strings. */
export function costTrailer(c: UsageCost): string {
  return JSON.stringify({ nano: c.nano.toString(), adjusted_tokens: c.adjustedTokens.toString(), coefficient: c.coefficient, price_per_token_nano: c.pricePerTokenNano.toString() })
}

/** Reads a HEADERS.cost trailer (outside input): undefined unless every field is a non-negative integer. */
export function parseCostTrailer(v: unknown): UsageCost | undefined {
  if (typeof v !== 'string' || v.length > 1024) return undefined
  try {
    const j = JSON.parse(v) as Record<string, unknown>
    const big = (x: unknown) => (typeof x === 'string' && /^[0-9]{1,30}$/.test(x) ? BigInt(x) : undefined)
    const nano = big(j.nano)
    const adjustedTokens = big(j.adjusted_tokens)
    const pricePerTokenNano = big(j.price_per_token_nano)
    const coefficient = j.coefficient
    if (nano === undefined || adjustedTokens === undefined || pricePerTokenNano === undefined) return undefined
    if (typeof coefficient !== 'number' || !Number.isSafeInteger(coefficient) || coefficient < 0) return undefined
    return { nano, adjustedTokens, coefficient, pricePerTokenNano }
  } catch {
    return undefined
  }
}

/** A whole (non-streamed) JSON answer with its `usage` replaced by the billed one, with the cost; other bodies (plain text) as they are. */
export function withBilledUsage(body: Buffer, u: Usage, cost: UsageCost, object: string): Buffer {
  try {
    const j = JSON.parse(body.toString('utf8')) as Record<string, unknown>
    if (j === null || typeof j !== 'object' || Array.isArray(j)) return body
    j.usage = openaiUsage(u, cost, object)
    return Buffer.from(JSON.stringify(j))
  } catch {
    return body
  }
}

/** The answer object types of the non-generating endpoints, as the worker names them in its usage record. */
export const EMBEDDING_OBJECT = 'list'
export const TRANSCRIPTION_OBJECT = 'transcription'

/**
 * The OpenAI usage object for an answer of type `object`: tokens for generation, prompt tokens
 * for embeddings, `{type: 'duration', seconds}` for transcriptions; with the cost when billed.
 */
export function openaiUsage(u: Usage, cost?: UsageCost, object?: string): Record<string, unknown> {
  const usage: Record<string, unknown> =
    object === TRANSCRIPTION_OBJECT
      ? { type: 'duration', seconds: u.audioSeconds ?? 0 }
      : object === EMBEDDING_OBJECT
        ? { prompt_tokens: u.promptTokens, total_tokens: u.promptTokens }
        : {
            prompt_tokens: u.promptTokens,
            completion_tokens: u.completionTokens,
            total_tokens: u.promptTokens + u.completionTokens,
            prompt_tokens_details: { cached_tokens: u.cachedTokens },
            completion_tokens_details: { reasoning_tokens: u.reasoningTokens },
          }
  if (cost) {
    // nanoTON as a JSON number: exact up to 9e15 nano (9 million TON) per request.
    usage.cost = Number(cost.nano)
    usage.cost_details = {
      currency: 'nanoTON',
      adjusted_tokens: Number(cost.adjustedTokens),
      coefficient: cost.coefficient,
      price_per_token_nano: Number(cost.pricePerTokenNano),
    }
    if (cost.receiptId) usage.receipt_id = cost.receiptId
  }
  return usage
}

/** The id and object type the worker uses for a request's answer. */
export function answerIds(kind: InferenceKind, requestId: string): { id: string; chunkObject: string; object: string } {
  return kind === 'chat'
    ? { id: `chatcmpl-${requestId}`, chunkObject: 'chat.completion.chunk', object: 'chat.completion' }
    : { id: `cmpl-${requestId}`, chunkObject: 'text_completion', object: 'text_completion' }
}

/** Identifies the answer a usage chunk belongs to. */
export interface AnswerMeta {
  id: string
  /** The stream chunk object type: 'chat.completion.chunk' or 'text_completion'. */
  object: string
  model: string
  created: number
}

/** The last stream chunk, as with OpenAI's `stream_options.include_usage`: no choices, just usage. */
export function usageChunk(meta: AnswerMeta, u: Usage, cost?: UsageCost): string {
  return JSON.stringify({ id: meta.id, object: meta.object, created: meta.created, model: meta.model, choices: [], usage: openaiUsage(u, cost) })
}

interface ToolCallAcc {
  id?: string
  type: string
  function: { name: string; arguments: string }
}

interface ChoiceAcc {
  text: string
  reasoning: string
  role: string
  finishReason: string | null
  /** Tool calls by their index, with arguments concatenated across chunks (upstream backends that honour `tools`). */
  toolCalls?: Map<number, ToolCallAcc>
  /** Log probabilities concatenated across chunks (upstream backends that honour `logprobs`). */
  logprobs?: Record<string, unknown[]>
}

function appendLogprobs(acc: ChoiceAcc, lp: unknown): void {
  if (!lp || typeof lp !== 'object') return
  acc.logprobs ??= {}
  for (const [k, v] of Object.entries(lp as Record<string, unknown>)) if (Array.isArray(v)) (acc.logprobs[k] ??= []).push(...v)
}

/** Folds stream chunks into one non-streamed answer. */
export class AnswerAggregator {
  private readonly choices = new Map<number, ChoiceAcc>()
  private id: string | undefined
  private created: number | undefined

  constructor(private readonly kind: InferenceKind) {}

  add(json: string): void {
    const c = JSON.parse(json) as { id?: string; created?: number; choices?: Array<Record<string, any>> }
    this.id ??= c.id
    this.created ??= c.created
    for (const ch of c.choices ?? []) {
      const idx = typeof ch.index === 'number' ? ch.index : 0
      let acc = this.choices.get(idx)
      if (!acc) this.choices.set(idx, (acc = { text: '', reasoning: '', role: 'assistant', finishReason: null }))
      if (this.kind === 'chat') {
        const d = ch.delta ?? {}
        if (typeof d.role === 'string') acc.role = d.role
        if (typeof d.content === 'string') acc.text += d.content
        if (typeof d.reasoning_content === 'string') acc.reasoning += d.reasoning_content
        if (Array.isArray(d.tool_calls)) {
          acc.toolCalls ??= new Map()
          for (const tc of d.tool_calls as Array<Record<string, any>>) {
            const i = typeof tc.index === 'number' ? tc.index : acc.toolCalls.size
            let t = acc.toolCalls.get(i)
            if (!t) acc.toolCalls.set(i, (t = { type: 'function', function: { name: '', arguments: '' } }))
            if (typeof tc.id === 'string') t.id = tc.id
            if (typeof tc.type === 'string') t.type = tc.type
            if (typeof tc.function?.name === 'string') t.function.name += tc.function.name
            if (typeof tc.function?.arguments === 'string') t.function.arguments += tc.function.arguments
          }
        }
      } else if (typeof ch.text === 'string') {
        acc.text += ch.text
      }
      appendLogprobs(acc, ch.logprobs)
      if (ch.finish_reason) acc.finishReason = ch.finish_reason
    }
  }

  build(requestId: string, model: string, created: number, usage: Usage, finishReason: string): Record<string, unknown> {
    const ids = answerIds(this.kind, requestId)
    const list = [...this.choices.entries()].sort((a, b) => a[0] - b[0])
    if (list.length === 0) list.push([0, { text: '', reasoning: '', role: 'assistant', finishReason: null }])
    const choices = list.map(([index, acc]) => {
      const fr = acc.finishReason ?? finishReason
      const logprobs = acc.logprobs ?? null
      if (this.kind === 'chat') {
        const message: Record<string, unknown> = { role: acc.role, content: acc.toolCalls && !acc.text ? null : acc.text }
        if (acc.reasoning) message.reasoning_content = acc.reasoning
        if (acc.toolCalls) message.tool_calls = [...acc.toolCalls.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t)
        return { index, message, logprobs, finish_reason: fr }
      }
      return { index, text: acc.text, logprobs, finish_reason: fr }
    })
    return { id: this.id ?? ids.id, object: ids.object, created: this.created ?? created, model, choices, usage: openaiUsage(usage) }
  }
}

/** The answer text a chunk adds, as the app sees it: chat deltas' content, or completions' text (all choices, in order). */
export function chunkText(json: string): string {
  let c: { choices?: Array<Record<string, any>> }
  try {
    c = JSON.parse(json)
  } catch {
    return ''
  }
  let out = ''
  for (const ch of c.choices ?? []) {
    if (typeof ch.delta?.content === 'string') out += ch.delta.content
    else if (typeof ch.text === 'string') out += ch.text
  }
  return out
}

/**
 * The text of a whole (non-streamed) answer, as receipts hash it: each choice's message content or
 * text, by index; a transcription's text; an embeddings list's vectors.
 */
export function answerText(json: string | Record<string, any>): string {
  let j: Record<string, any>
  try {
    j = typeof json === 'string' ? JSON.parse(json) : json
  } catch {
    // Not JSON: a plain-text answer (a transcription with response_format text) is its own text.
    return typeof json === 'string' ? json : ''
  }
  if (j === null || typeof j !== 'object') return ''
  // A transcription (json, verbose_json): its text. Embeddings: each vector as sent, one per line.
  if (!Array.isArray(j.choices) && typeof j.text === 'string') return j.text
  if (j.object === 'list' && Array.isArray(j.data)) {
    return j.data.map((d: { embedding?: unknown }) => (typeof d?.embedding === 'string' ? d.embedding : JSON.stringify(d?.embedding ?? null))).join('\n')
  }
  const choices = Array.isArray(j.choices) ? [...j.choices].sort((a, b) => (a.index ?? 0) - (b.index ?? 0)) : []
  let out = ''
  for (const ch of choices) {
    if (typeof ch.message?.content === 'string') out += ch.message.content
    else if (typeof ch.text === 'string') out += ch.text
  }
  return out
}

/** Collects the answer text from SSE bytes as they pass, across arbitrary chunk boundaries. */
export class SseText {
  private pending = ''
  text = ''

  push(chunk: Buffer | string): void {
    this.pending += chunk.toString()
    let nl: number
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl).replace(/\r$/, '')
      this.pending = this.pending.slice(nl + 1)
      if (line.startsWith('data:')) {
        const data = line.slice(5).trim()
        if (data && data !== '[DONE]') this.text += chunkText(data)
      }
    }
  }
}
