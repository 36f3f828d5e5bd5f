// DCAP verification of a TDX quote against collateral, every step our own, ending at the pinned Intel SGX Root CA.

import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto'
import {
  ATTESTATION_KEY_TYPE_ECDSA_P256,
  INTEL_QE_VENDOR_ID,
  INTEL_SGX_ROOT_CA_SHA256,
  QE_IDENTITY_ID_TDX,
  TCB_INFO_ID_TDX,
  TCB_INFO_VERSION_TDX,
} from './constants.ts'
import { checkCrlWindow, checkNotRevoked, parseCrl, parsePemChain, verifyChain, verifyCrl } from './chain.ts'
import { collateralBytes, parseQeIdentity, parseTcbInfo, type TdxCollateral } from './collateral.ts'
import { TdxVerificationError } from './errors.ts'
import { readPckInfo } from './pck.ts'
import { isDebugTd, parseTdxQuote, tdxImageHash, type TdReportBody } from './quote.ts'
import { checkQeIdentity, evaluateTdxTcb } from './tcb.ts'
import type { x509 } from '../x509.ts'

/** What a verified quote proves. Hex strings are lowercase. */
export interface TdxVerifiedQuote {
  /** Intel TCB status; whether it is acceptable is the policy's call (see tcbStatusAllowed). */
  tcbStatus: string
  advisoryIds: string[]
  quoteVersion: number
  /** The TD report, as signed. */
  body: TdReportBody
  /** See tdxImageHash. */
  imageHash: string
  /** The 64 report-data bytes. */
  reportData: string
  /** The platform's FMSPC, uppercase hex as Intel writes it. */
  fmspc: string
  /** Earliest expiry among everything the verdict rests on (collateral, CRLs, certificates). */
  validUntil: Date
}

export interface VerifyTdxOptions {
  /** The time at which collateral, CRLs and certificates must be valid. */
  now: Date
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex')
}

function rawP256Key(xy: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: Buffer.from(xy.subarray(0, 32)).toString('base64url'), y: Buffer.from(xy.subarray(32, 64)).toString('base64url') },
    format: 'jwk',
  })
}

function certKey(cert: x509.X509Certificate): KeyObject {
  return createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' })
}

