// The inference seam: one interface for every backend (embedded llama.cpp, upstream OpenAI-compatible servers).
import type { Usage } from '../core/usage.ts'

export type InferenceKind = 'chat' | 'completion'

/** What a backend's model can do; each maps to one OpenAI endpoint. */
export type Capability = 'chat' | 'completions' | 'embeddings' | 'transcriptions'

/** What a backend serves when its model does not say: text generation. */
export const DEFAULT_CAPABILITIES: readonly Capability[] = ['chat', 'completions']

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
  /**
   * The request's cache scope (hex; docs/e2ee.md): a backend reuses cached prompt state (a KV cache prefix) only
   * between requests of the same scope, so no app can learn from `cached_tokens` or timing what another sent.
   * Absent: the scope of every request without one.
   */
  cacheScope?: string
}

/** Exact usage (core/usage.ts): the one usage type of every layer. */
export type { Usage }

/** An embeddings request the worker validated: each input is text or already-tokenized text. */
export interface EmbeddingRequest {
  model: string
  input: Array<string | number[]>
  /** Requested vector length; absent means the model's own. */
  dimensions?: number
  /** The app's validated OpenAI body; upstream backends forward it. */
  body: Record<string, unknown>
  requestId: string
}

export interface EmbeddingResult {
  /** One vector per input, in input order, each L2-normalized. */
  vectors: number[][]
  /** Tokens read, over all inputs. */
  promptTokens: number
}

/** A transcription request the worker validated; the audio is whole and its duration known. */
export interface TranscriptionRequest {
  model: string
  audio: Uint8Array
  /** The uploaded file's name (its extension hints the format to upstreams). */
  filename: string
  /** Detected container format, e.g. 'wav', 'flac', 'ogg', 'mp3'. */
  format: string
  durationSec: number
  /** ISO-639-1 code, if the app named one. */
  language?: string
  prompt?: string
  temperature?: number
  requestId: string
}

export interface TranscriptSegment {
  id: number
  /** Seconds from the start of the audio. */
  start: number
  end: number
  text: string
}

export interface TranscriptionResult {
  text: string
  /** ISO-639-1 code of the transcript's language. */
  language: string
  segments: TranscriptSegment[]
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
  /** The endpoints this model serves. Default DEFAULT_CAPABILITIES. */
  capabilities?: readonly Capability[]
  /** Embeddings: the vector length the model produces. */
  embeddingDimensions?: number
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
  /** Present when the model serves 'embeddings'. Throws BackendError (400 for bad input). */
  embed?(req: EmbeddingRequest, opts: { signal: AbortSignal }): Promise<EmbeddingResult>
  /** Present when the model serves 'transcriptions'. Throws BackendError (400 for bad input). */
  transcribe?(req: TranscriptionRequest, opts: { signal: AbortSignal }): Promise<TranscriptionResult>
  close(): Promise<void>
}

/** The backend failed (upstream down, model crashed). `status` is the HTTP status to report. */
export class BackendError extends Error {
  readonly name = 'BackendError'
  constructor(message: string, readonly status = 502) {
    super(message)
  }
}
