// The inference seam's public surface: the backend interface, both backends, model resolution and the factory.

export { BackendError, DEFAULT_CAPABILITIES } from './types.ts'
export type { Capability, EmbeddingRequest, EmbeddingResult, TranscriptionRequest, TranscriptionResult, TranscriptSegment, ChatMessage, InferenceBackend, InferenceEvent, InferenceKind, InferenceRequest, ModelInfo, RequestFeature, Usage } from './types.ts'
export { createBackend, type BackendConfig, type LlamaBackendConfig, type OpenAIBackendConfig, type PocketSphinxBackendConfig } from './create.ts'
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
export { probeAudio, sniffAudioFormat, wavDurationSec, type AudioFormat, type AudioInfo } from './audio.ts'
export { normalize, vectorToBase64 } from './vectors.ts'
export { PocketSphinxBackend, DEFAULT_POCKETSPHINX_MODEL_DIR, hashModelDir, pocketSphinxAvailable, parsePocketSphinxOutput, type PocketSphinxOptions } from './pocketsphinx.ts'
