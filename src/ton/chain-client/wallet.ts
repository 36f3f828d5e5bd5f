// Node wallets: a V5R1 wallet per node key file, with transfers serialized per wallet so consecutive
// sends never reuse a seqno, and the transactions they caused found on the destinations.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { keyPairFromSeed, type KeyPair } from '@ton/crypto'
import {
  Address,
  internal,
  SendMode,
  WalletContractV5R1,
  type OutActionSendMsg,
  type Sender,
  type SenderArguments,
  type Transaction,
} from '@ton/ton'
import type { Logger } from '../../core/log.ts'
import { httpRequest, type HttpAnswer } from '../../core/http-client.ts'
import { CHAIN_REQUEST_TIMEOUT_MS as FAUCET_TIMEOUT_MS, FAUCET_PATH, MAX_MESSAGES_PER_TRANSFER, TX_CONFIRM_TIMEOUT_MS, TX_SEARCH_PAGE, WALLET_POLL_INTERVAL_MS, WALLET_SEND_TIMEOUT_MS } from './constants.ts'
import { summarizeTransaction, type TxSummary } from '../contracts/transactions.ts'
import type { CallOpts, Chain } from './chain.ts'
import { ChainError, ContractRejectedError, DeliveryTimeoutError, WalletKeyError, WalletSendError } from './errors.ts'
import { raceSignal, sleepOrAbort as sleep } from '../../core/time.ts'

// ---------------------------------------------------------------- key files

const SEED_BYTES = 32

function parseSeed(file: string, buf: Buffer): Buffer {
  if (buf.length === SEED_BYTES) return buf
  const text = buf.toString('utf8').trim()
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex')
  throw new WalletKeyError(file, `expected a 32-byte seed (raw, or 64 hex characters), got ${buf.length} bytes`)
}

