// Spec: Canonical claims encoding and its strict decoder.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { decodeClaims, encodeClaims, EvidenceRefusedError, reportDataFor, type Claims } from '../../src/tee/index.ts'

const K = 'ab'.repeat(32)
const base: Claims = { v: 1, role: 'proxy', publicKey: K, createdAt: 1_700_000_000, configHash: 'cd'.repeat(32), paymentKey: 'ef'.repeat(32) }
const text = (b: Uint8Array) => new TextDecoder().decode(b)
const bytes = (s: string) => new TextEncoder().encode(s)

test('encodes claims as canonical JSON: sorted keys, no whitespace, undefined omitted', () => {
  const c = { ...base, modelId: undefined, modelHash: undefined }
  assert.equal(
    text(encodeClaims(c)),
    `{"configHash":"${'cd'.repeat(32)}","createdAt":1700000000,"paymentKey":"${'ef'.repeat(32)}","publicKey":"${K}","role":"proxy","v":1}`,
  )
})

test('the same claims always encode to the same bytes, whatever the key order', () => {
  const shuffled = { paymentKey: base.paymentKey, v: 1, createdAt: base.createdAt, role: 'proxy', configHash: base.configHash, publicKey: K } as Claims
  assert.deepEqual(encodeClaims(shuffled), encodeClaims(base))
})

test('decodes what it encodes, including a non-ASCII model id', () => {
  const w: Claims = { v: 1, role: 'worker', publicKey: K, createdAt: 0, configHash: K, modelId: 'модель-7b', modelHash: K }
  assert.deepEqual(decodeClaims(encodeClaims(w)), w)
})

test("a worker's HPKE key is a claim, so the quote's report data binds it", () => {
  const w: Claims = { v: 1, role: 'worker', publicKey: K, createdAt: 0, configHash: K, modelId: 'm', modelHash: K, hpkeKey: 'cd'.repeat(32) }
  assert.deepEqual(decodeClaims(encodeClaims(w)), w)
  assert.notDeepEqual(reportDataFor(encodeClaims(w)), reportDataFor(encodeClaims({ ...w, hpkeKey: 'ce'.repeat(32) })))
})

test('report data is SHA-512 of the claims bytes (64 bytes)', () => {
  const b = encodeClaims(base)
  const rd = reportDataFor(b)
  assert.equal(rd.length, 64)
  assert.deepEqual(Buffer.from(rd), createHash('sha512').update(b).digest())
})

const refusals: [string, unknown, RegExp][] = [
  ['version 2', { ...base, v: 2 }, /unsupported version 2/],
  ['an unknown role', { ...base, role: 'admin' }, /invalid role "admin"/],
  ['a short publicKey', { ...base, publicKey: 'ab'.repeat(31) }, /publicKey/],
  ['an uppercase publicKey', { ...base, publicKey: 'AB'.repeat(32) }, /publicKey/],
  ['a bad configHash', { ...base, configHash: 'zz'.repeat(32) }, /configHash/],
  ['a bad paymentKey', { ...base, paymentKey: 'ab' }, /paymentKey/],
  ['a bad modelHash', { ...base, modelHash: 'ab'.repeat(33) }, /modelHash/],
  ['a fractional createdAt', { ...base, createdAt: 1.5 }, /createdAt/],
  ['a string createdAt', { ...base, createdAt: '1700000000' }, /createdAt/],
  ['an empty modelId', { ...base, modelId: '' }, /modelId/],
  ['an unknown field', { ...base, sealKey: K }, /unknown field "sealKey"/],
  ['a short hpkeKey', { ...base, role: 'worker', hpkeKey: 'ab'.repeat(31) }, /hpkeKey/],
  ['an upper-case hpkeKey', { ...base, role: 'worker', hpkeKey: 'AB'.repeat(32) }, /hpkeKey/],
  ['an array', [base], /not an object/],
]
for (const [what, value, reason] of refusals) {
  test(`decodeClaims refuses ${what}`, () => {
    assert.throws(() => decodeClaims(bytes(JSON.stringify(value))), (e: unknown) => e instanceof EvidenceRefusedError && reason.test(e.reason))
  })
  test(`encodeClaims refuses ${what}`, () => {
    assert.throws(() => encodeClaims(value as Claims), EvidenceRefusedError)
  })
}

test('decodeClaims refuses non-canonical bytes: whitespace, unsorted keys, duplicate keys', () => {
  const canonical = text(encodeClaims(base))
  const variants = [
    canonical.replace(',', ', '),
    JSON.stringify(Object.fromEntries(Object.entries(base).reverse())),
    // With duplicate keys JSON.parse keeps the last one; another parser might keep the first.
    canonical.replace('"role":"proxy"', '"role":"worker","role":"proxy"'),
  ]
  for (const v of variants) {
    assert.throws(() => decodeClaims(bytes(v)), (e: unknown) => e instanceof EvidenceRefusedError && /canonical/.test(e.reason), v)
  }
})

test('decodeClaims refuses bytes that are not UTF-8 JSON', () => {
  assert.throws(() => decodeClaims(new Uint8Array([0x7b, 0xff, 0x7d])), /not UTF-8 JSON/)
  assert.throws(() => decodeClaims(bytes('{"v":1')), /not UTF-8 JSON/)
})
