// A small HTTP client on node:http and node:https, for the calls a node makes outside its attested hops: the chain's
// JSON-RPC (ton/chain-client/transport.ts) and the devnet supervisor's readiness polls. Not fetch: fetch's
// implementation (undici) is large JavaScript that every node would otherwise load, compile and keep for its whole
// life, and it costs more CPU per call than node:http. Connections are kept alive and reused, as fetch does.
import http from 'node:http'
import https from 'node:https'

/** Largest answer httpRequest reads unless told otherwise, bytes. */
export const DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024
/** Largest answer getJson reads, bytes: a readiness or stats document, not a download. */
export const MAX_JSON_BYTES = 4 * 1024 * 1024

const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) }

export interface HttpRequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  /** Aborts the request (the rejection is the signal's reason). */
  signal?: AbortSignal
  /** The whole request, connection to last byte; past it the request fails with a TimeoutError. */
  timeoutMs: number
  /** Largest answer read; a larger one fails the request. Default DEFAULT_MAX_ANSWER_BYTES. */
  maxBytes?: number
}

export interface HttpAnswer {
  status: number
  /** A 2xx status. */
  ok: boolean
  statusText: string
  /** A response header's value (the first, when repeated), or null. */
  header(name: string): string | null
  text: string
}

/** The request took longer than its timeoutMs. */
export class HttpTimeoutError extends Error {
  readonly name = 'TimeoutError'
}

/**
 * One HTTP(S) request, its whole answer read as UTF-8 text. Rejects with the network error (its `code`, e.g.
 * ECONNREFUSED), a TimeoutError, the signal's reason, or an error naming an oversized answer; any status resolves.
 */
export function httpRequest(url: string | URL, o: HttpRequestOptions): Promise<HttpAnswer> {
  const u = typeof url === 'string' ? new URL(url) : url
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return Promise.reject(new Error(`${u.protocol} is not http: or https:`))
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_ANSWER_BYTES
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) return reject(o.signal.reason)
    let settled = false
    const finish = (err: unknown, answer?: HttpAnswer) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      o.signal?.removeEventListener('abort', onAbort)
      if (err) {
        req.destroy()
        reject(err)
      } else resolve(answer!)
    }
    const onAbort = () => finish(o.signal!.reason)
    const timer = setTimeout(() => finish(new HttpTimeoutError(`no answer within ${o.timeoutMs} ms`)), o.timeoutMs)
    const headers: Record<string, string | number> = { ...o.headers }
    if (o.body !== undefined) headers['content-length'] = Buffer.byteLength(o.body)
    const req = (u.protocol === 'https:' ? https : http).request(u, { method: o.method ?? 'GET', headers, agent: u.protocol === 'https:' ? agents['https:'] : agents['http:'] }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > maxBytes) return finish(new Error(`answer larger than ${maxBytes} bytes`))
        chunks.push(c)
      })
      res.on('end', () => {
        const h = res.headers
        finish(undefined, {
          status: res.statusCode ?? 0,
          ok: res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode <= 299,
          statusText: res.statusMessage ?? '',
          header: (name) => {
            const v = h[name.toLowerCase()]
            return v === undefined ? null : Array.isArray(v) ? (v[0] ?? null) : v
          },
          text: Buffer.concat(chunks).toString('utf8'),
        })
      })
      res.on('error', (err) => finish(err))
    })
    req.on('error', (err) => finish(err))
    o.signal?.addEventListener('abort', onAbort, { once: true })
    req.end(o.body)
  })
}

/** GETs `url` and parses the answer as JSON; rejects on a network error, a timeout, a non-2xx status, an oversized or non-JSON body. */
export async function getJson(url: string, timeoutMs: number): Promise<unknown> {
  const a = await httpRequest(url, { timeoutMs, maxBytes: MAX_JSON_BYTES }).catch((err: Error) => {
    throw new Error(`${url}: ${err.message}`, { cause: err })
  })
  if (!a.ok) throw new Error(`${url}: HTTP ${a.status}`)
  try {
    return JSON.parse(a.text)
  } catch {
    throw new Error(`${url}: the answer is not JSON`)
  }
}
