// The node's trust policy as it changes: static from config, or read from the root contract and refreshed,
// with a peer verifier that always applies the newest policy and a check for peers already connected.
import type { EvidenceKind, EvidenceVerifier, Policy, VerifiedPeer } from '../tee/types.ts'
import { createPeerVerifier } from '../tee/verify.ts'
import { VERIFICATION_CACHE_TTL_MS } from '../tee/constants.ts'
import type { PeerVerifier } from '../net/attested.ts'

/** Why a connected peer would no longer be accepted under `policy`, or undefined if it still is. */
export function refusalUnder(policy: Policy, peer: VerifiedPeer): string | undefined {
  const images = policy.imageHashes[peer.role]
  if (peer.kind !== 'none') {
    if (!policy.acceptKinds.includes(peer.kind)) return `evidence kind ${peer.kind} is no longer accepted`
    if (images === undefined || (images !== '*' && !images.includes(peer.imageHash))) return `image ${peer.imageHash} is no longer allowed for a ${peer.role}`
  }
  if (peer.role === 'worker') {
    const models = policy.modelHashes ?? '*'
    if (models !== '*' && !models.includes(peer.claims.modelHash ?? '')) return `model ${peer.claims.modelHash ?? '(none)'} is no longer allowed`
  }
  return undefined
}

export class LiveTrust {
  private current: Policy
  private verifyFn
  private readonly listeners: Array<(p: Policy) => void> = []

  constructor(
    policy: Policy,
    private readonly verifiers: Partial<Record<EvidenceKind, EvidenceVerifier>>,
  ) {
    this.current = policy
    this.verifyFn = createPeerVerifier(policy, verifiers, { cacheTtlMs: VERIFICATION_CACHE_TTL_MS })
  }

  get policy(): Policy {
    return this.current
  }

  /** Verifies with whatever policy is current at the time of the call. */
  readonly verify: PeerVerifier = (der, role) => this.verifyFn(der, role)

  /** Switches to `policy` (a fresh verification cache) and tells the listeners, which re-check live peers. */
  update(policy: Policy): void {
    this.current = policy
    this.verifyFn = createPeerVerifier(policy, this.verifiers, { cacheTtlMs: VERIFICATION_CACHE_TTL_MS })
    for (const l of this.listeners) l(policy)
  }

  onUpdate(fn: (p: Policy) => void): void {
    this.listeners.push(fn)
  }
}
