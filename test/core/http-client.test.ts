// Spec: getJson (src/core/http-client.ts), the devnet supervisor's readiness GET: the JSON of a 2xx answer, and a clear
// error for anything else (status, body, size, time), on a real HTTP server on loopback.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { getJson, MAX_JSON_BYTES } from '../../src/core/http-client.ts'

test('getJson reads a 2xx JSON answer and refuses a non-2xx, non-JSON, oversized or late one', async () => {
  const server = http.createServer((req, res) => {
    if (req.url === '/ok') return res.end('{"ok":true,"n":[1,2]}')
    if (req.url === '/503') return res.writeHead(503).end('{"ok":false}')
    if (req.url === '/text') return res.end('<html>')
    if (req.url === '/big') {
      // More than the limit, in pieces: the reader stops at the limit instead of holding it all.
      const piece = Buffer.alloc(64 * 1024, 0x20)
      let sent = 0
      const more = () => {
        while (sent <= MAX_JSON_BYTES) {
          sent += piece.length
          if (!res.write(piece)) return void res.once('drain', more)
        }
        res.end()
      }
      return more()
    }
    // /slow: never answers
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  try {
    assert.deepEqual(await getJson(`${base}/ok`, 5_000), { ok: true, n: [1, 2] })
    await assert.rejects(getJson(`${base}/503`, 5_000), /HTTP 503/)
    await assert.rejects(getJson(`${base}/text`, 5_000), /not JSON/)
    await assert.rejects(getJson(`${base}/big`, 5_000), /larger than/)
    await assert.rejects(getJson(`${base}/slow`, 300), /no answer within 300 ms/)
    await assert.rejects(getJson('http://127.0.0.1:1/', 5_000), /ECONNREFUSED/)
  } finally {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  }
})
