// The admin token and the minimum interval that guard money-moving endpoints, over real HTTP on loopback.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { tmpDir } from '../helpers/procs.ts'
import { ADMIN_TOKEN_HEADER, handleAdmin, loadOrCreateAdminToken, MinInterval, AdminThrottledError } from '../../src/node/admin.ts'

describe('admin token', () => {
  it('is created at first start with mode 0600 and reused afterwards', () => {
    const dir = tmpDir('admin')
    const a = loadOrCreateAdminToken(path.join(dir, 'node'), {})
    assert.equal(a.created, true)
    assert.ok(a.token.length >= 32)
    assert.equal(fs.statSync(a.file).mode & 0o777, 0o600)
    const b = loadOrCreateAdminToken(path.join(dir, 'node'), {})
    assert.deepEqual([b.created, b.token], [false, a.token])
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

describe('MinInterval', () => {
  it('shares a running action and refuses a new one inside the interval', async () => {
    let now = 0
    const once = new MinInterval<number>(10_000, () => now)
    let runs = 0
    let release!: () => void
    const action = () => new Promise<number>((r) => (release = () => r(++runs)))
    const calls = Array.from({ length: 10 }, () => once.run(action))
    release()
    assert.deepEqual(await Promise.all(calls), Array(10).fill(1))
    now = 9_000
    await assert.rejects(once.run(action), (e: Error) => e instanceof AdminThrottledError && e.retryAfterMs === 1_000)
    now = 10_000
    const next = once.run(action)
    release()
    assert.equal(await next, 2)
  })
})

describe('handleAdmin over HTTP', () => {
  async function serve(token: string, run: () => Promise<unknown>) {
    const throttle = new MinInterval<unknown>(60_000)
    const server = http.createServer((req, res) => {
      if (!handleAdmin(req, res, token, [{ path: '/admin/settle', throttle, run }])) res.writeHead(404).end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/admin/settle`
    return { url, close: () => new Promise((r) => (server.close(r), server.closeAllConnections())) }
  }

  it('refuses a POST without the token, or with a wrong one, in the header (401) and never runs the action', async () => {
    let runs = 0
    const s = await serve('right-token-0123456789', async () => ++runs)
    for (const headers of [{} as Record<string, string>, { [ADMIN_TOKEN_HEADER]: 'wrong-token-0123456789' }, { authorization: 'Bearer right-token-0123456789' }]) {
      const r = await fetch(s.url, { method: 'POST', headers })
      assert.equal(r.status, 401)
      assert.equal((await r.json()).error.code, 'invalid_admin_token')
    }
    // The token in the query string does not count either: only a header is CSRF-safe.
    assert.equal((await fetch(s.url + '?token=right-token-0123456789', { method: 'POST' })).status, 401)
    assert.equal((await fetch(s.url, { headers: { [ADMIN_TOKEN_HEADER]: 'right-token-0123456789' } })).status, 405)
    assert.equal(runs, 0)
    await s.close()
  })

  it('runs 10 concurrent forced calls once, then answers 429 with Retry-After', async () => {
    let runs = 0
    const s = await serve('right-token-0123456789', async () => {
      await new Promise((r) => setTimeout(r, 100))
      return { run: ++runs }
    })
    const post = () => fetch(s.url, { method: 'POST', headers: { [ADMIN_TOKEN_HEADER]: 'right-token-0123456789' } })
    const rs = await Promise.all(Array.from({ length: 10 }, post))
    assert.deepEqual(rs.map((r) => r.status), Array(10).fill(200))
    assert.deepEqual(await Promise.all(rs.map((r) => r.json())), Array(10).fill({ run: 1 }))
    const later = await post()
    assert.equal(later.status, 429)
    assert.ok(Number(later.headers.get('retry-after')) > 50)
    assert.equal(runs, 1)
    await s.close()
  })
})
