// The client's side of payments on chain: its client contract per proxy, funded at start-up and topped up
// below a threshold; top-up, withdrawal and close for the CLI.
import fs from 'node:fs'
import type { Address } from '@ton/core'
import { type Chain, collectMessages, type NodeWallet } from '../ton/chain-client/index.ts'
import { type ClientState, type TopUpMessage, checkVoucher, ONE_TON_NANO, type RootState, VOUCHER_MIN_VALUE_NANO } from '../ton/contracts/index.ts'
import type { Logger } from '../core/log.ts'
import { ChannelLookup, clientContract } from './channels.ts'

/** How often the client re-reads its client contracts (balance, charges on chain) and tops up if needed. */
export const CLIENT_REFRESH_MS = 10_000
/** Least time between two funding checks a proxy's refusals for funds (402) start, per proxy. */
export const REFUSAL_CHECK_MS = 2_000
/**
 * How long the client's recent spending with a proxy must last before a top-up is needed: the threshold is at least
 * what it spent in this much time at its recent rate, so a node spending fast tops up before it runs out, not after.
 * It covers the next periodic check (CLIENT_REFRESH_MS), the top-up's confirmation on chain, and room to spare.
 */
export const TOP_UP_LEAD_MS = 60_000
/**
 * The recent spend rate is measured between the last funding check and the newest one at least this much older
 * (20-30 s with the periodic check): short enough to follow a node that starts spending fast, long enough that a
 * burst of a few seconds is not taken for a rate.
 */
export const SPEND_SPAN_MS = 20_000
/** The rate raises the threshold at most to `topUpBelowNano` plus this many top-ups: money parked with one proxy stays bounded. */
export const MAX_LEAD_TOP_UPS = 4n

export interface ClientFundingOptions {
  /** Deposit made when the client contract does not exist yet. Default 1 TON. */
  depositNano?: bigint
  /**
   * Top up when what is spendable falls below this (0 = never), or below what the node spent with that proxy in the
   * last TOP_UP_LEAD_MS at its recent rate, if more (at most this plus MAX_LEAD_TOP_UPS × topUpNano). Default 0.
   */
  topUpBelowNano?: bigint
  /** Amount of each automatic top-up. Default: depositNano. */
  topUpNano?: bigint
  /**
   * File keeping the last state read of each client contract, so a client restarted while the chain is
   * unreachable still knows (and shows) it is funded. Default: memory only.
   */
  statesFile?: string
  /**
   * The most the node puts into client contracts on its own, deposits and top-ups across every proxy together,
   * nanoTON. A deposit or top-up that would pass it is refused (logged, and on /jsonstats as `funding`).
   * Top-ups an operator makes by hand (CLI, console) are not limited. Default: no limit.
   */
  fundingBudgetNano?: bigint
  /** File keeping what the node has put in so far, so a restart does not reset the budget. Default: memory only. */
  fundingFile?: string
}

/** A refused automatic deposit or top-up: it would take the node past its funding budget. */
export interface FundingRefusal {
  proxy: string
  kind: 'deposit' | 'top-up'
  amountNano: string
  at: number
  reason: string
}

/** A deposit or top-up the node's wallet could not pay: nothing was sent. */
export interface WalletShortfall {
  proxy: string
  kind: 'deposit' | 'top-up'
  /** What the transfer sends (amount and the contract's gas). */
  neededNano: string
  /** The wallet's balance when it was checked. */
  walletNano: string
  /** The wallet to send TON to. */
  wallet: string
  at: number
}

/** Kept in the wallet beyond what a deposit or top-up sends: the wallet's own fees for the transfer. */
export const WALLET_FEE_MARGIN_NANO = ONE_TON_NANO / 100n

export class ClientAccount {
  private readonly channels: ChannelLookup
  private readonly states = new Map<string, ClientState>()
  private readonly o: Required<Omit<ClientFundingOptions, 'statesFile' | 'fundingBudgetNano' | 'fundingFile'>>
  private readonly statesFile: string | undefined
  private readonly budgetNano: bigint | undefined
  private readonly fundingFile: string | undefined
  /** Put into client contracts automatically so far (counted when sent), in total and per proxy. */
  private spentNano = 0n
  private readonly spentByProxy = new Map<string, bigint>()
  private readonly refusals = new Map<string, FundingRefusal>()
  /** Deposits and top-ups not sent because the node's wallet could not pay them, per proxy (cleared once one goes through). */
  private readonly walletShort = new Map<string, WalletShortfall>()
  /** One funding run per proxy at a time, so a connect and the refresh timer never both deposit. */
  private readonly funding = new Map<string, Promise<void>>()
  /** What the proxy had said it charged in all (nanoTON) at the funding checks of the last SPEND_SPAN_MS and the one before, per proxy. */
  private readonly spendSamples = new Map<string, Array<{ at: number; nano: bigint }>>()
  /** The top-up threshold each proxy's last funding check used (topUpThresholdNano), for /jsonstats. */
  private readonly thresholds = new Map<string, bigint>()

