// Creates a node's attested TLS identity (self-signed Ed25519 X.509 with evidence in critical extensions) and parses peers' certificates.

import { KeyObject, createPublicKey, randomBytes, sign as edSign, verify as edVerify, webcrypto } from 'node:crypto'
import { x509 } from './x509.ts'
import { decodeClaims, encodeClaims, reportDataFor } from './claims.ts'
import {
  CERT_VALIDITY_SEC,
  ED25519_PUBLIC_KEY_BYTES,
  MAX_CLOCK_SKEW_SEC,
  OID_CLAIMS,
  OID_SIMULATED_QUOTE,
  OID_TDX_QUOTE,
} from './constants.ts'
import { toHex } from './hex.ts'
import { ED25519_SPKI_PREFIX } from '../core/ed25519.ts'
import {
  EvidenceRefusedError,
  type Claims,
  type EvidenceKind,
  type EvidenceProvider,
  type Identity,
  type Role,
} from './types.ts'

/** Extension OID that carries each kind's quote. 'none' carries no quote. */
export const QUOTE_OIDS: Readonly<Record<Exclude<EvidenceKind, 'none'>, string>> = {
  tdx: OID_TDX_QUOTE,
  simulated: OID_SIMULATED_QUOTE,
}
/** The only critical extensions we understand; any other critical one makes the certificate unusable (RFC 5280 §4.2). */
const KNOWN_CRITICAL = new Set([OID_CLAIMS, OID_TDX_QUOTE, OID_SIMULATED_QUOTE])
const SERIAL_BYTES = 16

export interface CreateIdentityOptions {
  role: Role
  /** Produces the quote. Absent: kind 'none', for clients, which are not attested. */
  provider?: EvidenceProvider
  /** SHA-256 of the node's effective configuration, lowercase hex. */
  configHash: string
  /** Proxy: payment-voucher public key, lowercase hex. */
  paymentKey?: string
  /** Worker: model id as shown in /v1/models. */
  modelId?: string
  /** Worker: SHA-256 of the model weights, lowercase hex. */
  modelHash?: string
  /** Worker: HPKE public key (raw X25519, lowercase hex) for end-to-end encryption. */
  hpkeKey?: string
  /** Certificate lifetime. Default CERT_VALIDITY_SEC (one day). */
  validitySec?: number
  /** Reuse this key pair (a renewal keeps the identity key; only the certificate and evidence are fresh). */
  keys?: webcrypto.CryptoKeyPair
  /** Clock, for claims.createdAt and the validity window. Default: system clock (chain time where the caller has it). */
  now?: () => Date
  signal?: AbortSignal
}

/** A peer certificate that parsed, is self-signed by its Ed25519 key and carries well-formed evidence. Not yet trusted. */
export interface AttestedCert {
  /** Raw Ed25519 public key (32 bytes). */
  publicKey: Uint8Array
  kind: EvidenceKind
  quote?: Uint8Array
  claimsBytes: Uint8Array
  claims: Claims
  notBefore: Date
  notAfter: Date
  der: Uint8Array
}

/** A fresh Ed25519 identity key pair. */
export async function generateIdentityKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

/**
 * The identity key pair for a 32-byte Ed25519 seed, e.g. a client's wallet key: then the TLS
 * handshake itself proves control of that wallet.
 */
export async function identityKeysFromSeed(seed: Uint8Array): Promise<webcrypto.CryptoKeyPair> {
  if (seed.length !== 32) throw new RangeError('an Ed25519 seed is 32 bytes')
  const privateKey = await webcrypto.subtle.importKey('pkcs8', Buffer.concat([ED25519_PKCS8_PREFIX, Buffer.from(seed)]), { name: 'Ed25519' }, true, ['sign'])
  const jwk = await webcrypto.subtle.exportKey('jwk', privateKey)
  const publicKey = await webcrypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, { name: 'Ed25519' }, true, ['verify'])
  return { privateKey, publicKey }
}

export async function createIdentity(opts: CreateIdentityOptions): Promise<Identity> {
  const now = (opts.now ?? (() => new Date()))()
  const validitySec = opts.validitySec ?? CERT_VALIDITY_SEC
  if (!(validitySec > 0)) throw new RangeError('validitySec must be positive')
  const kind: EvidenceKind = opts.provider?.kind ?? 'none'
  if (opts.provider && kind === 'none') throw new TypeError("an evidence provider cannot be of kind 'none'")

  const keys = opts.keys ?? (await generateIdentityKeys())
  const publicKey = new Uint8Array(await webcrypto.subtle.exportKey('raw', keys.publicKey))
  const claims: Claims = {
    v: 1,
    role: opts.role,
    publicKey: toHex(publicKey),
    createdAt: Math.floor(now.getTime() / 1000),
    configHash: opts.configHash,
    paymentKey: opts.paymentKey,
    modelId: opts.modelId,
    modelHash: opts.modelHash,
    hpkeKey: opts.hpkeKey,
  }
  const claimsBytes = encodeClaims(claims)
  const extensions = [new x509.Extension(OID_CLAIMS, true, new Uint8Array(claimsBytes))]
  if (opts.provider && kind !== 'none') {
    const quote = await opts.provider.quote(reportDataFor(claimsBytes), { signal: opts.signal })
    extensions.push(new x509.Extension(QUOTE_OIDS[kind], true, new Uint8Array(quote)))
  }
  const serial = randomBytes(SERIAL_BYTES)
  serial[0] &= 0x7f // DER INTEGER serials must be positive
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: toHex(serial),
    name: `CN=cocoon-${opts.role}`,
    // Backdated so a peer whose clock lags a little does not see a certificate from the future.
    notBefore: new Date(now.getTime() - MAX_CLOCK_SKEW_SEC * 1000),
    notAfter: new Date(now.getTime() + validitySec * 1000),
    keys: keys as unknown as CryptoKeyPair,
    signingAlgorithm: { name: 'Ed25519' },
    extensions,
  })

  const privateKey = KeyObject.from(keys.privateKey)
  return {
    role: opts.role,
    kind,
    claims: stripUndefined(claims),
    certPem: cert.toString('pem'),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey,
    sign: (data) => new Uint8Array(edSign(null, data, privateKey)),
    signAsync: (data) => new Promise((resolve, reject) => edSign(null, data, privateKey, (err, sig) => (err ? reject(err) : resolve(new Uint8Array(sig))))),
  }
}

