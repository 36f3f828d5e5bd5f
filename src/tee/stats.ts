// Pieces of /jsonstats that every role shares.
import type { Identity } from './types.ts'

/** The node's own identity as shown in /jsonstats. */
export function identityStats(id: Identity): Record<string, unknown> {
  return { kind: id.kind, publicKey: Buffer.from(id.publicKey).toString('hex'), certCreatedAt: id.claims.createdAt }
}
