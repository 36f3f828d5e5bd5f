// The devnet chain: @ton/sandbox's Blockchain in-process, persisted under a directory, every operation serialized.
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import {
  Address,
  Cell,
  beginCell,
  external,
  loadMessage,
  loadShardAccount,
  storeMessage,
  storeShardAccount,
  type Message,
  type ShardAccount,
  type Transaction,
  type TupleItem,
} from '@ton/core'
import {
  Blockchain,
  EmulationError,
  Executor,
  GetMethodError,
  LocalBlockchainStorage,
  TimeError,
  internal,
  snapshotFromSerializable,
  snapshotToSerializable,
  type BlockchainTransaction,
  type IExecutor,
  type LogsVerbosity,
} from '@ton/sandbox'
import type { Logger } from '../../core/log.ts'
import { DevnetClock, wallClockSeconds } from './clock.ts'
import {
  ESTIMATE_FEE_MIN_BALANCE_NANO,
  EXIT_CODE_NOT_ACTIVE,
  FAUCET_MAX_NANO,
  MAX_TRANSACTIONS_PER_BATCH,
  SNAPSHOT_INTERVAL_MS,
  TX_INDEX_PER_ACCOUNT,
} from './constants.ts'
import {
  ChainClosedError,
  ChainStateCorruptError,
  EmulationFailedError,
  ExternalMessageRejectedError,
  FaucetLimitError,
  MalformedMessageError,
} from './errors.ts'
import { CONFIG_FILE, lockDir, readConfig, readState, writeConfig, writeState } from './store.ts'
import { TransactionIndex, type IndexedTransaction, type TransactionQuery } from './txindex.ts'

/** The source address of faucet credits. No contract lives there: the devnet mints the value. */
export const FAUCET_ADDRESS = new Address(0, createHash('sha256').update('cocoon devnet faucet').digest())

const QUIET: LogsVerbosity = { print: false, blockchainLogs: false, vmLogs: 'none', debugLogs: false }

/**
 * A sandbox Blockchain with what a long-running devnet needs, reached through its protected API:
 * dropping the in-memory transaction list (it would grow forever; we keep our own bounded index),
 * and a scratch copy that shares the executor and config for fee estimates.
 */
export class DevnetBlockchain extends Blockchain {
  static async createDevnet(opts: { executor?: IExecutor } = {}): Promise<DevnetBlockchain> {
    const chain = new DevnetBlockchain({ executor: opts.executor ?? (await Executor.create()), storage: new LocalBlockchainStorage() })
    chain.verbosity = { ...QUIET }
    return chain
  }

  forgetTransactions(): void {
    this.transactions = []
  }

  forgetAccounts(): void {
    this.storage.clearKnownContracts()
    this.contractFetches.clear()
  }

  knownAccounts(): ShardAccount[] {
    return this.storage.knownContracts().map((c) => c.account)
  }

  /** Takes config, libraries, logical time, chain time and previous blocks from `other`. */
  syncFrom(other: DevnetBlockchain): void {
    this.networkConfig = other.networkConfig
    this.globalLibs = other.globalLibs
    this.currentLt = other.currentLt
    this.currentTime = other.currentTime
    this.prevBlocksInfo = other.prevBlocksInfo
  }
}

export interface DevnetChainOptions {
  /** Directory with state.json, config.boc and transactions.jsonl; created if missing. */
  dir: string
  /** Transactions kept per account in the index. Default TX_INDEX_PER_ACCOUNT (200). */
  txIndexPerAccount?: number
  /** Period of the background state write. Default SNAPSHOT_INTERVAL_MS (5000). */
  snapshotIntervalMs?: number
  /** Wall clock in unix seconds. Default the system clock. */
  wallClock?: () => number
}

export type AccountStatus = 'active' | 'uninitialized' | 'frozen'

export interface AccountInfo {
  address: Address
  balanceNano: bigint
  extraCurrencies: Record<number, bigint>
  status: AccountStatus
  code?: Cell
  data?: Cell
  frozenHash?: Buffer
  lastTransaction: { lt: bigint; hash: Buffer }
  /** Chain time of the answer. */
  utime: number
}

