// A proxy operator's handle on its own entry in the root's registry: register permissionlessly
// (allowed image, stake, endpoint, signed by the payment key), update the endpoint, add stake,
// unregister and take the stake back after the close delay. The code behind `cocoon proxy
// register|update|unregister` and `cocoon devnet`'s proxies.
import type { Address, OpenedContract, Sender } from '@ton/core'
import type { KeyPair } from '@ton/crypto'
import { RootContract, signRegistration, type RootState } from '../contracts/root.ts'
import type { ProxyEndpoint, ProxyInfo } from '../contracts/storage.ts'
import type { TxSummary } from '../contracts/transactions.ts'
import type { CallOpts, Chain } from './chain.ts'
import { ROOT_OP_VALUE_NANO } from './constants.ts'
import { collectMessages, type NodeWallet } from './wallet.ts'

export interface RegisterOptions extends CallOpts {
  /** 32-byte image hash the proxy runs (hex); must be on the root's proxy allow-list. */
  imageHash: string
  /** nanoTON to stake; default the root's current minProxyStakeNano. */
  stakeNano?: bigint
}

export class ProxyRegistry {
  readonly root: RootContract

  constructor(
    readonly chain: Chain,
    /** The operator wallet: registers, owns the entry and gets the stake back. */
    readonly wallet: NodeWallet,
    /** The proxy's payment key pair: the registry key, and it signs the registration. */
    readonly paymentKey: KeyPair,
    rootAddress: Address,
    /** nanoTON attached per op for gas; the rest comes back. */
    readonly valueNano: bigint = ROOT_OP_VALUE_NANO,
  ) {
    this.root = RootContract.createFromAddress(rootAddress)
  }

  get publicKeyHex(): string {
    return this.paymentKey.publicKey.toString('hex')
  }

  state(opts: CallOpts = {}): Promise<RootState> {
    return this.chain.getRootState(this.root.address, opts)
  }

  /** This proxy's registry entry, if any. */
  async entry(opts: CallOpts = {}): Promise<ProxyInfo | undefined> {
    return (await this.state(opts)).proxies.get(this.publicKeyHex)
  }

  /** Registers with `endpoint`; rejects with ContractRejectedError naming the root's exit code on refusal. */
  async register(endpoint: ProxyEndpoint, o: RegisterOptions): Promise<TxSummary[]> {
    const stakeNano = o.stakeNano ?? (await this.state(o)).params.minProxyStakeNano
    const registration = signRegistration(
      { root: this.root.address, owner: this.wallet.address, imageHash: Buffer.from(o.imageHash, 'hex'), ...endpoint },
      this.paymentKey.secretKey,
    )
    return this.run((r, via) => r.sendRegisterProxy(via, { value: this.valueNano, registration, stakeNano }), o)
  }

  update(endpoint: ProxyEndpoint, opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.run((r, via) => r.sendUpdateProxy(via, { value: this.valueNano, publicKey: this.paymentKey.publicKey, endpoint }), opts)
  }

  addStake(amountNano: bigint, opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.run((r, via) => r.sendAddProxyStake(via, { publicKey: this.paymentKey.publicKey, amountNano }), opts)
  }

  /** Leaves the registry; the stake unlocks after the root's proxy close delay. */
  unregister(opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.run((r, via) => r.sendUnregisterProxy(via, { value: this.valueNano, publicKey: this.paymentKey.publicKey }), opts)
  }

  /** After the delay: the stake comes back to the operator wallet and the entry is removed. */
  withdrawStake(opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.run((r, via) => r.sendWithdrawProxyStake(via, { value: this.valueNano, publicKey: this.paymentKey.publicKey }), opts)
  }

  private async run(build: (root: OpenedContract<RootContract>, via: Sender) => Promise<void>, opts: CallOpts): Promise<TxSummary[]> {
    const opened = this.chain.open(this.root)
    return this.wallet.sendAndConfirm(await collectMessages((via) => build(opened, via)), opts)
  }
}
