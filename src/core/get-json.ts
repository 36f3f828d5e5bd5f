// GET a small JSON document over plain HTTP with node:http, for processes that otherwise never need fetch (the
// devnet supervisor polls its children with it: loading fetch's implementation costs a long-lived process memory).
import http from 'node:http'

/** Largest answer read, bytes: a readiness or stats document, not a download. */
export const MAX_JSON_BYTES = 4 * 1024 * 1024

/** GETs `url` (http:) and parses the answer as JSON; rejects on a network error, a timeout, a non-2xx status, an oversized or non-JSON body. */
export function getJson(url: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > MAX_JSON_BYTES) return req.destroy(new Error(`${url}: answer larger than ${MAX_JSON_BYTES} bytes`))
        chunks.push(c)
      })
      res.on('end', () => {
        if (!res.statusCode || res.statusCode < 200 || res.statusCode > 299) return reject(new Error(`${url}: HTTP ${res.statusCode}`))
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
        } catch {
          reject(new Error(`${url}: the answer is not JSON`))
        }
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
  })
}
