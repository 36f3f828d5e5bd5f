// The client node reads what a refused request lacked from the proxy's 402 (to decide whether a top-up can help it):
// the proxy's own error, through the one error edge, must keep saying it in a form the client reads.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fundsShortfall } from '../../src/client/client.ts'
import { InsufficientQuotaError } from '../../src/payments/billing.ts'
import { errorResponse, UnfundedClientError } from '../../src/net/errors.ts'

const body = (err: Error) => [Buffer.from(JSON.stringify(errorResponse(err).body))]

test("a proxy's refusal for funds tells the client how much the request lacked; one with no figures tells nothing", () => {
  const r = errorResponse(new InsufficientQuotaError(21_000_000n, 5_000_000n))
  assert.equal(r.status, 402)
  assert.equal(fundsShortfall(body(new InsufficientQuotaError(21_000_000n, 5_000_000n))), 16_000_000n)
  assert.equal(fundsShortfall(body(new InsufficientQuotaError(10n ** 30n, 0n))), 10n ** 30n)
  assert.equal(fundsShortfall(body(new UnfundedClientError())), undefined)
  assert.equal(fundsShortfall([Buffer.from('not json')]), undefined)
  assert.equal(fundsShortfall([Buffer.from(JSON.stringify({ error: { message: `may cost up to ${'9'.repeat(500)} nanoTON, but only 1 nanoTON are available` } }))]), undefined)
})
