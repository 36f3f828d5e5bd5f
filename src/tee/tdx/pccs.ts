// Fetches DCAP collateral for a TDX platform from a PCCS or Intel's PCS (v4 API paths). Nothing fetched is trusted: verifyTdxQuote checks it.

import { INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, PCCS_FETCH_TIMEOUT_MS } from './constants.ts'
import { parsePemChain, parseCrl } from './chain.ts'
import { parseQeIdentity, parseTcbInfo, collateralBytes, type TdxCollateral } from './collateral.ts'
import { CollateralFetchError } from './errors.ts'
import { readPckInfo } from './pck.ts'
import { parseTdxQuote } from './quote.ts'

/** The platform a quote comes from, as collateral is indexed: FMSPC and the CA that issued its PCK certificate. */
export interface TdxPlatform {
  /** Uppercase hex. */
  fmspc: string
  ca: 'platform' | 'processor'
}

/** Reads the platform identity out of a quote's PCK certificate (unverified; only used to pick collateral). */
export function quotePlatform(quote: Uint8Array): TdxPlatform {
  const q = parseTdxQuote(quote)
  const { fmspc, ca } = readPckInfo(parsePemChain(q.auth.pckChainPem, 'PCK chain')[0])
  return { fmspc, ca }
}

/** When collateral stops being usable: the earliest nextUpdate of TCB info, QE identity and both CRLs. */
export function collateralExpiry(c: TdxCollateral): Date {
  const crlNext = (v: TdxCollateral['pck_crl'], what: string) => parseCrl(collateralBytes(v, what), what).nextUpdate?.getTime() ?? 0
  return new Date(
    Math.min(
      Date.parse(parseTcbInfo(c.tcb_info).nextUpdate),
      Date.parse(parseQeIdentity(c.qe_identity).nextUpdate),
      crlNext(c.pck_crl, 'PCK CRL'),
      crlNext(c.root_ca_crl, 'root CA CRL'),
    ),
  )
}

export interface PccsOptions {
  /** Base URL of an Intel PCS v4-compatible service. Default INTEL_PCS_URL (Intel's PCS). */
  url?: string
  /** Per-request budget. Default PCCS_FETCH_TIMEOUT_MS. */
  timeoutMs?: number
  /**
   * Where the Intel SGX Root CA CRL comes from. Default: Intel's CRL distribution point when
   * `url` is Intel's PCS, else the PCCS's /sgx/certification/v4/rootcacrl, falling back to Intel's.
   */
  rootCaCrlUrl?: string
}

/** Client of the PCS v4 collateral endpoints. */
export class PccsClient {
  readonly baseUrl: string
  private readonly timeoutMs: number
  private readonly rootCaCrlUrl?: string
  private readonly fetch: typeof fetch

  constructor(opts: PccsOptions = {}, deps: { fetch?: typeof fetch } = {}) {
    this.baseUrl = (opts.url ?? INTEL_PCS_URL).replace(/\/+$/, '').replace(/\/(sgx|tdx)\/certification\/v4$/, '')
    this.timeoutMs = opts.timeoutMs ?? PCCS_FETCH_TIMEOUT_MS
    this.rootCaCrlUrl = opts.rootCaCrlUrl
    this.fetch = deps.fetch ?? globalThis.fetch
  }

  /** Fetches TCB info, QE identity, the PCK CRL and the root CA CRL for `platform`. Throws CollateralFetchError. */
  async getCollateral(platform: TdxPlatform, opts: { signal?: AbortSignal } = {}): Promise<TdxCollateral> {
    const v4 = (tee: 'sgx' | 'tdx', path: string) => `${this.baseUrl}/${tee}/certification/v4/${path}`
    const [pckCrl, tcb, qe, rootCrl] = await Promise.all([
      this.get(v4('sgx', `pckcrl?ca=${platform.ca}&encoding=der`), opts.signal),
      this.get(v4('tdx', `tcb?fmspc=${encodeURIComponent(platform.fmspc.toUpperCase())}`), opts.signal),
      this.get(v4('tdx', 'qe/identity'), opts.signal),
      this.getRootCaCrl(opts.signal),
    ])
    const tcbText = tcb.body.toString('utf8')
    const qeText = qe.body.toString('utf8')
    return {
      pck_crl_issuer_chain: header(pckCrl, ['SGX-PCK-CRL-Issuer-Chain']),
      pck_crl: crlHex(pckCrl.body, pckCrl.url),
      root_ca_crl: rootCrl,
      tcb_info_issuer_chain: header(tcb, ['TCB-Info-Issuer-Chain', 'SGX-TCB-Info-Issuer-Chain']),
      tcb_info: signedMember(tcbText, 'tcbInfo', tcb.url),
      tcb_info_signature: signatureOf(tcbText, tcb.url),
      qe_identity_issuer_chain: header(qe, ['SGX-Enclave-Identity-Issuer-Chain', 'Enclave-Identity-Issuer-Chain']),
      qe_identity: signedMember(qeText, 'enclaveIdentity', qe.url),
      qe_identity_signature: signatureOf(qeText, qe.url),
    }
  }

