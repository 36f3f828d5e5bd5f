// Human-readable dump of an RA-TLS certificate for `cocoon attest inspect`; describes, never decides trust.

import { x509 } from './x509.ts'
import { parseAttestedCert, QUOTE_OIDS } from './cert.ts'
import { reportDataFor } from './claims.ts'
import { OID_CLAIMS } from './constants.ts'
import { toHex } from './hex.ts'
import { parseSimulatedQuote } from './simulated.ts'

/** Bytes of quote shown in hex; enough to recognise the header without flooding a terminal. */
const QUOTE_PREFIX_BYTES = 48
const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/

export interface CertificateDescription {
  subject: string
  issuer: string
  serialNumber: string
  notBefore: string
  notAfter: string
  signatureAlgorithm: string
  /** Raw Ed25519 key, hex, when the key is Ed25519. */
  publicKey?: string
  extensions: { oid: string; critical: boolean; bytes: number }[]
  /** Whether parseAttestedCert accepts it (self-signature, extensions, claims); the reason if not. */
  wellFormed: boolean
  problem?: string
  kind?: string
  claims?: unknown
  /** Raw claims text, shown even when it fails to decode. */
  claimsText?: string
  /** SHA-512 of the claims bytes: what the quote's report data must equal. */
  expectedReportData?: string
  quote?: {
    bytes: number
    hexPrefix: string
    /** Simulated quotes only: the fields they carry. */
    simulatedImageHash?: string
    reportData?: string
    reportDataMatchesClaims?: boolean
  }
}

/** Describes a PEM (first certificate) or DER certificate; throws only if it is not X.509 at all. */
export async function describeCertificate(pemOrDer: string | Uint8Array): Promise<CertificateDescription> {
  const der: Uint8Array<ArrayBuffer> = typeof pemOrDer === 'string' ? pemToDer(pemOrDer) : new Uint8Array(pemOrDer)
  const cert = new x509.X509Certificate(der)
  const d: CertificateDescription = {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    signatureAlgorithm: cert.signatureAlgorithm.name,
    extensions: [...cert.extensions].map((e) => ({ oid: e.type, critical: e.critical, bytes: e.value.byteLength })),
    wellFormed: false,
  }
  try {
    const a = await parseAttestedCert(der)
    d.wellFormed = true
    d.publicKey = toHex(a.publicKey)
    d.kind = a.kind
    d.claims = a.claims
  } catch (e) {
    d.problem = (e as { reason?: string }).reason ?? (e as Error).message
  }

  const claimsExt = cert.extensions.find((e) => e.type === OID_CLAIMS)
  if (claimsExt) {
    const claimsBytes = new Uint8Array(claimsExt.value)
    d.claimsText = new TextDecoder().decode(claimsBytes)
    d.expectedReportData = toHex(reportDataFor(claimsBytes))
  }
  const quoteExt = cert.extensions.find((e) => (Object.values(QUOTE_OIDS) as string[]).includes(e.type))
  if (quoteExt) {
    const q = new Uint8Array(quoteExt.value)
    d.quote = { bytes: q.length, hexPrefix: toHex(q.subarray(0, QUOTE_PREFIX_BYTES)) }
    if (quoteExt.type === QUOTE_OIDS.simulated) {
      try {
        const s = parseSimulatedQuote(q)
        d.quote.simulatedImageHash = s.imageHash
        d.quote.reportData = s.reportData
        d.quote.reportDataMatchesClaims = s.reportData === d.expectedReportData
      } catch (e) {
        d.problem ??= (e as Error).message
      }
    }
  }
  return d
}

function pemToDer(pem: string): Uint8Array<ArrayBuffer> {
  const m = PEM_CERT.exec(pem)
  if (!m) throw new TypeError('no PEM certificate found')
  return new Uint8Array(Buffer.from(m[1].replace(/\s+/g, ''), 'base64'))
}
