// The toncenter v2 JSON-RPC methods the devnet serves, with toncenter's parameter names and result shapes.
import { Address, Cell, beginCell, loadTransaction, storeStateInit, type Message } from '@ton/core'
import { createHash } from 'node:crypto'
import { GET_TRANSACTIONS_DEFAULT_LIMIT, GET_TRANSACTIONS_MAX_LIMIT, MASTERCHAIN_SHARD } from './constants.ts'
import type { ChainHead, DevnetChain } from './devnet.ts'
import { InvalidAddressError, InvalidParamsError, UnknownMethodError } from './errors.ts'
import { parseStackParam, renderStack } from './stack.ts'
import type { IndexedTransaction } from './txindex.ts'

export type RpcParams = Record<string, unknown>
type Method = (chain: DevnetChain, params: RpcParams) => Promise<unknown> | unknown

// ---- parameters ----

function requireString(params: RpcParams, name: string): string {
  const v = params[name]
  if (typeof v !== 'string') throw new InvalidParamsError(`parameter ${name} (string) is required`, name)
  return v
}

/** A TON address in raw or user-friendly form; InvalidAddressError when it is not one. */
export function parseAddress(v: string): Address {
  try {
    return Address.parse(v)
  } catch {
    throw new InvalidAddressError(v)
  }
}

function addressParam(params: RpcParams, name = 'address'): Address {
  return parseAddress(requireString(params, name))
}

/** toncenter takes integers as JSON numbers or decimal strings (lt values do not fit a double). */
function optionalBigInt(params: RpcParams, name: string): bigint | undefined {
  const v = params[name]
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v)
  if (typeof v === 'string' && /^-?[0-9]+$/.test(v)) return BigInt(v)
  throw new InvalidParamsError(`Can't parse integer in parameter ${name}`, name)
}

function optionalBool(params: RpcParams, name: string, fallback: boolean): boolean {
  const v = params[name]
  if (v === undefined || v === null) return fallback
  if (typeof v === 'boolean') return v
  if (v === 'true' || v === 1) return true
  if (v === 'false' || v === 0) return false
  throw new InvalidParamsError(`parameter ${name} must be a boolean`, name)
}

function b64Cell(params: RpcParams, name: string, required: boolean): Cell | undefined {
  const v = params[name]
  if (v === undefined || v === null || v === '') {
    if (required) throw new InvalidParamsError(`parameter ${name} (base64 BOC) is required`, name)
    return undefined
  }
  if (typeof v !== 'string') throw new InvalidParamsError(`parameter ${name} must be a base64 string`, name)
  try {
    const roots = Cell.fromBoc(Buffer.from(v, 'base64'))
    if (roots.length !== 1) throw new Error(`expected one root cell, got ${roots.length}`)
    return roots[0]
  } catch (err) {
    throw new InvalidParamsError(`parameter ${name} is not a valid BOC: ${(err as Error).message}`, name)
  }
}

/** A transaction hash in hex (64 chars) or base64 / base64url (44 chars), as toncenter accepts. */
function hashParam(params: RpcParams, name: string): Buffer | undefined {
  const v = params[name]
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v === 'string') {
    const buf = /^[0-9a-fA-F]{64}$/.test(v) ? Buffer.from(v, 'hex') : Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64')
    if (buf.length === 32) return buf
  }
  throw new InvalidParamsError(`parameter ${name} must be a 32-byte hash in hex or base64`, name)
}

// ---- rendering ----

const b64 = (buf: Buffer): string => buf.toString('base64')

function blockIdExt(seqno: number, rootHash: Buffer, fileHash: Buffer) {
  return { '@type': 'ton.blockIdExt', workchain: -1, shard: MASTERCHAIN_SHARD, seqno, root_hash: b64(rootHash), file_hash: b64(fileHash) }
}

const headBlockId = (h: ChainHead) => blockIdExt(h.seqno, h.rootHash, h.fileHash)

const INIT_HASH = createHash('sha256').update('cocoon-devnet:init').digest()

function friendly(a: Address | null | undefined): string {
  return Address.isAddress(a) ? a.toString() : ''
}

function renderMessage(m: Message) {
  const info = m.info
  const internal = info.type === 'internal'
  return {
    '@type': 'raw.message',
    source: info.type === 'external-in' ? '' : friendly(info.src),
    destination: info.type === 'external-out' ? '' : friendly(info.dest),
    value: (internal ? info.value.coins : 0n).toString(),
    fwd_fee: (internal ? info.forwardFee : 0n).toString(),
    ihr_fee: (internal ? info.ihrFee : 0n).toString(),
    created_lt: (info.type === 'external-in' ? 0n : info.createdLt).toString(),
    body_hash: b64(m.body.hash()),
    msg_data: {
      '@type': 'msg.dataRaw',
      body: b64(m.body.toBoc()),
      init_state: m.init ? b64(beginCell().store(storeStateInit(m.init)).endCell().toBoc()) : '',
    },
  }
}

function renderTransaction(e: IndexedTransaction) {
  const tx = loadTransaction(Cell.fromBase64(e.boc).beginParse())
  const d = tx.description
  const storage = 'storagePhase' in d ? (d.storagePhase?.storageFeesCollected ?? 0n) : 0n
  const fee = tx.totalFees.coins
  return {
    '@type': 'raw.transaction',
    address: { '@type': 'accountAddress', account_address: Address.parseRaw(e.account).toString() },
    utime: e.utime,
    data: e.boc,
    transaction_id: { '@type': 'internal.transactionId', lt: e.lt.toString(), hash: b64(e.hash) },
    fee: fee.toString(),
    storage_fee: storage.toString(),
    other_fee: (fee - storage).toString(),
    ...(tx.inMessage ? { in_msg: renderMessage(tx.inMessage) } : {}),
    out_msgs: tx.outMessages.values().map(renderMessage),
  }
}

