// The wire protocol between client, proxy and worker: one source of truth for versions, paths, headers and limits.
//
// Every hop is HTTP/2 over attested mutual TLS 1.3. The client node and the worker node both
// speak to the proxy; the worker dials out, and the proxy then acts as the HTTP/2 client on
// that socket. Request bodies are the app's OpenAI JSON minus the client's control fields.
// The client node parses the app's body once and puts everything a later hop routes, reserves
// or bills by into the headers below (model, max_tokens, stream, …): the proxy never parses a
// request or answer body, and the worker checks that the body it runs agrees with the headers.
// Answers are OpenAI JSON or SSE, relayed unchanged by the proxy; the worker's signed usage and
// the proxy's charge, cost and receipt travel as HTTP/2 trailers, and the client node writes
// the final usage (with its cost) into the answer it gives the app.
import type { Capability } from '../inference/index.ts'

/** Bumped on any incompatible change to what is below. */
export const PROTOCOL_VERSION = 4

export const PATHS = {
  chat: '/v1/chat/completions',
  completions: '/v1/completions',
  embeddings: '/v1/embeddings',
  /** Multipart (file, model, …), not JSON; the client node names the model in HEADERS.model. */
  transcriptions: '/v1/audio/transcriptions',
  models: '/v1/models',
  /** Proxy -> worker: what the worker serves. */
  workerInfo: '/cocoon/v1/worker',
  /** Proxy -> worker: stop the request named in x-cocoon-request-id; its answer then ends with usage. */
  cancel: '/cocoon/v1/cancel',
  /** Client -> proxy: close my channel; answers a signed final-charge voucher (FinalCharge). */
  close: '/cocoon/v1/close',
  /** Proxy -> worker: what the worker has earned so far (WorkerStatement), with the newest payout voucher. */
  statement: '/cocoon/v1/statement',
  /** Client -> proxy: the last commit of the receipt log and Merkle proofs of the client's receipts (ReceiptProofsRequest/Reply). */
  receiptProofs: '/cocoon/v1/receipts/proofs',
  /** Client -> proxy: `GET …?model=M`, the certificates of the workers serving M (WorkerCandidates), for end-to-end encryption. */
  workers: '/cocoon/v1/workers',
} as const

export const INFERENCE_PATHS: ReadonlySet<string> = new Set([PATHS.chat, PATHS.completions, PATHS.embeddings, PATHS.transcriptions])

/** The endpoint each model capability is served at (what /v1/models lists per model). */
export const CAPABILITY_PATHS: Readonly<Record<Capability, string>> = {
  chat: PATHS.chat,
  completions: PATHS.completions,
  embeddings: PATHS.embeddings,
  transcriptions: PATHS.transcriptions,
}

/** Lower-case, as HTTP/2 requires. */
export const HEADERS = {
  protocol: 'x-cocoon-protocol',
  requestId: 'x-cocoon-request-id',
  /** Proxy -> worker: the proxy's own id for one forward of a request. The worker keys running requests and cancels by it, so two clients' equal request ids never meet. */
  exchange: 'x-cocoon-exchange-id',
  /** Client -> proxy: the highest worker coefficient the app accepts (1000 = 1.0x). */
  maxCoefficient: 'x-cocoon-max-coefficient',
  /** Client -> proxy -> worker: time left for the request, in ms. Each hop shrinks it. */
  timeoutMs: 'x-cocoon-timeout-ms',
  /** Proxy -> worker: the coefficient snapshotted for this request. */
  coefficient: 'x-cocoon-coefficient',
  /**
   * Client -> proxy: the completion tokens the app asked for (`max_completion_tokens`, else `max_tokens`), a
   * positive integer; absent when it asked none. Proxy -> worker: the most the proxy reserved for, that ask capped
   * at the worker's max_tokens cap (the cap when absent). The worker never produces more, and refuses a body whose
   * own max (capped the same way) is another number. 0 on paths that generate nothing.
   */
  maxTokens: 'x-cocoon-max-tokens',
  /** Client -> proxy -> worker: `1` when the app asked for a stream (SSE), else `0`. The worker refuses a body that disagrees. */
  stream: 'x-cocoon-stream',
  /** Proxy -> client trailer: the client's cumulative charge (ChargeStatement JSON). */
  charged: 'x-cocoon-charged',
  /** Worker -> proxy trailer: usage JSON (UsageRecord); proxy -> client trailer: the same record, passed on once billed. */
  usage: 'x-cocoon-usage',
  /** Worker -> proxy (and proxy -> client) trailer: base64 Ed25519 signature of usageSigningPayload() by the worker's attested key. */
  usageSig: 'x-cocoon-usage-sig',
  /** Proxy -> client trailer: what the answer cost (costTrailer() JSON); the client node writes it into the answer's usage. */
  cost: 'x-cocoon-cost',
  /** Client -> proxy -> worker: the model of every inference request; the proxy routes on it, the worker refuses a body naming another. */
  model: 'x-cocoon-model',
  /** Proxy -> worker: the most audio seconds the proxy reserved for; longer audio is refused. */
  maxAudioSeconds: 'x-cocoon-max-audio-seconds',
  /** Proxy -> client: which worker served (its certificate key, hex prefix), for debugging. */
  worker: 'x-cocoon-worker',
  /** Client -> proxy: keyed hash of the prompt prefix, for prefix-cache affinity (docs/routing.md); 32 hex chars. */
  prefixKey: 'x-cocoon-prefix-key',
  /**
   * Client -> proxy -> worker, plaintext requests only: the request's cache scope (16 bytes, hex), the same for every
   * request of one app of one client node; the worker reuses cached prompt state only within a scope. An encrypted
   * request carries it inside its envelope instead (docs/e2ee.md), where the proxy cannot see it.
   */
  cacheScope: 'x-cocoon-cache-scope',
  /** Client -> proxy -> worker: the request's salt (32 bytes, hex) that keys its receipt's hashes. Never logged. */
  salt: 'x-cocoon-salt',
  /** Proxy -> worker: the prices the receipt states (ReceiptPrices, comma-separated). */
  price: 'x-cocoon-price',
  /** Worker -> proxy and proxy -> client trailer: the signed receipt, base64 BoC. */
  receipt: 'x-cocoon-receipt',
  /** Proxy -> client trailer: the receipt's number in the proxy's log. */
  receiptIndex: 'x-cocoon-receipt-index',
  /** Proxy -> client trailer: the receipt signer's certificate, base64 DER. */
  receiptCert: 'x-cocoon-receipt-cert',
  /** Client node -> app response header: the answer's receipt id (GET /v1/receipts/{id}). */
  receiptId: 'x-cocoon-receipt-id',
  /** Client -> proxy -> worker: an encrypted request's routing data, canonical JSON (E2eeRoute); the AAD of its body and keys. */
  e2eeRoute: 'x-cocoon-e2ee-route',
  /** Client -> proxy: the content key wrapped for each candidate (`recipientHex=base64url,…`). Proxy -> worker: only the chosen one's. */
  e2eeKeys: 'x-cocoon-e2ee-keys',
  /** Client node -> app response header, and proxy -> client: `on` when the answer was end-to-end encrypted, `off` when the proxy saw plaintext. */
  e2ee: 'x-cocoon-e2ee',
} as const

