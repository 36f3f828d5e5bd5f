// Spec: verifyPeer against policies, and the verification cache.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  createIdentity,
  createPeerVerifier,
  devnetPolicy,
  encodeClaims,
  EvidenceRefusedError,
  OID_TDX_QUOTE,
  SimulatedEvidenceVerifier,
  simulatedImageHash,
  verifyPeer,
  VerificationCache,
  type EvidenceProvider,
  type EvidenceVerifier,
  type Policy,
  type VerifiedEvidence,
  type VerifiedPeer,
} from '../../src/tee/index.ts'
import { at, CONFIG_HASH, derOf, MODEL_HASH, reissue, simulatedProvider, T0, workerIdentity } from './helpers.ts'

const refused = (re: RegExp) => (e: unknown) => e instanceof EvidenceRefusedError && re.test(e.reason)
const verifiers = { simulated: new SimulatedEvidenceVerifier() }
const now = at(T0, 10)

async function policy(over: Partial<Policy> = {}): Promise<Policy> {
  return { ...devnetPolicy([await simulatedImageHash()]), ...over }
}

test('round trip: a fresh worker identity verifies as what it claims', async () => {
  const id = await workerIdentity()
  const peer = await verifyPeer(derOf(id.certPem), await policy(), { expectedRole: 'worker', verifiers, now })
  assert.deepEqual(peer, {
    kind: 'simulated',
    role: 'worker',
    imageHash: await simulatedImageHash(),
    claims: id.claims,
    publicKey: id.publicKey,
  })
})

test('an unattested client verifies only where the policy lists kind none, with an empty image hash', async () => {
  const id = await createIdentity({ role: 'client', configHash: CONFIG_HASH, now: () => T0 })
  const peer = await verifyPeer(derOf(id.certPem), await policy(), { expectedRole: 'client', verifiers, now })
  assert.equal(peer.kind, 'none')
  assert.equal(peer.imageHash, '')
  await assert.rejects(
    verifyPeer(derOf(id.certPem), await policy({ acceptKinds: ['simulated'] }), { verifiers, now }),
    refused(/kind none not accepted/),
  )
})

test('an unattested proxy or worker is refused even where kind none is accepted', async () => {
  const id = await createIdentity({ role: 'proxy', configHash: CONFIG_HASH, now: () => T0 })
  await assert.rejects(
    verifyPeer(derOf(id.certPem), await policy({ imageHashes: { proxy: '*' } }), { expectedRole: 'proxy', verifiers, now }),
    refused(/only accepted from clients/),
  )
})

test('claims re-encoded with another role under the same key are refused: report data no longer matches', async () => {
  const id = await workerIdentity()
  const der = await reissue(id, (e) => [
    { ...e[0], value: encodeClaims({ ...id.claims, role: 'proxy' }) },
    e[1],
  ])
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/report data does not match the claims/))
})

test('claims re-encoded with another model hash are refused: report data no longer matches', async () => {
  const id = await workerIdentity()
  const der = await reissue(id, (e) => [{ ...e[0], value: encodeClaims({ ...id.claims, modelHash: 'ff'.repeat(32) }) }, e[1]])
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/report data does not match/))
})

test('a quote bound to other report data is refused', async () => {
  const id = await workerIdentity()
  const provider = await simulatedProvider()
  const der = await reissue(id, async (e) => [e[0], { ...e[1], value: await provider.quote(randomBytes(64)) }])
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/report data does not match/))
})

test("evidence copied into a certificate of another key is refused: claims.publicKey is not that key", async () => {
  const victim = await workerIdentity()
  const attacker = await workerIdentity()
  const der = await reissue(victim, (e) => e, { signer: attacker })
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/claims\.publicKey is not the certificate key/))
})

test('a peer of the wrong role is refused; a list of roles is honoured', async () => {
  const der = derOf((await workerIdentity()).certPem)
  await assert.rejects(verifyPeer(der, await policy(), { expectedRole: 'proxy', verifiers, now }), refused(/role worker, expected proxy/))
  const peer = await verifyPeer(der, await policy(), { expectedRole: ['proxy', 'worker'], verifiers, now })
  assert.equal(peer.role, 'worker')
})

