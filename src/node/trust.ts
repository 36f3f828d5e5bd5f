// The node's trust policy as it changes: static from config, or read from the root contract and refreshed,
// with a peer verifier that always applies the newest policy and a check for peers already connected.
import { type EvidenceKind, type EvidenceVerifier, type Policy, type VerifiedPeer, createPeerVerifier, VERIFICATION_CACHE_TTL_MS, DEFAULT_MAX_CERT_AGE_SEC, type Role } from '../tee/index.ts'
import type { PeerVerifier } from '../net/attested.ts'
import type { RootState } from '../ton/contracts/index.ts'

/** What a node keeps from its own configuration when the lists come from the root. */
export interface RootPolicyBase extends Pick<Policy, 'acceptKinds'>, Partial<Pick<Policy, 'maxCertAgeSec' | 'tcbStatuses'>> {
  /** The node's own role, which decides whom it checks. */
  role: Role
}

/**
 * The policy a node of `base.role` enforces under the root's lists:
 * - client and worker check proxies: `imageHashes.proxy` = the root's proxy image hashes;
 * - the client also checks the workers it encrypts to (docs/e2ee.md), exactly as a proxy does:
 *   `imageHashes.worker` = the root's worker image hashes, `modelHashes` = the root's model hashes;
 * - proxy checks workers and clients: `imageHashes.worker` = the root's worker image hashes,
 *   `modelHashes` = the root's model hashes, `imageHashes.client` = '*' (clients are not attested).
 * An empty list on the root trusts nobody of that role.
 */
export function policyFromRoot(state: RootState, base: RootPolicyBase): Policy {
  const common = {
    acceptKinds: [...base.acceptKinds],
    maxCertAgeSec: base.maxCertAgeSec ?? DEFAULT_MAX_CERT_AGE_SEC,
    ...(base.tcbStatuses ? { tcbStatuses: [...base.tcbStatuses] } : {}),
  }
  if (base.role === 'proxy') {
    return { ...common, imageHashes: { worker: [...state.workerImageHashes], client: '*' }, modelHashes: [...state.modelHashes] }
  }
  if (base.role === 'client') {
    return { ...common, imageHashes: { proxy: [...state.proxyImageHashes], worker: [...state.workerImageHashes] }, modelHashes: [...state.modelHashes] }
  }
  return { ...common, imageHashes: { proxy: [...state.proxyImageHashes] }, modelHashes: '*' }
}

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
