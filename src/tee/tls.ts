// node:tls options for mutual TLS 1.3 with RA-TLS certificates, and access to the peer's certificate bytes.

import { constants } from 'node:crypto'
import type { ConnectionOptions, TLSSocket, TlsOptions } from 'node:tls'
import type { Identity } from './types.ts'

/** Options usable both for tls.createServer and (spread with host/port) for tls.connect. */
export type RaTlsOptions = TlsOptions & ConnectionOptions

/**
 * Mutual TLS 1.3 with our self-signed certificate. Trust is not decided here: the caller must
 * run verifyPeer on peerCertDer(socket) before sending or reading any application byte.
 */
export function tlsOptions(identity: Identity): RaTlsOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    key: identity.keyPem,
    cert: identity.certPem,
    requestCert: true,
    rejectUnauthorized: false, // RA-TLS certs are self-signed: no CA can vouch; the evidence is verified by verifyPeer before any application byte moves.
    // A resumed session skips the certificate, so the peer's evidence could not be re-checked.
    secureOptions: constants.SSL_OP_NO_TICKET,
    ALPNProtocols: ['h2'],
  }
}

/** The peer's certificate as DER, or undefined if it sent none (or the session was resumed without one). */
export function peerCertDer(socket: TLSSocket): Uint8Array | undefined {
  const raw = socket.getPeerX509Certificate?.()?.raw ?? socket.getPeerCertificate(true)?.raw
  return raw && raw.length > 0 ? new Uint8Array(raw) : undefined
}
