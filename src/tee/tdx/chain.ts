// Certificate chains to a pinned root, and CRLs whose signatures we verify ourselves (dcap-qvl does not).

import { createHash } from 'node:crypto'
import { x509 } from '../x509.ts'
import { TdxVerificationError } from './errors.ts'

type Cert = x509.X509Certificate
type Crl = x509.X509Crl

/** Splits a PEM bundle into certificates, leaf first. */
export function parsePemChain(pem: string, what: string): Cert[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) throw new TdxVerificationError('certificate-malformed', `${what} contains no PEM certificate`)
  return blocks.map((block, i) => {
    try {
      return new x509.X509Certificate(block)
    } catch (err) {
      throw new TdxVerificationError('certificate-malformed', `${what} certificate #${i} cannot be parsed: ${(err as Error).message}`)
    }
  })
}

export function parseCrl(der: Uint8Array, what: string): Crl {
  try {
    return new x509.X509Crl(new Uint8Array(der))
  } catch (err) {
    throw new TdxVerificationError('crl-malformed', `${what} cannot be parsed: ${(err as Error).message}`)
  }
}

export function certSha256(cert: Cert): string {
  return createHash('sha256').update(new Uint8Array(cert.rawData)).digest('hex')
}

function cn(name: string): string {
  return /CN=([^,]+)/.exec(name)?.[1]?.trim() ?? name
}

function isCa(cert: Cert): boolean {
  const bc = cert.getExtension(x509.BasicConstraintsExtension)
  return bc?.ca === true
}

function checkWindow(cert: Cert, what: string, now: Date): void {
  if (now < cert.notBefore) {
    throw new TdxVerificationError('certificate-not-yet-valid', `${what}: "${cn(cert.subject)}" is valid only from ${cert.notBefore.toISOString()} (now ${now.toISOString()})`)
  }
  if (now > cert.notAfter) {
    throw new TdxVerificationError('certificate-expired', `${what}: "${cn(cert.subject)}" expired at ${cert.notAfter.toISOString()} (now ${now.toISOString()})`)
  }
}

/**
 * Checks that `certs` (leaf first) is a chain ending at the root whose DER has SHA-256
 * `rootSha256`: each certificate is signed by the next, names link up, issuers are CAs, and
 * every certificate is within its validity window at `now`. Revocation is checked separately.
 */
export async function verifyChain(certs: Cert[], opts: { what: string; now: Date; rootSha256: string }): Promise<void> {
  const { what, now } = opts
  if (certs.length < 2) throw new TdxVerificationError('chain-broken', `${what} has ${certs.length} certificate; a leaf and the root are needed`)
  const root = certs[certs.length - 1]
  const rootFp = certSha256(root)
  if (rootFp !== opts.rootSha256) {
    throw new TdxVerificationError(
      'root-not-pinned',
      `${what} ends at "${cn(root.subject)}" with SHA-256 ${rootFp}, not the pinned Intel SGX Root CA ${opts.rootSha256}`,
    )
  }
  for (let i = 0; i < certs.length; i++) {
    const cert = certs[i]
    const issuer = certs[Math.min(i + 1, certs.length - 1)]
    if (cert.issuer !== issuer.subject) {
      throw new TdxVerificationError('chain-broken', `${what}: "${cn(cert.subject)}" is issued by "${cn(cert.issuer)}", but the next certificate is "${cn(issuer.subject)}"`)
    }
    if (!isCa(issuer)) throw new TdxVerificationError('chain-broken', `${what}: issuer "${cn(issuer.subject)}" is not a CA certificate`)
    let ok = false
    try {
      ok = await cert.verify({ publicKey: issuer, signatureOnly: true })
    } catch {
      ok = false
    }
    if (!ok) {
      throw new TdxVerificationError('certificate-signature-invalid', `${what}: the signature on "${cn(cert.subject)}" does not verify with the key of "${cn(issuer.subject)}"`)
    }
    checkWindow(cert, what, now)
  }
}

/** Checks a CRL's signature by `issuer`, that it names that issuer, and that `now` is inside thisUpdate..nextUpdate. */
export async function verifyCrl(crl: Crl, issuer: Cert, opts: { what: string; now: Date }): Promise<void> {
  const { what, now } = opts
  if (crl.issuer !== issuer.subject) {
    throw new TdxVerificationError('crl-issuer-mismatch', `${what} is issued by "${cn(crl.issuer)}", expected "${cn(issuer.subject)}"`)
  }
  let ok = false
  try {
    ok = await crl.verify({ publicKey: issuer })
  } catch {
    ok = false
  }
  if (!ok) throw new TdxVerificationError('crl-signature-invalid', `${what}: the signature does not verify with the key of "${cn(issuer.subject)}"`)
  checkCrlWindow(crl, what, now)
}

export function checkCrlWindow(crl: Crl, what: string, now: Date): void {
  if (now < crl.thisUpdate) {
    throw new TdxVerificationError('collateral-not-yet-valid', `${what} is issued at ${crl.thisUpdate.toISOString()}, after now (${now.toISOString()})`)
  }
  if (!crl.nextUpdate) throw new TdxVerificationError('crl-malformed', `${what} has no nextUpdate`)
  if (now > crl.nextUpdate) {
    throw new TdxVerificationError('collateral-expired', `${what} expired at ${crl.nextUpdate.toISOString()} (now ${now.toISOString()})`)
  }
}

function normSerial(s: string): string {
  return s.toLowerCase().replace(/^0+(?=.)/, '')
}

/**
 * Checks that no certificate but the (self-signed) root of `chain` is revoked. Each certificate
 * must be covered by a CRL from its issuer; an uncovered certificate fails closed.
 */
export function checkNotRevoked(chain: Cert[], crls: Crl[], what: string): void {
  for (const cert of chain.slice(0, -1)) {
    const crl = crls.find((c) => c.issuer === cert.issuer)
    if (!crl) throw new TdxVerificationError('crl-missing', `${what}: no CRL from "${cn(cert.issuer)}" to check "${cn(cert.subject)}" against`)
    const serial = normSerial(cert.serialNumber)
    const entry = crl.entries.find((e) => normSerial(e.serialNumber) === serial)
    if (entry) {
      throw new TdxVerificationError(
        'certificate-revoked',
        `${what}: "${cn(cert.subject)}" (serial ${serial}) was revoked by "${cn(cert.issuer)}" on ${entry.revocationDate.toISOString()}`,
      )
    }
  }
}
