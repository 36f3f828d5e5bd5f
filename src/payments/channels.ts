// Where a proxy's payment channels live on chain: the proxy contract and, per client or worker wallet, its
// client or worker contract. Every party derives the same addresses from the root, the proxy's key and owner.
import { Address } from '@ton/core'
import { contractCodes, type ContractCodes, ProxyContract, ClientContract, WorkerContract, type Params, type RootState } from '../ton/contracts/index.ts'
import { nodeWalletContract, type Chain } from '../ton/chain-client/index.ts'

export interface ProxyChannel {
  root: Address
  /** The proxy operator's wallet, owner of the proxy contract. */
  owner: Address
  /** The proxy's Ed25519 payment key (32 bytes), which signs vouchers. */
  paymentKey: Buffer
  params: Params
  codes: ContractCodes
}

/** The proxy contract of a channel. */
export function proxyContract(ch: ProxyChannel): ProxyContract {
  return ProxyContract.createFromConfig({ owner: ch.owner, root: ch.root, publicKey: ch.paymentKey, params: ch.params, codes: { client: ch.codes.client, worker: ch.codes.worker } }, ch.codes.proxy)
}

/** The client contract of `clientWallet` on this proxy. */
export function clientContract(ch: ProxyChannel, clientWallet: Address): ClientContract {
  return ClientContract.createFromConfig({ owner: clientWallet, proxy: proxyContract(ch).address, proxyPublicKey: ch.paymentKey, params: ch.params }, ch.codes.client)
}

/** The worker contract of `workerWallet` on this proxy. */
export function workerContract(ch: ProxyChannel, workerWallet: Address): WorkerContract {
  return WorkerContract.createFromConfig({ owner: workerWallet, proxy: proxyContract(ch).address, proxyPublicKey: ch.paymentKey }, ch.codes.worker)
}

/**
 * The wallet a client's TLS key controls. A client's identity key is its wallet key, so the TLS
 * handshake itself proves it may spend from that wallet's client contract.
 */
export function walletOfKey(publicKey: Uint8Array): Address {
  return nodeWalletContract(Buffer.from(publicKey)).address
}

/**
 * The one lookup of the channels a client or worker has with proxies: each found once in the root's registry
 * (by the proxy's payment key) and then kept, like the proxy keeps the channel it started with.
 */
export class ChannelLookup {
  private readonly channels = new Map<string, Promise<ProxyChannel>>()

  constructor(private readonly deps: { chain: Chain; root: Address; rootState: () => RootState | undefined }) {}

  /** The channel with proxy `proxyId` (its payment key, hex); rejects if the root does not list that proxy. */
  channel(proxyId: string): Promise<ProxyChannel> {
    let ch = this.channels.get(proxyId)
    if (!ch) {
      ch = (async () => channelFromRoot(this.deps.root, this.deps.rootState() ?? (await this.deps.chain.getRootState(this.deps.root)), proxyId))()
      this.channels.set(proxyId, ch)
      ch.catch(() => this.channels.delete(proxyId))
    }
    return ch
  }

  /** The proxies looked up so far. */
  known(): string[] {
    return [...this.channels.keys()]
  }
}

/** The channel of a registered proxy, found in the root's registry by its payment key. */
export async function channelFromRoot(root: Address, state: RootState, paymentKeyHex: string): Promise<ProxyChannel> {
  const info = state.proxies.get(paymentKeyHex.toLowerCase())
  if (!info) throw new Error(`proxy ${paymentKeyHex.slice(0, 16)}… is not registered on the root`)
  return { root, owner: info.owner, paymentKey: Buffer.from(paymentKeyHex, 'hex'), params: state.params, codes: await contractCodes() }
}
