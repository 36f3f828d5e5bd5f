// Worker selection at the proxy: model match, capacity, coefficient cap, then the least expected wait.
import type http2 from 'node:http2'
import type crypto from 'node:crypto'
import type { VerifiedPeer } from '../tee/index.ts'
import { PATHS, type WorkerInfo } from '../net/protocol.ts'

/** Assumed duration of a request before a worker has been measured. */
export const DEFAULT_REQUEST_MS = 1_000
/** Weight of the newest sample in the moving averages. */
export const EWMA_ALPHA = 0.2

export interface WorkerConn {
  id: string
  session: http2.ClientHttp2Session
  peer: VerifiedPeer
  key: crypto.KeyObject
  /** Who is paid for this worker's answers: its payout wallet, or its key when off-chain. */
  account: string
  info: WorkerInfo
  remote: string
  connectedAt: number
  active: number
  /** Moving average of request duration, ms. */
  avgMs: number
  /** Moving average of failure (1) / success (0). */
  failRate: number
  served: number
  failed: number
  tokens: { prompt: number; cached: number; completion: number; reasoning: number }
  /** The worker's certificate (DER), handed to clients with its receipts. */
  certDer?: Uint8Array
}

/** `exhausted`: every worker that could serve was already tried for this request. */
export type Selection = { conn: WorkerConn } | { reason: 'model_not_found' | 'endpoint' | 'coefficient' | 'busy' | 'exhausted'; minCoefficient?: number }

/** The paths a worker serves its model at; workers from before endpoints were advertised serve generation only. */
export function workerEndpoints(info: WorkerInfo): readonly string[] {
  return info.model.endpoints ?? GENERATION_ENDPOINTS
}
const GENERATION_ENDPOINTS: readonly string[] = [PATHS.chat, PATHS.completions]

/** Expected time until a new request would finish here, inflated by recent failures. */
export function expectedWaitMs(c: WorkerConn): number {
  const slots = Math.max(1, c.info.maxActiveRequests)
  return ((c.active + 1) * c.avgMs * (1 + 4 * c.failRate)) / slots
}

/** Picks a worker serving `model` at `path` (default: any), never one in `exclude`. */
export function selectWorker(conns: Iterable<WorkerConn>, model: string, maxCoefficient: number, exclude: ReadonlySet<string>, path?: string): Selection {
  let best: WorkerConn | undefined
  let bestWait = Infinity
  let seenModel = false
  let seenEndpoint = false
  let minCoefficient = Infinity
  let withinCoefficient = false
  let untried = false
  for (const c of conns) {
    if (c.info.model.id !== model) continue
    seenModel = true
    if (path !== undefined && !workerEndpoints(c.info).includes(path)) continue
    seenEndpoint = true
    if (c.info.coefficient > maxCoefficient) {
      minCoefficient = Math.min(minCoefficient, c.info.coefficient)
      continue
    }
    withinCoefficient = true
    if (!exclude.has(c.id) && !c.session.closed && !c.session.destroyed) untried = true
    if (exclude.has(c.id) || c.active >= c.info.maxActiveRequests || c.session.closed || c.session.destroyed) continue
    const w = expectedWaitMs(c)
    if (w < bestWait || (w === bestWait && best && (c.info.coefficient < best.info.coefficient || (c.info.coefficient === best.info.coefficient && c.served < best.served)))) {
      best = c
      bestWait = w
    }
  }
  if (best) return { conn: best }
  if (!seenModel) return { reason: 'model_not_found' }
  if (!seenEndpoint) return { reason: 'endpoint' }
  if (!withinCoefficient) return { reason: 'coefficient', minCoefficient }
  if (!untried) return { reason: 'exhausted' }
  return { reason: 'busy' }
}

export function recordOutcome(c: WorkerConn, ok: boolean, durationMs?: number): void {
  c.failRate = c.failRate * (1 - EWMA_ALPHA) + (ok ? 0 : 1) * EWMA_ALPHA
  if (ok) c.served++
  else c.failed++
  if (ok && durationMs !== undefined) c.avgMs = c.served === 1 ? durationMs : c.avgMs * (1 - EWMA_ALPHA) + durationMs * EWMA_ALPHA
}
