// TCB status of a TDX platform from TCB info and QE identity, following Intel's QVL evaluation order; and the status policy helper.

import { DEFAULT_TDX_TCB_STATUSES } from './constants.ts'
import type { QeIdentity, TcbInfo } from './collateral.ts'
import { TdxVerificationError } from './errors.ts'

export interface TcbVerdict {
  /** Intel's TCB status string, e.g. UpToDate, OutOfDate, ConfigurationNeeded, SWHardeningNeeded. */
  status: string
  /** Intel security advisories that apply (platform, then QE, then TDX module), without duplicates. */
  advisoryIds: string[]
}

const PLATFORM_STATUSES = new Set([
  'UpToDate',
  'OutOfDate',
  'ConfigurationNeeded',
  'Revoked',
  'OutOfDateConfigurationNeeded',
  'SWHardeningNeeded',
  'ConfigurationAndSWHardeningNeeded',
])
const MODULE_STATUSES = new Set(['UpToDate', 'OutOfDate', 'Revoked'])
const QE_STATUSES = new Set(['UpToDate', 'OutOfDate', 'ConfigurationNeeded', 'Revoked', 'OutOfDateConfigurationNeeded'])

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex')
}

function svnsAtLeast(actual: ArrayLike<number>, required: { svn: number }[] | undefined, from: number, what: string): boolean {
  if (!required || required.length !== 16) throw new TdxVerificationError('collateral-malformed', `TCB info level has ${required?.length ?? 0} ${what} components, expected 16`)
  for (let i = from; i < 16; i++) if (actual[i] < required[i].svn) return false
  return true
}

function checkStatus(status: string, allowed: Set<string>, what: string): string {
  if (!allowed.has(status)) throw new TdxVerificationError('collateral-malformed', `${what} has unrecognized TCB status "${status}"`)
  return status
}

/** Masked comparison of two equally long hex strings under a hex mask. */
function maskedEqual(actual: Uint8Array, expectedHex: string, maskHex: string): boolean {
  const expected = Buffer.from(expectedHex, 'hex')
  const mask = Buffer.from(maskHex, 'hex')
  if (expected.length !== actual.length || mask.length !== actual.length) return false
  for (let i = 0; i < actual.length; i++) if ((actual[i] & mask[i]) !== (expected[i] & mask[i])) return false
  return true
}

/**
 * Checks that the QE report comes from the enclave QE identity describes (Intel's TD QE):
 * MRSIGNER, ISVPRODID, and MISCSELECT and ATTRIBUTES under their masks.
 */
export function checkQeIdentity(
  qe: { mrSigner: Uint8Array; isvProdId: number; miscSelect: number; attributes: Uint8Array },
  id: QeIdentity,
): void {
  if (hex(qe.mrSigner) !== id.mrsigner.toLowerCase()) {
    throw new TdxVerificationError('qe-identity-mismatch', `QE MRSIGNER ${hex(qe.mrSigner)} is not ${id.mrsigner.toLowerCase()}`)
  }
  if (qe.isvProdId !== id.isvprodid) throw new TdxVerificationError('qe-identity-mismatch', `QE ISVPRODID ${qe.isvProdId} is not ${id.isvprodid}`)
  const misc = Buffer.alloc(4)
  misc.writeUInt32LE(qe.miscSelect)
  // QE identity spells MISCSELECT as a big-endian hex number.
  const miscExpected = Buffer.from(id.miscselect, 'hex').reverse().toString('hex')
  const miscMask = Buffer.from(id.miscselectMask, 'hex').reverse().toString('hex')
  if (!maskedEqual(misc, miscExpected, miscMask)) {
    throw new TdxVerificationError('qe-identity-mismatch', `QE MISCSELECT ${qe.miscSelect.toString(16).padStart(8, '0')} does not match ${id.miscselect} under mask ${id.miscselectMask}`)
  }
  if (!maskedEqual(qe.attributes, id.attributes, id.attributesMask)) {
    throw new TdxVerificationError('qe-identity-mismatch', `QE ATTRIBUTES ${hex(qe.attributes)} do not match ${id.attributes.toLowerCase()} under mask ${id.attributesMask.toLowerCase()}`)
  }
}

export interface TcbInputs {
  tcbInfo: TcbInfo
  qeIdentity: QeIdentity
  /** From the PCK certificate's SGX extension. */
  pck: { sgxTcbComponents: number[]; pceSvn: number }
  /** From the TD report. */
  td: { teeTcbSvn: Uint8Array; mrSignerSeam: Uint8Array; seamAttributes: Uint8Array }
  /** The QE report's ISVSVN. */
  qeIsvSvn: number
}

