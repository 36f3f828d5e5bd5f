// Spec: DCAP verification of TDX quotes against the fixtures, tampered copies, foreign roots, forged CRLs and expired collateral.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { webcrypto } from 'node:crypto'
import dcap from '@phala/dcap-qvl'
import { x509 } from '../../src/tee/x509.ts'
import {
  evaluateTdxTcb,
  parseTdxQuote,
  tcbStatusAllowed,
  tdxImageHash,
  TdxVerificationError,
  verifyTdxQuote,
  type TdxCollateral,
  type TdxFailure,
} from '../../src/tee/tdx/index.ts'
import { certSha256, checkNotRevoked, parseCrl, parsePemChain, verifyChain, verifyCrl } from '../../src/tee/tdx/chain.ts'
import { parseQeIdentity, parseTcbInfo } from '../../src/tee/tdx/collateral.ts'
import { readPckInfo } from '../../src/tee/tdx/pck.ts'

const FIXTURES = new URL('../../../shared/fixtures/tdx/', import.meta.url)
const load = (name: string) => new Uint8Array(readFileSync(new URL(name, FIXTURES)))
const loadJson = (name: string) => JSON.parse(readFileSync(new URL(name, FIXTURES), 'utf8')) as TdxCollateral

const quote = load('tdx_quote')
const collateral = loadJson('tdx_quote_collateral.json')
const outdated = load('tdx_quote_outdated')
const outdatedCollateral = loadJson('tdx_quote_outdated_collateral.json')
/** Inside both windows SOURCE.md gives. */
const IN_WINDOW = new Date('2025-07-01T00:00:00Z')
const OUTDATED_IN_WINDOW = new Date('2026-03-01T00:00:00Z')

const rejects = (code: TdxFailure, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof TdxVerificationError, `expected TdxVerificationError, got ${String(e)}`)
  assert.equal(e.code, code, e.message)
  if (re) assert.match(e.message, re)
  return true
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const b = new Uint8Array(bytes)
  b[at] ^= 0x01
  return b
}

// Offsets in the v4 fixture.
const BODY = 48
const MRTD = BODY + 136
const RTMR2 = BODY + 328 + 2 * 48
const REPORT_DATA = BODY + 520
const SIG_DATA = 48 + 584 + 4
const ATT_KEY = SIG_DATA + 64
const QE_REPORT = SIG_DATA + 128 + 6
const QE_REPORT_SIG = QE_REPORT + 384

/** Rebuilds `q` with another PEM PCK chain, fixing the three enclosing length fields. */
function withPckChain(q: Uint8Array, pem: string): Uint8Array {
  const signed = parseTdxQuote(q).signedBytes.length
  const buf = Buffer.from(q)
  const sigStart = signed + 4
  const outerSizeAt = sigStart + 128 + 2
  const authSizeAt = outerSizeAt + 4 + 384 + 64
  const innerTypeAt = authSizeAt + 2 + buf.readUInt16LE(authSizeAt)
  const chain = Buffer.from(pem, 'latin1')
  const size = Buffer.alloc(4)
  size.writeUInt32LE(chain.length)
  const out = Buffer.concat([buf.subarray(0, innerTypeAt + 2), size, chain])
  out.writeUInt32LE(out.length - (outerSizeAt + 4), outerSizeAt)
  out.writeUInt32LE(out.length - sigStart, signed)
  return new Uint8Array(out)
}

const pemBlocks = (pem: string): string[] => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? []
const pckPem = parseTdxQuote(quote).auth.pckChainPem

// ---- A throwaway PKI, for forged CRLs and foreign roots ----------------------------------

const ECDSA = { name: 'ECDSA', hash: 'SHA-256' } as const
const newKeys = () => webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as Promise<CryptoKeyPair>
const ROOT_NAME = 'CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara, ST=CA, C=US'
const LONG_AGO = new Date('2020-01-01T00:00:00Z')
const FAR_AHEAD = new Date('2040-01-01T00:00:00Z')

