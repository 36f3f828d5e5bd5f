// The proxy's side of settlement on chain: stake, rollback check against the last commit, periodic state
// commits, charge vouchers submitted to client contracts, payout vouchers handed to workers.
import fs from 'node:fs'
import { Address } from '@ton/core'
import { raceSignal } from '../core/time.ts'
import type { KeyPair } from '@ton/crypto'
import { type Chain, collectMessages, type NodeWallet } from '../ton/chain-client/index.ts'
import { signVoucher, signedVoucherToBase64, type ProxyState, VOUCHER_MIN_VALUE_NANO, Op } from '../ton/contracts/index.ts'
import type { Logger } from '../core/log.ts'
import type { ClientFunds, FundsSource } from './billing.ts'
import { clientContract, proxyContract, workerContract, type ProxyChannel } from './channels.ts'
import { LedgerRollbackError, type Ledger, type LedgerHead } from './ledger.ts'
import type { PriceParams } from './pricing.ts'

/** Default time between settlement rounds. */
export const SETTLE_INTERVAL_MS = 30_000
/** Submit a client's charge once this much is unsettled (nanoTON), or when asked to. */
export const CHARGE_THRESHOLD_NANO = 100_000_000n
/** How long a client contract's state read from chain is reused for admission. */
export const FUNDS_CACHE_MS = 1_000
/**
 * Past FUNDS_CACHE_MS, a state younger than this still admits while the one read that refreshes it is on its way:
 * admissions never wait on the chain for a client already known, and at most one read per client is in flight.
 */
export const FUNDS_STALE_MS = 5_000
/** How long an admission waits for the chain before it uses the last known balance instead. */
export const FUNDS_CHAIN_TIMEOUT_MS = 3_000
/** After the chain failed to answer, admissions use the last known balances for this long without asking it. */
export const FUNDS_CHAIN_BACKOFF_MS = 5_000
/** Messages per wallet transfer (the V5 wallet's limit is higher; 4 keeps each transfer small). */
const BATCH = 4

/** The chain does not answer, and what is needed from it is not known locally either. */
export class ChainUnavailableError extends Error {
  readonly name = 'ChainUnavailableError'
  constructor(message: string) {
    super(message)
  }
}

/** A client asked to close its channel while it still has requests in flight (a 409 at the proxy). */
export class RequestsInFlightError extends Error {
  readonly name = 'RequestsInFlightError'
  constructor(readonly inFlightNano: bigint) {
    super('the client has requests in flight; close when they are done')
  }
}

export interface SettlementOptions {
  intervalMs?: number
  chargeThresholdNano?: bigint
  /** Stake to keep in the proxy contract. Default: the root's minimum proxy stake. */
  stakeNano?: bigint
  /**
   * File keeping each client's last known on-chain funds, so funded clients keep being served while the
   * chain is unreachable, across a restart too. Default: memory only.
   */
  fundsCacheFile?: string
  /** How long a client's funds read from chain admit without a new read. Default FUNDS_CACHE_MS. */
  fundsCacheMs?: number
  /** How old a funded, active state may be and still admit while the read refreshing it runs. Default FUNDS_STALE_MS. */
  fundsStaleMs?: number
}

/** Builds the reliability record committed with each state commit (src/proxy/reliability.ts). */
export interface ReliabilityCommitter {
  /** The record for commit `seqno` over the log's first `count` receipts; its hash goes into the commit. */
  prepare(seqno: number, count: number): Promise<{ hash: Buffer }>
  /** The commit that carried the prepared record was confirmed on chain (in transaction `tx`). */
  committed(seqno: number, tx?: string): void
}

export interface SettleReport {
  committed?: LedgerHead
  charged: number
  payoutVouchers: number
}

export class ProxySettlement implements FundsSource {
  private readonly contract
  private readonly funds = new Map<string, { at: number; value: ClientFunds | undefined }>()
  /** The chain read of a client's funds in flight, shared by every admission that needs it. */
  private readonly fundsReads = new Map<string, Promise<ClientFunds | undefined>>()
  private readonly vouchers = new Map<string, string>()
  private timer?: NodeJS.Timeout
  private running: Promise<SettleReport> | undefined
  private lastCommit: LedgerHead = { seqno: 0, hash: '0'.repeat(64) }
  private lastState: ProxyState | undefined
  private lastError: string | undefined
  private readonly o: Required<Omit<SettlementOptions, 'fundsCacheFile'>>
  private readonly fundsCacheFile: string | undefined
  /** Last known funds per client from the chain, kept on disk: what admission uses while the chain is away. */
  private readonly known = new Map<string, ClientFunds>()
  private chainDownUntil = 0