export interface GetMethodOutcome {
  exitCode: number
  gasUsed: bigint
  stack: TupleItem[]
}

export interface FeeEstimate {
  inFwdFeeNano: bigint
  storageFeeNano: bigint
  gasFeeNano: bigint
  fwdFeeNano: bigint
}

export interface ChainHead {
  seqno: number
  lt: bigint
  utime: number
  rootHash: Buffer
  fileHash: Buffer
  stateRootHash: Buffer
}

export interface SendOutcome {
  /** Hash of the message cell as sent. */
  messageHash: Buffer
  transactions: IndexedTransaction[]
}

export interface FaucetOutcome {
  balanceNano: bigint
  transaction: IndexedTransaction
}

export interface ChainStats {
  accounts: number
  seqno: number
  lastLt: string
  now: number
  timeFrozen: boolean
  persistedAt: string | null
  indexedTransactions: number
  indexedAccounts: number
  txIndexPerAccount: number
  dir: string
}

function isEmptyAccount(sa: ShardAccount): boolean {
  const acc = sa.account
  if (!acc) return true
  return sa.lastTransactionLt === 0n && acc.storage.balance.coins === 0n && acc.storage.state.type === 'uninit'
}

function cloneShardAccount(sa: ShardAccount): ShardAccount {
  return loadShardAccount(beginCell().store(storeShardAccount(sa)).endCell().beginParse())
}