test('an evidence kind the policy does not list is refused', async () => {
  const der = derOf((await workerIdentity()).certPem)
  await assert.rejects(verifyPeer(der, await policy({ acceptKinds: ['tdx'] }), { verifiers, now }), refused(/kind simulated not accepted/))
})

test('a simulated quote can never satisfy a policy accepting only tdx', async () => {
  const id = await workerIdentity()
  const tdxOnly = await policy({ acceptKinds: ['tdx'], imageHashes: { worker: '*' } })
  // As issued: its own OID makes it kind simulated.
  await assert.rejects(verifyPeer(derOf(id.certPem), tdxOnly, { verifiers, now }), refused(/kind simulated not accepted/))
  // Relabelled under the TDX OID, it is TDX evidence, which only a TDX verifier may judge...
  const relabelled = await reissue(id, (e) => [e[0], { ...e[1], oid: OID_TDX_QUOTE }])
  await assert.rejects(verifyPeer(relabelled, tdxOnly, { verifiers, now }), refused(/no verifier for evidence kind tdx/))
  // ...and the simulated verifier cannot be passed off as one.
  const misconfigured = { tdx: new SimulatedEvidenceVerifier() as unknown as EvidenceVerifier }
  await assert.rejects(verifyPeer(relabelled, tdxOnly, { verifiers: misconfigured, now }), refused(/no verifier for evidence kind tdx/))
})

test('a simulated TEE never satisfies TDX: the production TdxEvidenceVerifier inside verifyPeer refuses it', async () => {
  const { TdxEvidenceVerifier, QuoteFormatError, TdxVerificationError } = await import('../../src/tee/tdx/index.ts')
  const fixtures = new URL('../../../shared/fixtures/tdx/', import.meta.url)
  const realQuote = new Uint8Array(readFileSync(new URL('tdx_quote', fixtures)))
  const collateral = JSON.parse(readFileSync(new URL('tdx_quote_collateral.json', fixtures), 'utf8'))
  // The real verifier, with fixed collateral and the clock at the collateral's date: no network, no stub.
  const tdx = new TdxEvidenceVerifier({ collateral }, { clock: () => Date.parse('2025-07-01T00:00:00Z'), fetch: () => Promise.reject(new Error('no network in this test')) })
  const tdxOnly = await policy({ acceptKinds: ['tdx'], imageHashes: { worker: '*' } })
  const id = await workerIdentity()
  const byTdx = (cause: (c: unknown) => boolean) => (e: unknown) => e instanceof EvidenceRefusedError && cause((e as Error & { cause?: unknown }).cause)
  // 1. A simulated quote relabelled as TDX: the TDX verifier itself rejects its bytes.
  const relabelled = await reissue(id, (e) => [e[0], { ...e[1], oid: OID_TDX_QUOTE }])
  await assert.rejects(verifyPeer(relabelled, tdxOnly, { verifiers: { tdx }, now }), byTdx((c) => c instanceof QuoteFormatError || c instanceof TdxVerificationError))
  // 2. Even with both verifiers configured, the simulated certificate as issued is judged by kind, never by TDX.
  await assert.rejects(verifyPeer(derOf(id.certPem), tdxOnly, { verifiers: { tdx, simulated: new SimulatedEvidenceVerifier() }, now }), refused(/kind simulated not accepted/))
  // 3. A genuine TDX quote lifted into a simulated node's certificate: the quote verifies, but it does not bind these claims.
  const july = new Date('2025-07-01T00:00:00Z')
  const fresh = await workerIdentity({ now: () => july })
  const before = tdx.stats().verifications
  const lifted = await reissue(fresh, (e) => [e[0], { ...e[1], oid: OID_TDX_QUOTE, value: realQuote }])
  await assert.rejects(verifyPeer(lifted, tdxOnly, { verifiers: { tdx }, now: at(july, 10) }), refused(/report data does not match the claims/))
  assert.equal(tdx.stats().verifications, before + 1, 'the genuine quote went through full DCAP verification first')
})

test('an image hash the policy does not allow for the role is refused', async () => {
  const other = await workerIdentity({ provider: await simulatedProvider('other-build') })
  const der = derOf(other.certPem)
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/image hash [0-9a-f]{64} not allowed for role worker/))
  // A policy with no entry for the role refuses rather than defaulting open.
  await assert.rejects(verifyPeer(der, await policy({ imageHashes: { proxy: '*' } }), { verifiers, now }), refused(/no image hashes for role worker/))
  // '*' accepts any image of an accepted kind.
  assert.equal((await verifyPeer(der, await policy({ imageHashes: { worker: '*' } }), { verifiers, now })).role, 'worker')
})

