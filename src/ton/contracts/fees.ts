// Measures the gas and fees of every contract op by running one scripted life cycle of
// the whole contract set in a fresh @ton/sandbox chain, and writes the JSON report that
// `cocoon bench` reads (bench/results/contract-fees.json).
//
// Report shape (version 1):
//   { "version": 1, "ops": { "<contract>.<op>": { "gas": number, "feeNano": number } } }
// gas:     compute gas summed over the op's contract transactions (wallets excluded).
// feeNano: every nanoTON the op burnt: total_fees of all its transactions (the sending
//          and receiving wallets included) plus the forward fees its messages carried.
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { SendMessageResult } from '@ton/sandbox'
import { Address, type Transaction } from '@ton/core'
import { keyPairFromSeed } from '@ton/crypto'
import { contractCodes } from './compile.ts'
import { ONE_TON_NANO } from './units.ts'
import { RootContract, signRegistration } from './root.ts'
import { ProxyContract } from './proxy.ts'
import { ClientContract } from './client.ts'
import { WorkerContract } from './worker.ts'
import { signVoucher } from './vouchers.ts'
import { feesBurntNano, summarizeTransaction } from './transactions.ts'
import type { Params } from './storage.ts'

export const CONTRACT_FEE_REPORT_VERSION = 1
export const CONTRACT_FEE_REPORT_PATH = 'bench/results/contract-fees.json'

export interface OpCost {
  gas: number
  feeNano: number
}

export interface ContractFeeReport {
  version: typeof CONTRACT_FEE_REPORT_VERSION
  ops: Record<string, OpCost>
}

export class ContractOpFailedError extends Error {
  readonly name = 'ContractOpFailedError'
  constructor(readonly op: string, readonly exitCode: number | undefined) {
    super(`contract op ${op} failed during fee measurement (exit code ${exitCode})`)
  }
}


/** Parameters of the measured life cycle (fees do not depend on them much). */
export const FEE_REPORT_PARAMS: Params = {
  paramsVersion: 0,
  pricePerTokenNano: 1_000n,
  workerFeePerTokenNano: 800n,
  promptMult: 10_000,
  cachedMult: 1_000,
  completionMult: 20_000,
  reasoningMult: 20_000,
  audioSecondMult: 1_000_000,
  proxyCloseDelaySec: 600,
  clientCloseDelaySec: 300,
  minProxyStakeNano: 10n * ONE_TON_NANO,
  minClientStakeNano: 1n * ONE_TON_NANO,
}

/** Gas and fees of a finished op. Throws if any transaction in it failed. */
export function measureOp(op: string, result: SendMessageResult, contracts: Address[]): OpCost {
  let gas = 0n
  for (const tx of result.transactions as Transaction[]) {
    const s = summarizeTransaction(tx)
    if (!s.success) throw new ContractOpFailedError(op, s.exitCode)
    if (contracts.some((a) => a.equals(s.address))) gas += s.gasUsed
  }
  return { gas: Number(gas), feeNano: Number(feesBurntNano(result.transactions as Transaction[])) }
}