/** Control fields the client node removes from the app's body before forwarding. */
export const CLIENT_CONTROL_FIELDS = ['max_coefficient', 'timeout', 'request_id'] as const

/** Defaults, units in the names. */
export const DEFAULT_MAX_COEFFICIENT = 4000
export const DEFAULT_TIMEOUT_SEC = 120
export const MAX_TIMEOUT_SEC = 3600
export const MAX_BODY_BYTES = 8 * 1024 * 1024
/** Largest transcription upload (multipart body), as OpenAI's: 25 MiB. Larger gets a 413. */
export const MAX_AUDIO_BODY_BYTES = 25 * 1024 * 1024
/** Longest audio a transcription may be. */
export const MAX_AUDIO_SECONDS = 3600
/**
 * The proxy reserves for body bytes / this many seconds of audio (capped at MAX_AUDIO_SECONDS),
 * and the worker refuses longer audio: no accepted format packs speech tighter (8 kbit/s Opus is 1000).
 */
export const MIN_AUDIO_BYTES_PER_SECOND = 500
/** Longest request id an app may choose. */
export const MAX_REQUEST_ID_CHARS = 128
/** Longest model id a request may name (it travels in HEADERS.model). */
export const MAX_MODEL_ID_CHARS = 256
/** Each hop keeps this share of the remaining time, so inner timeouts fire first (as the reference). */
export const HOP_TIMEOUT_FACTOR = 0.95
/** After asking a worker to stop, how long the proxy waits for the answer to end with its usage. */
export const CANCEL_GRACE_MS = 5_000
/**
 * Added to the body's byte length to bound the prompt's tokens for the reservation: a text token
 * covers at least one byte, and a chat template adds a bounded number of special tokens.
 */
export const PROMPT_OVERHEAD_TOKENS = 512
/** The most completion tokens a worker makes for one request unless its config says otherwise (`maxTokensCap`). */
export const DEFAULT_MAX_TOKENS_CAP = 1024

/** The max_tokens a worker with cap `cap` generates up to: what the app asked, at most the cap, and the cap when it asked nothing. */
export function cappedMaxTokens(asked: number | undefined, cap: number): number {
  return Math.min(asked ?? cap, cap)
}

/**
 * The most a request can make a worker do, from its endpoint, its body's size and the max_tokens asked, under a
 * worker cap of `maxTokensCap`: the bounds the proxy reserves funds for, and the client node reserves an API key's
 * spend for. Embeddings generate nothing; a transcription is bounded by its audio seconds, from the upload's size.
 */
export function requestBounds(path: string, bodyBytes: number, maxTokensAsked: number | undefined, maxTokensCap: number): { maxPromptTokens: number; maxCompletionTokens: number; maxAudioSeconds: number } {
  if (path === PATHS.transcriptions) return { maxPromptTokens: 0, maxCompletionTokens: 0, maxAudioSeconds: Math.min(MAX_AUDIO_SECONDS, Math.ceil(bodyBytes / MIN_AUDIO_BYTES_PER_SECOND)) }
  const generates = path === PATHS.chat || path === PATHS.completions
  return { maxPromptTokens: bodyBytes + PROMPT_OVERHEAD_TOKENS, maxCompletionTokens: generates ? cappedMaxTokens(maxTokensAsked, maxTokensCap) : 0, maxAudioSeconds: 0 }
}

