// Runs the EvidenceVerifier compliance suite against both verifiers: simulated, and TDX on the fixture quote
// with its fixed collateral at a time the collateral is valid.
import { readFileSync } from 'node:fs'
import { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/index.ts'
import { parseTdxQuote, TdxEvidenceVerifier, tdxImageHash, type TdxCollateral } from '../../src/tee/tdx/index.ts'
import { verifierCompliance } from './verifier-compliance.ts'

const FIXTURES = new URL('../../../shared/fixtures/tdx/', import.meta.url)
const tdxQuote = new Uint8Array(readFileSync(new URL('tdx_quote', FIXTURES)))
const collateral = JSON.parse(readFileSync(new URL('tdx_quote_collateral.json', FIXTURES), 'utf8')) as TdxCollateral
const TDX_VALID_AT = new Date('2025-07-01T00:00:00Z')
/** A v4 quote: 48-byte header, then the TD report body with REPORTDATA at offset 520. */
const TDX_REPORT_DATA_OFFSET = 48 + 520

const reportData = new Uint8Array(64).map((_, i) => i * 3)
const simulatedQuote = async () => new SimulatedEvidenceProvider(await simulatedImageHash()).quote(reportData)

verifierCompliance('simulated', async () => {
  const quote = await simulatedQuote()
  return {
    verifier: new SimulatedEvidenceVerifier(),
    quote,
    imageHash: await simulatedImageHash(),
    reportData: Buffer.from(reportData).toString('hex'),
    reportDataOffset: quote.length - 64,
    otherKindQuote: tdxQuote,
    forgeable: true,
  }
})

verifierCompliance('TDX (fixture quote, fixed collateral)', async () => {
  const body = parseTdxQuote(tdxQuote).body
  return {
    verifier: new TdxEvidenceVerifier({ collateral }, { clock: () => TDX_VALID_AT.getTime() }),
    quote: tdxQuote,
    imageHash: tdxImageHash(body),
    reportData: Buffer.from(body.reportData).toString('hex'),
    reportDataOffset: TDX_REPORT_DATA_OFFSET,
    otherKindQuote: await simulatedQuote(),
    forgeable: false,
    now: TDX_VALID_AT,
  }
})
