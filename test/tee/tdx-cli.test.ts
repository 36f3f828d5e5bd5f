// Spec: `cocoon attest verify` (attestVerify) — exit codes and exactly the documented JSON fields, for both fixtures.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseTdxQuote, tdxImageHash, verifyTdxQuote, type TdxCollateral } from '../../src/tee/tdx/index.ts'
import { attestVerify, type AttestVerifyJson } from '../../src/cli/attest-tdx.ts'

const FIXTURES = new URL('../../../shared/fixtures/tdx/', import.meta.url)
const file = (name: string) => fileURLToPath(new URL(name, FIXTURES))
const FIELDS = ['advisoryIds', 'error', 'imageHash', 'mrConfigId', 'mrOwner', 'mrOwnerConfig', 'mrtd', 'reportData', 'rtmr', 'tcbStatus', 'teeType', 'valid']

async function run(args: Parameters<typeof attestVerify>[0], io: Parameters<typeof attestVerify>[1] = {}) {
  const out: string[] = []
  const code = await attestVerify(args, { ...io, stdout: (s) => void out.push(s) })
  return { code, out: out.join('') }
}

async function runJson(args: Omit<Parameters<typeof attestVerify>[0], 'json'>, io: Parameters<typeof attestVerify>[1] = {}) {
  const { code, out } = await run({ ...args, json: true }, io)
  const lines = out.trim().split('\n')
  assert.equal(lines.length, 1, 'exactly one JSON object, on one line')
  const json = JSON.parse(lines[0]) as AttestVerifyJson
  assert.deepEqual(Object.keys(json).sort(), FIELDS)
  return { code, json }
}

function assertMeasurements(json: AttestVerifyJson, quoteFile: string, bytes: Uint8Array) {
  const body = parseTdxQuote(bytes).body
  const lowerHex = (v: unknown, len: number) => assert.match(String(v), new RegExp(`^[0-9a-f]{${len * 2}}$`), quoteFile)
  assert.equal(json.teeType, 'tdx')
  lowerHex(json.mrtd, 48)
  lowerHex(json.mrConfigId, 48)
  lowerHex(json.mrOwner, 48)
  lowerHex(json.mrOwnerConfig, 48)
  lowerHex(json.reportData, 64)
  lowerHex(json.imageHash, 32)
  assert.equal(json.rtmr?.length, 4)
  for (const r of json.rtmr ?? []) lowerHex(r, 48)
  assert.equal(json.mrtd, Buffer.from(body.mrTd).toString('hex'))
  assert.equal(json.imageHash, tdxImageHash(body))
  assert.ok(Array.isArray(json.advisoryIds))
}

test('the valid fixture inside its window: exit 0, valid, UpToDate, error null', async () => {
  const { code, json } = await runJson({ quoteFile: file('tdx_quote'), collateralFile: file('tdx_quote_collateral.json'), now: '2025-07-01T00:00:00Z' })
  assert.equal(code, 0)
  assert.equal(json.valid, true)
  assert.equal(json.tcbStatus, 'UpToDate')
  assert.deepEqual(json.advisoryIds, [])
  assert.equal(json.error, null)
  assertMeasurements(json, 'tdx_quote', new Uint8Array(await readFile(file('tdx_quote'))))
})

test('the outdated fixture inside its window: exit 1, not valid, with the reason', async () => {
  const { code, json } = await runJson({
    quoteFile: file('tdx_quote_outdated'),
    collateralFile: file('tdx_quote_outdated_collateral.json'),
    now: '2026-03-01T00:00:00Z',
  })
  assert.equal(code, 1)
  assert.equal(json.valid, false)
  assert.equal(json.tcbStatus, null)
  assert.match(String(json.error), /tcb-not-supported.*matches no TCB level/)
  assertMeasurements(json, 'tdx_quote_outdated', new Uint8Array(await readFile(file('tdx_quote_outdated'))))
})

test('the valid fixture at today\'s clock: exit 1, collateral expired', async () => {
  const { code, json } = await runJson({ quoteFile: file('tdx_quote'), collateralFile: file('tdx_quote_collateral.json') })
  assert.equal(code, 1)
  assert.equal(json.valid, false)
  assert.match(String(json.error), /collateral-expired/)
})

