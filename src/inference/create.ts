// Builds the configured inference backend from a plain config: resolves and verifies the model, then starts the backend.

import type { Logger } from '../core/log.ts'
import { LlamaBackend } from './llama.ts'
import { resolveModel, type DownloadProgress } from './models.ts'
import { OpenAIUpstreamBackend } from './openai.ts'
import { PocketSphinxBackend } from './pocketsphinx.ts'
import type { Capability, InferenceBackend } from './types.ts'

/** The embedded llama.cpp backend on a GGUF file. */
export interface LlamaBackendConfig {
  kind: 'llama'
  /** A model spec: a file path or hf:owner/repo/file. */
  model: string
  /** Id shown in /v1/models. Default: the file name without .gguf. */
  modelId?: string
  /** CPU threads. Default min(2, cores). */
  threads?: number
  /** Context window per sequence, in tokens. Default 2048 or the model's training context if smaller. */
  contextSize?: number
  /** Requests generating at once. Default 2. */
  parallel?: number
  /** GPU use: false (CPU only) or 'auto' (whatever GPU node-llama-cpp finds). Default false. */
  gpu?: false | 'auto'
  /** Required SHA-256 of the weights. Default: the known-model table or the hub's ETag. */
  expectedSha256?: string
  /** Also serve /v1/embeddings (node-llama-cpp's embedding context). Default true. */
  embeddings?: boolean
  /** The model's vectors may be shortened with `dimensions` (Matryoshka-trained). Default false. */
  matryoshka?: boolean
}

/** An upstream OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama). */
export interface OpenAIBackendConfig {
  kind: 'openai'
  /** The upstream's model name. */
  model: string
  /** Id shown in /v1/models. Default: `model`. */
  modelId?: string
  /** Upstream server root, e.g. http://127.0.0.1:8000. */
  baseUrl: string
  /** Upstream bearer token, read by the caller from the environment or a file. */
  apiKey?: string
  /** Model name sent upstream. Default: `model`. */
  upstreamModel?: string
  /** Time allowed for the upstream's response headers, in ms. Default 60 000. */
  timeoutMs?: number
  /** SHA-256 of the upstream's weights, if known. */
  modelHash?: string
  /** What the upstream model serves. Default ['chat', 'completions']. */
  capabilities?: Capability[]
  /** Send each request's cache scope upstream as `cache_salt` (an upstream with prefix-cache isolation, e.g. vLLM). Default false. */
  cacheSalt?: boolean
}

/** Speech to text with Debian's PocketSphinx (pocketsphinx + pocketsphinx-en-us), offline. */
export interface PocketSphinxBackendConfig {
  kind: 'pocketsphinx'
  /** The model directory, e.g. /usr/share/pocketsphinx/model/en-us. */
  model: string
  /** Id shown in /v1/models. Default: pocketsphinx-<folder name>. */
  modelId?: string
  /** Decoders running at once. Default 2. */
  parallel?: number
}

export type BackendConfig = LlamaBackendConfig | OpenAIBackendConfig | PocketSphinxBackendConfig

export async function createBackend(
  cfg: BackendConfig,
  deps: { log?: Logger; onProgress?: (p: DownloadProgress) => void; signal?: AbortSignal } = {},
): Promise<InferenceBackend> {
  if (cfg.kind === 'openai') {
    if (!cfg.baseUrl) throw new Error("the openai backend needs baseUrl (the upstream server's address)")
    return new OpenAIUpstreamBackend(
      {
        baseUrl: cfg.baseUrl,
        apiKey: cfg.apiKey,
        modelId: cfg.modelId ?? cfg.model,
        upstreamModel: cfg.upstreamModel ?? cfg.model,
        modelHash: cfg.modelHash,
        timeoutMs: cfg.timeoutMs,
        capabilities: cfg.capabilities,
        cacheSalt: cfg.cacheSalt,
      },
      { log: deps.log },
    )
  }
  if (cfg.kind === 'pocketsphinx') return PocketSphinxBackend.create({ modelDir: cfg.model, modelId: cfg.modelId, parallel: cfg.parallel }, { log: deps.log })
  if (cfg.kind !== 'llama') throw new Error(`unknown backend kind '${String((cfg as { kind: unknown }).kind)}' (expected llama, openai or pocketsphinx)`)
  const resolved = await resolveModel(cfg.model, { onProgress: deps.onProgress, signal: deps.signal, log: deps.log, expectedSha256: cfg.expectedSha256 })
  return LlamaBackend.create(
    {
      modelPath: resolved.path,
      modelId: cfg.modelId ?? resolved.id,
      modelHash: resolved.sha256,
      threads: cfg.threads,
      contextSize: cfg.contextSize,
      parallel: cfg.parallel,
      gpu: cfg.gpu,
      embeddings: cfg.embeddings,
      matryoshka: cfg.matryoshka,
    },
    { log: deps.log },
  )
}