  constructor(
    private readonly deps: { chain: Chain; wallet: NodeWallet; paymentKey: KeyPair; channel: ProxyChannel; ledger: Ledger; log: Logger; reliability?: ReliabilityCommitter },
    opts: SettlementOptions = {},
  ) {
    this.contract = deps.chain.open(proxyContract(deps.channel))
    this.fundsCacheFile = opts.fundsCacheFile
    this.loadKnownFunds()
    this.o = {
      intervalMs: opts.intervalMs ?? SETTLE_INTERVAL_MS,
      chargeThresholdNano: opts.chargeThresholdNano ?? CHARGE_THRESHOLD_NANO,
      stakeNano: opts.stakeNano ?? deps.channel.params.minProxyStakeNano,
      fundsCacheMs: opts.fundsCacheMs ?? FUNDS_CACHE_MS,
      fundsStaleMs: opts.fundsStaleMs ?? FUNDS_STALE_MS,
    }
  }

  get address(): Address {
    return this.contract.address
  }

  priceParams(): PriceParams {
    return this.deps.channel.params
  }

  /** The proxy contract's state, or undefined before it is deployed. */
  async state(): Promise<ProxyState | undefined> {
    if (!(await this.deps.chain.isDeployed(this.contract.address))) return undefined
    this.lastState = await this.contract.getState()
    return this.lastState
  }

