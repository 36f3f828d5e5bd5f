// The operations endpoints every node serves: /healthz, /jsonstats (documented schema) and /metrics (Prometheus).
import http from 'node:http'
import { Registry, collectDefaultMetrics } from 'prom-client'
import type { Logger } from './log.ts'

export interface OpsSource {
  /** JSON document for /jsonstats; see docs/operations.md for each role's schema. */
  stats(): Record<string, unknown>
  /** ok=false makes /healthz answer 503; `reason` says why. */
  health(): { ok: boolean; reason?: string; [k: string]: unknown }
  /** When present, /healthz answers with this instead of health(): readiness that needs a round trip. */
  readiness?(): Promise<{ ok: boolean; reason?: string; [k: string]: unknown }>
  registry: Registry
  /**
   * Whether the node reaches its chain, for nodes on one. When it does not, /healthz and /jsonstats say
   * `withoutChain: true` (the node keeps serving on what it last saw) and show `chainReachability`.
   */
  chainReachability?: () => ChainReachability
}

/** Whether a node's chain answers. */
export interface ChainReachability {
  reachable: boolean
  /** Epoch ms since when the chain has not answered. */
  unreachableSince?: number
  lastError?: string
}

/** `doc` plus the node's chain reachability, if it runs on a chain. */
function withChain<T extends Record<string, unknown>>(src: OpsSource, doc: T): T {
  const r = src.chainReachability?.()
  return r ? { ...doc, withoutChain: !r.reachable, chainReachability: r } : doc
}

/** A metrics registry with the process defaults, labelled with the node role. */
export function createRegistry(role: string): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ role })
  collectDefaultMetrics({ register: registry, prefix: 'cocoon_' })
  return registry
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

/** Serves an ops path if `req` is one; returns whether it did. */
export function handleOps(req: http.IncomingMessage, res: http.ServerResponse, src: OpsSource): boolean {
  const path = (req.url ?? '/').split('?')[0]
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  if (path === '/healthz') {
    if (!src.readiness) {
      const h = withChain(src, src.health())
      sendJson(res, h.ok ? 200 : 503, h)
      return true
    }
    src.readiness().then(
      (h) => sendJson(res, h.ok ? 200 : 503, withChain(src, h)),
      (err: Error) => sendJson(res, 503, { ok: false, reason: err.message }),
    )
    return true
  }
  if (path === '/jsonstats') {
    sendJson(res, 200, withChain(src, src.stats()))
    return true
  }
  if (path === '/metrics') {
    src.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': src.registry.contentType })
        res.end(text)
      },
      () => sendJson(res, 500, { error: 'metrics unavailable' }),
    )
    return true
  }
  return false
}

/** Starts a small HTTP server with only the ops endpoints. */
export function startOpsServer(host: string, port: number, src: OpsSource, log: Logger, extra?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (!handleOps(req, res, src) && !extra?.(req, res)) sendJson(res, 404, { error: { message: 'not found', type: 'invalid_request_error', code: 'not_found', param: null } })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      const a = server.address()
      log.info('ops endpoints listening', { url: `http://${host}:${typeof a === 'object' && a ? a.port : port}` })
      resolve(server)
    })
  })
}

export function listenPort(server: { address(): unknown }): number {
  const a = server.address() as { port?: number } | null
  return a?.port ?? 0
}
