// Spec: Creating RA-TLS identities and parsing peer certificates.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createPublicKey, verify as edVerify, webcrypto } from 'node:crypto'
import { x509 } from '../../src/tee/x509.ts'
import {
  createIdentity,
  encodeClaims,
  EvidenceRefusedError,
  OID_CLAIMS,
  OID_SIMULATED_QUOTE,
  OID_TDX_QUOTE,
  parseAttestedCert,
  reportDataFor,
  simulatedImageHash,
} from '../../src/tee/index.ts'
import { CONFIG_HASH, derOf, reissue, T0, workerIdentity } from './helpers.ts'

const refused = (re: RegExp) => (e: unknown) => e instanceof EvidenceRefusedError && re.test(e.reason)

test('an identity is a self-signed Ed25519 certificate whose claims and quote sit in critical extensions', async () => {
  const id = await workerIdentity()
  const cert = new x509.X509Certificate(derOf(id.certPem))
  assert.equal(cert.signatureAlgorithm.name, 'Ed25519')
  assert.equal(cert.subject, 'CN=cocoon-worker')
  assert.equal(cert.issuer, cert.subject)
  assert.deepEqual(
    [...cert.extensions].map((e) => [e.type, e.critical]),
    [
      [OID_CLAIMS, true],
      [OID_SIMULATED_QUOTE, true],
    ],
  )
  const claimsBytes = new Uint8Array(cert.extensions[0].value)
  assert.deepEqual(claimsBytes, encodeClaims(id.claims))
  // The quote binds SHA-512 of exactly these claims bytes.
  assert.deepEqual(new Uint8Array(cert.extensions[1].value).subarray(60), reportDataFor(claimsBytes))
  assert.equal(cert.notBefore.getTime(), T0.getTime() - 60_000)
  assert.equal(cert.notAfter.getTime(), T0.getTime() + 86_400_000)
})

test('claims bind the certificate key and carry what the caller asserted', async () => {
  const id = await workerIdentity()
  assert.equal(id.kind, 'simulated')
  assert.deepEqual(id.claims, {
    v: 1,
    role: 'worker',
    publicKey: Buffer.from(id.publicKey).toString('hex'),
    createdAt: T0.getTime() / 1000,
    configHash: CONFIG_HASH,
    modelId: 'qwen3-0.6b',
    modelHash: 'a1'.repeat(32),
  })
  const parsed = await parseAttestedCert(derOf(id.certPem))
  assert.deepEqual(parsed.publicKey, id.publicKey)
  assert.deepEqual(parsed.claims, id.claims)
  assert.equal(parsed.kind, 'simulated')
  assert.equal(parsed.quote?.length, 124)
})

test('identity.sign produces Ed25519 signatures that verify under the certificate key', async () => {
  const id = await workerIdentity()
  const msg = new TextEncoder().encode('voucher')
  const sig = id.sign(msg)
  assert.equal(sig.length, 64)
  const key = createPublicKey(id.certPem)
  assert.equal(edVerify(null, msg, key, sig), true)
  assert.equal(edVerify(null, new TextEncoder().encode('voucher!'), key, sig), false)
})

test('an identity without a provider is kind none and carries no quote', async () => {
  const id = await createIdentity({ role: 'client', configHash: CONFIG_HASH })
  assert.equal(id.kind, 'none')
  const parsed = await parseAttestedCert(derOf(id.certPem))
  assert.equal(parsed.kind, 'none')
  assert.equal(parsed.quote, undefined)
})

test('createIdentity refuses malformed claims instead of issuing an unverifiable certificate', async () => {
  await assert.rejects(createIdentity({ role: 'client', configHash: 'nope' }), refused(/configHash/))
})

test('createIdentity honours validitySec', async () => {
  const id = await createIdentity({ role: 'client', configHash: CONFIG_HASH, now: () => T0, validitySec: 600 })
  assert.equal((await parseAttestedCert(derOf(id.certPem))).notAfter.getTime(), T0.getTime() + 600_000)
})

