// Spec: The simulated TEE: quote layout, verifier and the code hash.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EvidenceRefusedError, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/index.ts'

const IMAGE = '11'.repeat(32)
const RD = new Uint8Array(64).map((_, i) => i)

test('a simulated quote is magic ‖ version ‖ image hash ‖ report data, 124 bytes', async () => {
  const q = await new SimulatedEvidenceProvider(IMAGE).quote(RD)
  assert.equal(q.length, 27 + 1 + 32 + 64)
  assert.equal(Buffer.from(q.subarray(0, 27)).toString('latin1'), 'COCOON-SIMULATED-TEE-QUOTE\0')
  assert.equal(q[27], 1)
  assert.equal(Buffer.from(q.subarray(28, 60)).toString('hex'), IMAGE)
  assert.deepEqual(q.subarray(60), RD)
})

test('the verifier returns the image hash and report data the provider put in', async () => {
  const q = await new SimulatedEvidenceProvider(IMAGE).quote(RD)
  assert.deepEqual(await new SimulatedEvidenceVerifier().verify(q), {
    kind: 'simulated',
    imageHash: IMAGE,
    reportData: Buffer.from(RD).toString('hex'),
  })
})

test('the verifier refuses a quote with wrong length, magic or version', async () => {
  const q = await new SimulatedEvidenceProvider(IMAGE).quote(RD)
  const v = new SimulatedEvidenceVerifier()
  await assert.rejects(v.verify(q.subarray(0, 123)), (e: unknown) => e instanceof EvidenceRefusedError && /124/.test(e.reason))
  const badMagic = new Uint8Array(q)
  badMagic[0] ^= 1
  await assert.rejects(v.verify(badMagic), /magic/)
  const badVersion = new Uint8Array(q)
  badVersion[27] = 2
  await assert.rejects(v.verify(badVersion), /version 2/)
})

test('the provider insists on 64 bytes of report data and a hex image hash', async () => {
  await assert.rejects(new SimulatedEvidenceProvider(IMAGE).quote(new Uint8Array(32)), RangeError)
  assert.throws(() => new SimulatedEvidenceProvider('xyz'), TypeError)
})

test('the provider honours an aborted signal', async () => {
  await assert.rejects(new SimulatedEvidenceProvider(IMAGE).quote(RD, { signal: AbortSignal.abort() }), { name: 'AbortError' })
})

test('simulatedImageHash is the documented SHA-256 over src/, bin/ and package.json', async () => {
  // Other engineers edit src/ concurrently: hash first, then walk at once, to shrink the window.
  const actual = await simulatedImageHash('spec-check')
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const files: string[] = ['package.json']
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const p = `${rel}/${name}`
      if (statSync(join(root, p)).isDirectory()) walk(p)
      else files.push(p)
    }
  }
  walk('src')
  walk('bin')
  files.sort()
  const expected = createHash('sha256').update('cocoon-simulated-image-hash-v1\n"spec-check"\n')
  for (const f of files) expected.update(`${f}\t${createHash('sha256').update(readFileSync(join(root, f))).digest('hex')}\n`)
  assert.equal(actual, expected.digest('hex'))
})

test('simulatedImageHash is stable per tag and differs between tags', async () => {
  const a = await simulatedImageHash()
  assert.match(a, /^[0-9a-f]{64}$/)
  assert.equal(await simulatedImageHash(), a)
  assert.notEqual(await simulatedImageHash('other-build'), a)
})
