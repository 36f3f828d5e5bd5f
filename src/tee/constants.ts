// Named constants of the RA-TLS certificate format and of attestation checks.

/** Private enterprise arc under which Cocoon's certificate extensions live. */
export const OID_ARC = '1.3.6.1.4.1.12345'
/** Critical extension holding a raw Intel TDX quote (v4/v5), as produced by configfs-tsm. */
export const OID_TDX_QUOTE = `${OID_ARC}.1`
/** Critical extension holding the canonical claims bytes (see encodeClaims). */
export const OID_CLAIMS = `${OID_ARC}.2`
/** Critical extension holding a simulated quote. Its own OID so it can never pass for TDX evidence. */
export const OID_SIMULATED_QUOTE = `${OID_ARC}.3`

/** Quote report data length: the SHA-512 of the claims bytes. */
export const REPORT_DATA_BYTES = 64
/** Raw Ed25519 public key length. */
export const ED25519_PUBLIC_KEY_BYTES = 32

/** Default lifetime of an identity certificate. */
export const CERT_VALIDITY_SEC = 86_400
/** Clock disagreement tolerated between peers; certificates are backdated by it and claims may be this far ahead. */
export const MAX_CLOCK_SKEW_SEC = 60
/** Default oldest acceptable certificate: one validity period plus slack for clock skew and rotation. */
export const DEFAULT_MAX_CERT_AGE_SEC = CERT_VALIDITY_SEC + 300

/** Default lifetime of a cached successful verification. */
export const VERIFICATION_CACHE_TTL_MS = 60_000
/** Default bound on cached verifications; the oldest entry is evicted first. */
export const VERIFICATION_CACHE_MAX_ENTRIES = 1_024
