// The per-node admin token that guards money-moving endpoints (/admin/*), and the minimum interval between forced actions.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type http from 'node:http'

/** The request header that carries the admin token. A custom header makes a cross-site form or fetch impossible (CSRF-safe). */
export const ADMIN_TOKEN_HEADER = 'x-cocoon-admin-token'
/** The token file in the node's data folder (mode 0600). */
export const ADMIN_TOKEN_FILE = 'admin.token'
/** A forced settlement or payout runs at most once per this interval; calls in between share the running one or get 429. */
export const ADMIN_MIN_INTERVAL_MS = 10_000
const TOKEN_BYTES = 24

export interface AdminToken {
  token: string
  file: string
  /** True when this start generated the token (it is then printed once). */
  created: boolean
}

/** Reads the node's admin token, creating it (random, mode 0600) at first start. COCOON_ADMIN_TOKEN overrides the file. */
export function loadOrCreateAdminToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): AdminToken {
  const file = path.join(dataDir, ADMIN_TOKEN_FILE)
  if (env.COCOON_ADMIN_TOKEN) return { token: env.COCOON_ADMIN_TOKEN, file, created: false }
  try {
    const token = fs.readFileSync(file, 'utf8').trim()
    if (token.length >= 16) return { token, file, created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  fs.mkdirSync(dataDir, { recursive: true })
  const token = crypto.randomBytes(TOKEN_BYTES).toString('base64url')
  fs.writeFileSync(file, token + '\n', { mode: 0o600 })
  fs.chmodSync(file, 0o600)
  return { token, file, created: true }
}

/** Does the request carry this token? Constant-time. Only the header counts: never a query string or a cookie. */
export function hasAdminToken(req: http.IncomingMessage, token: string): boolean {
  const got = req.headers[ADMIN_TOKEN_HEADER]
  if (typeof got !== 'string' || got.length === 0) return false
  const a = crypto.createHash('sha256').update(got).digest()
  const b = crypto.createHash('sha256').update(token).digest()
  return crypto.timingSafeEqual(a, b)
}

/** The dashboard URL to print once, Jupyter-style: the token travels in the fragment, so it never reaches a server log. */
export function dashboardUrl(host: string, port: number, token?: string): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
  return `http://${h}:${port}/${token ? `#token=${token}` : ''}`
}

export class AdminThrottledError extends Error {
  readonly name = 'AdminThrottledError'
  constructor(readonly retryAfterMs: number) {
    super(`a forced run happened less than ${ADMIN_MIN_INTERVAL_MS / 1000}s ago; retry in ${Math.ceil(retryAfterMs / 1000)}s`)
  }
}

/**
 * Runs a money-moving action at most once per interval. A call while one runs shares its result;
 * a call soon after one finished is refused with AdminThrottledError (the caller answers 429).
 */
export class MinInterval<T> {
  private running?: Promise<T>
  private lastEnd = -Infinity

  constructor(
    private readonly intervalMs: number = ADMIN_MIN_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  run(action: () => Promise<T>): Promise<T> {
    if (this.running) return this.running
    const wait = this.lastEnd + this.intervalMs - this.now()
    if (wait > 0) return Promise.reject(new AdminThrottledError(wait))
    const p = action().finally(() => {
      this.lastEnd = this.now()
      this.running = undefined
    })
    this.running = p
    return p
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers })
  res.end(text)
}

/** One admin POST route: its path and what it does. */
export interface AdminRoute {
  path: string
  /** Reads the JSON body itself if it needs one; resolves to the JSON answer. */
  run(req: http.IncomingMessage): Promise<unknown>
  /** Forced chain actions share one MinInterval; cheap actions (API keys) leave it out. */
  throttle?: MinInterval<unknown>
}

/**
 * Serves `POST /admin/...` routes behind the token: 401 without it, 429 with Retry-After inside
 * the minimum interval, the action's error as 502 (or its own status). Returns whether it handled the request.
 */
export function handleAdmin(req: http.IncomingMessage, res: http.ServerResponse, token: string, routes: AdminRoute[]): boolean {
  const p = (req.url ?? '/').split('?')[0]
  if (!p.startsWith('/admin/')) return false
  const route = routes.find((r) => r.path === p)
  if (!route) return false
  if (req.method !== 'POST') {
    req.resume()
    sendJson(res, 405, { error: { message: `${p} takes POST`, type: 'invalid_request_error', code: 'method_not_allowed', param: null } }, { allow: 'POST' })
    return true
  }
  if (!hasAdminToken(req, token)) {
    req.resume()
    sendJson(res, 401, { error: { message: `missing or wrong admin token: send it in the ${ADMIN_TOKEN_HEADER} header (see docs/operations.md)`, type: 'invalid_request_error', code: 'invalid_admin_token', param: null } })
    return true
  }
  const go = () => route.run(req)
  ;(route.throttle ? route.throttle.run(go) : go()).then(
    (body) => sendJson(res, 200, body),
    (err: Error & { status?: number }) => {
      if (err instanceof AdminThrottledError) {
        return sendJson(res, 429, { error: { message: err.message, type: 'rate_limit_error', code: 'too_many_requests', param: null } }, { 'retry-after': String(Math.ceil(err.retryAfterMs / 1000)) })
      }
      const status = err.status ?? 502
      sendJson(res, status, { error: { message: err.message.slice(0, 500), type: status < 500 ? 'invalid_request_error' : 'api_error', code: status < 500 ? 'invalid_request' : 'admin_action_failed', param: null } })
    },
  )
  return true
}
