// The worker's side of payments on chain: claim payout vouchers from its worker contract past a threshold or on demand.
import type { Address } from '@ton/core'
import { type Chain, collectMessages, type NodeWallet } from '../ton/chain-client/index.ts'
import { checkVoucher, type RootState, type SignedVoucher } from '../ton/contracts/index.ts'
import type { Logger } from '../core/log.ts'
import { ChannelLookup, workerContract } from './channels.ts'
import type { PartyLedger } from './party-ledger.ts'

/** Claim once this much (nanoTON) is unclaimed. */
export const PAYOUT_THRESHOLD_NANO = 100_000_000n

export class WorkerPayouts {
  private inFlight = new Map<string, Promise<bigint>>()
  private readonly channels: ChannelLookup

  constructor(
    private readonly deps: { chain: Chain; wallet: NodeWallet; root: Address; rootState: () => RootState | undefined; ledger: PartyLedger; log: Logger },
    private readonly thresholdNano = PAYOUT_THRESHOLD_NANO,
  ) {
    this.channels = new ChannelLookup(deps)
  }

  private async contractFor(proxyId: string) {
    const ch = await this.channels.channel(proxyId)
    return { contract: this.deps.chain.open(workerContract(ch, this.deps.wallet.address)), feeNano: ch.params.workerFeePerTokenNano }
  }

  /** This worker's worker contract with `proxyId` (raw address): the only target a payout voucher may have. */
  async contractAddress(proxyId: string): Promise<string> {
    return (await this.contractFor(proxyId)).contract.address.toRawString()
  }

  /** Tokens paid to this worker on chain by this proxy's worker contract. */
  async paidTokens(proxyId: string): Promise<bigint> {
    const { contract } = await this.contractFor(proxyId)
    if (!(await this.deps.chain.isDeployed(contract.address))) return 0n
    return (await contract.getState()).tokensPaid
  }

  /** Called with each newer voucher: claims it when enough is unclaimed. */
  onVoucher(proxyId: string): void {
    void this.claim(proxyId, false).catch((err) => this.deps.log.warn('payout claim failed; will retry with the next voucher', { error: err }))
  }

  /**
   * Submits the newest voucher from `proxyId` to the worker contract if what it adds is past the
   * threshold (or `force`). Returns the tokens paid on chain afterwards.
   */
  claim(proxyId: string, force: boolean): Promise<bigint> {
    const running = this.inFlight.get(proxyId)
    // A forced claim must not be answered by an unforced one already under way (it may have claimed nothing).
    if (running) return force ? running.catch(() => 0n).then(() => this.claim(proxyId, force)) : running
    const p = this.doClaim(proxyId, force).finally(() => this.inFlight.delete(proxyId))
    this.inFlight.set(proxyId, p)
    return p
  }

  private async doClaim(proxyId: string, force: boolean): Promise<bigint> {
    const rec = this.deps.ledger.get(proxyId)
    const { contract, feeNano } = await this.contractFor(proxyId)
    const paid = (await this.deps.chain.isDeployed(contract.address)) ? (await contract.getState()).tokensPaid : 0n
    this.deps.ledger.recordOnChain(proxyId, paid)
    if (!rec.voucher || rec.vouchered <= paid) return paid
    if (!force && (rec.vouchered - paid) * feeNano < this.thresholdNano) return paid
    // Check it before paying gas for it: signed by this proxy, for this worker's own contract.
    let v: SignedVoucher
    try {
      v = checkVoucher(rec.voucher, { kind: 'workerPayout', signer: proxyId, target: contract.address })
    } catch {
      // Kept from before vouchers were checked on receipt: drop it, so the next good voucher is taken.
      this.deps.ledger.dropVoucher(proxyId, rec.voucher)
      this.deps.log.warn('dropped a stored payout voucher that is not valid for this worker contract; no transaction sent', { proxy: proxyId.slice(0, 16) })
      throw new Error('the proxy handed over a payout voucher that is not valid for this worker contract')
    }
    await this.deps.wallet.sendAndConfirm(await collectMessages((via) => contract.sendPayout(via, { voucher: v })))
    const after = (await contract.getState()).tokensPaid
    this.deps.ledger.recordOnChain(proxyId, after)
    this.deps.log.info('payout claimed', { proxy: proxyId.slice(0, 16), tokensPaid: after.toString() })
    return after
  }
}