/**
 * The platform's TCB status. Platform level: the first TCB level whose SGX components and
 * PCESVN are at most the PCK certificate's and whose TDX components are at most TEE_TCB_SVN
 * (skipping the module's own two bytes when a TDX module identity applies). Then the TDX module
 * and the QE each contribute: any OutOfDate degrades UpToDate/SWHardeningNeeded to OutOfDate and
 * the Configuration* statuses to OutOfDateConfigurationNeeded; any Revoked gives Revoked.
 * Throws 'tcb-not-supported' when nothing matches, 'tdx-module-mismatch' for a foreign module.
 */
export function evaluateTdxTcb(inp: TcbInputs): TcbVerdict {
  const { tcbInfo, td } = inp
  const moduleMajor = td.teeTcbSvn[1]
  const moduleMinor = td.teeTcbSvn[0]
  const tdxFrom = moduleMajor > 0 ? 2 : 0

  const level = tcbInfo.tcbLevels.find(
    (l) =>
      svnsAtLeast(inp.pck.sgxTcbComponents, l.tcb.sgxtcbcomponents, 0, 'SGX') &&
      inp.pck.pceSvn >= l.tcb.pcesvn &&
      svnsAtLeast(td.teeTcbSvn, l.tcb.tdxtcbcomponents, tdxFrom, 'TDX'),
  )
  if (!level) {
    throw new TdxVerificationError(
      'tcb-not-supported',
      `the platform TCB (SGX components ${inp.pck.sgxTcbComponents.join(',')}, PCESVN ${inp.pck.pceSvn}, TEE_TCB_SVN ${hex(td.teeTcbSvn)}) matches no TCB level in the TCB info for FMSPC ${tcbInfo.fmspc}`,
    )
  }
  const platform = checkStatus(level.tcbStatus, PLATFORM_STATUSES, 'TCB info level')
  const components: string[] = []

  // The TDX module must be Intel's; its own TCB level is graded when it has a major version.
  const moduleId = `TDX_${moduleMajor.toString(16).padStart(2, '0').toUpperCase()}`
  const identity = moduleMajor > 0 ? tcbInfo.tdxModuleIdentities?.find((m) => m.id.toUpperCase() === moduleId) : undefined
  const module = moduleMajor > 0 ? identity : tcbInfo.tdxModule
  if (!module) {
    throw new TdxVerificationError(
      'tcb-not-supported',
      moduleMajor > 0 ? `the TCB info has no identity ${moduleId} for the TDX module's major version` : 'the TCB info has no tdxModule entry',
    )
  }
  if (hex(td.mrSignerSeam) !== module.mrsigner.toLowerCase()) {
    throw new TdxVerificationError('tdx-module-mismatch', `TDX module MRSIGNERSEAM ${hex(td.mrSignerSeam)} is not ${module.mrsigner.toLowerCase()}`)
  }
  if (!maskedEqual(td.seamAttributes, module.attributes, module.attributesMask)) {
    throw new TdxVerificationError('tdx-module-mismatch', `TDX module SEAMATTRIBUTES ${hex(td.seamAttributes)} do not match ${module.attributes.toLowerCase()}`)
  }
  let moduleAdvisories: string[] = []
  if (identity) {
    const ml = identity.tcbLevels.find((l) => moduleMinor >= l.tcb.isvsvn)
    if (!ml) throw new TdxVerificationError('tcb-not-supported', `TDX module SVN ${moduleMinor} is below every level of ${moduleId} in the TCB info`)
    components.push(checkStatus(ml.tcbStatus, MODULE_STATUSES, `${moduleId} level`))
    moduleAdvisories = ml.advisoryIDs ?? []
  }

  const qeLevels = [...inp.qeIdentity.tcbLevels].sort((a, b) => b.tcb.isvsvn - a.tcb.isvsvn)
  const ql = qeLevels.find((l) => inp.qeIsvSvn >= l.tcb.isvsvn)
  if (!ql) throw new TdxVerificationError('tcb-not-supported', `QE ISVSVN ${inp.qeIsvSvn} is below every level of the QE identity`)
  components.push(checkStatus(ql.tcbStatus, QE_STATUSES, 'QE identity level'))

  let status = platform
  if (components.includes('OutOfDate')) {
    if (status === 'UpToDate' || status === 'SWHardeningNeeded') status = 'OutOfDate'
    else if (status === 'ConfigurationNeeded' || status === 'ConfigurationAndSWHardeningNeeded') status = 'OutOfDateConfigurationNeeded'
  }
  if (components.includes('Revoked')) status = 'Revoked'
  const advisoryIds = [...new Set([...(level.advisoryIDs ?? []), ...(ql.advisoryIDs ?? []), ...moduleAdvisories])]
  return { status, advisoryIds }
}

/** True when `status` is in `allowed` (default: UpToDate only). */
export function tcbStatusAllowed(status: string | undefined, allowed: readonly string[] = DEFAULT_TDX_TCB_STATUSES): boolean {
  return status !== undefined && allowed.includes(status)
}
