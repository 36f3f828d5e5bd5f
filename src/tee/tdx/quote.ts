// Parses Intel TDX quotes (v4 and v5) into typed parts, and computes the Cocoon image hash of a TD report.

import { createHash } from 'node:crypto'
import {
  BODY_TYPE_TD_REPORT10,
  BODY_TYPE_TD_REPORT15,
  CERT_DATA_PCK_CHAIN,
  CERT_DATA_QE_REPORT,
  ECDSA_P256_PUBLIC_KEY_BYTES,
  ECDSA_SIGNATURE_BYTES,
  MEASUREMENT_BYTES,
  QE_REPORT_BYTES,
  QUOTE_HEADER_BYTES,
  QUOTE_VERSION_4,
  QUOTE_VERSION_5,
  REPORT_DATA_BYTES,
  TD_REPORT10_BYTES,
  TD_REPORT15_BYTES,
  TEE_TYPE_TDX,
} from './constants.ts'
import { QuoteFormatError } from './errors.ts'

export interface QuoteHeader {
  version: number
  attestationKeyType: number
  teeType: number
  /** v4/v5: reserved bytes 8..12, kept as QE SVN and PCE SVN for display. */
  qeSvn: number
  pceSvn: number
  qeVendorId: Uint8Array
  userData: Uint8Array
}

/** The TD report of a TDX 1.0 module; TDX 1.5 adds the last two fields. */
export interface TdReportBody {
  type: 'td10' | 'td15'
  teeTcbSvn: Uint8Array
  mrSeam: Uint8Array
  mrSignerSeam: Uint8Array
  seamAttributes: Uint8Array
  tdAttributes: Uint8Array
  xfam: Uint8Array
  mrTd: Uint8Array
  mrConfigId: Uint8Array
  mrOwner: Uint8Array
  mrOwnerConfig: Uint8Array
  rtmr: [Uint8Array, Uint8Array, Uint8Array, Uint8Array]
  reportData: Uint8Array
  teeTcbSvn2?: Uint8Array
  mrServiceTd?: Uint8Array
}

/** The SGX enclave report of the Quoting Enclave (QE). */
export interface QeReport {
  /** All 384 bytes, as signed by the PCK key. */
  raw: Uint8Array
  cpuSvn: Uint8Array
  miscSelect: number
  attributes: Uint8Array
  mrEnclave: Uint8Array
  mrSigner: Uint8Array
  isvProdId: number
  isvSvn: number
  reportData: Uint8Array
}

export interface QuoteSignatureData {
  /** ECDSA-P256 signature (r ‖ s) over header and body by the attestation key. */
  signature: Uint8Array
  /** Attestation public key, raw x ‖ y. */
  attestationKey: Uint8Array
  qeReport: QeReport
  /** ECDSA-P256 signature (r ‖ s) over the QE report by the PCK key. */
  qeReportSignature: Uint8Array
  qeAuthData: Uint8Array
  /** PEM chain from certification data type 5: PCK leaf, intermediate CA, root CA. */
  pckChainPem: string
}

export interface TdxQuote {
  header: QuoteHeader
  body: TdReportBody
  /** The bytes the attestation key signs: header, the v5 body descriptor, and the body. */
  signedBytes: Uint8Array
  auth: QuoteSignatureData
}

/** Bounds-checked little-endian reader that names the field it was reading when it fails. */
class Reader {
  offset = 0
  /** `base` is where `bytes` starts in the whole quote, so errors carry absolute offsets. */
  constructor(
    private readonly bytes: Uint8Array,
    readonly base = 0,
  ) {}
  get at(): number {
    return this.base + this.offset
  }
  get left(): number {
    return this.bytes.length - this.offset
  }
  take(n: number, field: string): Uint8Array {
    if (n > this.left) throw new QuoteFormatError(field, this.at, `needs ${n} bytes, ${this.left} left`)
    const out = this.bytes.subarray(this.offset, this.offset + n)
    this.offset += n
    return out
  }
  /** A reader over the next `n` bytes. */
  sub(n: number, field: string): Reader {
    const base = this.at
    return new Reader(this.take(n, field), base)
  }
  u16(field: string): number {
    const b = this.take(2, field)
    return b[0] | (b[1] << 8)
  }
  u32(field: string): number {
    const b = this.take(4, field)
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0
  }
  end(field: string): void {
    if (this.left !== 0) throw new QuoteFormatError(field, this.at, `${this.left} unexpected trailing bytes`)
  }
}

