// Error classes of the TDX module: one per meaning, with a machine-readable code and a human-readable message.

/** A quote's bytes do not follow the TDX quote format (truncated, bad lengths, unknown types). */
export class QuoteFormatError extends Error {
  readonly name = 'QuoteFormatError'
  constructor(
    /** What was being read when the bytes ran out or made no sense, e.g. "TD report body". */
    readonly field: string,
    /** Byte offset in the quote where the problem is. */
    readonly offset: number,
    detail: string,
  ) {
    super(`malformed TDX quote: ${field} at offset ${offset}: ${detail}`)
  }
}

/** Why a well-formed quote failed DCAP verification. Callers branch on this, never on message text. */
export type TdxFailure =
  | 'unsupported-quote' // not a v4/v5 TDX quote with an ECDSA-P256 key from Intel's QE
  | 'unsupported-certification-data' // not certification data type 6 wrapping a type 5 PCK chain
  | 'collateral-malformed' // collateral JSON, chains or signatures unreadable
  | 'collateral-not-yet-valid' // TCB info, QE identity or a CRL issued after `now`
  | 'collateral-expired' // TCB info, QE identity or a CRL past its nextUpdate
  | 'collateral-mismatch' // collateral is for another platform (FMSPC, PCE id) or another TEE
  | 'certificate-malformed' // a certificate in a chain cannot be parsed
  | 'chain-broken' // issuer/subject do not link up, or an issuer is not a CA
  | 'root-not-pinned' // a chain does not end at the pinned Intel SGX Root CA
  | 'certificate-signature-invalid' // a certificate is not signed by its issuer
  | 'certificate-not-yet-valid'
  | 'certificate-expired'
  | 'certificate-revoked'
  | 'crl-malformed'
  | 'crl-issuer-mismatch' // the CRL is not from the CA that issued the certificates it should cover
  | 'crl-signature-invalid'
  | 'crl-missing' // no CRL covers a certificate's issuer
  | 'tcb-info-signature-invalid'
  | 'qe-identity-signature-invalid'
  | 'qe-report-signature-invalid' // QE report not signed by the PCK certificate
  | 'qe-report-binding-mismatch' // QE report data does not commit to the attestation key
  | 'qe-identity-mismatch' // the quoting enclave is not Intel's TD QE
  | 'quote-signature-invalid' // header+body not signed by the attestation key
  | 'debug-td' // the TD runs in debug mode: the host can read its memory
  | 'tdx-module-mismatch' // the TDX module's signer or attributes differ from the TCB info
  | 'tcb-not-supported' // no TCB level in the collateral matches the platform
  | 'tcb-revoked'

/** A quote failed DCAP verification. `code` says which check; the message says what was found. */
export class TdxVerificationError extends Error {
  readonly name = 'TdxVerificationError'
  constructor(
    readonly code: TdxFailure,
    detail: string,
  ) {
    super(`TDX quote rejected (${code}): ${detail}`)
  }
}

/** Collateral could not be obtained from the PCCS. Transient: not a verdict on the quote. */
export class CollateralFetchError extends Error {
  readonly name = 'CollateralFetchError'
  constructor(
    readonly url: string,
    /** HTTP status, or undefined for network errors and timeouts. */
    readonly status: number | undefined,
    detail: string,
  ) {
    super(`cannot fetch TDX collateral from ${url}: ${detail}`)
  }
}

export type TsmFailure =
  | 'unavailable' // no configfs-tsm report directory: not a TDX guest, or an old kernel
  | 'wrong-provider' // the TSM provider is not tdx_guest
  | 'busy' // EBUSY persisted through every retry
  | 'generation-race' // someone else kept writing to our report directory
  | 'bad-report-data' // report data is not exactly 64 bytes
  | 'empty-quote'
  | 'io' // any other filesystem error; see `cause`

/** The configfs-tsm provider could not produce a quote. */
export class TsmError extends Error {
  readonly name = 'TsmError'
  constructor(
    readonly code: TsmFailure,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`TDX quote generation failed (${code}): ${detail}`, options)
  }
}
