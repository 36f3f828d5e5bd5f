// Attested mutual TLS 1.3 sockets: dial or accept, then verify the peer's evidence before any application byte moves.
import net from 'node:net'
import tls from 'node:tls'
import { type Identity, type Role, type VerifiedPeer, type IdentitySource, peerCertDer, tlsOptions } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'

/** Checks a peer certificate (DER) against a policy; throws EvidenceRefusedError. */
export type PeerVerifier = (der: Uint8Array, expectedRole: Role) => Promise<VerifiedPeer>

export const HANDSHAKE_TIMEOUT_MS = 10_000

export interface AttestedSocket {
  socket: tls.TLSSocket
  peer: VerifiedPeer
}

const contexts = new WeakMap<Identity, tls.SecureContext>()

/** TLS options for dialling with `identity`; the secure context (parsed key and certificate) is built once per identity. */
function dialOptions(identity: Identity): tls.ConnectionOptions {
  const base = tlsOptions(identity)
  let secureContext = contexts.get(identity)
  if (!secureContext) contexts.set(identity, (secureContext = tls.createSecureContext(base)))
  return { ...base, secureContext }
}

/** Dials `host:port`, completes TLS 1.3, and verifies the server's evidence. Rejects (and closes) on refusal. */
export function dialAttested(opts: {
  host: string
  port: number
  identity: Identity
  verify: PeerVerifier
  expectedRole: Role
  signal?: AbortSignal
  timeoutMs?: number
}): Promise<AttestedSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: opts.host, port: opts.port, ...dialOptions(opts.identity), servername: net.isIP(opts.host) ? undefined : opts.host })
    socket.setNoDelay(true)
    const timer = setTimeout(() => fail(new Error(`TLS handshake with ${opts.host}:${opts.port} timed out`)), opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS)
    const onAbort = () => fail(new Error('aborted'))
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    let done = false
    function fail(err: Error) {
      if (done) return
      done = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      socket.destroy()
      reject(err)
    }
    socket.once('error', fail)
    socket.once('secureConnect', () => {
      const der = peerCertDer(socket)
      if (!der) return fail(new Error('peer presented no certificate'))
      // Nothing is written on this socket until the verdict: the client speaks first in HTTP/2,
      // and the HTTP/2 session is only created by our caller after we resolve.
      opts.verify(der, opts.expectedRole).then(
        (peer) => {
          if (done) return
          done = true
          clearTimeout(timer)
          opts.signal?.removeEventListener('abort', onAbort)
          socket.off('error', fail)
          resolve({ socket, peer })
        },
        (err) => fail(err),
      )
    })
  })
}

/**
 * Accepts TLS 1.3 connections and verifies each client's evidence before handing the socket on.
 * Refused peers are closed and logged with the reason.
 */
export function listenAttested(opts: {
  host: string
  port: number
  identity: IdentitySource
  verify: PeerVerifier
  expectedRole: Role
  log: Logger
  onPeer: (a: AttestedSocket) => void
  onRefused?: (reason: string, remote: string) => void
}): Promise<tls.Server> {
  const server = tls.createServer({ ...tlsOptions(opts.identity.current()), handshakeTimeout: HANDSHAKE_TIMEOUT_MS })
  // New handshakes get the renewed certificate; sessions already open keep theirs.
  opts.identity.onRenew((id) => server.setSecureContext(tlsOptions(id)))
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    socket.setNoDelay(true)
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    // Pause so that no application byte is read (let alone acted on) before the verdict.
    socket.pause()
    socket.on('error', () => socket.destroy())
    const der = peerCertDer(socket)
    const refuse = (reason: string) => {
      opts.log.warn('peer refused', { remote, role: opts.expectedRole, reason })
      opts.onRefused?.(reason, remote)
      socket.destroy()
    }
    if (!der) return refuse('no client certificate')
    opts.verify(der, opts.expectedRole).then(
      (peer) => {
        // The server may have been closed while the verdict was pending.
        if (socket.destroyed || !server.listening) return void socket.destroy()
        opts.onPeer({ socket, peer })
      },
      (err: Error) => refuse((err as { reason?: string }).reason ?? err.message),
    )
  })
  server.on('tlsClientError', (err, socket) => {
    opts.log.debug('TLS handshake failed', { error: err.message, remote: socket.remoteAddress })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}
