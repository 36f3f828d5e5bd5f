// DCAP collateral: its JSON shape (the one @phala/dcap-qvl and the fixtures use), and typed views of TCB info and QE identity.

import { TdxVerificationError } from './errors.ts'

/**
 * Collateral for one platform (FMSPC) as plain JSON. Byte fields are lowercase hex strings (as
 * in the fixtures) or byte arrays (as @phala/dcap-qvl's getCollateral returns them). The
 * JSON documents are kept as the exact text Intel signed.
 */
export interface TdxCollateral {
  /** PEM chain of the CA that signs the PCK CRL. Informational: the CRL is checked against the quote's own chain. */
  pck_crl_issuer_chain: string
  /** DER of the Intel SGX Root CA's CRL: hex, bytes, or PEM. */
  root_ca_crl: string | number[] | Uint8Array
  /** DER of the PCK (Platform or Processor) CA's CRL: hex, bytes, or PEM. */
  pck_crl: string | number[] | Uint8Array
  /** PEM chain: TCB Signing certificate, Intel SGX Root CA. */
  tcb_info_issuer_chain: string
  /** The `tcbInfo` JSON object, exactly as signed. */
  tcb_info: string
  /** ECDSA-P256 signature r ‖ s over tcb_info: hex or bytes. */
  tcb_info_signature: string | number[] | Uint8Array
  qe_identity_issuer_chain: string
  /** The `enclaveIdentity` JSON object, exactly as signed. */
  qe_identity: string
  qe_identity_signature: string | number[] | Uint8Array
  /** Present in @phala/dcap-qvl's output for quotes without a chain; unused (type 5 quotes carry it). */
  pck_certificate_chain?: string | null
}

export interface TcbComponent {
  svn: number
}

export interface TcbLevel {
  tcb: {
    sgxtcbcomponents: TcbComponent[]
    pcesvn: number
    tdxtcbcomponents?: TcbComponent[]
  }
  tcbDate: string
  tcbStatus: string
  advisoryIDs?: string[]
}

export interface TdxModuleIdentity {
  id: string
  mrsigner: string
  attributes: string
  attributesMask: string
  tcbLevels: { tcb: { isvsvn: number }; tcbDate: string; tcbStatus: string; advisoryIDs?: string[] }[]
}

export interface TcbInfo {
  id: string
  version: number
  issueDate: string
  nextUpdate: string
  fmspc: string
  pceId: string
  tcbType: number
  tcbEvaluationDataNumber: number
  tdxModule?: { mrsigner: string; attributes: string; attributesMask: string }
  tdxModuleIdentities?: TdxModuleIdentity[]
  tcbLevels: TcbLevel[]
}

export interface QeIdentity {
  id: string
  version: number
  issueDate: string
  nextUpdate: string
  tcbEvaluationDataNumber: number
  miscselect: string
  miscselectMask: string
  attributes: string
  attributesMask: string
  mrsigner: string
  isvprodid: number
  tcbLevels: { tcb: { isvsvn: number }; tcbDate: string; tcbStatus: string; advisoryIDs?: string[] }[]
}