/** Reads a wallet seed file (raw 32 bytes or 64 hex characters). It must exist and be private to its owner. */
export function loadWalletKey(file: string): KeyPair {
  let st: fs.Stats
  let buf: Buffer
  try {
    st = fs.statSync(file)
    buf = fs.readFileSync(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new WalletKeyError(file, code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? (err as Error).message})`)
  }
  // Like ssh: a key others can read is not a secret any more.
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
    throw new WalletKeyError(file, `is accessible by other users (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 on it`)
  }
  return keyPairFromSeed(parseSeed(file, buf))
}

/**
 * Reads the wallet seed in `file`, or creates it (32 random bytes as hex, mode 0600, parent
 * directories 0700) when it does not exist. The seed is never logged.
 */
export function loadOrCreateWalletKey(file: string): KeyPair {
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
    try {
      fs.writeFileSync(file, crypto.randomBytes(SEED_BYTES).toString('hex') + '\n', { mode: 0o600, flag: 'wx' })
    } catch (err) {
      // Someone else created it first: use theirs.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new WalletKeyError(file, `cannot create it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
  }
  return loadWalletKey(file)
}

// ---------------------------------------------------------------- wallet

/** V5R1 wallet ids embed a network id; -239 (mainnet) is the default everywhere, so a key has one address. */
const MAINNET_GLOBAL_ID = -239

/** The V5R1 wallet contract (basechain) of a node key; its address does not depend on the chain. */
export function nodeWalletContract(publicKey: Buffer, networkGlobalId = MAINNET_GLOBAL_ID): WalletContractV5R1 {
  return WalletContractV5R1.create({ workchain: 0, publicKey, walletId: { networkGlobalId } })
}

export interface NodeWalletOptions {
  /** How long a transfer waits for the seqno to advance before its one retry. Default WALLET_SEND_TIMEOUT_MS (60 s). */
  sendTimeoutMs?: number
  /** Seqno and transaction polling interval. Default WALLET_POLL_INTERVAL_MS (1 s). */
  pollIntervalMs?: number
  /** How long `results` waits for each destination transaction. Default TX_CONFIRM_TIMEOUT_MS (60 s). */
  confirmTimeoutMs?: number
  /** V5R1 wallet id network: -239 mainnet (default, the same address on every network), -3 testnet. */
  networkGlobalId?: number
  log?: Logger
}

/** One internal message: what a wrapper hands its Sender (`to`, `value`, `body`, `init`, `bounce`, `sendMode`). */
export type WalletMessage = SenderArguments

/** A transfer that landed: the wallet's seqno advanced past `seqno`. */
export interface WalletTransfer {
  seqno: number
  /** Hash of the signed transfer body, which identifies the wallet's transaction. */
  hash: Buffer
  /** Chain time after which the transfer could no longer land. */
  validUntil: number
  messages: WalletMessage[]
}

/**
 * A node's V5R1 wallet (basechain). Transfers are queued and sent one at a time: each waits until
 * the wallet's seqno has advanced, so concurrent callers never collide. The first transfer deploys
 * the wallet (TonClient attaches the StateInit while it is not deployed).
 */
export class NodeWallet {
  readonly contract: WalletContractV5R1
  readonly address: Address
  readonly publicKey: Buffer
  private readonly secretKey: Buffer
  private readonly opts: Required<Omit<NodeWalletOptions, 'log' | 'networkGlobalId'>> & { log?: Logger }
  private queue: Promise<unknown> = Promise.resolve()

  constructor(
    readonly chain: Chain,
    key: KeyPair,
    opts: NodeWalletOptions = {},
  ) {
    this.contract = nodeWalletContract(key.publicKey, opts.networkGlobalId)
    this.address = this.contract.address
    this.publicKey = key.publicKey
    this.secretKey = key.secretKey
    this.opts = {
      sendTimeoutMs: opts.sendTimeoutMs ?? WALLET_SEND_TIMEOUT_MS,
      pollIntervalMs: opts.pollIntervalMs ?? WALLET_POLL_INTERVAL_MS,
      confirmTimeoutMs: opts.confirmTimeoutMs ?? TX_CONFIRM_TIMEOUT_MS,
      log: opts.log,
    }
  }

  balance(opts: CallOpts = {}): Promise<bigint> {
    return this.chain.getBalance(this.address, opts)
  }

  /** The next seqno (0 while the wallet is not deployed). */
  async seqno(opts: CallOpts = {}): Promise<number> {
    try {
      return await raceSignal(this.chain.open(this.contract).getSeqno(), opts.signal)
    } catch (err) {
      if (opts.signal?.aborted) throw err
      if (err instanceof ChainError) throw err
      throw new ChainError(`reading the seqno of ${this.address.toString()}: ${(err as Error).message}`, undefined, { cause: err })
    }
  }

  /** A Sender for the contract wrappers; each send is one queued transfer of one message. */
  sender(opts: CallOpts = {}): Sender {
    return {
      address: this.address,
      send: async (args: SenderArguments) => {
        await this.send([args], opts)
      },
    }
  }

  /**
   * Sends up to MAX_MESSAGES_PER_TRANSFER internal messages in one signed transfer, after every
   * transfer queued before it has landed. Resolves once the wallet's seqno has advanced (the
   * transfer is on chain); `results` then finds what the messages did.
   */
  send(messages: WalletMessage[], opts: CallOpts = {}): Promise<WalletTransfer> {
    if (messages.length === 0 || messages.length > MAX_MESSAGES_PER_TRANSFER) {
      return Promise.reject(new RangeError(`a transfer carries 1 to ${MAX_MESSAGES_PER_TRANSFER} messages, got ${messages.length}`))
    }
    const run = this.queue.then(() => this.transfer(messages, opts.signal))
    this.queue = run.catch(() => undefined)
    return run
  }

  /**
   * Sends, waits for every destination transaction, and throws ContractRejectedError if one failed
   * (its exit code names the contract's reason). Resolves with the destination transactions.
   */
  async sendAndConfirm(messages: WalletMessage[], opts: CallOpts = {}): Promise<TxSummary[]> {
    const results = await this.results(await this.send(messages, opts), opts)
    // A plain transfer to an account without code skips the compute phase: delivered, not rejected.
    const failed = results.find((r) => !r.success && (r.exitCode !== undefined || r.actionResultCode !== undefined))
    if (failed) throw new ContractRejectedError(failed.address, failed.exitCode || failed.actionResultCode, failed.op)
    return results
  }

  private async transfer(messages: WalletMessage[], signal?: AbortSignal): Promise<WalletTransfer> {
    signal?.throwIfAborted()
    const opened = this.chain.open(this.contract)
    const actions: OutActionSendMsg[] = messages.map((m) => ({
      type: 'sendMsg',
      // V5 refuses external transfers without IGNORE_ERRORS; results() tells whether each message left.
      mode: (m.sendMode ?? SendMode.PAY_GAS_SEPARATELY) | SendMode.IGNORE_ERRORS,
      outMsg: internal({ to: m.to, value: m.value, body: m.body ?? undefined, init: m.init ?? undefined, bounce: m.bounce ?? undefined }),
    }))
    let last: { reason: 'timeout' | 'rejected'; detail: string; cause?: unknown } | undefined
    for (let attempt = 0; attempt < 2; attempt++) {
      const seqno = await this.seqno({ signal })
      const validUntil = (await this.chain.now({ signal })) + Math.ceil(this.opts.sendTimeoutMs / 1000)
      const body = await this.contract.createRequest({ seqno, secretKey: this.secretKey, timeout: validUntil, actions })
      const transfer: WalletTransfer = { seqno, hash: body.hash(), validUntil, messages }
      try {
        await opened.send(body)
      } catch (err) {
        if (!(err instanceof ChainError)) throw err
        // Refused, or the answer was lost: it counts if the seqno moved anyway.
        if ((await this.seqno({ signal })) > seqno) return transfer
        last = { reason: err.transient ? 'timeout' : 'rejected', detail: err.message, cause: err }
        this.opts.log?.warn('wallet transfer not accepted', { wallet: this.address.toString(), seqno, attempt, err })
        continue
      }
      if (await this.waitForSeqno(seqno, signal)) return transfer
      last = { reason: 'timeout', detail: `seqno stayed at ${seqno} for ${this.opts.sendTimeoutMs} ms` }
      this.opts.log?.warn('wallet seqno did not advance, retrying with a fresh seqno', { wallet: this.address.toString(), seqno, attempt })
    }
    throw new WalletSendError(this.address, last!.reason, last!.detail, { cause: last!.cause })
  }

  private async waitForSeqno(sent: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + this.opts.sendTimeoutMs
    for (;;) {
      if ((await this.seqno({ signal })) > sent) return true
      if (Date.now() >= deadline) return false
      await sleep(Math.min(this.opts.pollIntervalMs, Math.max(0, deadline - Date.now())), signal)
    }
  }

  /**
   * The transactions `transfer`'s messages caused on their destinations, in message order. Rejects
   * with WalletSendError('failed') when a message never left the wallet (e.g. too little balance),
   * and DeliveryTimeoutError when a destination shows nothing within `confirmTimeoutMs`.
   */
  async results(transfer: WalletTransfer, opts: CallOpts = {}): Promise<TxSummary[]> {
    const walletTx = await this.poll(
      () => this.findTransaction(this.address, (tx) => tx.inMessage?.info.type === 'external-in' && tx.inMessage.body.hash().equals(transfer.hash)),
      this.address,
      opts.signal,
    )
    const sent = [...walletTx.outMessages.values()].filter((m) => m.info.type === 'internal')
    if (sent.length < transfer.messages.length) {
      const s = summarizeTransaction(walletTx)
      throw new WalletSendError(
        this.address,
        'failed',
        `${sent.length} of ${transfer.messages.length} messages left the wallet (action phase result ${s.actionResultCode ?? 'none'}; is the balance enough?)`,
      )
    }
    const out: TxSummary[] = []
    for (const msg of sent) {
      if (msg.info.type !== 'internal') continue
      const dest = msg.info.dest
      const createdLt = msg.info.createdLt
      const tx = await this.poll(
        () =>
          this.findTransaction(
            dest,
            (t) => t.inMessage?.info.type === 'internal' && t.inMessage.info.src.equals(this.address) && t.inMessage.info.createdLt === createdLt,
            createdLt,
          ),
        dest,
        opts.signal,
      )
      out.push(summarizeTransaction(tx))
    }
    return out
  }

  private async poll(find: () => Promise<Transaction | undefined>, address: Address, signal?: AbortSignal): Promise<Transaction> {
    const deadline = Date.now() + this.opts.confirmTimeoutMs
    for (;;) {
      const tx = await find()
      if (tx) return tx
      if (Date.now() >= deadline) throw new DeliveryTimeoutError(address, this.opts.confirmTimeoutMs)
      await sleep(this.opts.pollIntervalMs, signal)
    }
  }

  /** Newest-first search of `address`'s transactions, stopping at `afterLt` (exclusive). */
  private async findTransaction(address: Address, match: (tx: Transaction) => boolean, afterLt = 0n): Promise<Transaction | undefined> {
    let from: { lt: string; hash: string } | undefined
    for (let page = 0; page < 10; page++) {
      let txs: Transaction[]
      try {
        txs = await this.chain.client.getTransactions(address, {
          limit: TX_SEARCH_PAGE,
          ...(from ? { lt: from.lt, hash: from.hash, inclusive: false } : {}),
          archival: true,
        })
      } catch (err) {
        if (err instanceof ChainError) throw err
        throw new ChainError(`reading transactions of ${address.toString()}: ${(err as Error).message}`, undefined, { cause: err })
      }
      const hit = txs.find(match)
      if (hit) return hit
      const oldest = txs[txs.length - 1]
      if (txs.length < TX_SEARCH_PAGE || !oldest || oldest.lt <= afterLt) return undefined
      from = { lt: oldest.lt.toString(), hash: oldest.hash().toString('base64') }
    }
    return undefined
  }
}

/**
 * Runs `build` with a Sender that records messages instead of sending them, so wrapper calls can
 * be batched into one transfer: `wallet.send(await collectMessages((via) => root.sendAllowHash(via, …)))`.
 */
export async function collectMessages(build: (via: Sender) => Promise<unknown>, address?: Address): Promise<WalletMessage[]> {
  const out: WalletMessage[] = []
  await build({ address, send: async (args) => void out.push(args) })
  return out
}

/** Credits `address` from the devnet chain's faucet (devnet only). Resolves with the new balance. */
export async function devnetFaucet(chainBaseUrl: string, address: Address, amountNano: bigint, opts: CallOpts = {}): Promise<{ balanceNano: bigint }> {
  const url = chainBaseUrl.replace(/\/$/, '') + FAUCET_PATH
  let res: HttpAnswer
  try {
    res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: address.toString(), amount: amountNano.toString() }),
      signal: opts.signal,
      timeoutMs: FAUCET_TIMEOUT_MS,
    })
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason
    const e = err as { code?: string; message: string }
    throw new ChainError(`devnet faucet at ${url} unreachable: ${e.code ?? e.message}`, undefined, { method: 'faucet', transient: true, cause: err })
  }
  let body: { ok?: boolean; error?: string; result?: { balance?: string } } = {}
  try {
    body = JSON.parse(res.text) as typeof body
  } catch {}
  if (!res.ok || !body.ok) {
    const hint = res.status === 404 ? ' (is this a devnet chain? real networks have no faucet)' : ''
    throw new ChainError(`devnet faucet at ${url} failed (${res.status}): ${body.error ?? res.statusText}${hint}`, res.status, { method: 'faucet' })
  }
  return { balanceNano: BigInt(body.result?.balance ?? '0') }
}