  constructor(
    private readonly deps: {
      chain: Chain
      wallet: NodeWallet
      root: Address
      rootState: () => RootState | undefined
      log: Logger
      /**
       * What each proxy has told this node it charged so far (cumulative adjusted tokens and nanoTON, from its signed
       * statements): the part not yet charged on chain is spent already, though the contract's balance does not show it.
       */
      charged?: (proxyId: string) => { tokens: bigint; nano: bigint }
      /** The clock (ms since epoch), for the spend rate. Default Date.now. */
      now?: () => number
    },
    opts: ClientFundingOptions = {},
  ) {
    const deposit = opts.depositNano ?? ONE_TON_NANO
    this.o = { depositNano: deposit, topUpBelowNano: opts.topUpBelowNano ?? 0n, topUpNano: opts.topUpNano ?? deposit }
    this.channels = new ChannelLookup(deps)
    this.statesFile = opts.statesFile
    this.budgetNano = opts.fundingBudgetNano
    this.fundingFile = opts.fundingFile
    if (this.fundingFile) {
      try {
        const saved = JSON.parse(fs.readFileSync(this.fundingFile, 'utf8')) as { spentNano: string; byProxy: Record<string, string> }
        this.spentNano = BigInt(saved.spentNano)
        for (const [proxyId, n] of Object.entries(saved.byProxy)) this.spentByProxy.set(proxyId, BigInt(n))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read the funding record ${this.fundingFile}: ${(err as Error).message}`)
      }
    }
    if (this.statesFile) {
      try {
        const rows = JSON.parse(fs.readFileSync(this.statesFile, 'utf8')) as Record<string, Record<string, string | number>>
        for (const [proxyId, r] of Object.entries(rows)) {
          this.states.set(proxyId, { state: r.state as ClientState['state'], balanceNano: BigInt(r.balanceNano), stakeNano: BigInt(r.stakeNano), tokensCharged: BigInt(r.tokensCharged), unlockAt: Number(r.unlockAt) })
        }
      } catch {
        // Nothing saved yet.
      }
    }
  }

  private saveStates(): void {
    if (!this.statesFile) return
    try {
      const rows = Object.fromEntries([...this.states].map(([k, v]) => [k, { ...v, balanceNano: v.balanceNano.toString(), stakeNano: v.stakeNano.toString(), tokensCharged: v.tokensCharged.toString() }]))
      fs.writeFileSync(`${this.statesFile}.tmp`, JSON.stringify(rows))
      fs.renameSync(`${this.statesFile}.tmp`, this.statesFile)
    } catch (err) {
      this.deps.log.warn('could not save the client contract states', { error: (err as Error).message })
    }
  }

  async contractFor(proxyId: string) {
    return this.deps.chain.open(clientContract(await this.channels.channel(proxyId), this.deps.wallet.address))
  }

  private timer?: NodeJS.Timeout
  /** The last refresh error per proxy, so each is logged as a warning once, not every refresh. */
  private readonly refreshErrors = new Map<string, string>()

  /** Re-reads every known client contract periodically, recording on-chain charges and topping up below the threshold. */
  start(ledger: { recordOnChain(proxy: string, tokens: bigint): void }, everyMs = CLIENT_REFRESH_MS): void {
    this.timer = setInterval(() => {
      for (const proxyId of this.channels.known()) {
        this.ensureFunded(proxyId)
          .then(() => {
            const s = this.states.get(proxyId)
            if (s) ledger.recordOnChain(proxyId, s.tokensCharged)
          })
          .then(() => this.refreshErrors.delete(proxyId))
          .catch((err) => {
            // A failing refresh (chain unreachable, a top-up that did not go through) is a warning once, then debug until it changes.
            const message = String((err as Error).message).slice(0, 300)
            const level = this.refreshErrors.get(proxyId) === message ? 'debug' : 'warn'
            this.refreshErrors.set(proxyId, message)
            this.deps.log[level]('could not refresh or fund the client contract', { proxy: proxyId.slice(0, 16), error: message })
          })
      }
    }, everyMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  /** The client contract's state on chain, or undefined before the first deposit. */
  async state(proxyId: string): Promise<ClientState | undefined> {
    const c = await this.contractFor(proxyId)
    if (!(await this.deps.chain.isDeployed(c.address))) return undefined
    const s = await c.getState()
    this.states.set(proxyId, s)
    this.saveStates()
    return s
  }

  /**
   * Makes sure the client contract with this proxy exists and holds funds (deposit, or a top-up below the
   * threshold), within the funding budget: what would pass it is refused, logged once and shown by fundingStats().
   */
  ensureFunded(proxyId: string, refused = false): Promise<void> {
    let run = this.funding.get(proxyId)
    if (!run) {
      run = this.fund(proxyId, refused).finally(() => this.funding.delete(proxyId))
      this.funding.set(proxyId, run)
    }
    return run
  }

  /** When the proxy last refused a request of this node for funds, per proxy (refusedForFunds checks at most every REFUSAL_CHECK_MS). */
  private readonly refusalChecks = new Map<string, number>()

  /**
   * The proxy refused a request for want of funds (402). It admits against its own view: the balance, less what it
   * charged and has not settled on chain yet, less what requests in flight reserved. Under load that runs out before
   * the balance on chain falls below `topUpBelowNano`, so the apps saw 402s between top-ups. A refusal therefore
   * tops up while what is spendable is below `topUpBelowNano + topUpNano`, at most once per REFUSAL_CHECK_MS: an
   * oversized request refused again and again never raises it past `topUpBelowNano + 2 × topUpNano`, and the funding
   * budget holds as for any top-up. A refusal whose shortfall (`shortfallNano`, what the request lacked) is more than
   * one top-up starts none: no top-up would let that request in.
   */
  refusedForFunds(proxyId: string, shortfallNano?: bigint): void {
    if (shortfallNano !== undefined && shortfallNano > this.o.topUpNano) return
    const now = Date.now()
    if (now - (this.refusalChecks.get(proxyId) ?? 0) < REFUSAL_CHECK_MS) return
    this.refusalChecks.set(proxyId, now)
    this.ensureFunded(proxyId, true).catch((err) => this.deps.log.warn('could not fund the client contract after a refusal for funds', { proxy: proxyId.slice(0, 16), error: String((err as Error).message).slice(0, 300) }))
  }

  /** nanoTON still spendable in the contract: its balance, less what the proxy said it charged beyond what is charged on chain. */
  spendableNano(proxyId: string, s: ClientState): bigint {
    const told = this.deps.charged?.(proxyId)
    if (!told || told.tokens <= s.tokensCharged || told.tokens === 0n) return s.balanceNano
    // The statements give nanoTON for all tokens charged; the unsettled tokens are valued at their average price.
    return s.balanceNano - ((told.tokens - s.tokensCharged) * told.nano) / told.tokens
  }

  /**
   * Notes what the proxy has said it charged so far and returns the threshold to top up below: `topUpBelowNano`, or
   * what the node spent with this proxy in TOP_UP_LEAD_MS at its recent rate (SPEND_SPAN_MS), if more (capped
   * at `topUpBelowNano + MAX_LEAD_TOP_UPS × topUpNano`). A fixed threshold is crossed too late by a node spending
   * fast: at a hundred streams the devnet client spent ~4 TON a minute against a 1 TON threshold, and the proxy
   * refused requests for funds (402) before the top-up landed.
   */
  private topUpThresholdNano(proxyId: string): bigint {
    const t = this.leadThreshold(proxyId)
    this.thresholds.set(proxyId, t)
    return t
  }

  private leadThreshold(proxyId: string): bigint {
    const base = this.o.topUpBelowNano
    const told = this.deps.charged?.(proxyId)
    if (!told || base <= 0n) return base
    const now = (this.deps.now ?? Date.now)()
    let samples = this.spendSamples.get(proxyId)
    // A total that went down (a proxy that lost its ledger) starts the measure over.
    if (!samples || (samples.length && told.nano < samples[samples.length - 1]!.nano)) this.spendSamples.set(proxyId, (samples = []))
    samples.push({ at: now, nano: told.nano })
    while (samples.length > 1 && now - samples[1]!.at >= SPEND_SPAN_MS) samples.shift()
    const first = samples[0]!
    const span = now - first.at
    if (span < SPEND_SPAN_MS) return base
    const lead = ((told.nano - first.nano) * BigInt(TOP_UP_LEAD_MS)) / BigInt(span)
    const cap = base + MAX_LEAD_TOP_UPS * this.o.topUpNano
    return lead > base ? (lead < cap ? lead : cap) : base
  }

  private async fund(proxyId: string, refused: boolean): Promise<void> {
    const s = await this.state(proxyId)
    if (!s) return this.autoTopUp(proxyId, 'deposit', this.o.depositNano, undefined)
    if (s.state !== 'active' || this.o.topUpBelowNano <= 0n) return
    const threshold = this.topUpThresholdNano(proxyId)
    const below = refused ? threshold + this.o.topUpNano : threshold
    if (this.spendableNano(proxyId, s) < below) return this.autoTopUp(proxyId, 'top-up', this.o.topUpNano, s, threshold)
  }

  private async autoTopUp(proxyId: string, kind: FundingRefusal['kind'], amountNano: bigint, before: ClientState | undefined, thresholdNano?: bigint): Promise<void> {
    const proxy = proxyId.slice(0, 16)
    if (this.budgetNano !== undefined && this.spentNano + amountNano > this.budgetNano) {
      const reason = `the funding budget is exhausted: ${this.spentNano} of ${this.budgetNano} nanoTON spent, the ${kind} needs ${amountNano}`
      const prev = this.refusals.get(proxyId)
      // Logged once per proxy and amount spent, not on every refresh.
      if (!prev || prev.reason !== reason) this.deps.log.warn(`not funding the client contract with proxy ${proxy}: ${reason}`, { proxy, kind, amountNano: amountNano.toString(), spentNano: this.spentNano.toString(), budgetNano: this.budgetNano.toString() })
      this.refusals.set(proxyId, { proxy: proxyId, kind, amountNano: amountNano.toString(), at: prev?.reason === reason ? prev.at : Date.now(), reason })
      return
    }
    this.refusals.delete(proxyId)
    // Counted (and saved) at once, before anything is awaited or sent, so neither a crash nor runs for other
    // proxies at the same time can spend past the budget.
    this.count(proxyId, amountNano)
    let messages: Awaited<ReturnType<typeof collectMessages>>
    try {
      const c = await this.contractFor(proxyId)
      messages = await collectMessages((via) => c.sendTopUp(via, { amountNano }))
    } catch (err) {
      this.count(proxyId, -amountNano) // nothing was sent
      throw err
    }
    // A wallet that cannot pay would only fail the transfer in its action phase, every refresh, with nothing to show
    // but 402s to the apps: say so once, plainly, with the address to fund, and send nothing.
    const neededNano = messages.reduce((sum, m) => sum + m.value, 0n)
    const walletNano = await this.deps.wallet.balance().catch(() => undefined)
    if (walletNano !== undefined && walletNano < neededNano + WALLET_FEE_MARGIN_NANO) {
      this.count(proxyId, -amountNano)
      const wallet = this.deps.wallet.address.toString()
      if (!this.walletShort.has(proxyId)) {
        this.deps.log.warn(`not funding the client contract with proxy ${proxy}: the node's wallet holds ${walletNano} nanoTON, less than the ${neededNano} the ${kind} sends plus fees; send TON to ${wallet}`, { proxy, kind, neededNano: neededNano.toString(), walletNano: walletNano.toString(), wallet })
      }
      this.walletShort.set(proxyId, { proxy: proxyId, kind, neededNano: neededNano.toString(), walletNano: walletNano.toString(), wallet, at: this.walletShort.get(proxyId)?.at ?? Date.now() })
      return
    }
    this.walletShort.delete(proxyId)
    if (kind === 'deposit') this.deps.log.info('depositing to a new client contract', { proxy, amountNano: amountNano.toString() })
    else this.deps.log.info('topping up the client contract', { proxy, balanceNano: before!.balanceNano.toString(), spendableNano: this.spendableNano(proxyId, before!).toString(), thresholdNano: String(thresholdNano), amountNano: amountNano.toString() })
    try {
      await this.deps.wallet.sendAndConfirm(messages)
    } catch (err) {
      // Given back only when the contract shows the money did not arrive; if that cannot be read, it stays counted.
      const after = await this.state(proxyId).catch(() => null)
      if (after !== null && (after === undefined || after.balanceNano <= (before?.balanceNano ?? 0n))) this.count(proxyId, -amountNano)
      throw err
    }
    await this.state(proxyId)
  }

