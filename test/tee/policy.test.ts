// Spec: Reading and checking attestation policies.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { assertProductionPolicy, DEFAULT_MAX_CERT_AGE_SEC, devnetPolicy, InvalidPolicyError, parsePolicy } from '../../src/tee/index.ts'

const H = 'ab'.repeat(32)
const invalid = (field: string, re?: RegExp) => (e: unknown) =>
  e instanceof InvalidPolicyError && e.field === field && e.where === 'cocoon.json' && (!re || re.test(e.message))

test('parsePolicy applies the defaults once: modelHashes "*", maxCertAgeSec one day plus 300 s', () => {
  assert.deepEqual(parsePolicy({ acceptKinds: ['tdx'], imageHashes: { proxy: [H] } }, 'cocoon.json'), {
    acceptKinds: ['tdx'],
    imageHashes: { proxy: [H] },
    modelHashes: '*',
    maxCertAgeSec: 86_400 + 300,
  })
  assert.equal(DEFAULT_MAX_CERT_AGE_SEC, 86_700)
})

test('parsePolicy keeps explicit values and lowercases hashes', () => {
  const p = parsePolicy(
    { acceptKinds: ['tdx', 'none'], imageHashes: { worker: [H.toUpperCase()], client: '*' }, modelHashes: [H], tcbStatuses: ['UpToDate', 'SWHardeningNeeded'], maxCertAgeSec: 600 },
    'cocoon.json',
  )
  assert.deepEqual(p, {
    acceptKinds: ['tdx', 'none'],
    imageHashes: { worker: [H], client: '*' },
    modelHashes: [H],
    tcbStatuses: ['UpToDate', 'SWHardeningNeeded'],
    maxCertAgeSec: 600,
  })
})

test('parsePolicy names the offending field', () => {
  const ok = { acceptKinds: ['tdx'], imageHashes: {} }
  assert.throws(() => parsePolicy(null, 'cocoon.json'), invalid('(root)'))
  assert.throws(() => parsePolicy({ ...ok, acceptKinds: [] }, 'cocoon.json'), invalid('acceptKinds'))
  assert.throws(() => parsePolicy({ ...ok, acceptKinds: ['tdx', 'sgx'] }, 'cocoon.json'), invalid('acceptKinds[1]', /"sgx"/))
  assert.throws(() => parsePolicy({ ...ok, imageHashes: [H] }, 'cocoon.json'), invalid('imageHashes'))
  assert.throws(() => parsePolicy({ ...ok, imageHashes: { admin: '*' } }, 'cocoon.json'), invalid('imageHashes.admin', /unknown role/))
  assert.throws(() => parsePolicy({ ...ok, imageHashes: { worker: [H, 'abc'] } }, 'cocoon.json'), invalid('imageHashes.worker[1]', /"abc"/))
  assert.throws(() => parsePolicy({ ...ok, imageHashes: { worker: 'any' } }, 'cocoon.json'), invalid('imageHashes.worker'))
  assert.throws(() => parsePolicy({ ...ok, modelHashes: 5 }, 'cocoon.json'), invalid('modelHashes'))
  assert.throws(() => parsePolicy({ ...ok, tcbStatuses: [''] }, 'cocoon.json'), invalid('tcbStatuses[0]'))
  assert.throws(() => parsePolicy({ ...ok, maxCertAgeSec: -1 }, 'cocoon.json'), invalid('maxCertAgeSec'))
  assert.throws(() => parsePolicy({ ...ok, maxCertAgeSec: 1.5 }, 'cocoon.json'), invalid('maxCertAgeSec'))
})

test('parsePolicy refuses unknown fields, so a misspelt restriction cannot go unenforced', () => {
  assert.throws(
    () => parsePolicy({ acceptKinds: ['tdx'], imageHashes: {}, modelHash: [H] }, 'cocoon.json'),
    invalid('modelHash', /unknown field/),
  )
})

test('assertProductionPolicy refuses any policy that accepts simulated evidence', () => {
  assert.throws(() => assertProductionPolicy(devnetPolicy('*')), (e: unknown) => e instanceof InvalidPolicyError && e.field === 'acceptKinds')
  assert.doesNotThrow(() => assertProductionPolicy(parsePolicy({ acceptKinds: ['tdx', 'none'], imageHashes: { proxy: [H] } }, 'prod')))
})

test('devnetPolicy accepts simulated, tdx and unattested clients, with images per role or for proxies and workers', () => {
  assert.deepEqual(devnetPolicy([H]), {
    acceptKinds: ['simulated', 'tdx', 'none'],
    imageHashes: { proxy: [H], worker: [H] },
    modelHashes: '*',
    maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC,
  })
  assert.deepEqual(devnetPolicy({ worker: '*' }).imageHashes, { worker: '*' })
})
