// The inference seam's public surface: the backend interface, both backends, model resolution and the factory.

export { BackendError } from './types.ts'
export type { ChatMessage, InferenceBackend, InferenceEvent, InferenceKind, InferenceRequest, ModelInfo, RequestFeature, Usage } from './types.ts'
export { createBackend, type BackendConfig, type LlamaBackendConfig, type OpenAIBackendConfig } from './create.ts'
export { LlamaBackend, PLAIN_CHAT_STOP, formatPlainChat, type LlamaBackendOptions } from './llama.ts'
export { OpenAIUpstreamBackend, type OpenAIUpstreamOptions } from './openai.ts'
export {
  resolveModel,
  parseHfSpec,
  modelIdFromFile,
  defaultCacheDir,
  ModelFileNotFoundError,
  InvalidModelSpecError,
  ModelHashMismatchError,
  ModelDownloadError,
  type DownloadProgress,
  type HfSpec,
  type ResolveModelOptions,
  type ResolvedModel,
} from './models.ts'