/** Runs every op once on a fresh sandbox chain and reports its gas and fees. */
export async function measureContractFees(): Promise<ContractFeeReport> {
  const { Blockchain } = await import('@ton/sandbox') // the sandbox is heavy; only the fee report needs it
  const blockchain = await Blockchain.create()
  blockchain.now = 1_700_000_000
  const codes = await contractCodes()
  const params = FEE_REPORT_PARAMS
  const rootOwner = await blockchain.treasury('root-owner')
  const proxyOwner = await blockchain.treasury('proxy-owner')
  const clientWallet = await blockchain.treasury('client')
  const client2Wallet = await blockchain.treasury('client-2')
  const workerWallet = await blockchain.treasury('worker')
  const keys = keyPairFromSeed(Buffer.alloc(32, 'fee-report-proxy-key'))
  const root = blockchain.openContract(RootContract.createFromConfig({ owner: rootOwner.address, params }, codes.root))
  const proxy = blockchain.openContract(
    ProxyContract.createFromConfig(
      { owner: proxyOwner.address, root: root.address, publicKey: keys.publicKey, params, codes: { client: codes.client, worker: codes.worker } },
      codes.proxy,
    ),
  )
  const openClient = (owner: Address) =>
    blockchain.openContract(
      ClientContract.createFromConfig({ owner, proxy: proxy.address, proxyPublicKey: keys.publicKey, params }, codes.client),
    )
  const client = openClient(clientWallet.address)
  const client2 = openClient(client2Wallet.address)
  const worker = blockchain.openContract(
    WorkerContract.createFromConfig({ owner: workerWallet.address, proxy: proxy.address, proxyPublicKey: keys.publicKey }, codes.worker),
  )
  const contracts = [root.address, proxy.address, client.address, client2.address, worker.address]
  const ops: Record<string, OpCost> = {}
  const run = async (op: string, send: () => Promise<SendMessageResult>) => {
    ops[op] = measureOp(op, await send(), contracts)
  }
  const gas = 50_000_000n
  const hash = Buffer.alloc(32, 7)

  await run('root.deploy', () => root.sendDeploy(rootOwner.getSender(), ONE_TON_NANO))
  await run('root.setParams', () => root.sendSetParams(rootOwner.getSender(), { value: gas, params }))
  await run('root.allowHash', () => root.sendAllowHash(rootOwner.getSender(), { value: gas, kind: 'workerImage', hash }))
  await run('root.revokeHash', () => root.sendRevokeHash(rootOwner.getSender(), { value: gas, kind: 'workerImage', hash }))
  const image = Buffer.alloc(32, 9)
  await root.sendAllowHash(rootOwner.getSender(), { value: gas, kind: 'proxyImage', hash: image })
  const endpoint = { workerPort: 11001, clientPort: 11002, host: '127.0.0.1' }
  const registration = signRegistration({ root: root.address, owner: proxyOwner.address, imageHash: image, ...endpoint }, keys.secretKey)
  const key = { publicKey: keys.publicKey }
  await run('root.registerProxy', () => root.sendRegisterProxy(proxyOwner.getSender(), { value: gas, registration, stakeNano: params.minProxyStakeNano }))
  await run('root.updateProxy', () => root.sendUpdateProxy(proxyOwner.getSender(), { value: gas, ...key, endpoint: { ...endpoint, host: '10.0.0.1' } }))
  await run('root.addProxyStake', () => root.sendAddProxyStake(proxyOwner.getSender(), { ...key, amountNano: ONE_TON_NANO }))
  await run('root.unregisterProxy', () => root.sendUnregisterProxy(proxyOwner.getSender(), { value: gas, ...key }))
  blockchain.now += params.proxyCloseDelaySec
  await run('root.withdrawProxyStake', () => root.sendWithdrawProxyStake(proxyOwner.getSender(), { value: gas, ...key }))
  const other = keyPairFromSeed(Buffer.alloc(32, 'fee-report-proxy-key-2'))
  const reg2 = signRegistration({ root: root.address, owner: proxyOwner.address, imageHash: image, ...endpoint }, other.secretKey)
  await root.sendRegisterProxy(proxyOwner.getSender(), { value: gas, registration: reg2, stakeNano: params.minProxyStakeNano })
  await run('root.delistProxy', () => root.sendDelistProxy(rootOwner.getSender(), { value: gas, publicKey: other.publicKey, reason: 1 }))
  await run('root.changeOwner', () => root.sendChangeOwner(rootOwner.getSender(), { value: gas, newOwner: rootOwner.address }))

  await run('proxy.deploy', () => proxy.sendAddStake(proxyOwner.getSender(), { amountNano: params.minProxyStakeNano }))
  await run('proxy.addStake', () => proxy.sendAddStake(proxyOwner.getSender(), { amountNano: ONE_TON_NANO }))
  await run('proxy.commitState', () => proxy.sendCommitState(proxyOwner.getSender(), { value: gas, seqno: 1n, stateHash: hash }))

  await run('client.deploy', () => client.sendTopUp(clientWallet.getSender(), { amountNano: 5n * ONE_TON_NANO }))
  await run('client.topUp', () => client.sendTopUp(clientWallet.getSender(), { amountNano: ONE_TON_NANO }))
  const charge = (tokens: bigint) => signVoucher({ kind: 'clientCharge', target: client.address, tokens }, keys.secretKey)
  await run('client.charge', () => client.sendVoucher(proxyOwner.getSender(), { voucher: charge(1_000_000n) }))
  const payout = (tokens: bigint) => signVoucher({ kind: 'workerPayout', target: worker.address, tokens }, keys.secretKey)
  await run('worker.deploy', () => worker.sendPayout(workerWallet.getSender(), { voucher: payout(400_000n) }))
  await run('worker.payout', () => worker.sendPayout(workerWallet.getSender(), { voucher: payout(800_000n) }))
  await run('client.withdraw', () => client.sendWithdraw(clientWallet.getSender(), { value: gas, amountNano: ONE_TON_NANO }))
  await run('proxy.withdraw', () => proxy.sendWithdraw(proxyOwner.getSender(), { value: gas, amountNano: 100_000_000n }))
  await run('client.requestClose', () => client.sendRequestClose(clientWallet.getSender(), { value: gas }))
  const final = signVoucher({ kind: 'clientFinalCharge', target: client.address, tokens: 1_200_000n }, keys.secretKey)
  await run('client.finalCharge', () => client.sendVoucher(proxyOwner.getSender(), { voucher: final }))

  await run('client2.deploy', () => client2.sendTopUp(client2Wallet.getSender(), { amountNano: 2n * ONE_TON_NANO }))
  await client2.sendRequestClose(client2Wallet.getSender(), { value: gas })
  blockchain.now += params.clientCloseDelaySec
  await run('client.finishClose', () => client2.sendFinishClose(client2Wallet.getSender(), { value: gas }))
  delete ops['client2.deploy']

  await run('proxy.requestClose', () => proxy.sendRequestClose(proxyOwner.getSender(), { value: gas }))
  blockchain.now += params.proxyCloseDelaySec
  await run('proxy.finishClose', () => proxy.sendFinishClose(proxyOwner.getSender(), { value: gas }))

  return { version: CONTRACT_FEE_REPORT_VERSION, ops }
}

/** Measures and writes the report (default bench/results/contract-fees.json, relative to cwd). */
export async function writeContractFeeReport(file = CONTRACT_FEE_REPORT_PATH): Promise<ContractFeeReport> {
  const report = await measureContractFees()
  await mkdir(path.dirname(path.resolve(file)), { recursive: true })
  await writeFile(file, JSON.stringify(report, null, 2) + '\n')
  return report
}