test('a worker whose model hash is not allowed is refused; a worker with none is refused by a list', async () => {
  const der = derOf((await workerIdentity()).certPem)
  await assert.rejects(verifyPeer(der, await policy({ modelHashes: ['ee'.repeat(32)] }), { verifiers, now }), refused(/model hash a1a1.* not allowed/))
  assert.equal((await verifyPeer(der, await policy({ modelHashes: [MODEL_HASH] }), { verifiers, now })).claims.modelHash, MODEL_HASH)
  const bare = derOf((await workerIdentity({ modelHash: undefined })).certPem)
  await assert.rejects(verifyPeer(bare, await policy({ modelHashes: [MODEL_HASH] }), { verifiers, now }), refused(/model hash missing not allowed/))
  assert.equal((await verifyPeer(bare, await policy(), { verifiers, now })).role, 'worker')
})

test('an expired certificate and one not yet valid are refused', async () => {
  const der = derOf((await workerIdentity()).certPem) // valid T0-60s .. T0+1d
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now: at(T0, 86_400 + 1) }), refused(/certificate expired/))
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now: at(T0, -61) }), refused(/not valid before/))
  assert.equal((await verifyPeer(der, await policy(), { verifiers, now: at(T0, -59) })).role, 'worker')
})

test('a certificate older than maxCertAgeSec is refused even while still valid', async () => {
  const der = derOf((await workerIdentity({ validitySec: 10 * 86_400 })).certPem)
  const p = await policy({ maxCertAgeSec: 3_600 })
  assert.equal((await verifyPeer(der, p, { verifiers, now: at(T0, 3_600) })).role, 'worker')
  await assert.rejects(verifyPeer(der, p, { verifiers, now: at(T0, 3_601) }), refused(/older than 3600s/))
})

test('claims created more than 60 s in the future are refused', async () => {
  const id = await workerIdentity({ now: at(T0, 120) })
  // Widen the validity window so that only the claims' createdAt is in the future.
  const der = await reissue(id, (e) => e, { notBefore: new Date(T0.getTime() - 3_600_000) })
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now: () => T0 }), refused(/120s in the future/))
  assert.equal((await verifyPeer(der, await policy(), { verifiers, now: at(T0, 60) })).role, 'worker')
})

test('an unknown critical extension is refused by verifyPeer', async () => {
  const der = await reissue(await workerIdentity(), (e) => [...e, { oid: '2.5.29.19', critical: true, value: new Uint8Array([0x30, 0]) }])
  await assert.rejects(verifyPeer(der, await policy(), { verifiers, now }), refused(/unknown critical extension 2\.5\.29\.19/))
})

// Stand-in for the TDX seam next door (src/tee/tdx/): the quote is a marker ‖ report data, and the
// verdict's TCB status is chosen by the test. It exercises verifyPeer's TDX-only rules.
const STUB_MARK = new TextEncoder().encode('STUB-TDX')
class StubTdxProvider implements EvidenceProvider {
  readonly kind = 'tdx' as const
  async quote(reportData: Uint8Array) {
    return new Uint8Array([...STUB_MARK, ...reportData])
  }
}
class StubTdxVerifier implements EvidenceVerifier {
  readonly kind = 'tdx' as const
  constructor(readonly tcbStatus: string | undefined, readonly failure?: Error) {}
  async verify(quote: Uint8Array): Promise<VerifiedEvidence> {
    if (this.failure) throw this.failure
    return { kind: 'tdx', imageHash: 'dd'.repeat(32), reportData: Buffer.from(quote.subarray(STUB_MARK.length)).toString('hex'), tcbStatus: this.tcbStatus }
  }
}

