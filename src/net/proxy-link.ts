// A client's or worker's link to one proxy: dial over attested TLS, refuse a distrusted proxy, open the HTTP/2
// session, and reconnect with backoff whenever it drops — the same loop for both roles.
import type http2 from 'node:http2'
import type tls from 'node:tls'
import type { VerifiedPeer, IdentitySource } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'
import { sleep } from '../core/time.ts'
import { dialAttested, type PeerVerifier } from './attested.ts'
import { proxyIdOf } from './peers.ts'

export const RECONNECT_MIN_MS = 200
export const RECONNECT_MAX_MS = 5_000

export interface ProxyLink<S extends http2.Http2Session = http2.Http2Session> {
  target: string
  state: 'connecting' | 'connected' | 'refused' | 'disconnected' | 'distrusted'
  /** The proxy's identity for accounting: its payment key (or its TLS key off-chain), hex. */
  proxyId?: string
  peer?: VerifiedPeer
  session?: S
  lastError?: string
  connectedAt?: number
}

export interface LinkDeps<S extends http2.Http2Session> {
  identity: IdentitySource
  verify: PeerVerifier
  log: Logger
  signal: AbortSignal
  /** Why this proxy is distrusted (it under-reported before), if it is. */
  distrusted?: (proxyId: string) => string | null | undefined
  /** Turns the verified socket into the HTTP/2 session (as client or server), after any per-proxy set-up. */
  open: (socket: tls.TLSSocket, peer: VerifiedPeer, proxyId: string) => Promise<S>
  onChange?: () => void
}

/** Keeps `link` connected to `target` until `deps.signal` aborts. */
export async function maintainProxyLink<S extends http2.Http2Session>(link: ProxyLink<S>, target: { host: string; port: number }, deps: LinkDeps<S>): Promise<void> {
  const log = deps.log.child({ proxy: link.target })
  let delay = RECONNECT_MIN_MS
  while (!deps.signal.aborted) {
    link.state = 'connecting'
    try {
      const { socket, peer } = await dialAttested({ ...target, identity: deps.identity.current(), verify: deps.verify, expectedRole: 'proxy', signal: deps.signal })
      link.peer = peer
      const proxyId = proxyIdOf(peer)
      link.proxyId = proxyId
      const distrusted = deps.distrusted?.(proxyId)
      if (distrusted) {
        socket.destroy()
        link.state = 'distrusted'
        link.lastError = distrusted
        log.error('not using a proxy that under-reported what it owed', { reason: distrusted })
        await sleep(RECONNECT_MAX_MS, deps.signal)
        continue
      }
      const session = await deps.open(socket, peer, proxyId)
      session.on('error', (err) => log.debug('proxy session error', { error: err.message }))
      link.session = session
      link.state = 'connected'
      link.connectedAt = Date.now()
      link.lastError = undefined
      deps.onChange?.()
      log.info('connected to proxy', { image: peer.imageHash, kind: peer.kind })
      delay = RECONNECT_MIN_MS
      if (!session.closed) await new Promise((r) => session.once('close', r))
      link.session = undefined
      if ((link.state as ProxyLink['state']) !== 'distrusted') link.state = 'disconnected'
      deps.onChange?.()
      if (!deps.signal.aborted) log.warn('proxy connection closed; reconnecting')
    } catch (err) {
      const e = err as Error & { reason?: string }
      link.lastError = e.reason ?? e.message
      link.state = e.name === 'EvidenceRefusedError' ? 'refused' : 'disconnected'
      if (deps.signal.aborted) break
      if (e.name === 'EvidenceRefusedError') log.error('proxy evidence refused; not using it', { reason: link.lastError })
      else log.debug('cannot reach proxy', { error: e.message })
    }
    await sleep(delay, deps.signal)
    delay = Math.min(delay * 2, RECONNECT_MAX_MS)
  }
}

/** Leaves proxies the current policy no longer allows (e.g. their image was revoked on the root). */
export function revalidateLinks(links: ProxyLink[], refusal: (peer: VerifiedPeer) => string | undefined, log: Logger): number {
  let dropped = 0
  for (const l of links) {
    const reason = l.peer && l.state === 'connected' ? refusal(l.peer) : undefined
    if (!reason) continue
    log.warn('proxy no longer trusted; disconnecting', { proxy: l.target, reason })
    l.lastError = reason
    l.session?.destroy()
    dropped++
  }
  return dropped
}