/** Bytes of a collateral field given as hex, a byte array, or PEM. */
export function collateralBytes(v: string | number[] | Uint8Array, what: string): Uint8Array {
  if (v instanceof Uint8Array) return v
  if (Array.isArray(v)) return Uint8Array.from(v)
  if (typeof v !== 'string') throw new TdxVerificationError('collateral-malformed', `${what} is missing`)
  const s = v.trim()
  if (s.startsWith('-----BEGIN')) {
    const b64 = s.replace(/-----(BEGIN|END)[^-]*-----/g, '').replace(/\s+/g, '')
    return new Uint8Array(Buffer.from(b64, 'base64'))
  }
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new TdxVerificationError('collateral-malformed', `${what} is neither hex, bytes nor PEM`)
  return new Uint8Array(Buffer.from(s, 'hex'))
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseJson(text: unknown, what: string): Record<string, unknown> {
  if (typeof text !== 'string') throw new TdxVerificationError('collateral-malformed', `${what} is not a JSON string`)
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (err) {
    throw new TdxVerificationError('collateral-malformed', `${what} is not valid JSON: ${(err as Error).message}`)
  }
  if (!isObj(v)) throw new TdxVerificationError('collateral-malformed', `${what} is not a JSON object`)
  return v
}

function requireFields(o: Record<string, unknown>, what: string, fields: Record<string, 'string' | 'number' | 'array'>): void {
  for (const [k, t] of Object.entries(fields)) {
    const ok = t === 'array' ? Array.isArray(o[k]) : typeof o[k] === t
    if (!ok) throw new TdxVerificationError('collateral-malformed', `${what}.${k} is missing or not a ${t}`)
  }
}

function requireDate(o: Record<string, unknown>, what: string, k: string): void {
  if (Number.isNaN(Date.parse(o[k] as string))) throw new TdxVerificationError('collateral-malformed', `${what}.${k} is not a date`)
}

export function parseTcbInfo(text: string): TcbInfo {
  const o = parseJson(text, 'TCB info')
  requireFields(o, 'TCB info', { id: 'string', version: 'number', issueDate: 'string', nextUpdate: 'string', fmspc: 'string', pceId: 'string', tcbLevels: 'array' })
  requireDate(o, 'TCB info', 'issueDate')
  requireDate(o, 'TCB info', 'nextUpdate')
  for (const [i, l] of (o.tcbLevels as unknown[]).entries()) {
    const ok = isObj(l) && isObj(l.tcb) && Array.isArray(l.tcb.sgxtcbcomponents) && typeof l.tcb.pcesvn === 'number' && typeof l.tcbStatus === 'string'
    if (!ok) throw new TdxVerificationError('collateral-malformed', `TCB info tcbLevels[${i}] lacks tcb.sgxtcbcomponents, tcb.pcesvn or tcbStatus`)
  }
  return o as unknown as TcbInfo
}

export function parseQeIdentity(text: string): QeIdentity {
  const o = parseJson(text, 'QE identity')
  requireFields(o, 'QE identity', {
    id: 'string',
    version: 'number',
    issueDate: 'string',
    nextUpdate: 'string',
    miscselect: 'string',
    miscselectMask: 'string',
    attributes: 'string',
    attributesMask: 'string',
    mrsigner: 'string',
    isvprodid: 'number',
    tcbLevels: 'array',
  })
  requireDate(o, 'QE identity', 'issueDate')
  requireDate(o, 'QE identity', 'nextUpdate')
  for (const [i, l] of (o.tcbLevels as unknown[]).entries()) {
    if (!(isObj(l) && isObj(l.tcb) && typeof l.tcb.isvsvn === 'number' && typeof l.tcbStatus === 'string')) {
      throw new TdxVerificationError('collateral-malformed', `QE identity tcbLevels[${i}] lacks tcb.isvsvn or tcbStatus`)
    }
  }
  return o as unknown as QeIdentity
}

/** Reads collateral JSON text (a file or a PCCS answer) and checks it has the expected fields. */
export function parseCollateralJson(text: string): TdxCollateral {
  const o = parseJson(text, 'collateral')
  for (const k of ['pck_crl_issuer_chain', 'tcb_info_issuer_chain', 'tcb_info', 'qe_identity_issuer_chain', 'qe_identity']) {
    if (typeof o[k] !== 'string') throw new TdxVerificationError('collateral-malformed', `collateral.${k} is missing or not a string`)
  }
  for (const k of ['root_ca_crl', 'pck_crl', 'tcb_info_signature', 'qe_identity_signature']) {
    if (typeof o[k] !== 'string' && !Array.isArray(o[k])) throw new TdxVerificationError('collateral-malformed', `collateral.${k} is missing or not hex/bytes`)
  }
  return o as unknown as TdxCollateral
}
