// "No byte before the verdict", through the production listenAttested and dialAttested: a peer's evidence is
// judged before any application byte is read, acted on or written, and a refused peer gets nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { listenAttested, dialAttested, type PeerVerifier } from '../../src/net/attested.ts'
import { createIdentity, createPeerVerifier, devnetPolicy, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, tlsOptions } from '../../src/tee/index.ts'
import { fixedIdentity } from '../../src/tee/renew.ts'
import { createLogger } from '../../src/core/log.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function identities() {
  const provider = new SimulatedEvidenceProvider(await simulatedImageHash(''))
  const proxy = await createIdentity({ role: 'proxy', provider, configHash: '00'.repeat(32) })
  const worker = await createIdentity({ role: 'worker', provider, configHash: '00'.repeat(32), modelId: 'm', modelHash: 'ab'.repeat(32) })
  const stranger = await createIdentity({ role: 'worker', provider: new SimulatedEvidenceProvider(await simulatedImageHash('unknown-build')), configHash: '00'.repeat(32), modelId: 'm', modelHash: 'ab'.repeat(32) })
  const real = createPeerVerifier(devnetPolicy([await simulatedImageHash('')]), { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 0 })
  return { proxy, worker, stranger, real: ((d, r) => real(d, r)) as PeerVerifier }
}

/** The real verifier, held until the test opens the gate, so the test can look at the wire while the verdict is pending. */
function gated(verify: PeerVerifier) {
  let open!: () => void
  const gate = new Promise<void>((r) => (open = r))
  const calls: string[] = []
  return { open, calls, verify: (async (der, role) => (calls.push(role), await gate, verify(der, role))) as PeerVerifier }
}

/** A raw TLS client that writes `early` the moment the handshake completes, and records every byte it receives. */
async function eagerClient(port: number, identity: Awaited<ReturnType<typeof identities>>['worker'], early: string) {
  const socket = tls.connect({ ...tlsOptions(identity), host: '127.0.0.1', port })
  const received: Buffer[] = []
  socket.on('data', (d) => received.push(d))
  socket.on('error', () => {})
  const closed = once(socket, 'close')
  await once(socket, 'secureConnect')
  socket.write(early)
  return { socket, received, closed }
}

test('listenAttested: nothing is read or written before the verdict; an accepted peer gets its early bytes intact', async () => {
  const { proxy, worker, real } = await identities()
  const g = gated(real)
  const peers: Array<{ socket: tls.TLSSocket; role: string }> = []
  const server = await listenAttested({ host: '127.0.0.1', port: 0, identity: fixedIdentity(proxy), verify: g.verify, expectedRole: 'worker', log: createLogger({}, 'error', () => {}), onPeer: ({ socket, peer }) => peers.push({ socket, role: peer.role }) })
  try {
    const c = await eagerClient((server.address() as AddressInfo).port, worker, 'PRI * HTTP/2.0 early bytes')
    await sleep(300)
    assert.deepEqual(g.calls, ['worker'], 'the verdict is pending')
    assert.equal(peers.length, 0, 'the socket is not handed on before the verdict')
    assert.equal(c.received.length, 0, 'the server wrote nothing before the verdict')
    g.open()
    await sleep(100)
    assert.equal(peers.length, 1)
    assert.equal(peers[0].role, 'worker')
    // What the peer sent early was neither read nor dropped: it is all there for whoever speaks the protocol next.
    const first = await new Promise<Buffer>((resolve, reject) => {
      setTimeout(() => reject(new Error('the early bytes were consumed before the verdict')), 2_000).unref()
      peers[0].socket.once('data', resolve)
      peers[0].socket.resume()
    })
    assert.equal(first.toString(), 'PRI * HTTP/2.0 early bytes')
    peers[0].socket.write('welcome')
    await sleep(100)
    assert.equal(Buffer.concat(c.received).toString(), 'welcome')
    c.socket.destroy()
  } finally {
    server.close()
  }
})

test('listenAttested: a refused peer is closed with not a byte written and never handed on', async () => {
  const { proxy, stranger, real } = await identities()
  const g = gated(real)
  const refused: string[] = []
  let handed = 0
  const server = await listenAttested({
    host: '127.0.0.1',
    port: 0,
    identity: fixedIdentity(proxy),
    verify: g.verify,
    expectedRole: 'worker',
    log: createLogger({}, 'error', () => {}),
    onPeer: () => handed++,
    onRefused: (reason) => refused.push(reason),
  })
  try {
    const c = await eagerClient((server.address() as AddressInfo).port, stranger, 'GET /secrets HTTP/1.1\r\n\r\n')
    await sleep(200)
    assert.equal(c.received.length, 0)
    g.open()
    await c.closed
    assert.equal(c.received.length, 0, 'a refused peer received nothing')
    assert.equal(handed, 0)
    assert.match(refused[0], /image hash [0-9a-f]{64} not allowed for role worker/)
  } finally {
    server.close()
  }
})

test('dialAttested: the dialler sends nothing before it has verified the server, and nothing at all to a refused one', async () => {
  const { proxy, worker, stranger, real } = await identities()
  for (const [server, accept] of [[proxy, true], [stranger, false]] as const) {
    const got: Buffer[] = []
    let sawSocket!: tls.TLSSocket
    // A raw TLS server (the other end): it records every application byte the dialler sends.
    const srv = tls.createServer({ ...tlsOptions(server) }, (s) => {
      sawSocket = s
      s.on('data', (d) => got.push(d))
      s.on('error', () => {})
    })
    srv.listen(0, '127.0.0.1')
    await once(srv, 'listening')
    const g = gated(real)
    try {
      const dial = dialAttested({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port, identity: worker, verify: g.verify, expectedRole: accept ? 'proxy' : 'worker' })
      await sleep(300)
      assert.equal(got.length, 0, 'nothing sent while the verdict is pending')
      g.open()
      if (accept) {
        const { socket, peer } = await dial
        assert.equal(peer.role, 'proxy')
        socket.write('after the verdict')
        await sleep(100)
        assert.equal(Buffer.concat(got).toString(), 'after the verdict')
        socket.destroy()
      } else {
        await assert.rejects(dial)
        await sleep(100)
        assert.equal(got.length, 0, 'nothing sent to a refused server')
        assert.ok(sawSocket)
      }
    } finally {
      srv.close()
    }
  }
})