  private async getRootCaCrl(signal?: AbortSignal): Promise<string> {
    const isIntel = this.baseUrl === INTEL_PCS_URL
    const first = this.rootCaCrlUrl ?? (isIntel ? INTEL_ROOT_CA_CRL_URL : `${this.baseUrl}/sgx/certification/v4/rootcacrl`)
    try {
      const r = await this.get(first, signal)
      return crlHex(r.body, r.url)
    } catch (err) {
      if (this.rootCaCrlUrl || isIntel || signal?.aborted) throw err
      // Older PCCS versions lack the endpoint; the root's own distribution point always has it.
      const r = await this.get(INTEL_ROOT_CA_CRL_URL, signal)
      return crlHex(r.body, r.url)
    }
  }

  private async get(url: string, signal?: AbortSignal): Promise<Fetched> {
    const timeout = AbortSignal.timeout(this.timeoutMs)
    let res: Response
    try {
      res = await this.fetch(url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout })
    } catch (err) {
      if (signal?.aborted) throw signal.reason
      const e = err as Error
      throw new CollateralFetchError(url, undefined, e.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : e.message)
    }
    if (!res.ok) throw new CollateralFetchError(url, res.status, `HTTP ${res.status} ${res.statusText}`.trim())
    return { url, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
  }
}

interface Fetched {
  url: string
  headers: Headers
  body: Buffer
}

function header(r: Fetched, names: string[]): string {
  for (const n of names) {
    const v = r.headers.get(n)
    if (v) return decodeURIComponent(v)
  }
  throw new CollateralFetchError(r.url, 200, `response lacks the ${names[0]} header`)
}

/** PCS answers DER; some PCCS versions answer hex or PEM. Normalized to hex, the fixtures' form. */
function crlHex(body: Buffer, url: string): string {
  if (body[0] === 0x30) return body.toString('hex')
  try {
    return Buffer.from(collateralBytes(body.toString('latin1'), 'CRL')).toString('hex')
  } catch {
    throw new CollateralFetchError(url, 200, 'the CRL is neither DER, hex nor PEM')
  }
}

function signatureOf(text: string, url: string): string {
  let sig: unknown
  try {
    sig = (JSON.parse(text) as { signature?: unknown }).signature
  } catch {
    throw new CollateralFetchError(url, 200, 'the answer is not JSON')
  }
  if (typeof sig !== 'string') throw new CollateralFetchError(url, 200, 'the answer has no signature')
  return sig.toLowerCase()
}

/**
 * The exact text of `{"<key>": {...}, "signature": ...}`'s object member: Intel signs those
 * bytes, so re-serializing parsed JSON would be fragile.
 */
export function signedMember(text: string, key: string, url = 'collateral'): string {
  const m = new RegExp(`"${key}"\\s*:\\s*\\{`).exec(text)
  if (!m) throw new CollateralFetchError(url, 200, `the answer has no "${key}" object`)
  const start = m.index + m[0].length - 1
  let depth = 0
  let inString = false
  for (let i = start; i < text.length; i++) {
    const ch = text[i]
    if (inString) {
      if (ch === '\\') i++
      else if (ch === '"') inString = false
    } else if (ch === '"') inString = true
    else if (ch === '{') depth++
    else if (ch === '}' && --depth === 0) return text.slice(start, i + 1)
  }
  throw new CollateralFetchError(url, 200, `the "${key}" object is not terminated`)
}
