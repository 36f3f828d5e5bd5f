// Spec: Real mutual TLS 1.3 on loopback with RA-TLS identities.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import tls from 'node:tls'
import {
  createIdentity,
  devnetPolicy,
  peerCertDer,
  SimulatedEvidenceVerifier,
  simulatedImageHash,
  tlsOptions,
  verifyPeer,
  type Identity,
  type Role,
  type VerifiedPeer,
} from '../../src/tee/index.ts'
import { CONFIG_HASH, simulatedProvider, workerIdentity } from './helpers.ts'

const verifiers = { simulated: new SimulatedEvidenceVerifier() }

/**
 * A server that verifies each client before writing a byte, then answers with the client's role.
 * Returns the port, what the server verified, and whether each session was resumed.
 */
async function attestedServer(identity: Identity, expectedRole: Role, opts: tls.TlsOptions = {}) {
  const policy = devnetPolicy([await simulatedImageHash()])
  const seen: { peer?: VerifiedPeer; error?: string; resumed: boolean }[] = []
  const server = tls.createServer({ ...tlsOptions(identity), ...opts }, async (socket) => {
    socket.on('error', () => {})
    const der = peerCertDer(socket)
    try {
      if (!der) throw new Error('no client certificate')
      const peer = await verifyPeer(der, policy, { expectedRole, verifiers })
      seen.push({ peer, resumed: socket.isSessionReused() })
      socket.end(`hello ${peer.role}`)
    } catch (e) {
      seen.push({ error: (e as Error).message, resumed: socket.isSessionReused() })
      socket.destroy()
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port, seen, policy }
}

/** Dials, verifies the server before sending anything, and collects the reply and any session tickets. */
async function dial(port: number, identity: Identity, expectedRole: Role, opts: tls.ConnectionOptions = {}) {
  const policy = devnetPolicy([await simulatedImageHash()])
  const socket = tls.connect({ ...tlsOptions(identity), host: '127.0.0.1', port, ...opts })
  const tickets: Buffer[] = []
  socket.on('session', (s: Buffer) => tickets.push(s))
  await once(socket, 'secureConnect')
  const der = peerCertDer(socket)
  const result = {
    protocol: socket.getProtocol(),
    alpn: socket.alpnProtocol,
    resumed: socket.isSessionReused(),
    serverPeer: der ? await verifyPeer(der, policy, { expectedRole, verifiers }) : undefined,
    reply: '',
    tickets,
  }
  socket.setEncoding('utf8')
  try {
    for await (const chunk of socket) result.reply += chunk
  } catch {
    // A refusing server resets the connection; the reply so far is what the test checks.
  }
  return result
}

test('mutual TLS 1.3 between a worker and a proxy, each verifying the other with verifyPeer', async () => {
  const proxy = await createIdentity({ role: 'proxy', provider: await simulatedProvider(), configHash: CONFIG_HASH, paymentKey: 'ef'.repeat(32) })
  const worker = await workerIdentity({ now: () => new Date() })
  const { server, port, seen } = await attestedServer(proxy, 'worker')
  try {
    const r = await dial(port, worker, 'proxy')
    assert.equal(r.protocol, 'TLSv1.3')
    assert.equal(r.alpn, 'h2')
    assert.deepEqual(r.serverPeer?.publicKey, proxy.publicKey)
    assert.equal(r.serverPeer?.claims.paymentKey, 'ef'.repeat(32))
    assert.equal(r.reply, 'hello worker')
    assert.equal(seen.length, 1)
    assert.deepEqual(seen[0].peer?.publicKey, worker.publicKey)
    assert.equal(seen[0].peer?.kind, 'simulated')
  } finally {
    server.close()
  }
})

test('a session cannot be resumed, so every connection presents a certificate to verify', async () => {
  const proxy = await createIdentity({ role: 'proxy', provider: await simulatedProvider(), configHash: CONFIG_HASH })
  const worker = await workerIdentity({ now: () => new Date() })
  const { server, port, seen } = await attestedServer(proxy, 'worker')
  try {
    const first = await dial(port, worker, 'proxy')
    const offered = first.tickets.at(-1)
    assert.ok(offered, 'the client holds a session it can offer')
    const second = await dial(port, worker, 'proxy', { session: offered })
    assert.equal(second.resumed, false)
    assert.ok(second.serverPeer, 'server certificate present and verified')
    assert.deepEqual(seen.map((s) => [s.resumed, s.peer?.role]), [
      [false, 'worker'],
      [false, 'worker'],
    ])
  } finally {
    server.close()
  }
})

test('control: without SSL_OP_NO_TICKET the same handshake resumes and the client loses the server certificate', async () => {
  const proxy = await createIdentity({ role: 'proxy', provider: await simulatedProvider(), configHash: CONFIG_HASH })
  const worker = await workerIdentity({ now: () => new Date() })
  const { server, port } = await attestedServer(proxy, 'worker', { secureOptions: 0 })
  try {
    const first = await dial(port, worker, 'proxy')
    assert.ok(first.tickets.length > 0)
    const socket = tls.connect({ ...tlsOptions(worker), host: '127.0.0.1', port, session: first.tickets.at(-1) })
    await once(socket, 'secureConnect')
    assert.equal(socket.isSessionReused(), true)
    assert.equal(peerCertDer(socket), undefined)
    socket.destroy()
  } finally {
    server.close()
  }
})

test('the server refuses a client whose evidence fails, before it writes a byte', async () => {
  const proxy = await createIdentity({ role: 'proxy', provider: await simulatedProvider(), configHash: CONFIG_HASH })
  const stranger = await workerIdentity({ now: () => new Date(), provider: await simulatedProvider('unknown-build') })
  const { server, port, seen } = await attestedServer(proxy, 'worker')
  try {
    const r = await dial(port, stranger, 'proxy')
    assert.equal(r.reply, '')
    assert.match(seen[0].error ?? '', /image hash [0-9a-f]{64} not allowed for role worker/)
  } finally {
    server.close()
  }
})
