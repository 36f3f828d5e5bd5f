// Builds the configured inference backend from a plain config: resolves and verifies the model, then starts the backend.

import type { Logger } from '../core/log.ts'
import { LlamaBackend } from './llama.ts'
import { resolveModel, type DownloadProgress } from './models.ts'
import { OpenAIUpstreamBackend } from './openai.ts'
import { PocketSphinxBackend } from './pocketsphinx.ts'
import type { Capability, InferenceBackend } from './types.ts'

export interface BackendConfig {
  kind: 'llama' | 'openai' | 'pocketsphinx'
  /**
   * llama: a model spec (file path or hf:owner/repo/file). openai: the upstream's model name.
   * pocketsphinx: the model directory (Debian's is /usr/share/pocketsphinx/model/en-us).
   */
  model: string
  /** Id shown in /v1/models. Default: llama, the file name without .gguf; openai, `model`. */
  modelId?: string
  /** llama: CPU threads. Default min(2, cores). */
  threads?: number
  /** llama: context window per sequence, in tokens. Default 2048 or the model's training context if smaller. */
  contextSize?: number
  /** llama: requests generating at once. Default 2. */
  parallel?: number
  /** llama: GPU use. Default false (CPU). */
  gpu?: false | 'auto'
  /** openai: upstream server root, e.g. http://127.0.0.1:8000. Required for openai. */
  baseUrl?: string
  /** openai: upstream bearer token, read by the caller from the environment or a file. */
  apiKey?: string
  /** openai: model name sent upstream. Default: `model`. */
  upstreamModel?: string
  /** openai: time allowed for the upstream's response headers, in ms. Default 60 000. */
  timeoutMs?: number
  /** openai: SHA-256 of the upstream's weights, if known. */
  modelHash?: string
  /** llama: required SHA-256 of the weights. Default: known-model table or the hub's ETag. */
  expectedSha256?: string
  /** llama: also serve /v1/embeddings. Default true. */
  embeddings?: boolean
  /** llama: the model's vectors may be shortened with `dimensions` (Matryoshka-trained). Default false. */
  matryoshka?: boolean
  /** openai: what the upstream model serves. Default ['chat', 'completions']. */
  capabilities?: Capability[]
}

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
      },
      { log: deps.log },
    )
  }
  if (cfg.kind === 'pocketsphinx') return PocketSphinxBackend.create({ modelDir: cfg.model, modelId: cfg.modelId, parallel: cfg.parallel }, { log: deps.log })
  if (cfg.kind !== 'llama') throw new Error(`unknown backend kind '${String(cfg.kind)}' (expected llama, openai or pocketsphinx)`)
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
