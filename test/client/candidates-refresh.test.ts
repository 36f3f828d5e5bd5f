// The client's E2EE candidate list when the root just changed: the proxy follows a newly allowed model a moment
// before this client does. Fakes: the proxy is a FAKE plain HTTP/2 server answering the workers list, and the
// verifier is a FAKE that allows the model only after the policy was re-read (the seam next door).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import http2 from 'node:http2'
import { CandidateCache } from '../../src/client/e2ee.ts'
import { PATHS } from '../../src/net/protocol.ts'
import { silentLogger } from '../../src/core/log.ts'

const server = http2.createServer()
let served = 0
server.on('stream', (s, h) => {
  assert.equal(String(h[':path']).split('?')[0], PATHS.workers)
  served++
  s.respond({ ':status': 200, 'content-type': 'application/json' })
  s.end(JSON.stringify({ model: 'm', workers: [{ certificate: Buffer.from('worker-a').toString('base64'), coefficient: 1000 }] }))
})
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
const session = http2.connect(`http://127.0.0.1:${(server.address() as any).port}`)
after(() => {
  session.close()
  server.close()
})

function fakeTrust() {
  const t = { allowed: false, refreshes: 0 }
  const verify = async (der: Uint8Array) => {
    if (!t.allowed) throw new Error('peer evidence refused: model hash not allowed')
    return { publicKey: new Uint8Array(32).fill(7), claims: { modelId: 'm', hpkeKey: 'ab'.repeat(32) }, der } as any
  }
  return { t, verify }
}

test('a candidate refused under a stale policy is verified again after the root is re-read, and then used', async () => {
  const { t, verify } = fakeTrust()
  const cache = new CandidateCache(verify, silentLogger, undefined, async () => {
    t.refreshes++
    t.allowed = true // the root change reaches this client's policy
  })
  const list = await cache.get(session, 'proxy-1', 'm')
  assert.equal(t.refreshes, 1)
  assert.deepEqual([list.verified.length, list.refused], [1, 0])
})

test('without a policy to re-read, a refusal stands, and is fetched again after a short time, not kept 30 s', async () => {
  const { t, verify } = fakeTrust()
  const cache = new CandidateCache(verify, silentLogger)
  const before = served
  const list = await cache.get(session, 'proxy-1', 'm')
  assert.deepEqual([list.verified.length, list.refused], [0, 1])
  await cache.get(session, 'proxy-1', 'm')
  assert.equal(served - before, 1, 'reused at once')
  t.allowed = true
  await new Promise((r) => setTimeout(r, 2_100))
  const later = await cache.get(session, 'proxy-1', 'm')
  assert.equal(served - before, 2, 'fetched again once the short time passed')
  assert.deepEqual([later.verified.length, later.refused], [1, 0])
})