async function selfSigned(name: string, keys: CryptoKeyPair) {
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name,
    notBefore: LONG_AGO,
    notAfter: FAR_AHEAD,
    keys,
    signingAlgorithm: ECDSA,
    extensions: [new x509.BasicConstraintsExtension(true, 1, true)],
  })
}

async function issued(subject: string, issuer: x509.X509Certificate, issuerKey: CryptoKey, opts: { ca: boolean; serial: string; notBefore?: Date }) {
  const keys = await newKeys()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: opts.serial,
    subject,
    issuer: issuer.subject,
    notBefore: opts.notBefore ?? LONG_AGO,
    notAfter: FAR_AHEAD,
    publicKey: keys.publicKey,
    signingKey: issuerKey,
    signingAlgorithm: ECDSA,
    extensions: opts.ca ? [new x509.BasicConstraintsExtension(true, 0, true)] : [],
  })
  return { cert, keys }
}

async function crl(issuer: string, key: CryptoKey, opts: { revoked?: string[]; thisUpdate?: Date; nextUpdate?: Date } = {}) {
  return x509.X509CrlGenerator.create({
    issuer,
    thisUpdate: opts.thisUpdate ?? LONG_AGO,
    nextUpdate: opts.nextUpdate ?? FAR_AHEAD,
    entries: (opts.revoked ?? []).map((serialNumber) => ({ serialNumber, revocationDate: LONG_AGO })),
    signingAlgorithm: ECDSA,
    signingKey: key,
  })
}

const crlHex = (c: x509.X509Crl) => Buffer.from(c.rawData).toString('hex')

// ---- The fixtures ----------------------------------------------------------------------

test('the fixture quote verifies inside its collateral window with TCB status UpToDate', async () => {
  const r = await verifyTdxQuote(quote, collateral, { now: IN_WINDOW })
  assert.equal(r.tcbStatus, 'UpToDate')
  assert.deepEqual(r.advisoryIds, [])
  assert.equal(r.quoteVersion, 4)
  assert.equal(r.fmspc, 'B0C06F000000')
  assert.equal(r.imageHash, tdxImageHash(parseTdxQuote(quote).body))
  assert.equal(r.reportData, Buffer.from(quote.subarray(REPORT_DATA, REPORT_DATA + 64)).toString('hex'))
  // The PCK CRL is the first thing to lapse.
  assert.equal(r.validUntil.toISOString(), '2025-07-19T10:00:35.000Z')
  assert.ok(tcbStatusAllowed(r.tcbStatus))
})

test('@phala/dcap-qvl agrees on the fixtures (cross-check)', async () => {
  const ours = await verifyTdxQuote(quote, collateral, { now: IN_WINDOW })
  type QvlCollateral = Parameters<typeof dcap.verify>[1]
  const theirs = dcap.verify(quote, collateral as QvlCollateral, IN_WINDOW.getTime() / 1000)
  assert.equal(theirs.status, ours.tcbStatus)
  assert.deepEqual(theirs.advisory_ids, ours.advisoryIds)
  assert.throws(() => dcap.verify(outdated, outdatedCollateral as QvlCollateral, OUTDATED_IN_WINDOW.getTime() / 1000), /No matching TCB level/)
  await assert.rejects(verifyTdxQuote(outdated, outdatedCollateral, { now: OUTDATED_IN_WINDOW }), rejects('tcb-not-supported'))
})

test('the outdated (v5) quote is rejected inside its window: its TCB matches no level, and the reason names the platform TCB', async () => {
  await assert.rejects(
    verifyTdxQuote(outdated, outdatedCollateral, { now: OUTDATED_IN_WINDOW }),
    rejects('tcb-not-supported', /SGX components 3,3,2,2,4,1,0,3.*PCESVN 13.*no TCB level.*FMSPC 90C06F000000/),
  )
})

