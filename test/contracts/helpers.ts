// Shared set-up for the contract tests: a fresh sandbox chain with the four contracts
// wired together, deterministic keys, and assertions on transactions and exit codes.
import assert from 'node:assert/strict'
import { Blockchain, type SandboxContract, type TreasuryContract } from '@ton/sandbox'
import { Address, toNano, type Transaction } from '@ton/core'
import { keyPairFromSeed, type KeyPair } from '@ton/crypto'
import { contractCodes, type ContractCodes } from '../../src/ton/contracts/compile.ts'
import { RootContract } from '../../src/ton/contracts/root.ts'
import { ProxyContract } from '../../src/ton/contracts/proxy.ts'
import { ClientContract } from '../../src/ton/contracts/client.ts'
import { WorkerContract } from '../../src/ton/contracts/worker.ts'
import type { Params } from '../../src/ton/contracts/storage.ts'
import { FEE_REPORT_PARAMS } from '../../src/ton/contracts/fees.ts'
import { summarizeTransaction, type TxSummary } from '../../src/ton/contracts/transactions.ts'
import { signVoucher, type SignedVoucher, type VoucherKind } from '../../src/ton/contracts/vouchers.ts'

export const ONE_TON = 1_000_000_000n

/** The reference parameters, shared with the contract fee report so both measure the same life cycle. */
export const PARAMS: Params = FEE_REPORT_PARAMS

export function keyPair(seed: string): KeyPair {
  return keyPairFromSeed(Buffer.alloc(32, seed))
}

export interface Net {
  blockchain: Blockchain
  codes: ContractCodes
  rootOwner: SandboxContract<TreasuryContract>
  proxyOwner: SandboxContract<TreasuryContract>
  clientWallet: SandboxContract<TreasuryContract>
  workerWallet: SandboxContract<TreasuryContract>
  stranger: SandboxContract<TreasuryContract>
  proxyKeys: KeyPair
  root: SandboxContract<RootContract>
  proxy: SandboxContract<ProxyContract>
  client: SandboxContract<ClientContract>
  worker: SandboxContract<WorkerContract>
  /** Signs a voucher with the proxy's payment key. */
  voucher(kind: VoucherKind, target: Address, tokens: bigint): SignedVoucher
}

/** A fresh chain with every contract opened (none deployed). */
export async function createNet(params: Params = PARAMS): Promise<Net> {
  const blockchain = await Blockchain.create()
  blockchain.now = 1_700_000_000
  const codes = await contractCodes()
  const rootOwner = await blockchain.treasury('root-owner')
  const proxyOwner = await blockchain.treasury('proxy-owner')
  const clientWallet = await blockchain.treasury('client')
  const workerWallet = await blockchain.treasury('worker')
  const stranger = await blockchain.treasury('stranger')
  const proxyKeys = keyPair('proxy-payment-key')
  const root = blockchain.openContract(RootContract.createFromConfig({ owner: rootOwner.address, params }, codes.root))
  const proxy = blockchain.openContract(
    ProxyContract.createFromConfig(
      {
        owner: proxyOwner.address,
        root: root.address,
        publicKey: proxyKeys.publicKey,
        params,
        codes: { client: codes.client, worker: codes.worker },
      },
      codes.proxy,
    ),
  )
  const client = blockchain.openContract(
    ClientContract.createFromConfig(
      { owner: clientWallet.address, proxy: proxy.address, proxyPublicKey: proxyKeys.publicKey, params },
      codes.client,
    ),
  )
  const worker = blockchain.openContract(
    WorkerContract.createFromConfig(
      { owner: workerWallet.address, proxy: proxy.address, proxyPublicKey: proxyKeys.publicKey },
      codes.worker,
    ),
  )
  return {
    blockchain, codes, rootOwner, proxyOwner, clientWallet, workerWallet, stranger, proxyKeys,
    root, proxy, client, worker,
    voucher: (kind, target, tokens) => signVoucher({ kind, target, tokens }, proxyKeys.secretKey),
  }
}

/** Proxy deployed with the minimum stake, client deployed with `clientDepositNano`. */
export async function createOpenChannel(clientDepositNano = 5n * ONE_TON, params: Params = PARAMS): Promise<Net> {
  const net = await createNet(params)
  const p = await net.proxy.sendAddStake(net.proxyOwner.getSender(), { amountNano: params.minProxyStakeNano })
  expectTx(p.transactions, { to: net.proxy.address, success: true, deploy: true })
  const c = await net.client.sendTopUp(net.clientWallet.getSender(), { amountNano: clientDepositNano })
  expectTx(c.transactions, { to: net.client.address, success: true, deploy: true })
  return net
}

export interface TxPattern {
  from?: Address
  to?: Address
  op?: number
  success?: boolean
  exitCode?: number
  bounced?: boolean
  /** The transaction created the account's code (first deploy). */
  deploy?: boolean
}

function matches(tx: Transaction, s: TxSummary, p: TxPattern): boolean {
  if (p.to && !s.address.equals(p.to)) return false
  if (p.from && !(s.from && s.from.equals(p.from))) return false
  if (p.op !== undefined && s.op !== p.op) return false
  if (p.success !== undefined && s.success !== p.success) return false
  if (p.exitCode !== undefined && s.exitCode !== p.exitCode) return false
  if (p.bounced !== undefined && s.bounced !== p.bounced) return false
  if (p.deploy !== undefined) {
    const deployed = tx.oldStatus !== 'active' && tx.endStatus === 'active'
    if (deployed !== p.deploy) return false
  }
  return true
}

function describe(txs: Transaction[]): string {
  return txs
    .map((tx) => {
      const s = summarizeTransaction(tx)
      const op = s.op === undefined ? '-' : '0x' + s.op.toString(16)
      return `  ${s.from?.toString().slice(0, 10) ?? 'ext'} -> ${s.address.toString().slice(0, 10)} op=${op} exit=${s.exitCode} action=${s.actionResultCode} ok=${s.success} bounced=${s.bounced}`
    })
    .join('\n')
}

/** Asserts that one of `txs` matches the pattern and returns its summary. */
export function expectTx(txs: Transaction[], pattern: TxPattern): TxSummary {
  for (const tx of txs) {
    const s = summarizeTransaction(tx)
    if (matches(tx, s, pattern)) return s
  }
  assert.fail(`no transaction matches ${JSON.stringify(pattern, replacer)}; got:\n${describe(txs)}`)
}

/** Asserts that none of `txs` matches the pattern. */
export function expectNoTx(txs: Transaction[], pattern: TxPattern): void {
  for (const tx of txs) {
    if (matches(tx, summarizeTransaction(tx), pattern)) {
      assert.fail(`unexpected transaction matching ${JSON.stringify(pattern, replacer)}:\n${describe(txs)}`)
    }
  }
}

/** Asserts the message to `to` was rejected with exactly `exitCode`. */
export function expectRejected(txs: Transaction[], to: Address, exitCode: number): void {
  expectTx(txs, { to, success: false, exitCode })
}

function replacer(_k: string, v: unknown) {
  if (v instanceof Address) return v.toString()
  if (typeof v === 'bigint') return v.toString()
  return v
}

export const GAS = toNano('0.05')
