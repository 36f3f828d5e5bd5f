// Reads Intel's SGX extension from a PCK certificate: the platform's FMSPC, PCE id and TCB (CPUSVN components, PCESVN).

import {
  OID_SGX_CPUSVN,
  OID_SGX_EXTENSION,
  OID_SGX_FMSPC,
  OID_SGX_PCEID,
  OID_SGX_PCESVN,
  OID_SGX_PPID,
  OID_SGX_TCB,
  PCK_PLATFORM_CA_CN,
  PCK_PROCESSOR_CA_CN,
} from './constants.ts'
import { TdxVerificationError } from './errors.ts'
import type { x509 } from '../x509.ts'

export interface PckInfo {
  /** Family-model-stepping-platform-custom SKU, uppercase hex as in TCB info. */
  fmspc: string
  /** PCE id, uppercase hex as in TCB info. */
  pceId: string
  ppid: string
  /** SGX TCB components 1..16 (the platform's CPUSVN as Intel compares it). */
  sgxTcbComponents: number[]
  pceSvn: number
  cpuSvn: Uint8Array
  /** Which PCK CA issued the certificate; selects the PCK CRL. */
  ca: 'platform' | 'processor'
}

interface Tlv {
  tag: number
  value: Uint8Array
}

/** Splits DER bytes into consecutive TLVs. Enough DER for Intel's extension, nothing more. */
function readTlvs(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = []
  let i = 0
  while (i < bytes.length) {
    if (i + 2 > bytes.length) throw new Error('truncated DER header')
    const tag = bytes[i++]
    let len = bytes[i++]
    if (len & 0x80) {
      const n = len & 0x7f
      if (n === 0 || n > 3 || i + n > bytes.length) throw new Error('unsupported DER length')
      len = 0
      for (let k = 0; k < n; k++) len = (len << 8) | bytes[i++]
    }
    if (i + len > bytes.length) throw new Error('truncated DER value')
    out.push({ tag, value: bytes.subarray(i, i + len) })
    i += len
  }
  return out
}

const TAG_INTEGER = 0x02
const TAG_OCTET_STRING = 0x04
const TAG_OID = 0x06
const TAG_ENUMERATED = 0x0a
const TAG_SEQUENCE = 0x30

function decodeOid(v: Uint8Array): string {
  const parts: number[] = []
  let acc = 0
  for (const b of v) {
    acc = acc * 128 + (b & 0x7f)
    if (!(b & 0x80)) {
      parts.push(acc)
      acc = 0
    }
  }
  const first = parts.shift() ?? 0
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80]
  return [...head, ...parts].join('.')
}

function decodeUint(v: Uint8Array): number {
  let n = 0
  for (const b of v) n = n * 256 + b
  return n
}

/** Maps each OID in a SEQUENCE OF SEQUENCE { OID, value } to its value TLV. */
function oidMap(seqContent: Uint8Array): Map<string, Tlv> {
  const map = new Map<string, Tlv>()
  for (const entry of readTlvs(seqContent)) {
    if (entry.tag !== TAG_SEQUENCE) throw new Error('expected SEQUENCE { OID, value }')
    const [oid, value] = readTlvs(entry.value)
    if (oid?.tag !== TAG_OID || !value) throw new Error('expected SEQUENCE { OID, value }')
    map.set(decodeOid(oid.value), value)
  }
  return map
}

function need(map: Map<string, Tlv>, oid: string, tags: number[]): Uint8Array {
  const tlv = map.get(oid)
  if (!tlv) throw new Error(`missing ${oid}`)
  if (!tags.includes(tlv.tag)) throw new Error(`${oid} has tag 0x${tlv.tag.toString(16)}`)
  return tlv.value
}

function hexUpper(b: Uint8Array): string {
  return Buffer.from(b).toString('hex').toUpperCase()
}

/** Extracts the SGX extension of a PCK leaf certificate. Throws TdxVerificationError('certificate-malformed'). */
export function readPckInfo(cert: x509.X509Certificate): PckInfo {
  const ext = cert.getExtension(OID_SGX_EXTENSION)
  if (!ext) throw new TdxVerificationError('certificate-malformed', `PCK certificate "${cert.subject}" has no Intel SGX extension (${OID_SGX_EXTENSION})`)
  try {
    const [top] = readTlvs(new Uint8Array(ext.value))
    if (top?.tag !== TAG_SEQUENCE) throw new Error('extension is not a SEQUENCE')
    const sgx = oidMap(top.value)
    const tcb = oidMap(need(sgx, OID_SGX_TCB, [TAG_SEQUENCE]))
    const sgxTcbComponents: number[] = []
    for (let i = 1; i <= 16; i++) sgxTcbComponents.push(decodeUint(need(tcb, `${OID_SGX_TCB}.${i}`, [TAG_INTEGER])))
    const issuerCn = /CN=([^,]+)/.exec(cert.issuer)?.[1]?.trim()
    const ca = issuerCn === PCK_PROCESSOR_CA_CN ? 'processor' : issuerCn === PCK_PLATFORM_CA_CN ? 'platform' : undefined
    if (!ca) throw new Error(`issuer "${cert.issuer}" is neither the PCK Platform CA nor the PCK Processor CA`)
    return {
      fmspc: hexUpper(need(sgx, OID_SGX_FMSPC, [TAG_OCTET_STRING])),
      pceId: hexUpper(need(sgx, OID_SGX_PCEID, [TAG_OCTET_STRING])),
      ppid: hexUpper(need(sgx, OID_SGX_PPID, [TAG_OCTET_STRING])),
      sgxTcbComponents,
      pceSvn: decodeUint(need(tcb, OID_SGX_PCESVN, [TAG_INTEGER, TAG_ENUMERATED])),
      cpuSvn: need(tcb, OID_SGX_CPUSVN, [TAG_OCTET_STRING]),
      ca,
    }
  } catch (err) {
    throw new TdxVerificationError('certificate-malformed', `PCK certificate SGX extension unreadable: ${(err as Error).message}`)
  }
}
