// Spec: the end-to-end encryption format (docs/e2ee.md): requests sealed to k workers, answers as counted records, every tamper caught.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import {
  AnswerReader,
  E2eeError,
  HpkeKeyRing,
  RECORD_HEADER_BYTES,
  ReplayGuard,
  encodeRoute,
  encodeWrappedKeys,
  openRequest,
  parseRoute,
  parseWrappedKeys,
  RECIPIENT_KEY_CACHE_ENTRIES,
  recipientKeyCacheSize,
  recordNonce,
  sealRequest,
  CACHE_SCOPE_BYTES,
  sealedMultipartType,
  type E2eeRoute,
} from '../../src/net/e2ee.ts'

const route: E2eeRoute = { v: 1, path: '/v1/chat/completions', model: 'stories', maxTokens: 20, stream: true, requestId: 'r1', maxCoefficient: 4000 }
const routeHeader = encodeRoute(route)
const body = Buffer.from(JSON.stringify({ model: 'stories', messages: [{ role: 'user', content: 'canary-4242' }], stream: true }))

async function rings(n: number): Promise<HpkeKeyRing[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const r = new HpkeKeyRing(3_600_000)
      await r.rotate()
      return r
    }),
  )
}

/** A request sealed to three workers and opened by the second; its answer of two events written by that worker. */
async function exchange() {
  const rs = await rings(3)
  const sealed = await sealRequest(body, routeHeader, rs.map((r) => r.currentHex!))
  const opened = await openRequest(sealed.body, routeHeader, sealed.keys[1], rs[1])
  const records = [opened.answer.data('data: {"a":1}\n\n'), opened.answer.data('data: {"a":2}\n\n'), opened.answer.final()]
  return { rs, sealed, opened, records }
}

function readAll(sealed: Awaited<ReturnType<typeof sealRequest>>, bytes: Buffer[]): string[] {
  const r = new AnswerReader(sealed.answer)
  const out: string[] = []
  for (const b of bytes) out.push(...r.push(b).map((x) => x.toString()))
  r.end()
  return out
}

test('the chosen recipient opens the body and the route; the client reads the answer in any chunking', async () => {
  const { sealed, opened, records } = await exchange()
  assert.deepEqual(opened.body, body)
  assert.deepEqual(opened.route, route)
  assert.ok(!sealed.body.includes(Buffer.from('canary-4242')), 'the ciphertext holds no plaintext')
  const all = Buffer.concat(records)
  assert.deepEqual(readAll(sealed, records), ['data: {"a":1}\n\n', 'data: {"a":2}\n\n'])
  // Byte by byte: records are reassembled from any split.
  assert.deepEqual(readAll(sealed, [...all].map((b) => Buffer.from([b]))), ['data: {"a":1}\n\n', 'data: {"a":2}\n\n'])
  const reader = new AnswerReader(sealed.answer)
  reader.push(all)
  assert.equal(reader.recipient, sealed.keys[1].recipient)
})

test('wrapped keys round-trip through their header, and only a well-formed list is accepted', async () => {
  const { sealed } = await exchange()
  assert.deepEqual(parseWrappedKeys(encodeWrappedKeys(sealed.keys)), sealed.keys)
  assert.throws(() => parseWrappedKeys('zz=abc'), E2eeError)
  assert.throws(() => parseWrappedKeys(`${'ab'.repeat(32)}=AAAA`), /wrong length/)
})

test('a route header is accepted only in canonical form', () => {
  assert.deepEqual(parseRoute(routeHeader), route)
  assert.throws(() => parseRoute(JSON.stringify({ ...route, v: 1 })), /canonical/)
  assert.throws(() => parseRoute(routeHeader.replace('"stream":true', '"stream":"yes"')), E2eeError)
})

test('a changed routing header fails the request at the worker (model, max_tokens, stream, request id, max_coefficient)', async () => {
  const rs = await rings(1)
  const sealed = await sealRequest(body, routeHeader, [rs[0].currentHex!])
  for (const changed of [{ model: 'other' }, { maxTokens: 4000 }, { stream: false }, { requestId: 'r2' }, { maxCoefficient: 9000 }]) {
    await assert.rejects(openRequest(sealed.body, encodeRoute({ ...route, ...changed }), sealed.keys[0], rs[0]), E2eeError, JSON.stringify(changed))
  }
})

