import crypto from 'node:crypto'
import { Cell, beginCell } from '@ton/core'
import { decodeReceiptBoc, encodeReceipt } from '../src/payments/receipts/receipt.ts'
const f: any = { version: 2, signer: 'worker', requestId: 'chatcmpl-' + crypto.randomBytes(12).toString('hex'), requestHash: crypto.randomBytes(32), answerHash: crypto.randomBytes(32), paramsHash: crypto.randomBytes(32), modelId: 'stories260K', modelHash: crypto.randomBytes(32), imageHash: crypto.randomBytes(32), workerKey: crypto.randomBytes(32), proxyKey: crypto.randomBytes(32), promptTokens: 20, cachedTokens: 0, completionTokens: 16, reasoningTokens: 0, coefficient: 1000, pricePerTokenNano: 1000n, workerFeePerTokenNano: 800n, adjustedTokens: 36n, costNano: 36000n, startedAtMs: Date.now(), firstTokenAtMs: Date.now(), endedAtMs: Date.now(), finishReason: 'stop' }
const sig = crypto.randomBytes(64)
const t = (name: string, fn: () => void, n = 20000) => { for (let i = 0; i < 2000; i++) fn(); const s = process.hrtime.bigint(); for (let i = 0; i < n; i++) fn(); console.log(name, (Number(process.hrtime.bigint() - s) / n / 1000).toFixed(1), 'µs') }
const boc = encodeReceipt(f, sig).boc
t('encode (new)', () => encodeReceipt(f, sig))
t('decode (new)', () => decodeReceiptBoc(boc))
t('fromBoc+hash (old part)', () => { const c = Cell.fromBoc(boc)[0]; c.hash(); c.beginParse().loadBuffer(64) })
t('toBoc (old part)', () => beginCell().storeBuffer(sig).storeRef(beginCell().storeUint(1, 32).endCell()).endCell().toBoc())
