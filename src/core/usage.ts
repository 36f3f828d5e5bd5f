// The one usage type every layer shares (inference reports it, the worker signs it, pricing and the ledger count
// it), and the one signed-usage type (the usage, the exact JSON signed, the signature and the signer) that
// receipts extend. Token counts, never nanoTON.

/** Exact usage of one request, in model tokens. `cachedTokens` ⊆ prompt, `reasoningTokens` ⊆ completion. */
export interface Usage {
  promptTokens: number
  cachedTokens: number
  completionTokens: number
  reasoningTokens: number
  /** Seconds of transcribed audio, rounded up; set only for transcriptions (what they are billed by). */
  audioSeconds?: number
}

/** What the worker reports it used for one request: the usage trailer it signs (net/protocol.ts HEADERS.usage). */
export interface UsageRecord extends Usage {
  requestId: string
  /** The answer's id, chunk object type, model and creation time, so the client node can write the usage chunk. */
  answer: { id: string; object: string; model: string; created: number }
  finishReason: string
  estimated?: boolean
}

/**
 * A worker's usage as signed: the record, the exact JSON it signed (what the signature covers), the
 * base64 Ed25519 signature of usageSigningPayload(json), and the signer (its attested key, hex).
 * Kept with the answer's receipt in the proxy's ledger; receipts extend it (SignedReceipt).
 */
export interface SignedUsage {
  usage: UsageRecord
  json: string
  signature: string
  signer: string
}

/** Usage of nothing. */
export function zeroUsage(): Usage {
  return { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }
}

/** Adds `u` into the running total `into` (a node's token counter), audio seconds included when set. */
export function addUsage(into: Usage, u: Usage): void {
  into.promptTokens += u.promptTokens
  into.cachedTokens += u.cachedTokens
  into.completionTokens += u.completionTokens
  into.reasoningTokens += u.reasoningTokens
  if (u.audioSeconds) into.audioSeconds = (into.audioSeconds ?? 0) + u.audioSeconds
}

/** A token counter as /jsonstats shows it: `{ prompt, cached, completion, reasoning }`. */
export function tokenStats(u: Usage): { prompt: number; cached: number; completion: number; reasoning: number } {
  return { prompt: u.promptTokens, cached: u.cachedTokens, completion: u.completionTokens, reasoning: u.reasoningTokens }
}
