// On-chain fees: gas and nanoTON per contract operation from the contract fee report, and what settlement costs per request.
//
// The report is written by writeContractFeeReport (src/ton/contracts/fees.ts) to
// bench/results/contract-fees.json; when the file is missing, or older than the contracts, the
// bench runs that function first.
//
// Amortised cost per request: the proxy submits a client's charge voucher once the client owes
// the charge threshold, and a worker claims its payout voucher once it is owed the payout
// threshold. So a request costing C nanoTON to the client and earning W to the worker (priced by
// src/payments/pricing.ts) carries
//     C × fee(client.charge) / clientChargeThreshold + W × fee(worker.payout) / workerPayoutThreshold
// State commits are periodic, not per amount, and are left out (their fee is in the table).
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { COEFFICIENT_ONE, priceRequest, type PriceParams } from '../payments/pricing.ts'
import type { BenchResult, OpFees } from './schema.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface FeesOptions {
  /** The fee report (JSON, version 1). */
  reportFile: string
  /** Run the fee measurement and write the report when the file is missing or older than the contracts. */
  generate: boolean
  /** The request the amortised cost is for, in model tokens (at coefficient 1.0). */
  request: { promptTokens: number; completionTokens: number }
  say: (line: string) => void
}

/** Prices and thresholds the amortised figure is computed with, and where they come from. */
export interface SettlementTerms {
  source: string
  prices: PriceParams
  clientChargeThresholdNano: bigint
  workerPayoutThresholdNano: bigint
}

export async function measureFees(o: FeesOptions): Promise<{ fees: BenchResult['fees']; notes: string[] }> {
  const notes: string[] = []
  const report = await loadReport(o, notes)
  if (!report) return { fees: { perRequestAmortisedNano: null }, notes }
  const fees: BenchResult['fees'] = { ...report, perRequestAmortisedNano: null }
  const charge = report['client.charge']
  const payout = report['worker.payout']
  if (!charge || !payout) {
    notes.push('fees: the report has no client.charge or worker.payout op, so perRequestAmortisedNano is null')
    return { fees, notes }
  }
  const terms = await settlementTerms()
  fees.perRequestAmortisedNano = amortisedFeePerRequestNano(terms, charge, payout, o.request)
  notes.push(`fees: perRequestAmortisedNano is for a request of ${o.request.promptTokens} prompt + ${o.request.completionTokens} completion tokens at coefficient 1.0; ${terms.source}`)
  return { fees, notes }
}

/** The on-chain settlement cost one request carries, nanoTON (see the module comment), rounded to 0.001. */
export function amortisedFeePerRequestNano(t: SettlementTerms, charge: OpFees, payout: OpFees, request: { promptTokens: number; completionTokens: number }): number {
  const cost = priceRequest({ ...request, cachedTokens: 0, reasoningTokens: 0 }, Number(COEFFICIENT_ONE), t.prices)
  // A statistic, not an amount that moves: a fraction of a nanoTON, so floating point is fine here.
  const perRequest =
    (Number(cost.clientNano) * charge.feeNano) / Number(t.clientChargeThresholdNano) + (Number(cost.workerNano) * payout.feeNano) / Number(t.workerPayoutThresholdNano)
  return Math.round(perRequest * 1000) / 1000
}

/** Prices from the parameters the fee report ran with; thresholds: the payments code's defaults. */
async function settlementTerms(): Promise<SettlementTerms> {
  const { FEE_REPORT_PARAMS: p } = await import('../ton/contracts/index.ts')
  const { CHARGE_THRESHOLD_NANO } = await import('../payments/proxy-settlement.ts')
  const { PAYOUT_THRESHOLD_NANO } = await import('../payments/worker-payouts.ts')
  return {
    source:
      `prices of the fee report's parameters (${p.pricePerTokenNano} nanoTON per adjusted token from the client, ${p.workerFeePerTokenNano} to the worker); ` +
      `default thresholds of src/payments (client charged at ${CHARGE_THRESHOLD_NANO} nanoTON owed, worker paid at ${PAYOUT_THRESHOLD_NANO} due)`,
    prices: p,
    clientChargeThresholdNano: CHARGE_THRESHOLD_NANO,
    workerPayoutThresholdNano: PAYOUT_THRESHOLD_NANO,
  }
}

/** The report's ops, or null (with a note) when there is none and it cannot be made. */
async function loadReport(o: FeesOptions, notes: string[]): Promise<Record<string, OpFees> | null> {
  const exists = fs.existsSync(o.reportFile)
  if (!exists && !o.generate) {
    notes.push(`fees: no contract fee report at ${o.reportFile}; all fee figures are null`)
    return null
  }
  if (o.generate && (!exists || fs.statSync(o.reportFile).mtimeMs < newestContractSourceMs())) {
    o.say(`fees: ${exists ? 'the report is older than the contracts' : `no report at ${o.reportFile}`}; measuring contract fees in @ton/sandbox`)
    try {
      const { writeContractFeeReport } = await import('../ton/contracts/index.ts')
      await writeContractFeeReport(o.reportFile)
    } catch (err) {
      notes.push(`fees: the contract fee report could not be made (${(err as Error).message}); all fee figures are null`)
      return null
    }
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(fs.readFileSync(o.reportFile, 'utf8'))
  } catch (err) {
    notes.push(`fees: ${o.reportFile} is not readable JSON (${(err as Error).message}); all fee figures are null`)
    return null
  }
  const r = parsed as { version?: unknown; ops?: Record<string, unknown> }
  if (r.version !== 1 || !r.ops || typeof r.ops !== 'object') {
    notes.push(`fees: ${o.reportFile} is not a version 1 contract fee report; all fee figures are null`)
    return null
  }
  const ops: Record<string, OpFees> = {}
  for (const [op, v] of Object.entries(r.ops)) {
    const c = v as { gas?: unknown; feeNano?: unknown }
    if (op === 'perRequestAmortisedNano' || typeof c?.gas !== 'number' || typeof c.feeNano !== 'number') {
      notes.push(`fees: skipped malformed entry ${op} of ${o.reportFile}`)
      continue
    }
    ops[op] = { gas: c.gas, feeNano: c.feeNano }
  }
  return ops
}

/** When the contracts or their TypeScript wrappers last changed (a report older than that is stale). */
function newestContractSourceMs(): number {
  let newest = 0
  for (const dir of [path.join(ROOT, 'contracts'), path.join(ROOT, 'src', 'ton', 'contracts')]) {
    let names: string[] = []
    try {
      names = fs.readdirSync(dir)
    } catch {
      continue
    }
    for (const n of names) newest = Math.max(newest, fs.statSync(path.join(dir, n)).mtimeMs)
  }
  return newest
}