test('a verified quote whose status the default policy refuses: exit 1, status and advisories named', async () => {
  // No real quote with collateral grading it OutOfDate exists under Intel's root, so the verifier (the seam next door) is stubbed.
  const { code, json } = await runJson(
    { quoteFile: file('tdx_quote'), collateralFile: file('tdx_quote_collateral.json'), now: '2025-07-01T00:00:00Z' },
    { verifyQuote: async (q, c, o) => ({ ...(await verifyTdxQuote(q, c, o)), tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-00837'] }) },
  )
  assert.equal(code, 1)
  assert.equal(json.valid, false)
  assert.equal(json.tcbStatus, 'OutOfDate')
  assert.deepEqual(json.advisoryIds, ['INTEL-SA-00837'])
  assert.match(String(json.error), /TCB status OutOfDate is not allowed by the default TDX policy \(allowed: UpToDate\)/)
})

test('a hex quote file is accepted; unusable arguments exit 2', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tdx-cli-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const hexFile = join(dir, 'quote.hex')
  await writeFile(hexFile, `${(await readFile(file('tdx_quote'))).toString('hex')}\n`)
  const ok = await runJson({ quoteFile: hexFile, collateralFile: file('tdx_quote_collateral.json'), now: '2025-07-01T00:00:00Z' })
  assert.equal(ok.code, 0)

  const badNow = await runJson({ quoteFile: hexFile, collateralFile: file('tdx_quote_collateral.json'), now: 'yesterday' })
  assert.equal(badNow.code, 2)
  assert.match(String(badNow.json.error), /not an ISO-8601 time/)
  const missing = await runJson({ quoteFile: join(dir, 'nope'), now: '2025-07-01T00:00:00Z' })
  assert.equal(missing.code, 2)
  assert.equal(missing.json.mrtd, null)
  assert.equal(missing.json.rtmr, null)

  const garbage = join(dir, 'garbage')
  await writeFile(garbage, Buffer.from('not a quote'))
  const bad = await runJson({ quoteFile: garbage, collateralFile: file('tdx_quote_collateral.json') })
  assert.equal(bad.code, 1)
  assert.match(String(bad.json.error), /malformed TDX quote/)
})

test('without --collateral, collateral comes from $COCOON_PCCS_URL', async () => {
  const collateral = JSON.parse(await readFile(file('tdx_quote_collateral.json'), 'utf8')) as TdxCollateral
  const seen: string[] = []
  const fakeFetch = (async (input: string | URL | Request) => {
    const url = new URL(String(input))
    seen.push(url.origin)
    const ok = (body: BodyInit, headers: Record<string, string> = {}) => new Response(body, { status: 200, headers })
    switch (url.pathname) {
      case '/sgx/certification/v4/pckcrl':
        return ok(Buffer.from(collateral.pck_crl as string, 'hex'), { 'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(collateral.pck_crl_issuer_chain) })
      case '/tdx/certification/v4/tcb':
        return ok(`{"tcbInfo":${collateral.tcb_info},"signature":"${collateral.tcb_info_signature}"}`, { 'TCB-Info-Issuer-Chain': encodeURIComponent(collateral.tcb_info_issuer_chain) })
      case '/tdx/certification/v4/qe/identity':
        return ok(`{"enclaveIdentity":${collateral.qe_identity},"signature":"${collateral.qe_identity_signature}"}`, {
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(collateral.qe_identity_issuer_chain),
        })
      case '/sgx/certification/v4/rootcacrl':
        return ok(Buffer.from(collateral.root_ca_crl as string, 'hex'))
      default:
        return new Response(null, { status: 404 })
    }
  }) as typeof fetch
  const { code, json } = await runJson(
    { quoteFile: file('tdx_quote'), now: '2025-07-01T00:00:00Z' },
    { fetch: fakeFetch, env: { COCOON_PCCS_URL: 'https://pccs.example' } },
  )
  assert.equal(code, 0, String(json.error))
  assert.ok(seen.length === 4 && seen.every((o) => o === 'https://pccs.example'))
})

test('without --json the report is for humans and says VALID or INVALID', async () => {
  const ok = await run({ quoteFile: file('tdx_quote'), collateralFile: file('tdx_quote_collateral.json'), now: '2025-07-01T00:00:00Z' })
  assert.match(ok.out, /^TDX quote: VALID\n/)
  assert.match(ok.out, /image hash: [0-9a-f]{64}/)
  const bad = await run({ quoteFile: file('tdx_quote'), collateralFile: file('tdx_quote_collateral.json') })
  assert.match(bad.out, /^TDX quote: INVALID\nreason: .*collateral-expired/)
})
