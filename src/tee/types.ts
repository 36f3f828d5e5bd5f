// The attestation seam: identities, evidence providers and verifiers, and the policy that decides whom to trust.

/** The three node roles. Clients are not in a TEE; proxies and workers are. */
export type Role = 'client' | 'proxy' | 'worker'

/** Kinds of evidence a certificate can carry. `none` is for clients, which are not attested. */
export type EvidenceKind = 'tdx' | 'simulated' | 'none'

/**
 * What a node asserts about itself. Serialized canonically (see encodeClaims) into the
 * claims extension; the quote's report data is SHA-512 of those bytes.
 */
export interface Claims {
  /** Claims format version. */
  v: 1
  role: Role
  /** Raw 32-byte Ed25519 public key of the certificate, lowercase hex. Binds the quote to the TLS key. */
  publicKey: string
  /** Creation time, unix seconds (chain time where available). */
  createdAt: number
  /** SHA-256 of the node's effective configuration, lowercase hex. */
  configHash: string
  /** Proxy only: Ed25519 public key that signs payment vouchers, lowercase hex. */
  paymentKey?: string
  /** Worker only: the model id it serves, as shown in /v1/models. */
  modelId?: string
  /** Worker only: SHA-256 of the model weights, lowercase hex. */
  modelHash?: string
  /** Worker only: raw X25519 HPKE public key (RFC 9180), lowercase hex, that clients encrypt requests to (docs/e2ee.md). */
  hpkeKey?: string
}

/** Produces a quote over 64 bytes of report data. One per TEE kind. */
export interface EvidenceProvider {
  readonly kind: EvidenceKind
  /** Returns the raw quote binding `reportData` (exactly 64 bytes). */
  quote(reportData: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array>
}

/** The result of checking a quote: what it proves about the code that produced it. */
export interface VerifiedEvidence {
  kind: EvidenceKind
  /** Identity of the code (image), lowercase hex. */
  imageHash: string
  /** The 64 report-data bytes the quote binds, lowercase hex. */
  reportData: string
  /** TDX only: TCB status and advisories. */
  tcbStatus?: string
  advisoryIds?: string[]
}

/** Checks a quote of one kind. Throws EvidenceRefusedError when it is not valid. */
export interface EvidenceVerifier {
  readonly kind: EvidenceKind
  verify(quote: Uint8Array, opts?: { now?: Date; signal?: AbortSignal }): Promise<VerifiedEvidence>
}

/** Who a node will talk to. Comes from config now, from the root contract later. */
export interface Policy {
  /** Evidence kinds accepted from peers. A production policy never lists `simulated`. */
  acceptKinds: EvidenceKind[]
  /** Allowed image hashes per peer role; '*' accepts any image of an accepted kind. */
  imageHashes: Partial<Record<Role, string[] | '*'>>
  /** Allowed model hashes for workers; '*' (default) accepts any. */
  modelHashes?: string[] | '*'
  /** TDX TCB statuses accepted. Default ['UpToDate']. */
  tcbStatuses?: string[]
  /** Oldest acceptable certificate, by its claims' createdAt, in seconds. */
  maxCertAgeSec: number
}

/** A peer that passed verification. */
export interface VerifiedPeer {
  kind: EvidenceKind
  role: Role
  imageHash: string
  claims: Claims
  /** Raw Ed25519 public key of the peer's certificate (32 bytes). */
  publicKey: Uint8Array
}

/** A node's own attested TLS identity. The private key never leaves the process. */
export interface Identity {
  role: Role
  kind: EvidenceKind
  claims: Claims
  certPem: string
  keyPem: string
  /** Raw Ed25519 public key (32 bytes). */
  publicKey: Uint8Array
  /** Ed25519 signature with the identity key. */
  sign(data: Uint8Array): Uint8Array
  /** The same, computed on libuv's thread pool so a busy event loop does not wait for it. */
  signAsync(data: Uint8Array): Promise<Uint8Array>
}

/** A peer's evidence did not satisfy the policy. `reason` is safe to log. */
export class EvidenceRefusedError extends Error {
  readonly name = 'EvidenceRefusedError'
  constructor(readonly reason: string) {
    super(`peer evidence refused: ${reason}`)
  }
}