/** What the worker reports it used, signed (core/usage.ts): the wire format of HEADERS.usage. */
export type { UsageRecord } from '../core/usage.ts'

const USAGE_DOMAIN = 'cocoon-usage-v1\n'

/** The bytes the worker signs for a usage record: a domain tag, then the record's canonical JSON. */
export function usageSigningPayload(json: string): Uint8Array {
  return Buffer.from(USAGE_DOMAIN + json, 'utf8')
}

/** Proxy -> worker: cumulative earnings (adjusted tokens, nanoTON) and, on chain, a signed payout voucher (base64). */
export interface WorkerStatement {
  tokens: string
  nano: string
  voucher?: string
  /** Where the receipts the worker asked about (WorkerStatementReply.want) stand in the proxy's log. */
  receipts?: { commit: ReceiptCommitInfo | null; entries: WorkerReceiptEntry[] }
}

/** One receipt a worker signed, as the proxy's log holds it: its number, and a proof once committed; `missing` when the log lacks it. */
export interface WorkerReceiptEntry {
  /** The receipt cell's hash, hex. */
  hash: string
  index?: number
  proof?: string | null
  missing?: boolean
}

/** Worker -> proxy, in reply to a statement: whether it was accepted, and the receipts it wants news of (hashes, hex). */
export interface WorkerStatementReply {
  ok: boolean
  error?: string
  want?: string[]
}

/** Largest body of a control call between nodes (a statement, its reply, worker info). */
export const CONTROL_BODY_BYTES = 64 * 1024

/**
 * Receipt entries a worker asks about per statement, and a proxy answers: with a statement every 2 s, up to 250
 * receipts a second get proven, so a worker keeps up with a busy proxy. Each entry with its proof is about 1.4 KB
 * of JSON, so a statement body is read with STATEMENT_BODY_BYTES. (A worker of an older version asks about 30 at
 * most, and reads statements of up to CONTROL_BODY_BYTES: a proxy sends only the entries asked for.)
 */
export const STATEMENT_RECEIPTS_MAX = 500
/** Largest statement body (proxy -> worker), with STATEMENT_RECEIPTS_MAX receipt entries and proofs. */
export const STATEMENT_BODY_BYTES = 1024 * 1024

/** Client -> proxy at PATHS.receiptProofs: proofs for these receipt numbers, and the client's own receipts from `from` on. */
export interface ReceiptProofsRequest {
  indices: number[]
  /** List this client's receipts from this number on (at most RECEIPT_LIST_LIMIT). */
  from?: number
}

/** The proxy's last confirmed commit of its receipt log. */
export interface ReceiptCommitInfo {
  seqno: number
  /** Hex. */
  root: string
  count: number
  /** The proxy contract's address (friendly form). */
  proxy: string
  /** The commit transaction's hash, hex. */
  tx: string | null
}

export interface ReceiptProofsReply {
  commit: ReceiptCommitInfo | null
  /** Per asked index: a base64 BoC Merkle proof against `commit.root`, null while not committed; `missing` when the log has no such receipt. */
  proofs: Array<{ index: number; proof: string | null; missing?: boolean; receipt?: string }>
  /** The client's receipts from `from` on: number and base64 BoC. */
  mine?: Array<{ index: number; receipt: string }>
}

export const RECEIPT_LIST_LIMIT = 500
/** Largest body of a ReceiptProofsRequest. */
export const RECEIPT_PROOFS_BODY_BYTES = 256 * 1024
export const RECEIPT_PROOFS_MAX = 500

/** Proxy -> client: the final charge for its channel, a signed clientFinalCharge voucher (base64). */
export interface FinalCharge {
  tokens: string
  voucher: string
}

/** Worker info served at PATHS.workerInfo. */
export interface WorkerInfo {
  protocol: number
  /** `endpoints`: the paths this model is served at (absent from older workers: chat and completions). */
  model: { id: string; hash: string; endpoints?: string[] }
  coefficient: number
  maxActiveRequests: number
  /** Highest max_tokens the worker accepts (and its default). */
  maxTokensCap: number
  /** Where the worker is paid: its wallet address ("0:hex"), or absent when it runs without a chain. */
  payoutAddress?: string
  /** The worker's current certificate (base64 DER), newer than the one its session opened with after a renewal; it carries the HPKE key. */
  certificate?: string
}

/** One worker a client may encrypt to, as the proxy serves it at PATHS.workers. The client verifies `certificate` itself. */
export interface WorkerCandidate {
  /** The worker's current certificate, base64 DER (evidence and claims, including claims.hpkeKey). */
  certificate: string
  coefficient: number
}

/** Reply of PATHS.workers. */
export interface WorkerCandidates {
  model: string
  workers: WorkerCandidate[]
}