/** ECDSA-P256/SHA-256 with a raw r ‖ s signature, as every signature in DCAP is. */
function ecdsaOk(key: KeyObject, data: Uint8Array, sig: Uint8Array): boolean {
  try {
    return verifySignature('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)
  } catch {
    return false
  }
}

function checkWindow(what: string, issueDate: string, nextUpdate: string, now: Date): void {
  if (now.getTime() < Date.parse(issueDate)) throw new TdxVerificationError('collateral-not-yet-valid', `${what} is issued at ${issueDate}, after now (${now.toISOString()})`)
  if (now.getTime() > Date.parse(nextUpdate)) throw new TdxVerificationError('collateral-expired', `${what} expired at ${nextUpdate} (now ${now.toISOString()})`)
}

/**
 * Verifies a TDX quote with DCAP. In order: the quote's format and type; the collateral's
 * validity windows; the PCK, TCB-info and QE-identity chains up to the pinned Intel SGX Root CA;
 * the CRL signatures and revocation; the TCB-info and QE-identity signatures; the QE report signature by the PCK key; the QE
 * report's binding of the attestation key; that the collateral is for this platform and the QE
 * is Intel's TD QE; the quote signature by the attestation key; no debug TD;
 * and finally the TCB status. Throws QuoteFormatError or TdxVerificationError; returns the
 * status without judging it (a Revoked TCB is the one status that always throws).
 */
export async function verifyTdxQuote(quote: Uint8Array, collateral: TdxCollateral, opts: VerifyTdxOptions): Promise<TdxVerifiedQuote> {
  return verifyWithRoot(quote, collateral, opts.now, INTEL_SGX_ROOT_CA_SHA256)
}

async function verifyWithRoot(quoteBytes: Uint8Array, collateral: TdxCollateral, now: Date, rootSha256: string): Promise<TdxVerifiedQuote> {
  if (Number.isNaN(now.getTime())) throw new TypeError('verifyTdxQuote: `now` is not a valid date')
  // 1. Format and type. A private copy: the result's body must not change if the caller reuses its buffer.
  const quote = parseTdxQuote(new Uint8Array(quoteBytes))
  const { header, body, auth } = quote
  if (header.attestationKeyType !== ATTESTATION_KEY_TYPE_ECDSA_P256) {
    throw new TdxVerificationError('unsupported-quote', `attestation key type ${header.attestationKeyType} is not ECDSA-256-with-P-256 (2)`)
  }
  if (hex(header.qeVendorId) !== INTEL_QE_VENDOR_ID) {
    throw new TdxVerificationError('unsupported-quote', `QE vendor id ${hex(header.qeVendorId)} is not Intel's (${INTEL_QE_VENDOR_ID})`)
  }

  // 2. Collateral, parsed, and inside its validity windows.
  const tcbInfo = parseTcbInfo(collateral.tcb_info)
  const qeIdentity = parseQeIdentity(collateral.qe_identity)
  const rootCrl = parseCrl(collateralBytes(collateral.root_ca_crl, 'root CA CRL'), 'root CA CRL')
  const pckCrl = parseCrl(collateralBytes(collateral.pck_crl, 'PCK CRL'), 'PCK CRL')
  checkWindow('TCB info', tcbInfo.issueDate, tcbInfo.nextUpdate, now)
  checkWindow('QE identity', qeIdentity.issueDate, qeIdentity.nextUpdate, now)
  checkCrlWindow(rootCrl, 'root CA CRL', now)
  checkCrlWindow(pckCrl, 'PCK CRL', now)

  // 3. Chains to the pinned root.
  const pckChain = parsePemChain(auth.pckChainPem, 'PCK chain')
  const tcbChain = parsePemChain(collateral.tcb_info_issuer_chain, 'TCB info issuer chain')
  const qeChain = parsePemChain(collateral.qe_identity_issuer_chain, 'QE identity issuer chain')
  await verifyChain(pckChain, { what: 'PCK chain', now, rootSha256 })
  await verifyChain(tcbChain, { what: 'TCB info issuer chain', now, rootSha256 })
  await verifyChain(qeChain, { what: 'QE identity issuer chain', now, rootSha256 })

  // 4. CRLs signed by their CAs (the root, and the CA that issued the PCK certificate); nothing revoked.
  const root = pckChain[pckChain.length - 1]
  await verifyCrl(rootCrl, root, { what: 'root CA CRL', now })
  await verifyCrl(pckCrl, pckChain[1], { what: 'PCK CRL', now })
  checkNotRevoked(pckChain, [rootCrl, pckCrl], 'PCK chain')
  checkNotRevoked(tcbChain, [rootCrl], 'TCB info issuer chain')
  checkNotRevoked(qeChain, [rootCrl], 'QE identity issuer chain')

  // 5. TCB info and QE identity signed by Intel.
  const tcbSig = collateralBytes(collateral.tcb_info_signature, 'TCB info signature')
  if (!ecdsaOk(certKey(tcbChain[0]), Buffer.from(collateral.tcb_info, 'utf8'), tcbSig)) {
    throw new TdxVerificationError('tcb-info-signature-invalid', 'the TCB info signature does not verify with the TCB Signing key')
  }
  const qeSig = collateralBytes(collateral.qe_identity_signature, 'QE identity signature')
  if (!ecdsaOk(certKey(qeChain[0]), Buffer.from(collateral.qe_identity, 'utf8'), qeSig)) {
    throw new TdxVerificationError('qe-identity-signature-invalid', 'the QE identity signature does not verify with the TCB Signing key')
  }

  // 6. The QE report is signed by the PCK key and commits to the attestation key.
  if (!ecdsaOk(certKey(pckChain[0]), auth.qeReport.raw, auth.qeReportSignature)) {
    throw new TdxVerificationError('qe-report-signature-invalid', 'the QE report signature does not verify with the PCK certificate key')
  }
  const binding = createHash('sha256').update(auth.attestationKey).update(auth.qeAuthData).digest()
  const rd = auth.qeReport.reportData
  if (!binding.equals(rd.subarray(0, 32)) || rd.subarray(32).some((b) => b !== 0)) {
    throw new TdxVerificationError(
      'qe-report-binding-mismatch',
      `QE report data ${hex(rd.subarray(0, 32))} is not SHA-256(attestation key ‖ QE auth data) = ${binding.toString('hex')} followed by zeros`,
    )
  }

  // 7. The collateral describes this platform, and the QE is Intel's TD QE.
  const pck = readPckInfo(pckChain[0])
  if (tcbInfo.id !== TCB_INFO_ID_TDX || tcbInfo.version !== TCB_INFO_VERSION_TDX) {
    throw new TdxVerificationError('collateral-mismatch', `TCB info is "${tcbInfo.id}" version ${tcbInfo.version}, not "${TCB_INFO_ID_TDX}" version ${TCB_INFO_VERSION_TDX}`)
  }
  if (tcbInfo.fmspc.toUpperCase() !== pck.fmspc) {
    throw new TdxVerificationError('collateral-mismatch', `TCB info is for FMSPC ${tcbInfo.fmspc.toUpperCase()}, the PCK certificate says ${pck.fmspc}`)
  }
  if (tcbInfo.pceId.toUpperCase() !== pck.pceId) {
    throw new TdxVerificationError('collateral-mismatch', `TCB info is for PCE id ${tcbInfo.pceId.toUpperCase()}, the PCK certificate says ${pck.pceId}`)
  }
  if (qeIdentity.id !== QE_IDENTITY_ID_TDX) {
    throw new TdxVerificationError('collateral-mismatch', `QE identity is for "${qeIdentity.id}", not "${QE_IDENTITY_ID_TDX}"`)
  }
  checkQeIdentity(auth.qeReport, qeIdentity)

  // 8. Header and body are signed by the attestation key.
  if (!ecdsaOk(rawP256Key(auth.attestationKey), quote.signedBytes, auth.signature)) {
    throw new TdxVerificationError('quote-signature-invalid', 'the quote signature over header and TD report does not verify with the attestation key')
  }

  // 9. A debug TD's memory is open to the host; nothing it reports can be trusted.
  if (isDebugTd(body)) throw new TdxVerificationError('debug-td', `TDATTRIBUTES ${hex(body.tdAttributes)} has the debug bit set`)

  // 10. TCB status.
  const verdict = evaluateTdxTcb({
    tcbInfo,
    qeIdentity,
    pck,
    td: body,
    qeIsvSvn: auth.qeReport.isvSvn,
  })
  if (verdict.status === 'Revoked') throw new TdxVerificationError('tcb-revoked', `the platform TCB is revoked (advisories: ${verdict.advisoryIds.join(', ') || 'none'})`)

  const expiries = [
    Date.parse(tcbInfo.nextUpdate),
    Date.parse(qeIdentity.nextUpdate),
    rootCrl.nextUpdate?.getTime() ?? 0,
    pckCrl.nextUpdate?.getTime() ?? 0,
    ...[...pckChain, ...tcbChain, ...qeChain].map((c) => c.notAfter.getTime()),
  ]
  return {
    tcbStatus: verdict.status,
    advisoryIds: verdict.advisoryIds,
    quoteVersion: header.version,
    body,
    imageHash: tdxImageHash(body),
    reportData: hex(body.reportData),
    fmspc: pck.fmspc,
    validUntil: new Date(Math.min(...expiries)),
  }
}