test('the outdated quote is refused before its collateral is valid and after it expires', async () => {
  await assert.rejects(verifyTdxQuote(outdated, outdatedCollateral, { now: new Date('2026-02-01T00:00:00Z') }), rejects('collateral-not-yet-valid', /TCB info/))
  await assert.rejects(verifyTdxQuote(outdated, outdatedCollateral, { now: new Date('2026-03-21T00:00:00Z') }), rejects('collateral-expired', /TCB info/))
})

test('expired collateral fails: at today\'s clock, and just after each item lapses', async () => {
  await assert.rejects(verifyTdxQuote(quote, collateral, { now: new Date() }), rejects('collateral-expired', /TCB info expired at 2025-07-19T10:16:03Z/))
  await assert.rejects(verifyTdxQuote(quote, collateral, { now: new Date('2025-07-19T10:01:00Z') }), rejects('collateral-expired', /PCK CRL expired/))
  await assert.rejects(verifyTdxQuote(quote, collateral, { now: new Date('2025-06-01T00:00:00Z') }), rejects('collateral-not-yet-valid'))
})

// ---- Tampered quotes -------------------------------------------------------------------

test('a flipped bit in the TD report body (report data, MRTD, an RTMR) breaks the quote signature', async () => {
  for (const at of [REPORT_DATA, MRTD, RTMR2]) {
    await assert.rejects(verifyTdxQuote(flip(quote, at), collateral, { now: IN_WINDOW }), rejects('quote-signature-invalid', /attestation key/))
  }
})

test('a flipped bit in the quote signature is rejected', async () => {
  await assert.rejects(verifyTdxQuote(flip(quote, SIG_DATA + 10), collateral, { now: IN_WINDOW }), rejects('quote-signature-invalid'))
})

test('a flipped bit in the QE report, or its signature, is rejected as a bad QE report signature', async () => {
  await assert.rejects(verifyTdxQuote(flip(quote, QE_REPORT + 100), collateral, { now: IN_WINDOW }), rejects('qe-report-signature-invalid', /PCK certificate key/))
  await assert.rejects(verifyTdxQuote(flip(quote, QE_REPORT_SIG + 5), collateral, { now: IN_WINDOW }), rejects('qe-report-signature-invalid'))
})

