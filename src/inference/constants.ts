// Named defaults for the inference backends and model resolution, with units in the names.

/** Context window per sequence when none is configured (capped at the model's training context). */
export const DEFAULT_CONTEXT_SIZE_TOKENS = 2048

/** Context sequences per llama backend: how many requests generate at once; more wait in a queue. */
export const DEFAULT_PARALLEL_SEQUENCES = 2

/**
 * Upper bound for the default CPU thread count. node-llama-cpp's own default oversubscribes
 * small machines and is 20-50x slower on 2 cores, so we always pass an explicit count.
 */
export const DEFAULT_MAX_THREADS = 2

/**
 * A byte-fallback tokenizer can split one UTF-8 character over up to 4 tokens; we hold back
 * at most this many tokens while the decoded text still ends in a replacement character.
 */
export const MAX_UTF8_HOLD_TOKENS = 4

/** Committed tokens passed to the detokenizer as context so word-leading spaces come out right. */
export const DETOKENIZE_CONTEXT_TOKENS = 4

/** How long the openai backend waits for the upstream's response headers. */
export const UPSTREAM_HEADERS_TIMEOUT_MS = 60_000

/** How long we wait for the upstream to end its response after `[DONE]`, so the connection can be reused. */
export const UPSTREAM_DRAIN_AFTER_DONE_MS = 1_000

/** Upper bound on an upstream error body we read to build the error message. */
export const UPSTREAM_ERROR_BODY_MAX_BYTES = 16 * 1024

/** Rough characters per token, only for usage estimates when an upstream reports none. */
export const ESTIMATE_CHARS_PER_TOKEN = 4

/** Default Hugging Face hub for `hf:` model specs. */
export const DEFAULT_HUB_URL = 'https://huggingface.co'

/** Redirect hops followed when downloading from the hub (hub -> CDN is usually one). */
export const MAX_DOWNLOAD_REDIRECTS = 5

/** Minimum interval between progress lines in a log (non-TTY stderr). */
export const PROGRESS_LOG_INTERVAL_MS = 5_000

/** Minimum interval between redraws of the TTY progress bar. */
export const PROGRESS_BAR_INTERVAL_MS = 100

/**
 * Models whose weights we know, keyed by `owner/repo/file`: a download or a local copy of one
 * of these must hash to this SHA-256 (lowercase hex).
 */
export const KNOWN_MODEL_SHA256: Readonly<Record<string, string>> = {
  'ggml-org/tiny-llamas/stories260K.gguf': '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d',
}