/**
 * Parses a DER certificate with a real X.509 parser (node's X509Certificate can be fooled by PEM
 * text inside a quote) and checks what needs no policy: Ed25519 self-signature, extension
 * hygiene and well-formed claims. Throws EvidenceRefusedError.
 *
 * The kind follows from which quote extension is present, so a 'none' certificate carries no quote by construction.
 */
export async function parseAttestedCert(der: Uint8Array): Promise<AttestedCert> {
  if (derLength(der) !== der.length) throw new EvidenceRefusedError('certificate is not a single DER SEQUENCE')
  let cert: InstanceType<typeof x509.X509Certificate>
  try {
    cert = new x509.X509Certificate(new Uint8Array(der))
  } catch (e) {
    throw new EvidenceRefusedError(`certificate does not parse: ${(e as Error).message}`)
  }
  if (cert.signatureAlgorithm.name !== 'Ed25519') {
    throw new EvidenceRefusedError(`signature algorithm ${cert.signatureAlgorithm.name}, expected Ed25519`)
  }
  const spki = Buffer.from(cert.publicKey.rawData)
  if (spki.length !== ED25519_SPKI_PREFIX.length + ED25519_PUBLIC_KEY_BYTES || !spki.subarray(0, ED25519_SPKI_PREFIX.length).equals(ED25519_SPKI_PREFIX)) {
    throw new EvidenceRefusedError('certificate key is not Ed25519')
  }
  const publicKey = new Uint8Array(spki.subarray(ED25519_SPKI_PREFIX.length))
  let signed = false
  try {
    // node:crypto directly over the TBS bytes: the same check as the library's verify(), without its WebCrypto round trips.
    signed = edVerify(null, new Uint8Array((cert as unknown as { tbs: ArrayBuffer }).tbs), createPublicKey({ key: spki, format: 'der', type: 'spki' }), new Uint8Array(cert.signature))
  } catch {
    signed = false
  }
  if (!signed) throw new EvidenceRefusedError('certificate self-signature does not verify')

  const byOid = new Map<string, Uint8Array>()
  for (const ext of cert.extensions) {
    if (byOid.has(ext.type)) throw new EvidenceRefusedError(`duplicate extension ${ext.type}`)
    if (ext.critical && !KNOWN_CRITICAL.has(ext.type)) throw new EvidenceRefusedError(`unknown critical extension ${ext.type}`)
    if (!ext.critical && KNOWN_CRITICAL.has(ext.type)) throw new EvidenceRefusedError(`evidence extension ${ext.type} is not critical`)
    byOid.set(ext.type, new Uint8Array(ext.value))
  }
  const quotes = (Object.entries(QUOTE_OIDS) as [Exclude<EvidenceKind, 'none'>, string][]).filter(([, oid]) => byOid.has(oid))
  if (quotes.length > 1) throw new EvidenceRefusedError('certificate carries more than one quote')
  const [kind, quoteOid]: [EvidenceKind, string | undefined] = quotes[0] ?? ['none', undefined]
  const claimsBytes = byOid.get(OID_CLAIMS)
  if (!claimsBytes) throw new EvidenceRefusedError('certificate carries no claims')
  return {
    publicKey,
    kind,
    quote: quoteOid ? byOid.get(quoteOid) : undefined,
    claimsBytes,
    claims: decodeClaims(claimsBytes),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    der: new Uint8Array(der),
  }
}

/**
 * Total length of the outer DER SEQUENCE, or -1. Checked before parsing because the parser
 * ignores trailing bytes and also accepts PEM, Base64 and hex text, none of which is a DER certificate.
 */
function derLength(der: Uint8Array): number {
  if (der.length < 2 || der[0] !== 0x30) return -1
  const first = der[1]
  if (first < 0x80) return 2 + first
  const n = first & 0x7f
  // Definite long form only (no BER indefinite length); a certificate is never 4 GiB.
  if (n === 0 || n > 4 || der.length < 2 + n) return -1
  let len = 0
  for (let i = 0; i < n; i++) len = len * 256 + der[2 + i]
  return 2 + n + len
}

function stripUndefined(c: Claims): Claims {
  return Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)) as unknown as Claims
}
