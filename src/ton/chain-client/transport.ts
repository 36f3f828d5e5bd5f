// HTTP transport to a toncenter-v2 JSON-RPC endpoint (toncenter or the devnet chain), plugged
// into TonClient as its axios adapter: rate limit, retries with backoff, and one ChainError. The requests go
// through core/http-client.ts (node:http and node:https, connections kept alive).
import type { TonClientParameters } from '@ton/ton'
import { httpRequest } from '../../core/http-client.ts'
import type { Logger } from '../../core/log.ts'
import {
  CHAIN_REQUEST_TIMEOUT_MS,
  CHAIN_RETRIES,
  CHAIN_RETRY_BASE_DELAY_MS,
  CHAIN_RETRY_MAX_DELAY_MS,
} from './constants.ts'
import { ChainError } from './errors.ts'
import { sleepOrAbort as sleep } from '../../core/time.ts'

type HttpAdapter = NonNullable<TonClientParameters['httpAdapter']>

export interface TransportOptions {
  /** toncenter-v2 JSON-RPC endpoint, `…/api/v2/jsonRPC`; see resolveEndpoint for the short names. */
  endpoint: string
  /** toncenter API key, sent as X-API-Key; never logged. */
  apiKey?: string
  /** Per HTTP attempt. Default CHAIN_REQUEST_TIMEOUT_MS (15 s). */
  timeoutMs?: number
  /** Retries of transient failures. Default CHAIN_RETRIES (3). */
  retries?: number
  /**
   * Requests per second; 0 or undefined: no limit. The chain client's default: toncenter.com hosts 1 without an
   * API key and 10 with one (their public limits); any other endpoint (the devnet, your own toncenter) unlimited.
   */
  rateLimitRps?: number
  log?: Logger
}

export interface Transport {
  /** For `new TonClient({ httpAdapter })`: every TonClient request goes through `request`. */
  readonly adapter: HttpAdapter
  /** One JSON-RPC call; resolves with toncenter's `result`. */
  call(method: string, params: Record<string, unknown>, opts?: { signal?: AbortSignal }): Promise<unknown>
}

/** External messages the chain refused: deterministic, retrying cannot help. */
const REJECTION = /cannot apply external message|not accepted|failed to parse|emulation failed/i

/** Spaces requests `1000/rps` ms apart, across all callers of one transport. */
class RateLimiter {
  private next = 0
  constructor(private readonly intervalMs: number) {}
  async wait(signal?: AbortSignal): Promise<void> {
    const now = Date.now()
    const slot = Math.max(now, this.next)
    this.next = slot + this.intervalMs
    if (slot > now) await sleep(slot - now, signal)
  }
}

/** The endpoint without query string or credentials, for error messages. */
function redact(endpoint: string): string {
  try {
    const u = new URL(endpoint)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return '(invalid endpoint)'
  }
}

function backoffMs(attempt: number, retryAfter: string | null): number {
  const seconds = retryAfter === null ? NaN : Number(retryAfter)
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, CHAIN_RETRY_MAX_DELAY_MS)
  const base = Math.min(CHAIN_RETRY_BASE_DELAY_MS * 2 ** attempt, CHAIN_RETRY_MAX_DELAY_MS)
  return base / 2 + Math.random() * (base / 2)
}

function networkProblem(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; message?: string }
  if (e?.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`
  return e?.code ?? e?.message ?? String(err)
}

export function createTransport(opts: TransportOptions): Transport {
  const endpoint = opts.endpoint
  const where = redact(endpoint)
  const timeoutMs = opts.timeoutMs ?? CHAIN_REQUEST_TIMEOUT_MS
  const retries = opts.retries ?? CHAIN_RETRIES
  const limiter = opts.rateLimitRps && opts.rateLimitRps > 0 ? new RateLimiter(1000 / opts.rateLimitRps) : undefined
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
  if (opts.apiKey) headers['x-api-key'] = opts.apiKey

  /** Posts one JSON-RPC body; resolves with the whole `{ok: true, result}` reply. */
  async function post(body: string, method: string, signal?: AbortSignal): Promise<Record<string, unknown>> {
    for (let attempt = 0; ; attempt++) {
      await limiter?.wait(signal)
      let code: number | undefined
      let problem: string
      let transient: boolean
      let retryAfter: string | null = null
      let cause: unknown
      try {
        const res = await httpRequest(endpoint, { method: 'POST', headers, body, signal, timeoutMs })
        const text = res.text
        let json: Record<string, unknown> | undefined
        try {
          const v: unknown = JSON.parse(text)
          if (v !== null && typeof v === 'object' && !Array.isArray(v)) json = v as Record<string, unknown>
        } catch {
          json = undefined
        }
        if (res.ok && json?.ok === true) return json
        code = typeof json?.code === 'number' ? json.code : res.status
        problem = typeof json?.error === 'string' ? json.error : text.trim().slice(0, 200) || res.statusText
        transient = res.status === 429 || (res.status >= 500 && !REJECTION.test(problem))
        retryAfter = res.header('retry-after')
      } catch (err) {
        if (signal?.aborted) throw signal.reason
        problem = networkProblem(err, timeoutMs)
        transient = true
        cause = err
      }
      if (!transient || attempt >= retries) {
        const tries = attempt > 0 ? ` (after ${attempt + 1} attempts)` : ''
        const status = code === undefined ? '' : ` (${code})`
        throw new ChainError(`chain ${method} at ${where} failed${status}: ${problem}${tries}`, code, { method, transient, cause })
      }
      const delay = backoffMs(attempt, retryAfter)
      opts.log?.debug('chain request failed, retrying', { method, code, problem, attempt: attempt + 1, delayMs: Math.round(delay) })
      await sleep(delay, signal)
    }
  }

  const adapter: HttpAdapter = async (config) => {
    const body = typeof config.data === 'string' ? config.data : JSON.stringify(config.data)
    let method = 'request'
    try {
      method = String((JSON.parse(body) as { method?: unknown }).method ?? method)
    } catch {
      // not JSON: the server will say so
    }
    const data = await post(body, method, config.signal instanceof AbortSignal ? config.signal : undefined)
    return { data, status: 200, statusText: 'OK', headers: {}, config, request: {} }
  }

  return {
    adapter,
    async call(method, params, callOpts = {}) {
      const body = JSON.stringify({ id: '1', jsonrpc: '2.0', method, params })
      return (await post(body, method, callOpts.signal)).result
    },
  }
}