  private count(proxyId: string, amountNano: bigint): void {
    this.spentNano += amountNano
    this.spentByProxy.set(proxyId, (this.spentByProxy.get(proxyId) ?? 0n) + amountNano)
    if (!this.fundingFile) return
    const saved = { spentNano: this.spentNano.toString(), byProxy: Object.fromEntries([...this.spentByProxy].map(([k, v]) => [k, v.toString()])) }
    fs.writeFileSync(`${this.fundingFile}.tmp`, JSON.stringify(saved))
    fs.renameSync(`${this.fundingFile}.tmp`, this.fundingFile)
  }

  /**
   * The funding budget for /jsonstats: what was put in automatically, what is left, what was refused, what the wallet
   * could not pay, and the top-up threshold in force per proxy (`topUpBelowNano`, raised by the spend rate).
   */
  fundingStats(): Record<string, unknown> {
    const remaining = this.budgetNano === undefined ? null : this.budgetNano > this.spentNano ? this.budgetNano - this.spentNano : 0n
    return {
      budgetNano: this.budgetNano?.toString() ?? null,
      spentNano: this.spentNano.toString(),
      remainingNano: remaining?.toString() ?? null,
      exhausted: this.refusals.size > 0,
      byProxy: Object.fromEntries([...this.spentByProxy].map(([k, v]) => [k, v.toString()])),
      topUpBelowNano: Object.fromEntries([...this.thresholds].map(([k, v]) => [k, v.toString()])),
      refused: [...this.refusals.values()],
      walletShort: [...this.walletShort.values()],
    }
  }