test('a flipped byte anywhere in the request body or wrapped key fails the request', async () => {
  const rs = await rings(1)
  const sealed = await sealRequest(body, routeHeader, [rs[0].currentHex!])
  for (const i of [1, 10, sealed.body.length - 1]) {
    const b = Buffer.from(sealed.body)
    b[i] ^= 1
    await assert.rejects(openRequest(b, routeHeader, sealed.keys[0], rs[0]), /does not authenticate/)
  }
  for (const i of [0, 40, 63]) {
    const w = Buffer.from(sealed.keys[0].wrapped)
    w[i] ^= 1
    await assert.rejects(openRequest(sealed.body, routeHeader, { recipient: sealed.keys[0].recipient, wrapped: w }, rs[0]), /does not open/)
  }
})

test("a swapped recipient key fails: one worker's wrapped key, relabelled, does not open at another", async () => {
  const { rs, sealed } = await exchange()
  // The proxy hands worker 2 the key wrapped for worker 0, under worker 2's name.
  await assert.rejects(openRequest(sealed.body, routeHeader, { recipient: sealed.keys[2].recipient, wrapped: sealed.keys[0].wrapped }, rs[2]), /does not open/)
  // Or under its true name, to a worker that does not hold it.
  await assert.rejects(openRequest(sealed.body, routeHeader, sealed.keys[0], rs[2]), /not for a key of this worker/)
})

test('an answer from a key that is not one of the recipients is refused (a proxy answering itself)', async () => {
  const { sealed } = await exchange()
  const [own] = await rings(1)
  const forged = await sealRequest(body, routeHeader, [own.currentHex!])
  const opened = await openRequest(forged.body, routeHeader, forged.keys[0], own)
  const r = new AnswerReader(sealed.answer)
  assert.throws(() => r.push(opened.answer.data('data: {"fake":1}\n\n')), /opens with no recipient key/)
})

test('a replayed request is refused by the worker within its window', async () => {
  const { rs, sealed } = await exchange()
  const guard = new ReplayGuard(60_000)
  const first = await openRequest(sealed.body, routeHeader, sealed.keys[1], rs[1])
  guard.check(first.encHash)
  const again = await openRequest(sealed.body, routeHeader, sealed.keys[1], rs[1])
  assert.throws(() => guard.check(again.encHash), /replayed/)
})

test('a replayed answer record is detected', async () => {
  const { sealed, records } = await exchange()
  assert.throws(() => readAll(sealed, [records[0], records[0], records[1], records[2]]), /record 1 does not authenticate/)
})

test("an answer record from another answer to the same client is detected", async () => {
  const a = await exchange()
  const b = await exchange()
  assert.throws(() => readAll(a.sealed, [a.records[0], b.records[1], a.records[2]]), /does not authenticate/)
})

test('reordered records are detected', async () => {
  const { sealed, records } = await exchange()
  assert.throws(() => readAll(sealed, [records[1], records[0], records[2]]), /opens with no recipient key/)
  const { sealed: s2, opened, records: r2 } = await exchange()
  void opened
  assert.throws(() => readAll(s2, [r2[0], r2[2], r2[1]]), /record 1 does not authenticate/)
})

test('a truncated answer (a dropped final record, or a cut record) is detected', async () => {
  const { sealed, records } = await exchange()
  assert.throws(() => readAll(sealed, [records[0], records[1]]), /without its final record/)
  assert.throws(() => readAll(sealed, [records[0], records[1].subarray(0, 9)]), /inside a record/)
  // A dropped data record shifts the counter: the final record no longer opens.
  assert.throws(() => readAll(sealed, [records[0], records[2]]), /record 1 does not authenticate/)
})