function bigintTo32Bytes(v: bigint): Buffer {
  return Buffer.from(v.toString(16).padStart(64, '0'), 'hex')
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** Our error for a message the emulator would not apply; the chain state is unchanged. */
function rejection(err: unknown): Error {
  if (err instanceof EmulationError) return new ExternalMessageRejectedError(err.error, err.exitCode)
  if (err instanceof TimeError) return new ExternalMessageRejectedError(err.message)
  return new ExternalMessageRejectedError(err instanceof Error ? err.message : String(err))
}

function feesOf(tx: Transaction): FeeEstimate {
  const d = tx.description
  if (d.type !== 'generic') return { inFwdFeeNano: 0n, storageFeeNano: 0n, gasFeeNano: tx.totalFees.coins, fwdFeeNano: 0n }
  const storage = d.storagePhase?.storageFeesCollected ?? 0n
  const gas = d.computePhase.type === 'vm' ? d.computePhase.gasFees : 0n
  const fwd = d.actionPhase?.totalFwdFees ?? 0n
  const action = d.actionPhase?.totalActionFees ?? 0n
  // The import fee of the inbound message is what the total leaves after the other phases.
  const inFwd = tx.totalFees.coins - storage - gas - action
  return { inFwdFeeNano: inFwd > 0n ? inFwd : 0n, storageFeeNano: storage, gasFeeNano: gas, fwdFeeNano: fwd }
}

export class DevnetChain {
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false
  private closing: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private scratch: DevnetBlockchain | undefined
  private savedConfig: string | undefined
  private savedLt = -1n
  private savedClockKey = ''
  private persistedAtMs: number | undefined
  private failedSave = false

  private constructor(
    readonly dir: string,
    readonly blockchain: DevnetBlockchain,
    readonly clock: DevnetClock,
    private readonly index: TransactionIndex,
    private seqno: number,
    private readonly log: Logger,
    private readonly unlock: () => void,
  ) {}

  /** Opens (or creates) the chain persisted under `opts.dir`, resuming its accounts, logical time, clock and index. */
  static async open(opts: DevnetChainOptions, deps: { log: Logger }): Promise<DevnetChain> {
    fs.mkdirSync(opts.dir, { recursive: true })
    const unlock = lockDir(opts.dir)
    let chain: DevnetChain
    try {
      const state = readState(opts.dir)
      const config = readConfig(opts.dir)
      const blockchain = await DevnetBlockchain.createDevnet()
      if (state) {
        if (config === undefined) throw new ChainStateCorruptError(CONFIG_FILE, 'missing next to state.json')
        await blockchain.loadFrom(snapshotFromSerializable({ ...state.snapshot, networkConfig: config, transactions: [] }))
        blockchain.verbosity = { ...QUIET }
      }
      const clock = new DevnetClock(state?.clock ?? {}, opts.wallClock ?? wallClockSeconds)
      const index = TransactionIndex.open(opts.dir, opts.txIndexPerAccount ?? TX_INDEX_PER_ACCOUNT, blockchain.lt)
      chain = new DevnetChain(opts.dir, blockchain, clock, index, state?.seqno ?? 0, deps.log, unlock)
      chain.savedConfig = state ? config : undefined
      blockchain.now = clock.now()
      chain.saveState()
    } catch (err) {
      unlock()
      throw err
    }
    const blockchain = chain.blockchain
    const interval = opts.snapshotIntervalMs ?? SNAPSHOT_INTERVAL_MS
    chain.timer = setInterval(() => {
      chain.exclusive(async () => chain.saveIfChanged()).catch((err) => {
        if (!(err instanceof ChainClosedError)) deps.log.error('devnet state write failed', { err })
      })
    }, interval)
    chain.timer.unref()
    deps.log.info('devnet chain opened', { dir: opts.dir, seqno: chain.seqno, lt: blockchain.lt.toString(), accounts: chain.countAccounts() })
    return chain
  }

  /** Balance, code, data and last transaction of an account (an unknown address is an empty, uninitialized account). */
  account(address: Address): Promise<AccountInfo> {
    return this.exclusive(async () => {
      const contract = await this.blockchain.getContract(address)
      const sa = contract.account
      const state = sa.account?.storage.state
      const info: AccountInfo = {
        address,
        balanceNano: contract.balance,
        extraCurrencies: contract.ec,
        status: state?.type === 'active' ? 'active' : state?.type === 'frozen' ? 'frozen' : 'uninitialized',
        lastTransaction: { lt: sa.lastTransactionLt, hash: bigintTo32Bytes(sa.lastTransactionHash) },
        utime: this.clock.now(),
      }
      if (state?.type === 'active') {
        info.code = state.state.code ?? undefined
        info.data = state.state.data ?? undefined
      }
      if (state?.type === 'frozen') info.frozenHash = bigintTo32Bytes(state.stateHash)
      return info
    })
  }

  /** Runs a get-method at the current chain time. A failing method is an exit code, not an error. */
  runGetMethod(address: Address, method: string | number, stack: TupleItem[]): Promise<GetMethodOutcome> {
    return this.exclusive(async () => {
      const contract = await this.blockchain.getContract(address)
      if (contract.accountState?.type !== 'active') return { exitCode: EXIT_CODE_NOT_ACTIVE, gasUsed: 0n, stack: [] }
      try {
        const r = await this.blockchain.runGetMethod(address, method, stack)
        return { exitCode: r.exitCode, gasUsed: r.gasUsed, stack: r.stack }
      } catch (err) {
        if (err instanceof GetMethodError) return { exitCode: err.exitCode, gasUsed: err.gasUsed, stack: [] }
        throw new EmulationFailedError(err instanceof Error ? err.message : String(err))
      }
    })
  }

  /**
   * Applies a serialized inbound external message and the whole cascade it causes. Rejects with
   * MalformedMessageError for bytes that are not one, and ExternalMessageRejectedError when the
   * contract does not accept it; in both cases nothing changes.
   */
  async sendBoc(boc: Buffer): Promise<SendOutcome> {
    let root: Cell
    try {
      const roots = Cell.fromBoc(boc)
      if (roots.length !== 1) throw new Error(`expected one root cell, got ${roots.length}`)
      root = roots[0]
    } catch (err) {
      throw new MalformedMessageError(`external message is not a valid bag of cells (${(err as Error).message})`)
    }
    let message: Message
    try {
      message = loadMessage(root.beginParse())
    } catch {
      throw new MalformedMessageError('external message is not a (Message Any) according to automated checks')
    }
    if (message.info.type !== 'external-in') throw new MalformedMessageError(`expected an inbound external message, got ${message.info.type}`)
    return this.exclusive(async () => ({ messageHash: root.hash(), transactions: await this.runBatch(message) }))
  }

  /**
   * Applies any message (internal ones from any sender included: the devnet mints their value).
   * For tests and devnet tooling; nodes go through sendBoc like on a real network.
   */
  sendMessage(message: Message): Promise<SendOutcome> {
    const hash = beginCell().store(storeMessage(message)).endCell().hash()
    return this.exclusive(async () => ({ messageHash: hash, transactions: await this.runBatch(message) }))
  }

  /** Credits `amountNano` (1..FAUCET_MAX_NANO) to `address` with a non-bouncing internal message from FAUCET_ADDRESS. */
  async faucet(address: Address, amountNano: bigint): Promise<FaucetOutcome> {
    if (amountNano <= 0n || amountNano > FAUCET_MAX_NANO) throw new FaucetLimitError(amountNano, FAUCET_MAX_NANO)
    return this.exclusive(async () => {
      const msg = internal({ from: FAUCET_ADDRESS, to: address, value: amountNano, bounce: false, createdAt: this.clock.now(), createdLt: this.blockchain.lt })
      const txs = await this.runBatch(msg)
      const balanceNano = (await this.blockchain.getContract(address)).balance
      return { balanceNano, transaction: txs[0] }
    })
  }

  /** Transactions of an account from our bounded index, newest first. */
  transactions(address: Address, query: TransactionQuery): IndexedTransaction[] {
    if (this.closed) throw new ChainClosedError()
    return this.index.list(address.toRawString(), query)
  }

  /**
   * Fees of an inbound external message, by emulating it on a scratch copy of the account (topped
   * up to ESTIMATE_FEE_MIN_BALANCE_NANO so unfunded accounts can be estimated). Nothing changes.
   */
  estimateFee(address: Address, args: { body: Cell; initCode?: Cell; initData?: Cell; ignoreChksig: boolean }): Promise<FeeEstimate> {
    return this.exclusive(async () => {
      const scratch = (this.scratch ??= await DevnetBlockchain.createDevnet({ executor: this.blockchain.executor }))
      scratch.syncFrom(this.blockchain)
      scratch.forgetAccounts()
      try {
        const live = await this.blockchain.getContract(address)
        await scratch.setShardAccount(address, cloneShardAccount(live.account))
        const copy = await scratch.getContract(address)
        if (copy.balance < ESTIMATE_FEE_MIN_BALANCE_NANO) copy.balance = ESTIMATE_FEE_MIN_BALANCE_NANO
        const init = args.initCode ? { code: args.initCode, data: args.initData ?? Cell.EMPTY } : undefined
        const iter = await scratch.sendMessageIter(external({ to: address, init, body: args.body }), { ignoreChksig: args.ignoreChksig, allowParallel: true })
        let step: IteratorResult<BlockchainTransaction>
        try {
          step = await iter.next()
        } catch (err) {
          if (err instanceof EmulationError) throw new EmulationFailedError(err.error, err.exitCode)
          throw new EmulationFailedError(err instanceof Error ? err.message : String(err))
        }
        if (step.done) throw new EmulationFailedError('the message produced no transaction')
        return feesOf(step.value)
      } finally {
        scratch.forgetTransactions()
        scratch.forgetAccounts()
      }
    })
  }

  /** The devnet's latest "block": one per accepted message batch. */
  head(): ChainHead {
    const lt = this.blockchain.lt
    const tag = `cocoon-devnet:${this.seqno}:${lt}`
    return {
      seqno: this.seqno,
      lt,
      utime: this.clock.now(),
      rootHash: sha256(`root:${tag}`),
      fileHash: sha256(`file:${tag}`),
      stateRootHash: sha256(`state:${tag}`),
    }
  }

  stats(): ChainStats {
    return {
      accounts: this.countAccounts(),
      seqno: this.seqno,
      lastLt: this.blockchain.lt.toString(),
      now: this.clock.now(),
      timeFrozen: this.clock.frozen,
      persistedAt: this.persistedAtMs === undefined ? null : new Date(this.persistedAtMs).toISOString(),
      indexedTransactions: this.index.size,
      indexedAccounts: this.index.accounts,
      txIndexPerAccount: this.index.perAccount,
      dir: this.dir,
    }
  }

  /** Writes the state now (after pending operations). */
  persist(): Promise<void> {
    return this.exclusive(async () => this.saveState())
  }

  /** Persists state and a compacted index, then refuses further requests. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.timer) clearInterval(this.timer)
      await this.exclusive(async () => {
        try {
          this.saveState()
          this.index.compact()
        } finally {
          this.closed = true
          this.unlock()
        }
      })
      this.log.info('devnet chain closed', { seqno: this.seqno, lt: this.blockchain.lt.toString() })
    })()
    return this.closing
  }

  /** Runs `fn` after every earlier operation, with sandbox time set to chain time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new ChainClosedError()
      this.blockchain.now = this.clock.now()
      return fn()
    })
    this.queue = run.catch(() => undefined)
    return run
  }

  /**
   * Emulates `message` and its cascade (call inside exclusive). If the first transaction fails the
   * message is rejected and nothing changes; a later failure keeps what ran before it.
   */
  private async runBatch(message: Message): Promise<IndexedTransaction[]> {
    // allowParallel gives this batch its own queue, so a cut-off cascade leaves nothing behind.
    const iter = await this.blockchain.sendMessageIter(message, { allowParallel: true })
    const txs: BlockchainTransaction[] = []
    try {
      for (;;) {
        const step = await iter.next()
        if (step.done) break
        txs.push(step.value)
        if (txs.length >= MAX_TRANSACTIONS_PER_BATCH) {
          this.log.warn('message cascade cut off', { transactions: txs.length })
          break
        }
      }
    } catch (err) {
      if (txs.length === 0) {
        this.blockchain.forgetTransactions()
        throw rejection(err)
      }
      this.log.warn('a transaction in the cascade failed to emulate; the rest of the cascade is dropped', { err })
    }
    return this.commit(txs)
  }

  /** Indexes the batch, then writes the state, so a crash loses at most this batch. */
  private commit(txs: BlockchainTransaction[]): IndexedTransaction[] {
    const entries: IndexedTransaction[] = []
    for (const tx of txs) {
      const dest = tx.inMessage?.info.dest
      if (!Address.isAddress(dest)) continue
      entries.push({ account: dest.toRawString(), lt: tx.lt, hash: tx.hash(), utime: tx.now, boc: tx.raw.toBoc().toString('base64') })
    }
    this.blockchain.forgetTransactions()
    this.seqno++
    try {
      this.index.record(entries)
      this.saveState()
    } catch (err) {
      // The batch is applied in memory; the background writer retries the state.
      this.failedSave = true
      this.log.error('devnet state write failed after a batch', { err })
    }
    return entries
  }

  private saveIfChanged(): void {
    const clockKey = this.clockKey()
    if (this.failedSave || this.blockchain.lt !== this.savedLt || clockKey !== this.savedClockKey) this.saveState()
  }

  private clockKey(): string {
    const s = this.clock.state()
    return `${s.offsetSeconds}:${s.frozenAt ?? ''}`
  }

  private saveState(): void {
    const snap = this.blockchain.snapshot()
    const serial = snapshotToSerializable({ ...snap, contracts: snap.contracts.filter((c) => !isEmptyAccount(c.account)), transactions: [] })
    const { networkConfig, transactions: _none, ...rest } = serial
    if (networkConfig !== this.savedConfig) {
      writeConfig(this.dir, networkConfig)
      this.savedConfig = networkConfig
    }
    const savedAt = Date.now()
    writeState(this.dir, { format: 'cocoon-devnet-state', version: 1, savedAt, seqno: this.seqno, clock: this.clock.state(), snapshot: rest })
    this.savedLt = this.blockchain.lt
    this.savedClockKey = this.clockKey()
    this.persistedAtMs = savedAt
    this.failedSave = false
  }

  private countAccounts(): number {
    return this.blockchain.knownAccounts().filter((sa) => !isEmptyAccount(sa)).length
  }
}
