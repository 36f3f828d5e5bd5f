// The client node's side of end-to-end encryption: which workers it may encrypt to. It fetches the
// candidate workers' certificates from the proxy, verifies each itself under its own policy (the same
// verifier and root lists the proxy uses), and never wraps a key for a worker it has not verified.
import crypto from 'node:crypto'
import type http2 from 'node:http2'
import type { PeerVerifier } from '../net/attested.ts'
import { PATHS, type WorkerCandidates } from '../net/protocol.ts'
import { ModelNotFoundError, NoWorkerAvailableError, TooManyRequestsError, UnfundedClientError } from '../net/errors.ts'
import { call } from '../net/hop.ts'
import type { Logger } from '../core/log.ts'

/** How long a proxy's verified candidate list is reused before it is fetched again. */
export const CANDIDATES_TTL_MS = 30_000
export const CANDIDATES_TIMEOUT_MS = 10_000
/** How long a list in which some candidate was refused is reused. */
export const REFUSED_TTL_MS = 2_000
const MAX_CANDIDATES_BYTES = 4 * 1024 * 1024

/** A worker whose certificate this client verified. */
export interface VerifiedCandidate {
  /** HPKE public key from its verified claims, hex; absent for a worker without E2EE (older version). */
  hpkeKey?: string
  /** Its identity key, hex. */
  workerKey: string
  coefficient: number
}

export interface CandidateList {
  verified: VerifiedCandidate[]
  /** Candidates whose evidence this client refused (never recipients). */
  refused: number
}

/** Verified candidate workers per proxy session and model, refreshed after CANDIDATES_TTL_MS. */
export class CandidateCache {
  private readonly entries = new Map<string, { at: number; list: Promise<CandidateList>; refused: number }>()

  constructor(
    private readonly verify: PeerVerifier,
    private readonly log: Logger,
    private readonly ttlMs = CANDIDATES_TTL_MS,
    /**
     * Re-reads the root's allow-lists now (on chain). A proxy may follow a root change (a newly allowed image or
     * model) a few seconds before this client does; a refused candidate is then checked once more after it.
     */
    private readonly refreshPolicy?: () => Promise<unknown>,
  ) {}

  get(session: http2.ClientHttp2Session, proxy: string, model: string): Promise<CandidateList> {
    const key = `${proxy}\n${model}`
    const e = this.entries.get(key)
    // A list with refusals is kept briefly only: this client's view of the root may be what changes next.
    if (e && Date.now() - e.at < this.ttlMs && (e.refused === 0 || Date.now() - e.at < REFUSED_TTL_MS)) return e.list
    const list = this.fetch(session, model)
    const entry = { at: Date.now(), list, refused: 0 }
    this.entries.set(key, entry)
    list.then(
      (l) => (entry.refused = l.refused),
      () => this.entries.delete(key),
    )
    while (this.entries.size > 1000) this.entries.delete(this.entries.keys().next().value!)
    return list
  }

  /** Forgets a proxy's list for a model (e.g. all its recipients failed), so the next request fetches a fresh one. */
  invalidate(proxy: string, model: string): void {
    this.entries.delete(`${proxy}\n${model}`)
  }

  private async fetch(session: http2.ClientHttp2Session, model: string): Promise<CandidateList> {
    const r = await call(session, `${PATHS.workers}?model=${encodeURIComponent(model)}`, { signal: AbortSignal.timeout(CANDIDATES_TIMEOUT_MS) })
    const body = await r.read(MAX_CANDIDATES_BYTES)
    if (r.status !== 200) throw proxyRefusal(r.status, body, r.headers['retry-after'], model)
    const reply = JSON.parse(body.toString('utf8')) as WorkerCandidates
    if (!reply || !Array.isArray(reply.workers)) throw new Error('the proxy sent no worker list')
    const first = await this.verifyAll(reply.workers, model, false)
    if (first.refused.length === 0 || !this.refreshPolicy) return { verified: first.verified, refused: first.refused.length }
    await this.refreshPolicy()
    const again = await this.verifyAll(first.refused, model, true)
    return { verified: [...first.verified, ...again.verified], refused: again.refused.length }
  }

  private async verifyAll(workers: WorkerCandidates['workers'], model: string, final: boolean): Promise<{ verified: VerifiedCandidate[]; refused: WorkerCandidates['workers'] }> {
    const verified: VerifiedCandidate[] = []
    const refused: WorkerCandidates['workers'] = []
    for (const w of workers) {
      try {
        const der = Buffer.from(String(w.certificate), 'base64')
        const peer = await this.verify(der, 'worker')
        // A certificate for another model cannot serve this request, whatever the proxy says.
        if (peer.claims.modelId !== model) throw new Error(`a worker for model ${String(peer.claims.modelId).slice(0, 64)}`)
        verified.push({ hpkeKey: peer.claims.hpkeKey, workerKey: Buffer.from(peer.publicKey).toString('hex'), coefficient: Number(w.coefficient) || 0 })
      } catch (err) {
        refused.push(w)
        if (final || !this.refreshPolicy) this.log.warn('candidate worker refused; it will never be a recipient', { reason: (err as Error).message.slice(0, 300) })
      }
    }
    return { verified, refused }
  }
}

/**
 * The proxy's refusal to list workers, as the error the app would have got from the request itself:
 * 404 (no worker serves the model), 503 (its workers left lately, with Retry-After), 429 (this client is slowed
 * down, with Retry-After), 402 (no funds).
 */
function proxyRefusal(status: number, body: Buffer, retryAfter: unknown, model: string): Error {
  let message = `the proxy answered ${status} for its workers`
  try {
    message = String((JSON.parse(body.toString('utf8')) as { error?: { message?: unknown } }).error?.message ?? message).slice(0, 500)
  } catch {
    // not JSON: keep the status line
  }
  if (status === 404) return new ModelNotFoundError(model)
  if (status === 429) return new TooManyRequestsError(message, Number(retryAfter) > 0 ? Number(retryAfter) : undefined)
  if (status === 503) return new NoWorkerAvailableError(message, Number(retryAfter) > 0 ? Number(retryAfter) : undefined)
  if (status === 402) return new UnfundedClientError()
  return new Error(message)
}

/**
 * Picks up to `k` recipients with an HPKE key and a coefficient the app accepts, at random (so load
 * spreads and a retry gets a fresh set), avoiding `exclude` while enough others remain.
 * Throws ModelNotFoundError when no worker serves the model, NoWorkerAvailableError when none can be encrypted to.
 */
export function pickRecipients(list: CandidateList, k: number, maxCoefficient: number, model: string, exclude: ReadonlySet<string> = new Set()): string[] {
  if (list.verified.length === 0 && list.refused === 0) throw new ModelNotFoundError(model)
  const keys = [...new Set(list.verified.filter((c) => c.hpkeKey && c.coefficient <= maxCoefficient).map((c) => c.hpkeKey!))]
  if (keys.length === 0) {
    const why = list.verified.length === 0 ? (list.refused ? `its ${list.refused} candidate worker(s) failed this client's verification` : 'no worker serves it') : 'no verified worker has an end-to-end encryption key'
    throw new NoWorkerAvailableError(`no worker can take an end-to-end encrypted request for this model: ${why}`)
  }
  const fresh = keys.filter((x) => !exclude.has(x))
  const pool = fresh.length > 0 ? fresh : keys
  for (let i = pool.length - 1; i > 0; i--) {
    const j = crypto.randomInt(i + 1)
    ;[pool[i], pool[j]] = [pool[j], pool[i]]
  }
  return pool.slice(0, k)
}