test('parse refuses an unknown critical extension but ignores unknown non-critical ones', async () => {
  const id = await workerIdentity()
  const critical = await reissue(id, (e) => [...e, { oid: '1.3.6.1.4.1.12345.99', critical: true, value: new Uint8Array([1]) }])
  await assert.rejects(parseAttestedCert(critical), refused(/unknown critical extension 1\.3\.6\.1\.4\.1\.12345\.99/))
  const nonCritical = await reissue(id, (e) => [...e, { oid: '1.3.6.1.4.1.12345.99', critical: false, value: new Uint8Array([1]) }])
  assert.equal((await parseAttestedCert(nonCritical)).kind, 'simulated')
})

test('parse refuses a certificate with two quote extensions', async () => {
  const id = await workerIdentity()
  const der = await reissue(id, (e) => [...e, { oid: OID_TDX_QUOTE, critical: true, value: e[1].value }])
  await assert.rejects(parseAttestedCert(der), refused(/more than one quote/))
})

test('parse refuses evidence in a non-critical extension, a duplicate extension, and missing claims', async () => {
  const id = await workerIdentity()
  await assert.rejects(
    parseAttestedCert(await reissue(id, (e) => [e[0], { ...e[1], critical: false }])),
    refused(/not critical/),
  )
  await assert.rejects(parseAttestedCert(await reissue(id, (e) => [e[0], e[0], e[1]])), refused(/duplicate extension/))
  await assert.rejects(parseAttestedCert(await reissue(id, (e) => [e[1]])), refused(/no claims/))
})

test('parse refuses a broken self-signature', async () => {
  const id = await workerIdentity()
  const der = derOf(id.certPem)
  der[der.length - 1] ^= 0x01 // last byte of the signature
  await assert.rejects(parseAttestedCert(der), refused(/self-signature/))
})

test('parse refuses a certificate signed by another key than its own', async () => {
  const id = await workerIdentity()
  const other = await workerIdentity()
  // Built by hand: SPKI of `id`, signature by `other`.
  const pkcs8 = (await import('node:crypto')).createPrivateKey(other.keyPem).export({ type: 'pkcs8', format: 'der' })
  const signingKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign'])
  const publicKey = await webcrypto.subtle.importKey('raw', id.publicKey, { name: 'Ed25519' }, true, ['verify'])
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=cocoon-worker',
    issuer: 'CN=cocoon-worker',
    publicKey: publicKey as unknown as CryptoKey,
    signingKey: signingKey as unknown as CryptoKey,
    signingAlgorithm: { name: 'Ed25519' },
    extensions: new x509.X509Certificate(derOf(id.certPem)).extensions,
  })
  await assert.rejects(parseAttestedCert(new Uint8Array(cert.rawData)), refused(/self-signature/))
})

test('parse refuses a certificate whose key is not Ed25519', async () => {
  const id = await workerIdentity()
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as unknown as CryptoKeyPair
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=cocoon-worker',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
    extensions: new x509.X509Certificate(derOf(id.certPem)).extensions,
  })
  await assert.rejects(parseAttestedCert(new Uint8Array(cert.rawData)), refused(/Ed25519/))
})

test('parse refuses trailing bytes and text that is not DER, such as the PEM itself', async () => {
  const id = await workerIdentity()
  await assert.rejects(parseAttestedCert(new Uint8Array([...derOf(id.certPem), 0])), refused(/single DER/))
  await assert.rejects(parseAttestedCert(new TextEncoder().encode(id.certPem)), refused(/single DER/))
})

test('a different image build (tag) yields a different image hash in the quote', async () => {
  const a = await parseAttestedCert(derOf((await workerIdentity()).certPem))
  const other = await simulatedImageHash('other-build')
  const { SimulatedEvidenceProvider } = await import('../../src/tee/index.ts')
  const b = await parseAttestedCert(derOf((await workerIdentity({ provider: new SimulatedEvidenceProvider(other) })).certPem))
  assert.notDeepEqual(a.quote!.subarray(28, 60), b.quote!.subarray(28, 60))
  assert.equal(Buffer.from(b.quote!.subarray(28, 60)).toString('hex'), other)
})
