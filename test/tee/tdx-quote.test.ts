// Spec: TDX quote parsing (v4 and v5), clear errors on malformed input, the image hash, and describeQuote.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseTdxQuote, QuoteFormatError, tdxImageHash } from '../../src/tee/tdx/index.ts'
import { describeQuote } from '../../src/cli/attest-tdx.ts'

const FIXTURES = new URL('../../../shared/fixtures/tdx/', import.meta.url)
const v4 = new Uint8Array(readFileSync(new URL('tdx_quote', FIXTURES)))
const v5 = new Uint8Array(readFileSync(new URL('tdx_quote_outdated', FIXTURES)))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

// v4 layout: 48-byte header, then the TD report body.
const BODY = 48
const MRTD = BODY + 136
const REPORT_DATA = BODY + 520

const malformed = (field: RegExp) => (e: unknown) => e instanceof QuoteFormatError && field.test(e.field)

test('parses a v4 quote: header, TDX 1.0 body, QE report and the PEM PCK chain', () => {
  const q = parseTdxQuote(v4)
  assert.equal(q.header.version, 4)
  assert.equal(q.header.teeType, 0x81)
  assert.equal(q.header.attestationKeyType, 2)
  assert.equal(hex(q.header.qeVendorId), '939a7233f79c4ca9940a0db3957f0607')
  assert.equal(q.body.type, 'td10')
  assert.deepEqual(q.body.mrTd, v4.subarray(MRTD, MRTD + 48))
  assert.deepEqual(q.body.reportData, v4.subarray(REPORT_DATA, REPORT_DATA + 64))
  assert.equal(q.body.rtmr.length, 4)
  assert.equal(q.signedBytes.length, 48 + 584)
  assert.equal(q.auth.qeReport.raw.length, 384)
  assert.equal((q.auth.pckChainPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 3)
})

test('parses a v5 quote with a TDX 1.5 body (TEE_TCB_SVN2, MRSERVICETD)', () => {
  const q = parseTdxQuote(v5)
  assert.equal(q.header.version, 5)
  assert.equal(q.body.type, 'td15')
  assert.equal(q.body.teeTcbSvn2?.length, 16)
  assert.equal(q.body.mrServiceTd?.length, 48)
  // Signed: header, the 6-byte body descriptor, and the 648-byte body.
  assert.equal(q.signedBytes.length, 48 + 6 + 648)
})

test('a truncated quote names what was being read', () => {
  assert.throws(() => parseTdxQuote(v4.subarray(0, 40)), malformed(/^header$/))
  assert.throws(() => parseTdxQuote(v4.subarray(0, 600)), malformed(/TD report body/))
  assert.throws(() => parseTdxQuote(v4.subarray(0, 634)), malformed(/signature data length/))
  assert.throws(() => parseTdxQuote(v4.subarray(0, 2000)), malformed(/signature data/))
  assert.throws(() => parseTdxQuote(new Uint8Array(0)), malformed(/^header$/))
})

test('unknown versions, TEE types and certification data types are malformed', () => {
  const bad = (at: number, value: number) => {
    const b = new Uint8Array(v4)
    b[at] = value
    return b
  }
  assert.throws(() => parseTdxQuote(bad(0, 3)), /quote version 3 is not 4 or 5/)
  assert.throws(() => parseTdxQuote(bad(4, 0)), malformed(/TEE type/))
  // The outer certification data type sits after the signature-data length, signature and key.
  assert.throws(() => parseTdxQuote(bad(632 + 4 + 128, 5)), malformed(/certification data type/))
  const v5bad = new Uint8Array(v5)
  v5bad[48] = 1 // body type 1 = SGX enclave report
  assert.throws(() => parseTdxQuote(v5bad), malformed(/body type/))
})

test('a length field that overruns the buffer is reported with its offset', () => {
  const b = new Uint8Array(v4)
  b.set([0xff, 0xff, 0xff, 0x7f], 632)
  assert.throws(
    () => parseTdxQuote(b),
    (e: unknown) => e instanceof QuoteFormatError && e.offset === 636 && /needs 2147483647 bytes/.test(e.message),
  )
})

test('zero padding after the quote is accepted, other trailing bytes are not', () => {
  assert.doesNotThrow(() => parseTdxQuote(new Uint8Array([...v4, 0, 0, 0])))
  assert.throws(() => parseTdxQuote(new Uint8Array([...v4, 1])), malformed(/end of quote/))
})

test('image hash is SHA-256(MRTD ‖ MRCONFIGID ‖ MROWNER ‖ MROWNERCONFIG ‖ RTMR0..3 ‖ 64 zero bytes)', () => {
  // The eight 48-byte registers are contiguous in the body, from MRTD to RTMR3.
  const expected = createHash('sha256')
    .update(v4.subarray(MRTD, MRTD + 8 * 48))
    .update(new Uint8Array(64))
    .digest('hex')
  assert.equal(tdxImageHash(parseTdxQuote(v4).body), expected)
  const zero = new Uint8Array(48)
  assert.equal(
    tdxImageHash({ mrTd: zero, mrConfigId: zero, mrOwner: zero, mrOwnerConfig: zero, rtmr: [zero, zero, zero, zero] }),
    createHash('sha256').update(new Uint8Array(448)).digest('hex'),
  )
})

test('the image hash ignores report data: two instances of one image share it', () => {
  const other = new Uint8Array(v4)
  other[REPORT_DATA] ^= 0xff
  assert.equal(tdxImageHash(parseTdxQuote(other).body), tdxImageHash(parseTdxQuote(v4).body))
  const changed = new Uint8Array(v4)
  changed[MRTD] ^= 0x01
  assert.notEqual(tdxImageHash(parseTdxQuote(changed).body), tdxImageHash(parseTdxQuote(v4).body))
})

test('describeQuote shows measurements, the QE and the PCK chain as plain JSON', () => {
  const d = describeQuote(v4)
  assert.deepEqual(JSON.parse(JSON.stringify(d)), d)
  assert.equal(d.teeType, 'tdx')
  assert.equal(d.quoteVersion, 4)
  assert.equal(d.mrtd, hex(v4.subarray(MRTD, MRTD + 48)))
  assert.equal((d.rtmr as string[]).length, 4)
  assert.equal(d.debug, false)
  const pck = d.pck as { fmspc: string; ca: string; chain: { subject: string; sha256: string }[] }
  assert.equal(pck.fmspc, 'B0C06F000000')
  assert.equal(pck.ca, 'platform')
  assert.match(pck.chain[0].subject, /Intel SGX PCK Certificate/)
  assert.equal(pck.chain[2].sha256, '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3')
  const d5 = describeQuote(v5)
  assert.equal(d5.tdReport, 'TDX 1.5')
  assert.equal(typeof d5.mrServiceTd, 'string')
})
