// How nodes name the peers they account with.
import type { VerifiedPeer } from '../tee/index.ts'

/** A proxy's identity in the client's and worker's ledgers: its payment key, or its TLS key when it has none (off-chain). */
export function proxyIdOf(peer: VerifiedPeer): string {
  return peer.claims.paymentKey ?? Buffer.from(peer.publicKey).toString('hex')
}