  /** Deploys the proxy contract and tops its stake up to the configured amount. */
  async ensureStaked(): Promise<void> {
    const st = await this.state()
    const have = st?.stakeNano ?? 0n
    if (have >= this.o.stakeNano) return
    this.deps.log.info('staking the proxy contract', { address: this.contract.address.toString(), stakeNano: (this.o.stakeNano - have).toString() })
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => this.contract.sendAddStake(via, { amountNano: this.o.stakeNano - have })))
    await this.state()
  }

  /**
   * The last commit on chain. Throws LedgerRollbackError (from the ledger) if the local ledger
   * does not contain it: the ledger was restored from an old copy.
   */
  async checkRollback(): Promise<void> {
    const st = await this.state()
    if (!st || st.commitSeqno === 0n) return
    const onChain = { seqno: Number(st.commitSeqno), hash: st.commitHash.toString('hex') }
    this.deps.ledger.checkAgainstCommit(onChain)
    // The receipt log too: every receipt the chain saw committed must still be here, unchanged.
    const rr = await this.contract.getReceiptsRoot()
    const local = this.deps.ledger.receiptCount()
    if (BigInt(local) < rr.count || (rr.count > 0n && this.deps.ledger.receiptsRoot(Number(rr.count)) !== rr.root.toString('hex'))) {
      throw new LedgerRollbackError(this.deps.ledger.getHead(), onChain)
    }
    this.lastCommit = onChain
  }

  start(): void {
    this.timer = setInterval(() => void this.settle().catch(() => {}), this.o.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  /**
   * Client contract state for admission, cached briefly (FUNDS_CACHE_MS). One read per client is in flight at a
   * time, and every admission that needs it meanwhile shares it; while it runs, a funded, active state younger
   * than FUNDS_STALE_MS admits instead of waiting. When the chain does not answer (within FUNDS_CHAIN_TIMEOUT_MS), the last known
   * state is used, so funded clients keep being served; what they spend meanwhile is in the ledger and is
   * subtracted from it (see ProxyBilling.availableNano).
   */
  async clientFunds(client: string): Promise<ClientFunds | undefined> {
    const hit = this.funds.get(client)
    const age = hit ? Date.now() - hit.at : Infinity
    if (age < this.o.fundsCacheMs) return hit!.value
    if (Date.now() < this.chainDownUntil) return this.lastKnown(client, undefined)
    // Only a funded, active state admits while stale: a client not known to be funded (a contract just deployed or
    // topped up) waits for the read rather than being refused on an old state.
    const stale = age < this.o.fundsStaleMs && hit!.value?.active === true ? hit!.value : undefined
    let read = this.fundsReads.get(client)
    if (!read) {
      read = this.readFunds(client).finally(() => this.fundsReads.delete(client))
      this.fundsReads.set(client, read)
      // A refresh nobody waits for must not fail unhandled; the next admission then finds the chain marked down.
      read.catch(() => {})
    }
    return stale ?? read
  }

  /** Reads a client contract's state from chain into the cache; on a chain that does not answer, the last known state. */
  private async readFunds(client: string): Promise<ClientFunds | undefined> {
    let value: ClientFunds | undefined
    try {
      const signal = AbortSignal.timeout(FUNDS_CHAIN_TIMEOUT_MS)
      const c = this.deps.chain.open(clientContract(this.deps.channel, Address.parseRaw(client)))
      if (await raceSignal(this.deps.chain.isDeployed(c.address, { signal }), signal)) {
        const s = await raceSignal(c.getState(), signal)
        value = { balanceNano: s.balanceNano, tokensCharged: s.tokensCharged, active: s.state === 'active' }
      }
    } catch (err) {
      this.chainDownUntil = Date.now() + FUNDS_CHAIN_BACKOFF_MS
      return this.lastKnown(client, err as Error)
    }
    this.funds.set(client, { at: Date.now(), value })
    this.remember(client, value)
    return value
  }

  private lastKnown(client: string, err: Error | undefined): ClientFunds | undefined {
    const k = this.known.get(client)
    if (err) this.deps.log.warn('chain unreachable; admitting on the last known balance', { client, known: !!k, error: err.message })
    if (!k) throw new ChainUnavailableError(`the chain is unreachable and this client's funds are not known yet${err ? `: ${err.message}` : ''}`)
    return k
  }

  private remember(client: string, value: ClientFunds | undefined): void {
    const before = this.known.get(client)
    if (!value) {
      if (!before) return
      this.known.delete(client)
    } else {
      if (before && before.balanceNano === value.balanceNano && before.tokensCharged === value.tokensCharged && before.active === value.active) return
      this.known.set(client, value)
    }
    if (!this.fundsCacheFile) return
    try {
      const tmp = `${this.fundsCacheFile}.tmp`
      const rows = Object.fromEntries([...this.known].map(([c, f]) => [c, { balanceNano: f.balanceNano.toString(), tokensCharged: f.tokensCharged.toString(), active: f.active }]))
      fs.writeFileSync(tmp, JSON.stringify(rows))
      fs.renameSync(tmp, this.fundsCacheFile)
    } catch (e) {
      this.deps.log.warn('could not save the funds cache', { error: (e as Error).message })
    }
  }

  private loadKnownFunds(): void {
    if (!this.fundsCacheFile) return
    try {
      const rows = JSON.parse(fs.readFileSync(this.fundsCacheFile, 'utf8')) as Record<string, { balanceNano: string; tokensCharged: string; active: boolean }>
      for (const [c, f] of Object.entries(rows)) this.known.set(c, { balanceNano: BigInt(f.balanceNano), tokensCharged: BigInt(f.tokensCharged), active: f.active })
    } catch {
      // No cache yet.
    }
  }

  /**
   * Signs the final charge for a client that closes: everything it was charged, cumulative. The
   * client submits it; its contract then refunds the rest at once. Refused while the client has
   * requests in flight.
   */
  finalCharge(client: string, inFlightNano: bigint): { tokens: bigint; voucher: string } {
    if (inFlightNano > 0n) throw new RequestsInFlightError(inFlightNano)
    const { ledger, paymentKey, channel } = this.deps
    const target = clientContract(channel, Address.parseRaw(client)).address
    const c = ledger.counters('client', client)
    const v = signVoucher({ kind: 'clientFinalCharge', target, tokens: c.tokens }, paymentKey.secretKey)
    if (c.tokens > c.vouchered) ledger.recordVoucher({ type: 'voucher', kind: 'clientFinalCharge', target: target.toRawString(), tokens: c.tokens.toString(), signature: v.signature.toString('hex') }, 'client', client)
    this.funds.delete(client)
    this.deps.log.info('final charge signed for a closing client', { client, tokens: c.tokens.toString() })
    return { tokens: c.tokens, voucher: signedVoucherToBase64(v) }
  }

  /** The newest payout voucher for a worker wallet, base64 (what the worker submits to its worker contract). */
  payoutVoucher(workerAccount: string): string | undefined {
    return this.vouchers.get(workerAccount)
  }

  /**
   * One settlement round; rounds never overlap. `force` charges every client with anything
   * unsettled, in a round that starts after this call (a round already running may predate
   * the usage the caller wants settled).
   */
  settle(opts: { force?: boolean } = {}): Promise<SettleReport> {
    const force = opts.force ?? false
    if (this.running && force) return this.running.catch(() => undefined).then(() => this.settle(opts))
    this.running ??= this.settleRound(force).finally(() => (this.running = undefined))
    return this.running
  }

  private async settleRound(force: boolean): Promise<SettleReport> {
    const { ledger, wallet, paymentKey, channel, log } = this.deps
    const report: SettleReport = { charged: 0, payoutVouchers: 0 }
    try {
      // 1. Commit the ledger head, so a later rollback of this ledger is detectable.
      // The receipt log's root and count go with it: one commit per round, whatever it holds.
      const head = ledger.getHead()
      if (head.seqno > this.lastCommit.seqno) {
        const count = ledger.receiptCount()
        const root = ledger.receiptsRoot(count)
        const receipts = { root: Buffer.from(root, 'hex'), count: BigInt(count) }
        // The reliability record for this commit, derived from the log as committed; its hash goes with it.
        const reliability = await this.prepareReliability(head.seqno, count)
        const txs = await wallet.sendAndConfirm(
          await collectMessages((via) => this.contract.sendCommitState(via, { value: VOUCHER_MIN_VALUE_NANO, seqno: BigInt(head.seqno), stateHash: Buffer.from(head.hash, 'hex'), receipts, reliabilityHash: reliability?.hash })),
        )
        const tx = txs.find((t) => t.address.equals(this.contract.address) && t.op === Op.proxyCommitState)
        ledger.recordCommit(head, Math.floor(Date.now() / 1000), { root, count, tx: tx?.hash })
        if (reliability) this.deps.reliability!.committed(head.seqno, tx?.hash)
        this.lastCommit = head
        report.committed = head
      }
      // 2. Charge clients whose unsettled usage passed the threshold.
      const price = channel.params.pricePerTokenNano
      const charges = []
      for (const c of ledger.allCounters('client')) {
        let addr: Address
        try {
          addr = Address.parseRaw(c.address)
        } catch {
          continue // an off-chain account (no wallet): nothing to settle
        }
        const contract = this.deps.chain.open(clientContract(channel, addr))
        if (!(await this.deps.chain.isDeployed(contract.address))) continue
        const onChain = (await contract.getState()).tokensCharged
        if (c.tokens <= onChain) continue
        if (!force && (c.tokens - onChain) * price < this.o.chargeThresholdNano) continue
        const v = signVoucher({ kind: 'clientCharge', target: contract.address, tokens: c.tokens }, paymentKey.secretKey)
        if (c.tokens > c.vouchered) ledger.recordVoucher({ type: 'voucher', kind: 'clientCharge', target: contract.address.toRawString(), tokens: c.tokens.toString(), signature: v.signature.toString('hex') }, 'client', c.address)
        charges.push(...(await collectMessages((via) => contract.sendVoucher(via, { voucher: v }))))
        this.funds.delete(c.address)
      }
      for (let i = 0; i < charges.length; i += BATCH) await wallet.sendAndConfirm(charges.slice(i, i + BATCH))
      report.charged = charges.length
      // 3. Sign payout vouchers for everything workers earned; they claim them on chain themselves.
      for (const w of ledger.allCounters('worker')) {
        let addr: Address
        try {
          addr = Address.parseRaw(w.address)
        } catch {
          continue
        }
        if (w.tokens === 0n) continue
        const target = workerContract(channel, addr).address
        const v = signVoucher({ kind: 'workerPayout', target, tokens: w.tokens }, paymentKey.secretKey)
        if (w.tokens > w.vouchered) {
          ledger.recordVoucher({ type: 'voucher', kind: 'workerPayout', target: target.toRawString(), tokens: w.tokens.toString(), signature: v.signature.toString('hex') }, 'worker', w.address)
          report.payoutVouchers++
        }
        this.vouchers.set(w.address, signedVoucherToBase64(v))
      }
      await this.state()
      this.lastError = undefined
      if (report.committed || report.charged || report.payoutVouchers) log.info('settled', { seqno: report.committed?.seqno, charged: report.charged, payoutVouchers: report.payoutVouchers })
      return report
    } catch (err) {
      this.lastError = (err as Error).message
      log.warn('settlement round failed; will retry', { error: err })
      throw err
    }
  }

  private async prepareReliability(seqno: number, count: number): Promise<{ hash: Buffer } | undefined> {
    if (!this.deps.reliability) return undefined
    try {
      return await this.deps.reliability.prepare(seqno, count)
    } catch (err) {
      // The commit protects the ledger; it goes without a record rather than not at all.
      this.deps.log.warn('could not build the reliability record; committing without one', { error: (err as Error).message })
      return undefined
    }
  }

  stats(): Record<string, unknown> {
    const s = this.lastState
    return {
      contract: this.contract.address.toString(),
      wallet: this.deps.wallet.address.toString(),
      stakeNano: s?.stakeNano.toString() ?? null,
      fundsNano: s?.fundsNano.toString() ?? null,
      withdrawableNano: s?.withdrawableNano.toString() ?? null,
      tokensChargedOnChain: s?.tokensCharged.toString() ?? null,
      tokensPaidOnChain: s?.tokensPaid.toString() ?? null,
      lastCommit: this.lastCommit,
      receipts: { held: this.deps.ledger.receiptCount(), committed: this.deps.ledger.lastConfirmedCommit()?.receiptsCount ?? 0 },
      lastError: this.lastError ?? null,
    }
  }
}
