// The attestation seam: RA-TLS identities, evidence providers and verifiers, policies and TLS options.

export * from './types.ts'
export {
  OID_CLAIMS,
  OID_SIMULATED_QUOTE,
  OID_TDX_QUOTE,
  CERT_VALIDITY_SEC,
  DEFAULT_MAX_CERT_AGE_SEC,
  MAX_CLOCK_SKEW_SEC,
  REPORT_DATA_BYTES,
  VERIFICATION_CACHE_TTL_MS,
} from './constants.ts'
export { encodeClaims, decodeClaims, reportDataFor } from './claims.ts'
export { createIdentity, parseAttestedCert, type AttestedCert, type CreateIdentityOptions } from './cert.ts'
export { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from './simulated.ts'
export {
  verifyPeer,
  createPeerVerifier,
  VerificationCache,
  type VerifyPeerOptions,
  type VerificationCacheOptions,
} from './verify.ts'
export { parsePolicy, assertProductionPolicy, devnetPolicy, InvalidPolicyError } from './policy.ts'
export { tlsOptions, peerCertDer, type RaTlsOptions } from './tls.ts'
export { describeCertificate, type CertificateDescription } from './describe.ts'
export { generateIdentityKeys, identityKeysFromSeed } from './cert.ts'
export { fixedIdentity, RenewingIdentity, type IdentitySource, NODE_CERT_VALIDITY_SEC, NODE_CERT_RENEW_SEC } from './renew.ts'
export { toHex, isHex } from './hex.ts'
export { identityStats } from './stats.ts'
