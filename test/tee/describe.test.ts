// Spec: describeCertificate for `cocoon attest inspect`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { describeCertificate, encodeClaims, OID_CLAIMS, OID_SIMULATED_QUOTE, reportDataFor, simulatedImageHash } from '../../src/tee/index.ts'
import { derOf, reissue, workerIdentity } from './helpers.ts'

test('describes everything inside a simulated worker certificate, from PEM or DER alike', async () => {
  const id = await workerIdentity()
  const d = await describeCertificate(id.certPem)
  assert.equal(d.subject, 'CN=cocoon-worker')
  assert.equal(d.signatureAlgorithm, 'Ed25519')
  assert.equal(d.wellFormed, true)
  assert.equal(d.kind, 'simulated')
  assert.equal(d.publicKey, Buffer.from(id.publicKey).toString('hex'))
  assert.deepEqual(d.claims, id.claims)
  assert.deepEqual(d.extensions, [
    { oid: OID_CLAIMS, critical: true, bytes: encodeClaims(id.claims).length },
    { oid: OID_SIMULATED_QUOTE, critical: true, bytes: 124 },
  ])
  const rd = Buffer.from(reportDataFor(encodeClaims(id.claims))).toString('hex')
  assert.equal(d.expectedReportData, rd)
  assert.equal(d.quote?.bytes, 124)
  assert.equal(d.quote?.hexPrefix.slice(0, 54), Buffer.from('COCOON-SIMULATED-TEE-QUOTE\0').toString('hex'))
  assert.equal(d.quote?.simulatedImageHash, await simulatedImageHash())
  assert.equal(d.quote?.reportData, rd)
  assert.equal(d.quote?.reportDataMatchesClaims, true)
  assert.deepEqual(await describeCertificate(derOf(id.certPem)), d)
  assert.doesNotThrow(() => JSON.stringify(d))
})

test('still describes a certificate that would be refused, and says why', async () => {
  const id = await workerIdentity()
  const der = await reissue(id, (e) => [{ ...e[0], value: encodeClaims({ ...id.claims, role: 'proxy' }) }, e[1]])
  const d = await describeCertificate(der)
  assert.equal(d.wellFormed, true, 'parses; only verifyPeer refuses it')
  assert.equal(d.quote?.reportDataMatchesClaims, false)
  const bad = await reissue(id, (e) => [...e, { oid: '1.2.3.4', critical: true, value: new Uint8Array([5]) }])
  const d2 = await describeCertificate(bad)
  assert.equal(d2.wellFormed, false)
  assert.match(d2.problem ?? '', /unknown critical extension 1\.2\.3\.4/)
  assert.equal((d2.claims as unknown) ?? undefined, undefined)
  assert.ok(d2.claimsText?.includes('"role":"worker"'))
})