/**
 * Parses a TDX quote. Checks only the format (lengths, known body and certification data
 * types); nothing here is trusted before verifyTdxQuote has run. Throws QuoteFormatError.
 */
export function parseTdxQuote(bytes: Uint8Array): TdxQuote {
  const r = new Reader(bytes)
  const header = parseHeader(r)
  // The body layout depends on the TEE; SGX quotes carry an enclave report instead.
  if (header.teeType !== TEE_TYPE_TDX) {
    throw new QuoteFormatError('TEE type', 4, `0x${header.teeType.toString(16)} is not TDX (0x81)`)
  }
  let bodyType: number
  let bodyBytes: Uint8Array
  if (header.version === QUOTE_VERSION_4) {
    bodyType = BODY_TYPE_TD_REPORT10
    bodyBytes = r.take(TD_REPORT10_BYTES, 'TD report body')
  } else if (header.version === QUOTE_VERSION_5) {
    const at = r.at
    bodyType = r.u16('body type')
    const size = r.u32('body size')
    const expected = bodyType === BODY_TYPE_TD_REPORT10 ? TD_REPORT10_BYTES : bodyType === BODY_TYPE_TD_REPORT15 ? TD_REPORT15_BYTES : -1
    if (expected < 0) throw new QuoteFormatError('body type', at, `${bodyType} is not a TD report (2 = TDX 1.0, 3 = TDX 1.5)`)
    if (size !== expected) throw new QuoteFormatError('body size', at + 2, `${size} does not match body type ${bodyType} (${expected})`)
    bodyBytes = r.take(size, 'TD report body')
  } else {
    throw new QuoteFormatError('version', 0, `quote version ${header.version} is not 4 or 5`)
  }
  const body = parseTdReport(bodyBytes, bodyType === BODY_TYPE_TD_REPORT15 ? 'td15' : 'td10', r.at - bodyBytes.length)
  const signedBytes = bytes.subarray(0, r.offset)

  const auth = parseSignatureData(r.sub(r.u32('signature data length'), 'signature data'))
  // Quote buffers are often zero-padded to a fixed size; anything else after the quote is suspect.
  if (bytes.subarray(r.offset).some((b) => b !== 0)) r.end('end of quote')
  return { header, body, signedBytes, auth }
}

function parseHeader(r: Reader): QuoteHeader {
  const h = r.sub(QUOTE_HEADER_BYTES, 'header')
  return {
    version: h.u16('version'),
    attestationKeyType: h.u16('attestation key type'),
    teeType: h.u32('TEE type'),
    qeSvn: h.u16('QE SVN'),
    pceSvn: h.u16('PCE SVN'),
    qeVendorId: h.take(16, 'QE vendor id'),
    userData: h.take(20, 'user data'),
  }
}

/** Parses the 584-byte (TDX 1.0) or 648-byte (TDX 1.5) TD report body. */
export function parseTdReport(bytes: Uint8Array, type: 'td10' | 'td15', base = 0): TdReportBody {
  const r = new Reader(bytes, base)
  const m = (field: string) => r.take(MEASUREMENT_BYTES, field)
  const body: TdReportBody = {
    type,
    teeTcbSvn: r.take(16, 'TEE_TCB_SVN'),
    mrSeam: m('MRSEAM'),
    mrSignerSeam: m('MRSIGNERSEAM'),
    seamAttributes: r.take(8, 'SEAMATTRIBUTES'),
    tdAttributes: r.take(8, 'TDATTRIBUTES'),
    xfam: r.take(8, 'XFAM'),
    mrTd: m('MRTD'),
    mrConfigId: m('MRCONFIGID'),
    mrOwner: m('MROWNER'),
    mrOwnerConfig: m('MROWNERCONFIG'),
    rtmr: [m('RTMR0'), m('RTMR1'), m('RTMR2'), m('RTMR3')],
    reportData: r.take(REPORT_DATA_BYTES, 'REPORTDATA'),
  }
  if (type === 'td15') {
    body.teeTcbSvn2 = r.take(16, 'TEE_TCB_SVN2')
    body.mrServiceTd = m('MRSERVICETD')
  }
  r.end('TD report body')
  return body
}

