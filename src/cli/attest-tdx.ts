// The TDX halves of `cocoon attest`: verify a quote file, produce a quote inside a TDX guest, describe a quote.

import { readFile, writeFile } from 'node:fs/promises'
import { REPORT_DATA_BYTES, type EvidenceProvider } from '../tee/index.ts'
import { DEFAULT_TDX_TCB_STATUSES, INTEL_PCS_URL, PCCS_URL_ENV, certSha256, parsePemChain, parseCollateralJson, type TdxCollateral, TsmError, readPckInfo, PccsClient, quotePlatform, isDebugTd, parseTdxQuote, tdxImageHash, type TdReportBody, tcbStatusAllowed, ConfigfsTsmProvider, verifyTdxQuote } from '../tee/tdx/index.ts'

/** Exit codes of the attest commands. */
export const EXIT_OK = 0
/** The quote is not valid under the policy, or no quote could be produced. */
export const EXIT_INVALID = 1
/** Bad arguments or unreadable input files. */
export const EXIT_USAGE = 2

/** Where the commands write, and the services they use; defaults are the process's. */
export interface AttestIo {
  stdout?: (text: string) => void
  stderr?: (text: string) => void
  fetch?: typeof fetch
  env?: Record<string, string | undefined>
  /** The quote source for attestQuote. Default: ConfigfsTsmProvider. */
  provider?: EvidenceProvider
  /** The DCAP verifier for attestVerify. Default verifyTdxQuote; a seam for tests of the policy edge. */
  verifyQuote?: typeof verifyTdxQuote
}

/**
 * The one JSON object `cocoon attest verify --json` prints. Hex is lowercase. Fields read from
 * the quote are null when it cannot be parsed; tcbStatus is null when no status could be
 * derived (the quote or collateral failed before TCB evaluation). `error` is null exactly
 * when `valid` is true.
 */
export interface AttestVerifyJson {
  valid: boolean
  teeType: 'tdx'
  tcbStatus: string | null
  advisoryIds: string[]
  mrtd: string | null
  rtmr: string[] | null
  mrConfigId: string | null
  mrOwner: string | null
  mrOwnerConfig: string | null
  reportData: string | null
  imageHash: string | null
  error: string | null
}

export interface AttestVerifyArgs {
  quoteFile: string
  /** Collateral JSON file; default: fetch from $COCOON_PCCS_URL (default Intel's PCS). */
  collateralFile?: string
  /** ISO-8601 time to verify at; default now. */
  now?: string
  json?: boolean
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

function measurements(body: TdReportBody) {
  return {
    mrtd: hex(body.mrTd),
    rtmr: body.rtmr.map(hex),
    mrConfigId: hex(body.mrConfigId),
    mrOwner: hex(body.mrOwner),
    mrOwnerConfig: hex(body.mrOwnerConfig),
    reportData: hex(body.reportData),
    imageHash: tdxImageHash(body),
  }
}

/** Quote files may be raw bytes or hex text (as `cocoon attest quote` prints). */
export function decodeQuoteFile(bytes: Uint8Array): Uint8Array {
  const text = Buffer.from(bytes).toString('latin1').trim().replace(/^0x/i, '').replace(/\s+/g, '')
  if (text.length > 0 && text.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'))
  return bytes
}

/**
 * `cocoon attest verify <quote-file> [--collateral <json>] [--now <ISO-8601>] [--json]`.
 * Returns 0 only when the quote verifies and its TCB status is UpToDate (the default TDX
 * policy); 1 when it is not valid; 2 for unusable arguments or files.
 */
export async function attestVerify(args: AttestVerifyArgs, io: AttestIo = {}): Promise<number> {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s))
  const env = io.env ?? process.env
  const report: AttestVerifyJson = {
    valid: false,
    teeType: 'tdx',
    tcbStatus: null,
    advisoryIds: [],
    mrtd: null,
    rtmr: null,
    mrConfigId: null,
    mrOwner: null,
    mrOwnerConfig: null,
    reportData: null,
    imageHash: null,
    error: null,
  }
  const finish = (code: number): number => {
    if (args.json) out(`${JSON.stringify(report)}\n`)
    else out(humanReport(report))
    return code
  }

  let quote: Uint8Array
  try {
    quote = decodeQuoteFile(new Uint8Array(await readFile(args.quoteFile)))
  } catch (err) {
    report.error = `cannot read quote file ${args.quoteFile}: ${(err as Error).message}`
    return finish(EXIT_USAGE)
  }
  const now = args.now === undefined ? new Date() : new Date(args.now)
  if (Number.isNaN(now.getTime())) {
    report.error = `--now "${args.now}" is not an ISO-8601 time`
    return finish(EXIT_USAGE)
  }
  try {
    Object.assign(report, measurements(parseTdxQuote(quote).body))
  } catch (err) {
    report.error = (err as Error).message
    return finish(EXIT_INVALID)
  }

  let collateral: TdxCollateral
  if (args.collateralFile) {
    try {
      collateral = parseCollateralJson(await readFile(args.collateralFile, 'utf8'))
    } catch (err) {
      report.error = `cannot read collateral file ${args.collateralFile}: ${(err as Error).message}`
      return finish(EXIT_USAGE)
    }
  } else {
    const url = env[PCCS_URL_ENV] || INTEL_PCS_URL
    try {
      collateral = await new PccsClient({ url }, { fetch: io.fetch }).getCollateral(quotePlatform(quote))
    } catch (err) {
      report.error = (err as Error).message
      return finish(EXIT_INVALID)
    }
  }