test('a flipped byte in any answer record, header or type is detected', async () => {
  const { sealed, records } = await exchange()
  const all = Buffer.concat(records)
  for (let i = 0; i < all.length; i += 7) {
    const b = Buffer.from(all)
    b[i] ^= 0x01
    assert.throws(() => readAll(sealed, [b]), E2eeError, `byte ${i}`)
  }
  // The type is authenticated: a data record relabelled final does not open.
  const relabelled = Buffer.from(records[1])
  relabelled[0] = 2
  assert.throws(() => readAll(sealed, [records[0], relabelled]), /does not authenticate/)
})

test('nothing may follow the final record', async () => {
  const { sealed, opened, records } = await exchange()
  assert.throws(() => opened.answer.data('more'), /after the final record/)
  assert.throws(() => readAll(sealed, [...records, records[0]]), /after the final record/)
  assert.equal(records[2].length, RECORD_HEADER_BYTES + 16)
})

test('a renewed key ring still opens requests sealed to its previous key, until the retention time passes', async () => {
  let now = 1_000_000
  const ring = new HpkeKeyRing(10_000, () => now)
  const first = await ring.rotate()
  const sealed = await sealRequest(body, routeHeader, [first])
  now += 5_000
  await ring.rotate()
  assert.notEqual(ring.currentHex, first)
  await openRequest(sealed.body, routeHeader, sealed.keys[0], ring)
  now += 11_000
  await ring.rotate()
  assert.equal(ring.find(first), undefined)
  await assert.rejects(openRequest(sealed.body, routeHeader, sealed.keys[0], ring), /not for a key of this worker/)
})

test('imported recipient keys are cached, bounded, and a cached key seals exactly like a fresh one', async () => {
  const rs = await rings(2)
  const keys = rs.map((r) => r.currentHex!)
  // Fill the cache past its bound with other keys (any 32 bytes are an X25519 public key), 8 per request.
  for (let i = 0; i <= RECIPIENT_KEY_CACHE_ENTRIES / 8; i++) {
    await sealRequest(body, routeHeader, Array.from({ length: 8 }, () => randomBytes(32).toString('hex')))
    assert.ok(recipientKeyCacheSize() <= RECIPIENT_KEY_CACHE_ENTRIES)
  }
  assert.equal(recipientKeyCacheSize(), RECIPIENT_KEY_CACHE_ENTRIES)
  // Twice to the same keys: the second seal uses the cached imports; both open, each with its own fresh content key.
  for (let i = 0; i < 2; i++) {
    const sealed = await sealRequest(body, routeHeader, keys)
    const opened = await openRequest(sealed.body, routeHeader, sealed.keys[i], rs[i])
    assert.deepEqual(opened.body, body)
    assert.deepEqual(readAll(sealed, [opened.answer.data('x'), opened.answer.final()]), ['x'])
  }
  // A malformed recipient still fails, cache or not.
  await assert.rejects(sealRequest(body, routeHeader, ['ab'.repeat(31)]), E2eeError)
})

test('contexts made ahead for a returning recipient are each used once: every request has its own enc and answer key', async () => {
  const [ring] = await rings(1)
  const encs = new Set<string>()
  const answerKeys = new Set<string>()
  for (let i = 0; i < 12; i++) {
    const sealed = await sealRequest(body, routeHeader, [ring.currentHex!])
    encs.add(Buffer.from(sealed.keys[0].wrapped.subarray(0, 32)).toString('hex'))
    answerKeys.add(sealed.answer.keys[0].key.toString('hex'))
    const opened = await openRequest(sealed.body, routeHeader, sealed.keys[0], ring)
    assert.deepEqual(opened.body, body)
    assert.deepEqual(readAll(sealed, [opened.answer.data(`answer ${i}`), opened.answer.final()]), [`answer ${i}`])
    // Some requests go out at once (no time to make contexts ahead), some after a pause (prepared ones are taken).
    if (i % 3 === 0) await new Promise((r) => setTimeout(r, 20))
  }
  assert.equal(encs.size, 12)
  assert.equal(answerKeys.size, 12)
})

