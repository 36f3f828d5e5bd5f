import crypto from 'node:crypto'
import { decodeReceiptBoc, encodeReceipt } from '../src/payments/receipts/receipt.ts'
const f: any = { version: 2, signer: 'worker', requestId: 'chatcmpl-' + crypto.randomBytes(12).toString('hex'), requestHash: crypto.randomBytes(32), answerHash: crypto.randomBytes(32), paramsHash: crypto.randomBytes(32), modelId: 'stories260K', modelHash: crypto.randomBytes(32), imageHash: crypto.randomBytes(32), workerKey: crypto.randomBytes(32), proxyKey: crypto.randomBytes(32), promptTokens: 20, cachedTokens: 0, completionTokens: 16, reasoningTokens: 0, coefficient: 1000, pricePerTokenNano: 1000n, workerFeePerTokenNano: 800n, adjustedTokens: 36n, costNano: 36000n, startedAtMs: Date.now(), firstTokenAtMs: Date.now(), endedAtMs: Date.now(), finishReason: 'stop' }
const sig = crypto.randomBytes(64)
const boc = encodeReceipt(f, sig).boc
for (let i = 0; i < 60000; i++) decodeReceiptBoc(boc)