test('an attestation key the QE report does not commit to is rejected', async () => {
  await assert.rejects(verifyTdxQuote(flip(quote, ATT_KEY + 3), collateral, { now: IN_WINDOW }), rejects('qe-report-binding-mismatch', /SHA-256\(attestation key/))
})

test('a flipped bit inside the PCK leaf certificate breaks its signature by the PCK CA', async () => {
  const [leaf] = pemBlocks(pckPem)
  const body = leaf.replace(/-----[A-Z ]+-----\n?/g, '')
  const der = Buffer.from(body.replace(/\s+/g, ''), 'base64')
  const serial = Buffer.from(parsePemChain(leaf, 'leaf')[0].serialNumber, 'hex')
  der[der.indexOf(serial) + serial.length - 1] ^= 0x01 // inside the signed TBS, DER stays well-formed
  // Re-encode with the same line breaks, so the chain keeps its length.
  const b64 = der.toString('base64')
  let k = 0
  const tampered = body.replace(/[^\s]/g, () => b64[k++])
  const pem = pckPem.replace(leaf, leaf.replace(body, tampered))
  assert.notEqual(pem, pckPem)
  assert.equal(pem.length, pckPem.length)
  await assert.rejects(
    verifyTdxQuote(withPckChain(quote, pem), collateral, { now: IN_WINDOW }),
    rejects('certificate-signature-invalid', /PCK chain: the signature on "Intel SGX PCK Certificate"/),
  )
})

test('a swapped PCK certificate (another genuine Intel platform) does not verify the QE report', async () => {
  // The outdated quote carrying this fixture's PCK chain: a real, unrevoked chain, the wrong key for its QE report.
  const swapped = withPckChain(outdated, pckPem)
  await assert.rejects(verifyTdxQuote(swapped, outdatedCollateral, { now: OUTDATED_IN_WINDOW }), rejects('qe-report-signature-invalid'))
})

test('collateral for another platform is rejected', async () => {
  // Both quotes' chains are valid in 2026; only the FMSPC differs.
  await assert.rejects(verifyTdxQuote(quote, outdatedCollateral, { now: OUTDATED_IN_WINDOW }), rejects('collateral-mismatch', /FMSPC 90C06F000000.*B0C06F000000/))
})

// ---- Roots, chains, CRLs ---------------------------------------------------------------

test('a PCK chain ending at a look-alike root is rejected: the root is pinned by fingerprint', async () => {
  const keys = await newKeys()
  const fakeRoot = await selfSigned(ROOT_NAME, keys)
  const [leaf, inter] = pemBlocks(pckPem)
  const pem = leaf + inter + fakeRoot.toString('pem') + '\n'
  await assert.rejects(verifyTdxQuote(withPckChain(quote, pem), collateral, { now: IN_WINDOW }), rejects('root-not-pinned', /PCK chain ends at "Intel SGX Root CA" with SHA-256 [0-9a-f]{64}, not the pinned/))
  // Without any root at all.
  await assert.rejects(verifyTdxQuote(withPckChain(quote, leaf + inter), collateral, { now: IN_WINDOW }), rejects('root-not-pinned'))
})

test('a TCB info chain from a look-alike root is rejected, even with a matching signature', async () => {
  const rootKeys = await newKeys()
  const fakeRoot = await selfSigned(ROOT_NAME, rootKeys)
  const signing = await issued('CN=Intel SGX TCB Signing, O=Intel Corporation, L=Santa Clara, ST=CA, C=US', fakeRoot, rootKeys.privateKey, { ca: false, serial: '02' })
  const forged = { ...collateral, tcb_info_issuer_chain: signing.cert.toString('pem') + '\n' + fakeRoot.toString('pem') + '\n' }
  await assert.rejects(verifyTdxQuote(quote, forged, { now: IN_WINDOW }), rejects('root-not-pinned', /TCB info issuer chain/))
})

test('a CRL with a forged signature is rejected (PCK CRL and root CA CRL)', async () => {
  const keys = await newKeys()
  const window = { thisUpdate: new Date('2025-06-19T00:00:00Z'), nextUpdate: new Date('2025-07-19T00:00:00Z') }
  const [, inter, root] = parsePemChain(pckPem, 'PCK chain')
  const forgedPck = await crl(inter.subject, keys.privateKey, window)
  await assert.rejects(verifyTdxQuote(quote, { ...collateral, pck_crl: crlHex(forgedPck) }, { now: IN_WINDOW }), rejects('crl-signature-invalid', /PCK CRL/))
  const forgedRoot = await crl(root.subject, keys.privateKey, window)
  await assert.rejects(verifyTdxQuote(quote, { ...collateral, root_ca_crl: crlHex(forgedRoot) }, { now: IN_WINDOW }), rejects('crl-signature-invalid', /root CA CRL/))
})

test('a garbage CRL, or a CRL from the wrong CA, is rejected', async () => {
  await assert.rejects(verifyTdxQuote(quote, { ...collateral, pck_crl: 'deadbeef' }, { now: IN_WINDOW }), rejects('crl-malformed', /PCK CRL/))
  // The (genuine) root CA CRL offered as the PCK CRL.
  await assert.rejects(verifyTdxQuote(quote, { ...collateral, pck_crl: collateral.root_ca_crl }, { now: IN_WINDOW }), rejects('crl-issuer-mismatch'))
})

test('tampered TCB info and QE identity fail their signatures', async () => {
  const tcb = { ...collateral, tcb_info: collateral.tcb_info.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"') }
  assert.notEqual(tcb.tcb_info, collateral.tcb_info)
  await assert.rejects(verifyTdxQuote(quote, tcb, { now: IN_WINDOW }), rejects('tcb-info-signature-invalid'))
  const qe = { ...collateral, qe_identity: collateral.qe_identity.replace('"isvprodid":2', '"isvprodid":3') }
  assert.notEqual(qe.qe_identity, collateral.qe_identity)
  await assert.rejects(verifyTdxQuote(quote, qe, { now: IN_WINDOW }), rejects('qe-identity-signature-invalid'))
})

test('chain checks with a throwaway PKI: revocation, missing CRLs, broken links, validity windows', async () => {
  const rootKeys = await newKeys()
  const root = await selfSigned('CN=Test Root', rootKeys)
  const inter = await issued('CN=Test CA', root, rootKeys.privateKey, { ca: true, serial: '0a' })
  const leaf = await issued('CN=Test Leaf', inter.cert, inter.keys.privateKey, { ca: false, serial: '0b' })
  const chain = [leaf.cert, inter.cert, root]
  const opts = { what: 'test chain', now: IN_WINDOW, rootSha256: certSha256(root) }
  await verifyChain(chain, opts)

  const rootCrl = parseCrl(new Uint8Array((await crl(root.subject, rootKeys.privateKey)).rawData), 'root CRL')
  const revoking = parseCrl(new Uint8Array((await crl(inter.cert.subject, inter.keys.privateKey, { revoked: ['0b'] })).rawData), 'CA CRL')
  const clean = parseCrl(new Uint8Array((await crl(inter.cert.subject, inter.keys.privateKey)).rawData), 'CA CRL')
  await verifyCrl(revoking, inter.cert, opts)
  checkNotRevoked(chain, [rootCrl, clean], 'test chain')
  assert.throws(() => checkNotRevoked(chain, [rootCrl, revoking], 'test chain'), rejects('certificate-revoked', /"Test Leaf" \(serial b\)/))
  assert.throws(() => checkNotRevoked(chain, [rootCrl], 'test chain'), rejects('crl-missing', /no CRL from "Test CA"/))

  await assert.rejects(verifyCrl(revoking, root, opts), rejects('crl-issuer-mismatch'))
  const otherKeys = await newKeys()
  const forged = parseCrl(new Uint8Array((await crl(inter.cert.subject, otherKeys.privateKey)).rawData), 'CA CRL')
  await assert.rejects(verifyCrl(forged, inter.cert, opts), rejects('crl-signature-invalid'))
  const stale = parseCrl(new Uint8Array((await crl(inter.cert.subject, inter.keys.privateKey, { nextUpdate: new Date('2025-01-01T00:00:00Z') })).rawData), 'CA CRL')
  await assert.rejects(verifyCrl(stale, inter.cert, opts), rejects('collateral-expired'))

  await assert.rejects(verifyChain([leaf.cert, root], opts), rejects('chain-broken', /issued by "Test CA"/))
  const early = await issued('CN=Test Leaf', inter.cert, inter.keys.privateKey, { ca: false, serial: '0c', notBefore: new Date('2030-01-01T00:00:00Z') })
  await assert.rejects(verifyChain([early.cert, inter.cert, root], opts), rejects('certificate-not-yet-valid'))
  await assert.rejects(verifyChain(chain, { ...opts, now: new Date('2041-01-01T00:00:00Z') }), rejects('certificate-expired'))
  const notCa = await issued('CN=Not A CA', root, rootKeys.privateKey, { ca: false, serial: '0d' })
  const under = await issued('CN=Under', notCa.cert, notCa.keys.privateKey, { ca: false, serial: '0e' })
  await assert.rejects(verifyChain([under.cert, notCa.cert, root], opts), rejects('chain-broken', /not a CA/))
})

// ---- TCB evaluation --------------------------------------------------------------------

const tcbInfo = parseTcbInfo(collateral.tcb_info)
const qeIdentity = parseQeIdentity(collateral.qe_identity)
const parsed = parseTdxQuote(quote)
const pckInfo = readPckInfo(parsePemChain(pckPem, 'PCK chain')[0])
const base = { tcbInfo, qeIdentity, pck: pckInfo, td: parsed.body, qeIsvSvn: parsed.auth.qeReport.isvSvn }
const clone = <T>(v: T): T => structuredClone(v)
const withSvn = (bytes: number[]) => ({ ...parsed.body, teeTcbSvn: new Uint8Array([...bytes, ...new Array(16 - bytes.length).fill(0)]) })

test('TCB evaluation: the fixture platform is UpToDate; a lower PCESVN falls to the OutOfDate level with its advisories', () => {
  assert.deepEqual(evaluateTdxTcb(base), { status: 'UpToDate', advisoryIds: [] })
  const r = evaluateTdxTcb({ ...base, pck: { ...pckInfo, pceSvn: 10 } })
  assert.equal(r.status, 'OutOfDate')
  assert.ok(r.advisoryIds.includes('INTEL-SA-00837'))
  assert.equal(tcbStatusAllowed(r.status), false)
  assert.equal(tcbStatusAllowed(r.status, ['UpToDate', 'OutOfDate']), true)
})

test('TCB evaluation: an out-of-date TDX module or QE degrades the platform status', () => {
  // TDX_01 grades module SVN 4+ UpToDate, 2..3 OutOfDate.
  assert.equal(evaluateTdxTcb({ ...base, td: withSvn([3, 1, 3]) }).status, 'OutOfDate')
  const info = clone(tcbInfo)
  info.tcbLevels[0].tcbStatus = 'ConfigurationNeeded'
  assert.equal(evaluateTdxTcb({ ...base, tcbInfo: info, td: withSvn([3, 1, 3]) }).status, 'OutOfDateConfigurationNeeded')
  const qe = clone(qeIdentity)
  qe.tcbLevels = [
    { tcb: { isvsvn: base.qeIsvSvn + 1 }, tcbDate: '2025-01-01T00:00:00Z', tcbStatus: 'UpToDate' },
    { tcb: { isvsvn: base.qeIsvSvn }, tcbDate: '2024-01-01T00:00:00Z', tcbStatus: 'OutOfDate', advisoryIDs: ['INTEL-SA-QE'] },
  ]
  assert.deepEqual(evaluateTdxTcb({ ...base, qeIdentity: qe }), { status: 'OutOfDate', advisoryIds: ['INTEL-SA-QE'] })
  const revoked = clone(tcbInfo)
  revoked.tdxModuleIdentities![1].tcbLevels[0].tcbStatus = 'Revoked'
  assert.equal(evaluateTdxTcb({ ...base, tcbInfo: revoked }).status, 'Revoked')
})

test('TCB evaluation: unsupported TCBs and foreign TDX modules are errors, not statuses', () => {
  assert.throws(() => evaluateTdxTcb({ ...base, td: withSvn([1, 1, 3]) }), rejects('tcb-not-supported', /TDX module SVN 1/))
  assert.throws(() => evaluateTdxTcb({ ...base, td: withSvn([6, 2, 3]) }), rejects('tcb-not-supported', /TDX_02/))
  assert.throws(() => evaluateTdxTcb({ ...base, qeIsvSvn: 3 }), rejects('tcb-not-supported', /QE ISVSVN 3/))
  const signer = new Uint8Array(48).fill(7)
  assert.throws(() => evaluateTdxTcb({ ...base, td: { ...parsed.body, mrSignerSeam: signer } }), rejects('tdx-module-mismatch', /MRSIGNERSEAM/))
  // Module major version 0 (TDX 1.0): the tdxModule entry applies, all 16 TDX components count.
  assert.equal(evaluateTdxTcb({ ...base, td: withSvn([5, 0, 2]) }).status, 'UpToDate')
  assert.throws(() => evaluateTdxTcb({ ...base, td: withSvn([4, 0, 2]) }), rejects('tcb-not-supported'))
})