// ---- methods ----

async function getAddressInformation(chain: DevnetChain, params: RpcParams) {
  const info = await chain.account(addressParam(params))
  const head = chain.head()
  return {
    '@type': 'raw.fullAccountState',
    balance: info.balanceNano.toString(),
    extra_currencies: Object.entries(info.extraCurrencies).map(([id, amount]) => ({ '@type': 'extraCurrency', id: Number(id), amount: amount.toString() })),
    code: info.code ? b64(info.code.toBoc()) : '',
    data: info.data ? b64(info.data.toBoc()) : '',
    last_transaction_id: { '@type': 'internal.transactionId', lt: info.lastTransaction.lt.toString(), hash: b64(info.lastTransaction.hash) },
    block_id: headBlockId(head),
    frozen_hash: info.frozenHash ? b64(info.frozenHash) : '',
    sync_utime: info.utime,
    state: info.status,
  }
}

async function getAddressBalance(chain: DevnetChain, params: RpcParams) {
  return (await chain.account(addressParam(params))).balanceNano.toString()
}

async function getAddressState(chain: DevnetChain, params: RpcParams) {
  return (await chain.account(addressParam(params))).status
}

async function runGetMethod(chain: DevnetChain, params: RpcParams) {
  const address = addressParam(params)
  const method = params.method
  if (!(typeof method === 'string' && method.length > 0) && !(typeof method === 'number' && Number.isSafeInteger(method))) {
    throw new InvalidParamsError('parameter method (name or id) is required', 'method')
  }
  const out = await chain.runGetMethod(address, method, parseStackParam(params.stack))
  return {
    '@type': 'smc.runResult',
    gas_used: Number(out.gasUsed),
    stack: renderStack(out.stack),
    exit_code: out.exitCode,
    block_id: headBlockId(chain.head()),
  }
}

function bocParam(params: RpcParams): Buffer {
  const boc = requireString(params, 'boc')
  if (boc.length === 0) throw new InvalidParamsError('empty boc', 'boc')
  return Buffer.from(boc, 'base64')
}

async function sendBoc(chain: DevnetChain, params: RpcParams) {
  await chain.sendBoc(bocParam(params))
  return { '@type': 'ok' }
}

async function sendBocReturnHash(chain: DevnetChain, params: RpcParams) {
  const out = await chain.sendBoc(bocParam(params))
  return { '@type': 'raw.extMessageInfo', hash: b64(out.messageHash) }
}

function getTransactions(chain: DevnetChain, params: RpcParams) {
  const address = addressParam(params)
  const limit = optionalBigInt(params, 'limit') ?? BigInt(GET_TRANSACTIONS_DEFAULT_LIMIT)
  if (limit <= 0n || limit > BigInt(GET_TRANSACTIONS_MAX_LIMIT)) {
    throw new InvalidParamsError(`limit must be between 1 and ${GET_TRANSACTIONS_MAX_LIMIT}`, 'limit')
  }
  optionalBool(params, 'archival', false) // every devnet node is "archival" for what the index keeps
  const txs = chain.transactions(address, {
    limit: Number(limit),
    lt: optionalBigInt(params, 'lt'),
    hash: hashParam(params, 'hash'),
    toLt: optionalBigInt(params, 'to_lt'),
  })
  return txs.map(renderTransaction)
}

function getMasterchainInfo(chain: DevnetChain) {
  const head = chain.head()
  return {
    '@type': 'blocks.masterchainInfo',
    last: headBlockId(head),
    state_root_hash: b64(head.stateRootHash),
    init: blockIdExt(0, INIT_HASH, INIT_HASH),
  }
}

async function estimateFee(chain: DevnetChain, params: RpcParams) {
  const fees = await chain.estimateFee(addressParam(params), {
    body: b64Cell(params, 'body', true) as Cell,
    initCode: b64Cell(params, 'init_code', false),
    initData: b64Cell(params, 'init_data', false),
    ignoreChksig: optionalBool(params, 'ignore_chksig', true),
  })
  return {
    '@type': 'query.fees',
    source_fees: {
      '@type': 'fees',
      in_fwd_fee: Number(fees.inFwdFeeNano),
      storage_fee: Number(fees.storageFeeNano),
      gas_fee: Number(fees.gasFeeNano),
      fwd_fee: Number(fees.fwdFeeNano),
    },
    destination_fees: [],
  }
}

const METHODS: Record<string, Method> = {
  getAddressInformation,
  getAddressBalance,
  getAddressState,
  runGetMethod,
  sendBoc,
  sendBocReturnHash,
  getTransactions,
  getMasterchainInfo,
  estimateFee,
}

/** The JSON-RPC method names served. */
export const TONCENTER_METHODS: readonly string[] = Object.keys(METHODS)

/** Runs one toncenter method; rejects with the chain's errors (the HTTP edge maps them to codes). */
export async function callToncenterMethod(chain: DevnetChain, method: unknown, params: unknown): Promise<unknown> {
  if (typeof method !== 'string' || !Object.hasOwn(METHODS, method)) throw new UnknownMethodError(method)
  if (params !== undefined && params !== null && (typeof params !== 'object' || Array.isArray(params))) {
    throw new InvalidParamsError('params must be an object', 'params')
  }
  return METHODS[method](chain, (params ?? {}) as RpcParams)
}
