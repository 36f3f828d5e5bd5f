// The inference seam: one interface for every backend (embedded llama.cpp, upstream OpenAI-compatible servers).

export type InferenceKind = 'chat' | 'completion'

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'developer' | 'tool'
  content: string
  name?: string
}

/**
 * A request the worker already validated. `maxTokens` is enforced: a backend must never
 * produce more completion tokens than this.
 */
export interface InferenceRequest {
  kind: InferenceKind
  /** The model id as shown in /v1/models. */
  model: string
  /** Chat only. Message contents are plain text (array content parts already joined). */
  messages?: ChatMessage[]
  /** Completion only. */
  prompt?: string
  maxTokens: number
  /** Default 1. 0 means greedy (deterministic). */
  temperature?: number
  topP?: number
  stop?: string[]
  seed?: number
  /** The app's validated OpenAI body (control fields removed, max_tokens set); upstream backends forward it. */
  body: Record<string, unknown>
  /** Unique per request; used as the completion id suffix. */
  requestId: string
}

/** Exact token usage. `cachedTokens` ⊆ prompt, `reasoningTokens` ⊆ completion. */
export interface Usage {
  promptTokens: number
  cachedTokens: number
  completionTokens: number
  reasoningTokens: number
}

/**
 * - `chunk`: the JSON text of one OpenAI stream chunk (`chat.completion.chunk` or
 *   `text_completion`), without usage. Passed through as an SSE `data:` line unchanged.
 * - `usage`: the final, exact usage. Every run ends with exactly one, also when it was
 *   aborted (then it counts what was produced; `estimated` is set if the backend could not
 *   know exactly).
 */
export type InferenceEvent =
  | { type: 'chunk'; json: string }
  | { type: 'usage'; usage: Usage; finishReason: string; estimated?: boolean }

export interface ModelInfo {
  /** Stable id shown in /v1/models and matched against the request's `model`. */
  id: string
  /** SHA-256 of the weights, lowercase hex ('' if unknown, e.g. for remote upstreams). */
  hash: string
  contextSize?: number
}

/**
 * OpenAI request fields beyond text and sampling that a backend may honour. The worker refuses a
 * request using one its backend does not honour with a 400 naming the field; it never ignores it.
 */
export type RequestFeature = 'tools' | 'response_format' | 'logit_bias' | 'logprobs'

export interface InferenceBackend {
  readonly model: ModelInfo
  /** The optional request features this backend honours. Default: none. */
  readonly features?: ReadonlySet<RequestFeature>
  /**
   * Streams chunks then one usage event. Aborting `signal` stops generation promptly and
   * still ends with a usage event. Throws BackendError when the backend fails before any chunk.
   */
  run(req: InferenceRequest, opts: { signal: AbortSignal }): AsyncIterable<InferenceEvent>
  close(): Promise<void>
}

/** The backend failed (upstream down, model crashed). `status` is the HTTP status to report. */
export class BackendError extends Error {
  readonly name = 'BackendError'
  constructor(message: string, readonly status = 502) {
    super(message)
  }
}
