// Spec: TdxEvidenceVerifier — collateral from a PCCS on loopback or fixed, collateral and verdict caches, injected clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { EvidenceRefusedError } from '../../src/tee/types.ts'
import {
  CollateralFetchError,
  PccsClient,
  TdxEvidenceVerifier,
  TdxVerificationError,
  parseTdxQuote,
  tdxImageHash,
  type TdxCollateral,
} from '../../src/tee/tdx/index.ts'
import { signedMember } from '../../src/tee/tdx/pccs.ts'

const FIXTURES = new URL('../../../shared/fixtures/tdx/', import.meta.url)
const quote = new Uint8Array(readFileSync(new URL('tdx_quote', FIXTURES)))
const collateral = JSON.parse(readFileSync(new URL('tdx_quote_collateral.json', FIXTURES), 'utf8')) as TdxCollateral
const T0 = Date.parse('2025-07-01T00:00:00Z')
const MINUTE = 60_000

/** A tampered copy: a different quote hash on the same platform. */
function tampered(): Uint8Array {
  const b = new Uint8Array(quote)
  b[48 + 520] ^= 1 // report data
  return b
}

function clock(start: number) {
  const c = { now: start, fn: () => c.now }
  return c
}

const refusedWith = (code: string) => (e: unknown) =>
  e instanceof EvidenceRefusedError && e.cause instanceof TdxVerificationError && e.cause.code === code

/** A PCS-v4-compatible collateral server on loopback, serving the fixture collateral. */
async function fakePccs(t: { after: (fn: () => void) => void }) {
  const state = { requests: [] as string[], failWith: 0 }
  const server = http.createServer((req, res) => {
    state.requests.push(req.url ?? '')
    if (state.failWith) return res.writeHead(state.failWith).end()
    const url = new URL(req.url ?? '/', 'http://x')
    const send = (body: string | Buffer, headers: Record<string, string> = {}) => res.writeHead(200, headers).end(body)
    switch (url.pathname) {
      case '/sgx/certification/v4/pckcrl':
        if (url.searchParams.get('ca') !== 'platform' || url.searchParams.get('encoding') !== 'der') return res.writeHead(400).end()
        return send(Buffer.from(collateral.pck_crl as string, 'hex'), { 'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(collateral.pck_crl_issuer_chain) })
      case '/tdx/certification/v4/tcb':
        if (url.searchParams.get('fmspc') !== 'B0C06F000000') return res.writeHead(404).end()
        return send(`{"tcbInfo":${collateral.tcb_info},"signature":"${collateral.tcb_info_signature}"}`, {
          'TCB-Info-Issuer-Chain': encodeURIComponent(collateral.tcb_info_issuer_chain),
        })
      case '/tdx/certification/v4/qe/identity':
        return send(`{"enclaveIdentity":${collateral.qe_identity},"signature":"${collateral.qe_identity_signature}"}`, {
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(collateral.qe_identity_issuer_chain),
        })
      case '/sgx/certification/v4/rootcacrl':
        return send(collateral.root_ca_crl as string) // PCCS answers hex
      default:
        return res.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, state }
}

test('with static collateral, verify returns the TDX evidence for the fixture', async () => {
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ collateral }, { clock: c.fn })
  assert.equal(v.kind, 'tdx')
  const e = await v.verify(quote)
  assert.deepEqual(e, {
    kind: 'tdx',
    imageHash: tdxImageHash(parseTdxQuote(quote).body),
    reportData: Buffer.from(parseTdxQuote(quote).body.reportData).toString('hex'),
    tcbStatus: 'UpToDate',
    advisoryIds: [],
  })
})

test('verdicts are cached by quote hash until the TTL passes, then verified again', async () => {
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ collateral, resultTtlMs: 5 * MINUTE }, { clock: c.fn })
  await v.verify(quote)
  c.now += 4 * MINUTE
  await v.verify(quote)
  assert.deepEqual([v.stats().verifications, v.stats().cacheHits], [1, 1])
  c.now += 2 * MINUTE // 6 minutes after the first verification
  await v.verify(quote)
  assert.deepEqual([v.stats().verifications, v.stats().cacheHits], [2, 1])
})

test('a cached verdict never outlives the collateral it rests on', async () => {
  // The PCK CRL's nextUpdate is 2025-07-19T10:00:35Z.
  const c = clock(Date.parse('2025-07-19T09:59:00Z'))
  const v = new TdxEvidenceVerifier({ collateral, resultTtlMs: 60 * MINUTE }, { clock: c.fn })
  await v.verify(quote)
  c.now += 2 * MINUTE
  await assert.rejects(v.verify(quote), refusedWith('collateral-expired'))
  assert.equal(v.stats().verifications, 2)
})