/** Parses the 384-byte SGX report of the Quoting Enclave. */
export function parseQeReport(raw: Uint8Array, base = 0): QeReport {
  const r = new Reader(raw, base)
  const cpuSvn = r.take(16, 'QE CPUSVN')
  const miscSelect = r.u32('QE MISCSELECT')
  r.take(28, 'QE reserved')
  const attributes = r.take(16, 'QE ATTRIBUTES')
  const mrEnclave = r.take(32, 'QE MRENCLAVE')
  r.take(32, 'QE reserved')
  const mrSigner = r.take(32, 'QE MRSIGNER')
  r.take(96, 'QE reserved')
  const isvProdId = r.u16('QE ISVPRODID')
  const isvSvn = r.u16('QE ISVSVN')
  r.take(60, 'QE reserved')
  const reportData = r.take(64, 'QE REPORTDATA')
  r.end('QE report')
  return { raw, cpuSvn, miscSelect, attributes, mrEnclave, mrSigner, isvProdId, isvSvn, reportData }
}

function parseSignatureData(r: Reader): QuoteSignatureData {
  const signature = r.take(ECDSA_SIGNATURE_BYTES, 'quote signature')
  const attestationKey = r.take(ECDSA_P256_PUBLIC_KEY_BYTES, 'attestation key')
  const outerAt = r.at
  const outerType = r.u16('certification data type')
  if (outerType !== CERT_DATA_QE_REPORT) {
    throw new QuoteFormatError('certification data type', outerAt, `${outerType} is not 6 (QE report certification data)`)
  }
  const outer = r.sub(r.u32('certification data size'), 'QE report certification data')
  r.end('signature data')
  const qeReportAt = outer.at
  const qeReport = parseQeReport(outer.take(QE_REPORT_BYTES, 'QE report'), qeReportAt)
  const qeReportSignature = outer.take(ECDSA_SIGNATURE_BYTES, 'QE report signature')
  const qeAuthData = outer.take(outer.u16('QE auth data size'), 'QE auth data')
  const innerAt = outer.at
  const innerType = outer.u16('PCK certification data type')
  if (innerType !== CERT_DATA_PCK_CHAIN) {
    throw new QuoteFormatError(
      'PCK certification data type',
      innerAt,
      `${innerType} is not 5 (PCK certificate chain); quotes without the chain need the PCK certificate from a PCCS, which is not supported`,
    )
  }
  const chain = outer.take(outer.u32('PCK certification data size'), 'PCK certificate chain')
  outer.end('QE report certification data')
  // The chain is PEM text, often NUL-terminated.
  const pckChainPem = Buffer.from(chain).toString('latin1').replace(/\0+$/, '')
  return { signature, attestationKey, qeReport, qeReportSignature, qeAuthData, pckChainPem }
}

/**
 * Cocoon image hash, lowercase hex: SHA-256 over MRTD ‖ MRCONFIGID ‖ MROWNER ‖ MROWNERCONFIG ‖
 * RTMR0..3 ‖ 64 zero bytes. The zeros stand for the report data, which identifies the instance,
 * not the image; the layout matches the reference Cocoon's serialization.
 */
export function tdxImageHash(body: Pick<TdReportBody, 'mrTd' | 'mrConfigId' | 'mrOwner' | 'mrOwnerConfig' | 'rtmr'>): string {
  const h = createHash('sha256')
  for (const part of [body.mrTd, body.mrConfigId, body.mrOwner, body.mrOwnerConfig, ...body.rtmr]) {
    if (part.length !== MEASUREMENT_BYTES) throw new TypeError(`measurement must be ${MEASUREMENT_BYTES} bytes, got ${part.length}`)
    h.update(part)
  }
  h.update(new Uint8Array(REPORT_DATA_BYTES))
  return h.digest('hex')
}

/** TDATTRIBUTES bit 0 (TUD.DEBUG): the TD was launched in debug mode. */
export function isDebugTd(body: Pick<TdReportBody, 'tdAttributes'>): boolean {
  return (body.tdAttributes[0] & 0x01) !== 0
}