  try {
    const r = await (io.verifyQuote ?? verifyTdxQuote)(quote, collateral, { now })
    report.tcbStatus = r.tcbStatus
    report.advisoryIds = r.advisoryIds
    if (!tcbStatusAllowed(r.tcbStatus)) {
      report.error = `TCB status ${r.tcbStatus} is not allowed by the default TDX policy (allowed: ${DEFAULT_TDX_TCB_STATUSES.join(', ')})`
      return finish(EXIT_INVALID)
    }
    report.valid = true
    return finish(EXIT_OK)
  } catch (err) {
    report.error = (err as Error).message
    return finish(EXIT_INVALID)
  }
}

function humanReport(r: AttestVerifyJson): string {
  const lines = [r.valid ? 'TDX quote: VALID' : `TDX quote: INVALID\nreason: ${r.error}`]
  if (r.tcbStatus) lines.push(`tcb status: ${r.tcbStatus}`, `advisories: ${r.advisoryIds.join(', ') || 'none'}`)
  if (r.mrtd && r.rtmr) {
    lines.push(
      `image hash: ${r.imageHash}`,
      `mrtd: ${r.mrtd}`,
      ...r.rtmr.map((v, i) => `rtmr${i}: ${v}`),
      `mrconfigid: ${r.mrConfigId}`,
      `mrowner: ${r.mrOwner}`,
      `mrownerconfig: ${r.mrOwnerConfig}`,
      `report data: ${r.reportData}`,
    )
  }
  return `${lines.join('\n')}\n`
}

export interface AttestQuoteArgs {
  /** Exactly 64 bytes as hex. */
  reportDataHex: string
  /** Write the raw quote to this file instead of printing hex. */
  out?: string
}

/**
 * `cocoon attest quote --report-data <hex> [--out <file>]`, inside a TDX guest. Prints the
 * quote as hex, or writes the raw bytes to `out`. Returns 0, 1 when no quote could be produced
 * (e.g. outside a TDX guest), 2 for bad arguments.
 */
export async function attestQuote(args: AttestQuoteArgs, io: AttestIo = {}): Promise<number> {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s))
  const err = io.stderr ?? ((s: string) => void process.stderr.write(s))
  const h = args.reportDataHex.trim().replace(/^0x/i, '')
  if (!new RegExp(`^[0-9a-fA-F]{${REPORT_DATA_BYTES * 2}}$`).test(h)) {
    err(`--report-data must be exactly ${REPORT_DATA_BYTES} bytes as hex (${REPORT_DATA_BYTES * 2} hex digits), got ${h.length} characters\n`)
    return EXIT_USAGE
  }
  const provider = io.provider ?? new ConfigfsTsmProvider()
  let quote: Uint8Array
  try {
    quote = await provider.quote(new Uint8Array(Buffer.from(h, 'hex')))
  } catch (e) {
    const msg = e instanceof TsmError && e.code === 'unavailable' ? `not inside a TDX guest: ${e.message}` : (e as Error).message
    err(`${msg}\n`)
    return EXIT_INVALID
  }
  if (args.out) {
    try {
      await writeFile(args.out, quote)
    } catch (e) {
      err(`cannot write ${args.out}: ${(e as Error).message}\n`)
      return EXIT_USAGE
    }
    err(`wrote ${quote.length}-byte TDX quote to ${args.out}\n`)
  } else {
    out(`${hex(quote)}\n`)
  }
  return EXIT_OK
}

/**
 * A JSON-able description of a quote for `cocoon attest inspect`. Unverified: it shows what the
 * quote claims. Throws QuoteFormatError for bytes that are not a TDX quote.
 */
export function describeQuote(bytes: Uint8Array): Record<string, unknown> {
  const q = parseTdxQuote(bytes)
  const b = q.body
  let pck: Record<string, unknown>
  try {
    const chain = parsePemChain(q.auth.pckChainPem, 'PCK chain')
    const info = readPckInfo(chain[0])
    pck = {
      fmspc: info.fmspc,
      ca: info.ca,
      pceId: info.pceId,
      pceSvn: info.pceSvn,
      cpuSvn: hex(info.cpuSvn),
      chain: chain.map((c) => ({
        subject: c.subject,
        issuer: c.issuer,
        serialNumber: c.serialNumber.toLowerCase(),
        notBefore: c.notBefore.toISOString(),
        notAfter: c.notAfter.toISOString(),
        sha256: certSha256(c),
      })),
    }
  } catch (err) {
    pck = { error: (err as Error).message }
  }
  return {
    teeType: 'tdx',
    quoteVersion: q.header.version,
    attestationKeyType: q.header.attestationKeyType,
    qeVendorId: hex(q.header.qeVendorId),
    tdReport: b.type === 'td15' ? 'TDX 1.5' : 'TDX 1.0',
    ...measurements(b),
    teeTcbSvn: hex(b.teeTcbSvn),
    mrSeam: hex(b.mrSeam),
    mrSignerSeam: hex(b.mrSignerSeam),
    seamAttributes: hex(b.seamAttributes),
    tdAttributes: hex(b.tdAttributes),
    debug: isDebugTd(b),
    xfam: hex(b.xfam),
    ...(b.teeTcbSvn2 ? { teeTcbSvn2: hex(b.teeTcbSvn2) } : {}),
    ...(b.mrServiceTd ? { mrServiceTd: hex(b.mrServiceTd) } : {}),
    attestationKey: hex(q.auth.attestationKey),
    qe: {
      mrEnclave: hex(q.auth.qeReport.mrEnclave),
      mrSigner: hex(q.auth.qeReport.mrSigner),
      isvProdId: q.auth.qeReport.isvProdId,
      isvSvn: q.auth.qeReport.isvSvn,
    },
    pck,
  }
}