test('refusals are EvidenceRefusedError with the TDX error as cause, cached for the failure TTL', async () => {
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ collateral, failureTtlMs: 10_000 }, { clock: c.fn })
  const bad = tampered()
  await assert.rejects(v.verify(bad), (e: unknown) => refusedWith('quote-signature-invalid')(e) && /quote-signature-invalid/.test((e as EvidenceRefusedError).reason))
  await assert.rejects(v.verify(bad), refusedWith('quote-signature-invalid'))
  assert.deepEqual([v.stats().verifications, v.stats().cacheHits], [1, 1])
  c.now += 11_000
  await assert.rejects(v.verify(bad), refusedWith('quote-signature-invalid'))
  assert.equal(v.stats().verifications, 2)
  await assert.rejects(v.verify(new Uint8Array([1, 2, 3])), (e: unknown) => e instanceof EvidenceRefusedError && /malformed TDX quote/.test(e.reason))
})

test('the cache is bounded: the least recently used verdict is evicted', async () => {
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ collateral, maxCachedResults: 1 }, { clock: c.fn })
  await v.verify(quote)
  await assert.rejects(v.verify(tampered()))
  await v.verify(quote)
  assert.deepEqual([v.stats().verifications, v.stats().cachedResults], [3, 1])
})

test('collateral is fetched from the PCCS (PCS v4 paths), cached until it expires, then fetched again', async (t) => {
  const pccs = await fakePccs(t)
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ pccsUrl: `${pccs.url}/sgx/certification/v4/` }, { clock: c.fn })
  const e = await v.verify(quote)
  assert.equal(e.tcbStatus, 'UpToDate')
  assert.deepEqual([...pccs.state.requests].sort(), [
    '/sgx/certification/v4/pckcrl?ca=platform&encoding=der',
    '/sgx/certification/v4/rootcacrl',
    '/tdx/certification/v4/qe/identity',
    '/tdx/certification/v4/tcb?fmspc=B0C06F000000',
  ])
  // Another quote from the same platform reuses the collateral.
  await assert.rejects(v.verify(tampered()), refusedWith('quote-signature-invalid'))
  assert.equal(v.stats().collateralFetches, 1)
  // Past the PCK CRL's nextUpdate the collateral is stale: it is fetched again (and, being the same, fails).
  c.now = Date.parse('2025-07-19T10:01:00Z')
  await assert.rejects(v.verify(quote), refusedWith('collateral-expired'))
  assert.equal(v.stats().collateralFetches, 2)
})

test('an unreachable or failing PCCS refuses the quote without caching the failure', async (t) => {
  const pccs = await fakePccs(t)
  pccs.state.failWith = 503
  const c = clock(T0)
  const v = new TdxEvidenceVerifier({ pccsUrl: pccs.url }, { clock: c.fn })
  const fetchFailed = (e: unknown) => e instanceof EvidenceRefusedError && e.cause instanceof CollateralFetchError && e.cause.status === 503
  await assert.rejects(v.verify(quote), fetchFailed)
  pccs.state.failWith = 0
  assert.equal((await v.verify(quote)).tcbStatus, 'UpToDate')
  assert.equal(v.stats().collateralFetches, 2)
})

test('concurrent verifications of one quote share a single verification', async () => {
  const v = new TdxEvidenceVerifier({ collateral }, { clock: () => T0 })
  const all = await Promise.all([v.verify(quote), v.verify(quote), v.verify(quote)])
  assert.equal(all.length, 3)
  assert.equal(v.stats().verifications, 1)
})

test('PccsClient output has the fixture collateral shape and exact signed JSON text', async (t) => {
  const pccs = await fakePccs(t)
  const got = await new PccsClient({ url: pccs.url }).getCollateral({ fmspc: 'B0C06F000000', ca: 'platform' })
  assert.equal(got.tcb_info, collateral.tcb_info)
  assert.equal(got.qe_identity, collateral.qe_identity)
  assert.equal(got.pck_crl, collateral.pck_crl)
  assert.equal(got.root_ca_crl, collateral.root_ca_crl)
  assert.equal(got.tcb_info_issuer_chain, collateral.tcb_info_issuer_chain)
  // The signed member is cut out of the answer verbatim, whitespace and escapes included.
  assert.equal(signedMember('{ "tcbInfo" : {"a":"}{\\"","b":{}} , "signature":"00"}', 'tcbInfo'), '{"a":"}{\\"","b":{}}')
})

test('an aborted signal stops verification before any work', async () => {
  const v = new TdxEvidenceVerifier({ collateral }, { clock: () => T0 })
  await assert.rejects(v.verify(quote, { signal: AbortSignal.abort() }), { name: 'AbortError' })
  assert.equal(v.stats().verifications, 0)
})