  async topUp(proxyId: string, amountNano: bigint): Promise<void> {
    const c = await this.contractFor(proxyId)
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => c.sendTopUp(via, { amountNano })))
    await this.state(proxyId)
  }

  /** The top-up as a message for the app user's own wallet (TON Connect) to send; the node never holds those funds. */
  async topUpMessage(proxyId: string, amountNano: bigint): Promise<TopUpMessage> {
    const c = await this.contractFor(proxyId)
    const deployed = await this.deps.chain.isDeployed(c.address)
    return clientContract(await this.channels.channel(proxyId), this.deps.wallet.address).topUpMessage({ amountNano, deployed })
  }

  /** Withdraws down to the stake at most; the contract refuses more. */
  async withdraw(proxyId: string, amountNano: bigint): Promise<void> {
    const c = await this.contractFor(proxyId)
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => c.sendWithdraw(via, { value: VOUCHER_MIN_VALUE_NANO, amountNano })))
    await this.state(proxyId)
  }

  /**
   * Closes at once with the proxy's final charge: checked first (signed by this proxy, a final
   * charge, for this client's own contract, never more than the proxy said it charged), then
   * submitted; the contract refunds the rest.
   */
  async closeWithFinalCharge(proxyId: string, voucherB64: string, toldTokens: bigint): Promise<ClientState | undefined> {
    const c = await this.contractFor(proxyId)
    const v = checkVoucher(voucherB64, { kind: 'clientFinalCharge', signer: proxyId, target: c.address, maxTokens: toldTokens })
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => c.sendVoucher(via, { voucher: v })))
    return this.state(proxyId)
  }

  /** Starts closing: the proxy may still charge until the close delay ends. */
  async requestClose(proxyId: string): Promise<ClientState | undefined> {
    const c = await this.contractFor(proxyId)
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => c.sendRequestClose(via, { value: VOUCHER_MIN_VALUE_NANO })))
    return this.state(proxyId)
  }

  /** After the close delay: everything not charged comes back to the wallet. */
  async finishClose(proxyId: string): Promise<ClientState | undefined> {
    const c = await this.contractFor(proxyId)
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => c.sendFinishClose(via, { value: VOUCHER_MIN_VALUE_NANO })))
    return this.state(proxyId)
  }

  /** From the last state read: the contract with this proxy is open and holds more than nothing. */
  isFunded(proxyId: string): boolean {
    const s = this.states.get(proxyId)
    return !!s && s.state === 'active' && s.balanceNano > 0n
  }

  /** Money figures for /jsonstats, from the last state read. */
  stats(proxyId: string): Record<string, unknown> | undefined {
    const s = this.states.get(proxyId)
    if (!s) return undefined
    return { contractState: s.state, balanceNano: s.balanceNano.toString(), stakeNano: s.stakeNano.toString(), chargedOnChainTokens: s.tokensCharged.toString() }
  }
}
