// Voucher helpers used by the proxy (signing) and by clients and workers (checking).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Address, beginCell } from '@ton/core'
import {
  checkVoucher,
  InvalidVoucherError,
  parseVoucherCell,
  signedVoucherFromBase64,
  signedVoucherToBase64,
  signVoucher,
  verifyVoucher,
  voucherCell,
  voucherMessageBody,
} from '../../src/ton/contracts/vouchers.ts'
import { Op, VOUCHER_DOMAIN } from '../../src/ton/contracts/opcodes.ts'
import { keyPair } from './helpers.ts'

const proxy = keyPair('voucher-test-proxy')
const target = new Address(0, Buffer.alloc(32, 0x42))
const other = new Address(0, Buffer.alloc(32, 0x43))

describe('vouchers', () => {
  it('lays out domain, op, target and cumulative tokens in one cell', () => {
    const s = voucherCell({ kind: 'workerPayout', target, tokens: 123n }).beginParse()
    assert.equal(s.loadUint(32), VOUCHER_DOMAIN)
    assert.equal(s.loadUint(32), Op.workerPayout)
    assert.ok(s.loadAddress().equals(target))
    assert.equal(s.loadUintBig(64), 123n)
    assert.equal(s.remainingBits, 0)
  })

  it('checkVoucher keeps only a voucher of the expected kind, signer, target and size, and says what is wrong', () => {
    const b64 = signedVoucherToBase64(signVoucher({ kind: 'workerPayout', target, tokens: 500n }, proxy.secretKey))
    const signer = proxy.publicKey.toString('hex')
    assert.equal(checkVoucher(b64, { kind: 'workerPayout', signer, target, maxTokens: 500n }).tokens, 500n)
    assert.equal(checkVoucher(b64, { kind: 'workerPayout', signer: proxy.publicKey }).tokens, 500n)
    const refused = (expect: Parameters<typeof checkVoucher>[1], why: RegExp, v: string = b64) =>
      assert.throws(() => checkVoucher(v, expect), (err: unknown) => err instanceof InvalidVoucherError && why.test(err.reason))
    refused({ kind: 'clientFinalCharge', signer }, /a payout voucher is not a final charge/)
    refused({ kind: 'workerPayout', signer, target: other }, /for another contract/)
    refused({ kind: 'workerPayout', signer: keyPair('someone-else').publicKey }, /not signed by this proxy/)
    refused({ kind: 'workerPayout', signer, maxTokens: 499n }, /more than the proxy said/)
    refused({ kind: 'workerPayout', signer }, /not a base64 BOC|bad envelope/, 'not-a-voucher')
  })

  it('verifies only against the signing key and only for the exact voucher', () => {
    const v = signVoucher({ kind: 'clientCharge', target, tokens: 1_000n }, proxy.secretKey)
    assert.equal(verifyVoucher(v, proxy.publicKey), true)
    assert.equal(verifyVoucher(v, keyPair('someone-else').publicKey), false)
    assert.equal(verifyVoucher({ ...v, tokens: 1_001n }, proxy.publicKey), false)
    assert.equal(verifyVoucher({ ...v, target: other }, proxy.publicKey), false)
    assert.equal(verifyVoucher({ ...v, kind: 'clientFinalCharge' }, proxy.publicKey), false)
  })

  it('round-trips through the portable base64 form', () => {
    const v = signVoucher({ kind: 'clientFinalCharge', target, tokens: 2n ** 63n }, proxy.secretKey)
    const back = signedVoucherFromBase64(signedVoucherToBase64(v))
    assert.equal(back.kind, v.kind)
    assert.ok(back.target.equals(target))
    assert.equal(back.tokens, v.tokens)
    assert.deepEqual(back.signature, v.signature)
    assert.equal(verifyVoucher(back, proxy.publicKey), true)
  })

  it('rejects malformed vouchers with InvalidVoucherError', () => {
    assert.throws(() => signedVoucherFromBase64('not base64 at all'), InvalidVoucherError)
    const wrongDomain = beginCell().storeUint(1, 32).storeUint(Op.clientCharge, 32).storeAddress(target).storeUint(1, 64).endCell()
    assert.throws(() => parseVoucherCell(wrongDomain), InvalidVoucherError)
    const wrongOp = beginCell().storeUint(VOUCHER_DOMAIN, 32).storeUint(Op.rootSetParams, 32).storeAddress(target).storeUint(1, 64).endCell()
    assert.throws(() => parseVoucherCell(wrongOp), InvalidVoucherError)
    assert.throws(() => voucherCell({ kind: 'clientCharge', target, tokens: 2n ** 64n }), RangeError)
  })

  it('builds the message body the target contract expects', () => {
    const v = signVoucher({ kind: 'clientCharge', target, tokens: 7n }, proxy.secretKey)
    const s = voucherMessageBody(v, 99n).beginParse()
    assert.equal(s.loadUint(32), Op.clientCharge)
    assert.equal(s.loadUintBig(64), 99n)
    assert.deepEqual(s.loadBuffer(64), v.signature)
    assert.equal(s.loadRef().hash().toString('hex'), voucherCell(v).hash().toString('hex'))
  })
})
