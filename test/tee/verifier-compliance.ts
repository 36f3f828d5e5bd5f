// The EvidenceVerifier compliance suite: the contract every evidence verifier must meet (simulated, TDX),
// run against each implementation with a quote it must accept.
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { EvidenceRefusedError, type EvidenceVerifier } from '../../src/tee/types.ts'

export interface VerifierTarget {
  verifier: EvidenceVerifier
  /** A quote the verifier must accept (at `now`), with what it binds. */
  quote: Uint8Array
  imageHash: string
  reportData: string
  /** Where the 64 report-data bytes sit in `quote`. */
  reportDataOffset: number
  /** A valid quote of another evidence kind. */
  otherKindQuote: Uint8Array
  /** Whether anyone can make such a quote (simulated evidence is forgeable by design; a policy must opt in). */
  forgeable: boolean
  now?: Date
}

const HEX = (bytes: number) => new RegExp(`^[0-9a-f]{${bytes * 2}}$`)
const refused = (e: unknown) => e instanceof EvidenceRefusedError

export function verifierCompliance(name: string, setup: () => Promise<VerifierTarget>): void {
  describe(`EvidenceVerifier compliance: ${name}`, () => {
    let t: VerifierTarget
    const verify = (q: Uint8Array, signal?: AbortSignal) => t.verifier.verify(q, { now: t.now, signal })
    before(async () => {
      t = await setup()
    })

    it('accepts its valid quote and returns its kind, image hash and report data as lowercase hex', async () => {
      const e = await verify(t.quote)
      assert.equal(e.kind, t.verifier.kind)
      assert.match(e.imageHash, HEX(32))
      assert.match(e.reportData, HEX(64))
      assert.equal(e.imageHash, t.imageHash)
      assert.equal(e.reportData, t.reportData)
      assert.equal(Buffer.from(t.quote.subarray(t.reportDataOffset, t.reportDataOffset + 64)).toString('hex'), t.reportData)
    })

    it('gives the same answer every time', async () => {
      assert.deepEqual(await verify(t.quote), await verify(t.quote))
    })

    it('refuses empty, truncated and garbage quotes, and quotes of another kind, with EvidenceRefusedError', async () => {
      const garbage = new Uint8Array(t.quote.length).fill(0xa5)
      for (const [what, q] of [
        ['empty', new Uint8Array()],
        ['truncated', t.quote.subarray(0, Math.floor(t.quote.length / 2))],
        ['garbage', garbage],
        ['another kind', t.otherKindQuote],
      ] as const) {
        await assert.rejects(verify(q), refused, what)
      }
    })

    it('never vouches for report data the quote does not bind', async () => {
      const q = new Uint8Array(t.quote)
      q[t.reportDataOffset] ^= 1
      if (!t.forgeable) return void (await assert.rejects(verify(q), refused, 'a quote with changed report data is refused'))
      const e = await verify(q)
      assert.notEqual(e.reportData, t.reportData)
      assert.equal(e.reportData, Buffer.from(q.subarray(t.reportDataOffset, t.reportDataOffset + 64)).toString('hex'))
    })

    it('rejects at once when its signal is already aborted', async () => {
      await assert.rejects(verify(t.quote, AbortSignal.abort()), (e: Error) => e.name === 'AbortError')
    })
  })
}