test('record nonces are the base nonce XOR the counter in its last 8 bytes, on both sides of 2^32', () => {
  const base = randomBytes(12)
  for (const counter of [0, 1, 255, 65_536, 0xfffffffe, 0xffffffff, 0x100000000, 2 ** 40 + 7]) {
    const expect = Buffer.from(base)
    expect.writeBigUInt64BE(base.readBigUInt64BE(4) ^ BigInt(counter), 4)
    assert.deepEqual(recordNonce(base, counter), expect, `counter ${counter}`)
  }
  assert.deepEqual(recordNonce(base, 0), base)
})

test('a sealed transcription form names its own boundary, inside the encryption; the form round-trips through seal and open', async () => {
  const form = new FormData()
  form.set('model', 'speech')
  form.set('file', new Blob([randomBytes(64)]), 'canary-audio.wav')
  const encoded = new Response(form)
  const plain = Buffer.from(await encoded.arrayBuffer())
  // The type read from the body is the one the encoder chose.
  assert.equal(sealedMultipartType(plain), encoded.headers.get('content-type'))
  const [ring] = await rings(1)
  const r = encodeRoute({ v: 1, path: '/v1/audio/transcriptions', model: 'speech', stream: false, requestId: 't1', maxCoefficient: 4000 })
  const sealed = await sealRequest(plain, r, [ring.currentHex!])
  assert.equal(sealed.body.length, plain.length + 17, 'a version byte and the tag: the proxy reserves from this length')
  assert.equal(sealed.body.includes(Buffer.from('canary-audio')), false)
  assert.equal(sealed.body.includes(Buffer.from('boundary')), false)
  const opened = await openRequest(sealed.body, r, sealed.keys[0], ring)
  const back = await new Request('http://x/', { method: 'POST', headers: { 'content-type': sealedMultipartType(opened.body) }, body: new Uint8Array(opened.body) }).formData()
  assert.equal(back.get('model'), 'speech')
  assert.equal((back.get('file') as File).name, 'canary-audio.wav')
  // A body without a delimiter line first (a preamble, JSON, a boundary that would need quoting) is refused.
  for (const bad of ['preamble\r\n--abc\r\n', '{"model":"x"}', '--a b\r\n', '--\r\n', `--${'a'.repeat(71)}\r\n`]) {
    assert.throws(() => sealedMultipartType(Buffer.from(bad)), E2eeError, bad)
  }
})

test('a cache scope travels sealed before the body (envelope 2), bound like the body; envelope 1 still opens without one', async () => {
  const rs = await rings(1)
  const scope = randomBytes(CACHE_SCOPE_BYTES)
  const sealed = await sealRequest(body, routeHeader, [rs[0].currentHex!], scope)
  assert.equal(sealed.body[0], 2)
  assert.equal(sealed.body.includes(scope), false, 'the scope is not in clear')
  const opened = await openRequest(sealed.body, routeHeader, sealed.keys[0], rs[0])
  assert.equal(opened.cacheScope, scope.toString('hex'))
  assert.deepEqual(opened.body, Buffer.from(body))
  // A flipped byte in the scope's part of the ciphertext fails the whole request.
  const flipped = Buffer.from(sealed.body)
  flipped[3] ^= 1
  await assert.rejects(openRequest(flipped, routeHeader, sealed.keys[0], rs[0]), /does not authenticate/)
  // The version byte is not a switch a hop can flip: 2 read as 1 (or the reverse) does not authenticate either.
  const downgraded = Buffer.from(sealed.body)
  downgraded[0] = 1
  await assert.rejects(openRequest(downgraded, routeHeader, sealed.keys[0], rs[0]), /does not authenticate/)
  const plain = await sealRequest(body, routeHeader, [rs[0].currentHex!])
  assert.equal(plain.body[0], 1)
  const old = await openRequest(plain.body, routeHeader, plain.keys[0], rs[0])
  assert.equal(old.cacheScope, undefined)
  assert.deepEqual(old.body, Buffer.from(body))
  await assert.rejects(sealRequest(body, routeHeader, [rs[0].currentHex!], randomBytes(8)), /16 bytes/)
})
