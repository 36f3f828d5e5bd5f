// Spec: the E2EE HPKE suite on node:crypto primitives (src/net/hpke-node.ts) is RFC 9180's
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM: it reproduces the RFC's own test vector, and it
// interoperates both ways with @hpke/core's stock WebCrypto suite, byte for byte.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core'
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto'
import { nodeHpkeSuite } from '../../src/net/hpke-node.ts'

const hex = (s: string) => Buffer.from(s, 'hex')

// RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base, sequence number 0.
const A11 = {
  info: hex('4f6465206f6e2061204772656369616e2055726e'),
  skEm: hex('52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736'),
  pkEm: hex('37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431'),
  skRm: hex('4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8'),
  pkRm: hex('3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d'),
  pt: hex('4265617574792069732074727574682c20747275746820626561757479'),
  aad: hex('436f756e742d30'),
  ct: hex('f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a'),
}

const webCryptoSuite = () => new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() })

test('reproduces RFC 9180 A.1.1: the recipient opens the published ciphertext', async () => {
  const suite = nodeHpkeSuite()
  const skR = await suite.kem.deserializePrivateKey(A11.skRm)
  assert.deepEqual(Buffer.from(await suite.kem.serializePublicKey(await suite.kem.deserializePublicKey(A11.pkRm))), A11.pkRm)
  const ctx = await suite.createRecipientContext({ recipientKey: skR, enc: A11.pkEm, info: A11.info })
  assert.deepEqual(Buffer.from(await ctx.open(A11.ct, A11.aad)), A11.pt)
  // A changed byte of the ciphertext does not open.
  const bad = Buffer.from(A11.ct)
  bad[3] ^= 1
  const again = await suite.createRecipientContext({ recipientKey: skR, enc: A11.pkEm, info: A11.info })
  await assert.rejects(again.open(bad, A11.aad))
})

test('reproduces RFC 9180 A.1.1: the sender, with the published ephemeral key, gives the published enc and ciphertext', async () => {
  const suite = nodeHpkeSuite()
  const skE = await suite.kem.deserializePrivateKey(A11.skEm)
  const pkE = await suite.kem.deserializePublicKey(A11.pkEm)
  const ctx = await suite.createSenderContext({ recipientPublicKey: await suite.kem.deserializePublicKey(A11.pkRm), info: A11.info, ekm: { privateKey: skE, publicKey: pkE } })
  assert.deepEqual(Buffer.from(ctx.enc), A11.pkEm)
  assert.deepEqual(Buffer.from(await ctx.seal(A11.pt, A11.aad)), A11.ct)
})

test('interoperates with @hpke/core on WebCrypto both ways: same plaintext, same exported secret', async () => {
  const fast = nodeHpkeSuite()
  const stock = webCryptoSuite()
  const info = Buffer.from('cocoon-e2ee-v1')
  const aad = Buffer.from('route')
  const pt = Buffer.from('the content key, 16')
  for (const [sender, recipient] of [
    [fast, stock],
    [stock, fast],
  ] as const) {
    const kp = await recipient.kem.generateKeyPair()
    const raw = await recipient.kem.serializePublicKey(kp.publicKey)
    const s = await sender.createSenderContext({ recipientPublicKey: await sender.kem.deserializePublicKey(raw), info })
    const ct = await s.seal(pt, aad)
    const r = await recipient.createRecipientContext({ recipientKey: kp, enc: s.enc, info })
    assert.deepEqual(Buffer.from(await r.open(ct, aad)), pt)
    assert.deepEqual(Buffer.from(await r.export(Buffer.from('cocoon-e2ee-v1 answer'), 28)), Buffer.from(await s.export(Buffer.from('cocoon-e2ee-v1 answer'), 28)))
    // The wrong additional data fails.
    const r2 = await recipient.createRecipientContext({ recipientKey: kp, enc: s.enc, info })
    await assert.rejects(r2.open(ct, Buffer.from('other route')))
  }
})

test('refuses an enc that is a low-order point (the all-zero shared secret) and an enc of the wrong length', async () => {
  const suite = nodeHpkeSuite()
  const kp = await suite.kem.generateKeyPair()
  await assert.rejects(suite.createRecipientContext({ recipientKey: kp, enc: Buffer.alloc(32), info: Buffer.alloc(0) }))
  await assert.rejects(suite.createRecipientContext({ recipientKey: kp, enc: Buffer.alloc(31, 7), info: Buffer.alloc(0) }))
})

test('makes and serializes thousands of key pairs without deadlocking (Node 20 locks a generated key twice when the GC collects its job mid-export)', async () => {
  // In a child process, so that a deadlock fails this test on its timeout instead of hanging the run.
  // With generateKeyPairSync underneath, this hung within about 7,000 pairs (and once a whole CI run).
  const { spawn } = await import('node:child_process')
  const PAIRS = 15_000
  const code = `
    import { nodeHpkeSuite } from ${JSON.stringify(new URL('../../src/net/hpke-node.ts', import.meta.url).href)}
    const kem = nodeHpkeSuite().kem
    for (let i = 0; i < ${PAIRS}; i++) {
      const kp = await kem.generateKeyPair()
      await kem.serializePublicKey(kp.publicKey)
    }
    console.log('made ${PAIRS}')`
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000)
  const exit = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
  clearTimeout(timer)
  assert.equal(exit, 0, 'the child finished (it is killed after 120 s if it deadlocks)')
  assert.equal(out.trim(), `made ${PAIRS}`)
})

/** An X25519 private key from raw bytes through PKCS#8 DER (RFC 8410), the reference import. */
const pkcs8 = (raw: Buffer) => createPrivateKey({ key: Buffer.concat([hex('302e020100300506032b656e04220420'), raw]), format: 'der', type: 'pkcs8' })

test('a private key made from raw bytes is the one PKCS#8 gives: same public key, same shared secrets', async () => {
  const kem = nodeHpkeSuite().kem
  for (let i = 0; i < 50; i++) {
    const raw = randomBytes(32)
    const fast = (await kem.deserializePrivateKey(raw)) as unknown as KeyObject
    const der = pkcs8(raw)
    const spki = (k: KeyObject) => createPublicKey(k).export({ format: 'der', type: 'spki' })
    assert.deepEqual(spki(fast), spki(der))
    assert.deepEqual(Buffer.from(await kem.serializePrivateKey(fast as never)), raw)
    const peer = createPublicKey(pkcs8(randomBytes(32)))
    assert.deepEqual(diffieHellman({ privateKey: fast, publicKey: peer }), diffieHellman({ privateKey: der, publicKey: peer }))
  }
})