test('tdx evidence: the quote travels under the TDX OID and its TCB status must be accepted', async () => {
  const id = await workerIdentity({ provider: new StubTdxProvider() })
  assert.equal(id.kind, 'tdx')
  const der = derOf(id.certPem)
  const p = await policy({ acceptKinds: ['tdx'], imageHashes: { worker: ['dd'.repeat(32)] } })
  const peer = await verifyPeer(der, p, { verifiers: { tdx: new StubTdxVerifier('UpToDate') }, now })
  assert.equal(peer.kind, 'tdx')
  assert.equal(peer.imageHash, 'dd'.repeat(32))
  await assert.rejects(verifyPeer(der, p, { verifiers: { tdx: new StubTdxVerifier('OutOfDate') }, now }), refused(/TCB status OutOfDate not accepted/))
  await assert.rejects(verifyPeer(der, p, { verifiers: { tdx: new StubTdxVerifier(undefined) }, now }), refused(/TCB status missing/))
  const lenient = { ...p, tcbStatuses: ['UpToDate', 'SWHardeningNeeded'] }
  assert.equal((await verifyPeer(der, lenient, { verifiers: { tdx: new StubTdxVerifier('SWHardeningNeeded') }, now })).kind, 'tdx')
})

test('a verifier that cannot reach a verdict still refuses the peer', async () => {
  const der = derOf((await workerIdentity({ provider: new StubTdxProvider() })).certPem)
  const p = await policy({ acceptKinds: ['tdx'], imageHashes: { worker: '*' } })
  const down = new StubTdxVerifier('UpToDate', new Error('PCCS unreachable'))
  await assert.rejects(verifyPeer(der, p, { verifiers: { tdx: down }, now }), refused(/tdx quote could not be verified: PCCS unreachable/))
})

test('VerificationCache serves a hit within its TTL and forgets it after', () => {
  let t = 1_000
  const cache = new VerificationCache({ ttlMs: 500, now: () => t })
  const der = new Uint8Array([1, 2, 3])
  const peer = { role: 'worker' } as VerifiedPeer
  cache.set(der, peer)
  t += 499
  assert.equal(cache.get(der), peer)
  assert.equal(cache.get(new Uint8Array([1, 2, 4])), undefined)
  t += 1
  assert.equal(cache.get(der), undefined)
  assert.equal(cache.size, 0)
})

test('VerificationCache never outlives the deadline it is given, and stays within maxEntries', () => {
  let t = 0
  const cache = new VerificationCache({ ttlMs: 10_000, maxEntries: 2, now: () => t })
  const peer = { role: 'proxy' } as VerifiedPeer
  cache.set(new Uint8Array([1]), peer, 100)
  t = 100
  assert.equal(cache.get(new Uint8Array([1])), undefined)
  cache.set(new Uint8Array([1]), peer)
  cache.set(new Uint8Array([2]), peer)
  cache.set(new Uint8Array([3]), peer)
  assert.equal(cache.size, 2)
  assert.equal(cache.get(new Uint8Array([1])), undefined, 'oldest evicted')
  assert.equal(cache.get(new Uint8Array([3])), peer)
})

class CountingVerifier implements EvidenceVerifier {
  readonly kind = 'simulated' as const
  calls = 0
  readonly #inner = new SimulatedEvidenceVerifier()
  verify(quote: Uint8Array) {
    this.calls++
    return this.#inner.verify(quote)
  }
}

test('createPeerVerifier reuses a verdict for cacheTtlMs, re-checks the role on hits, then verifies again', async () => {
  let t = T0.getTime()
  const counting = new CountingVerifier()
  const verify = createPeerVerifier(await policy(), { simulated: counting }, { cacheTtlMs: 30_000, now: () => new Date(t) })
  const der = derOf((await workerIdentity()).certPem)
  const first = await verify(der, 'worker')
  t += 29_999
  assert.equal(await verify(der, 'worker'), first)
  assert.equal(counting.calls, 1)
  await assert.rejects(verify(der, 'proxy'), refused(/role worker, expected proxy/))
  t += 1
  await verify(der, 'worker')
  assert.equal(counting.calls, 2)
})

test('createPeerVerifier does not cache refusals', async () => {
  const counting = new CountingVerifier()
  const verify = createPeerVerifier(await policy({ modelHashes: ['ee'.repeat(32)] }), { simulated: counting }, { cacheTtlMs: 60_000, now })
  const der = derOf((await workerIdentity()).certPem)
  await assert.rejects(verify(der, 'worker'), refused(/model hash/))
  await assert.rejects(verify(der, 'worker'), refused(/model hash/))
  assert.equal(counting.calls, 2)
})

