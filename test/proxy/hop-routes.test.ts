// The real proxy and worker route through the hop layer: unknown paths, wrong methods and conflicts are OpenAI
// errors from the one error edge, and the proxy's error budget runs in front of every route. Real proxy and worker
// over RA-TLS and HTTP/2 on loopback; the client and the worker's proxy are bare attested sessions driven by hand,
// and the backend is a FAKE at the inference seam.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import http2 from 'node:http2'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { handDrivenProxy, policyFor, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { createIdentity, createPeerVerifier, SimulatedEvidenceVerifier } from '../../src/tee/index.ts'
import { dialAttested } from '../../src/net/attested.ts'
import { call, type CallOptions } from '../../src/net/hop.ts'
import { readBody } from '../../src/net/body.ts'
import { PATHS, STATEMENT_BODY_BYTES } from '../../src/net/protocol.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

let clientPort: number

before(async () => {
  const p = await startProxy()
  clientPort = p.clientPort
  stops.push(() => p.proxy.stop())
  const worker = await startWorker(new FakeBackend({ chunks: 2 }), [p.workerPort])
  stops.push(() => worker.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'the worker to connect')
})

/** A bare attested client session (each its own client, so each has its own error budget). */
async function clientSession(): Promise<http2.ClientHttp2Session> {
  const identity = await createIdentity({ role: 'client', configHash: '00'.repeat(32) })
  const v = createPeerVerifier(await policyFor(), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 60_000 })
  const { socket } = await dialAttested({ host: '127.0.0.1', port: clientPort, identity, verify: (der, role) => v(der, role), expectedRole: 'proxy' })
  const s = http2.connect('https://proxy.cocoon', { createConnection: () => socket })
  s.on('error', () => {})
  stops.push(() => void s.destroy())
  return s
}

async function ask(session: http2.ClientHttp2Session, path: string, opts: CallOptions = {}) {
  const r = await call(session, path, opts)
  return { status: r.status, headers: r.headers, json: JSON.parse((await readBody(r.body, 1 << 20)).toString()) }
}

test('proxy: an unknown path is a 404 and a known path with another method a 405 with Allow, as OpenAI errors', async () => {
  const s = await clientSession()
  const none = await ask(s, '/v1/nope', { body: Buffer.from('{}') })
  assert.equal(none.status, 404)
  assert.equal(none.json.error.code, 'not_found')
  const wrong = await ask(s, PATHS.chat)
  assert.equal(wrong.status, 405)
  assert.equal(wrong.json.error.code, 'method_not_allowed')
  assert.equal(wrong.headers.allow, 'POST')
  // The query takes no part in routing.
  assert.equal((await ask(s, `${PATHS.models}?x=1`)).json.object, 'list')
})

test('proxy: closing a channel on a proxy that settles off-chain is a 409 that says so', async () => {
  const s = await clientSession()
  const r = await ask(s, PATHS.close, { method: 'POST' })
  assert.equal(r.status, 409)
  assert.equal(r.json.error.code, 'no_channel')
  assert.equal(r.json.error.message, 'this proxy settles off-chain: there is no channel to close')
})

test("proxy: the error budget runs in front of every route: a client that keeps erring gets 429 with Retry-After", async () => {
  const s = await clientSession()
  const statuses: number[] = []
  let retryAfter: string | undefined
  for (let i = 0; i < 30; i++) {
    const r = await ask(s, '/v1/nope')
    statuses.push(r.status)
    if (r.status === 429) retryAfter = String(r.headers['retry-after'])
  }
  assert.ok(statuses.includes(404))
  assert.ok(statuses.includes(429), statuses.join(','))
  assert.ok(Number(retryAfter) >= 1)
  // Another client is not affected.
  assert.equal((await ask(await clientSession(), PATHS.models)).status, 200)
})

test('worker: wrong methods and unknown paths are OpenAI errors; an oversized statement is a 413', async () => {
  const proxy = await handDrivenProxy('11'.repeat(32))
  stops.push(() => proxy.close())
  const w = await startWorker(new FakeBackend({ chunks: 1 }), [proxy.port])
  stops.push(() => w.stop())
  await waitFor(() => proxy.connected(), 'the worker to dial the hand-driven proxy')
  const wrong = await proxy.request({ ':method': 'PUT', ':path': PATHS.chat }, '{}')
  assert.equal(wrong.status, 405)
  assert.equal(JSON.parse(wrong.body).error.code, 'method_not_allowed')
  const none = await proxy.request({ ':method': 'POST', ':path': '/cocoon/v1/nothing' }, '')
  assert.equal(none.status, 404)
  assert.equal(JSON.parse(none.body).error.code, 'not_found')
  const big = await proxy.request({ ':method': 'POST', ':path': PATHS.statement }, JSON.stringify({ tokens: '1', nano: '1', pad: 'x'.repeat(STATEMENT_BODY_BYTES) }))
  assert.equal(big.status, 413)
  assert.equal(JSON.parse(big.body).error.code, 'request_too_large')
  const cancel = await proxy.request({ ':method': 'POST', ':path': PATHS.cancel, 'x-cocoon-exchange-id': 'none' }, '')
  assert.equal(cancel.status, 200)
  assert.deepEqual(JSON.parse(cancel.body), { cancelled: false })
})
