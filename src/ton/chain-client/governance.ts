// Owner operations on a deployed root, each one sent from the owner's wallet and confirmed on chain:
// the code behind `cocoon root …`, deployRoot and tests that change the allow-lists.
import type { Address, OpenedContract, Sender } from '@ton/core'
import { RootContract, type RootState } from '../contracts/root.ts'
import type { HashKindName } from '../contracts/opcodes.ts'
import type { Params } from '../contracts/storage.ts'
import type { CallOpts, Chain } from './chain.ts'
import { MAX_MESSAGES_PER_TRANSFER, ROOT_OP_VALUE_NANO } from './constants.ts'
import type { TxSummary } from '../contracts/transactions.ts'
import { collectMessages, type NodeWallet, type WalletMessage } from './wallet.ts'

/** One allow-list change. */
export interface HashChange {
  kind: HashKindName
  /** 32 bytes as 64 hex characters. */
  hash: string
}

/** Lowercase 64-hex-char hash, or RangeError. */
export function normalizeHash(hash: string, what = 'hash'): string {
  const h = hash.trim().toLowerCase().replace(/^0x/, '')
  if (!/^[0-9a-f]{64}$/.test(h)) throw new RangeError(`${what} must be 32 bytes as 64 hex characters, got ${JSON.stringify(hash)}`)
  return h
}

/** The root's list for `kind`. */
export function hashList(state: RootState, kind: HashKindName): string[] {
  return kind === 'proxyImage' ? state.proxyImageHashes : kind === 'workerImage' ? state.workerImageHashes : state.modelHashes
}

/**
 * The owner's handle on a root. Every method sends from `wallet`, waits for the root's transaction
 * and rejects with ContractRejectedError (exit code named) when the root refuses, e.g. NotOwner.
 */
export class RootGovernance {
  readonly root: RootContract

  constructor(
    readonly chain: Chain,
    readonly wallet: NodeWallet,
    address: Address,
    /** nanoTON attached per op; the rest comes back. Default ROOT_OP_VALUE_NANO (0.05 TON). */
    readonly valueNano: bigint = ROOT_OP_VALUE_NANO,
  ) {
    this.root = RootContract.createFromAddress(address)
  }

  get address(): Address {
    return this.root.address
  }

  state(opts: CallOpts = {}): Promise<RootState> {
    return this.chain.getRootState(this.address, opts)
  }

  /** Replaces the parameters with `params` merged over the current ones; the root bumps paramsVersion. */
  async setParams(params: Partial<Omit<Params, 'paramsVersion'>>, opts: CallOpts = {}): Promise<RootState> {
    const current = (await this.state(opts)).params
    await this.run((r, via) => r.sendSetParams(via, { value: this.valueNano, params: { ...current, ...params } }), opts)
    return this.state(opts)
  }

  allowHash(kind: HashKindName, hash: string, opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.applyHashes([{ kind, hash }], 'allow', opts)
  }

  revokeHash(kind: HashKindName, hash: string, opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.applyHashes([{ kind, hash }], 'revoke', opts)
  }

  /** Allows or revokes several hashes, up to MAX_MESSAGES_PER_TRANSFER per transfer. */
  async applyHashes(changes: HashChange[], action: 'allow' | 'revoke', opts: CallOpts = {}): Promise<TxSummary[]> {
    const messages: WalletMessage[] = []
    for (const c of changes) {
      const hash = Buffer.from(normalizeHash(c.hash), 'hex')
      messages.push(
        ...(await collectMessages((via) =>
          action === 'allow'
            ? this.chain.open(this.root).sendAllowHash(via, { value: this.valueNano, kind: c.kind, hash })
            : this.chain.open(this.root).sendRevokeHash(via, { value: this.valueNano, kind: c.kind, hash }),
        )),
      )
    }
    return this.sendBatched(messages, opts)
  }

  /** Delists a proxy (governance): recorded on the root for good; its stake returns to its owner after the close delay. */
  delistProxy(publicKey: Buffer, reason = 0, opts: CallOpts = {}): Promise<TxSummary[]> {
    return this.run((r, via) => r.sendDelistProxy(via, { value: this.valueNano, publicKey, reason }), opts)
  }

  /** Sends prepared messages in transfers of at most MAX_MESSAGES_PER_TRANSFER, in order. */
  async sendBatched(messages: WalletMessage[], opts: CallOpts = {}): Promise<TxSummary[]> {
    const out: TxSummary[] = []
    for (let i = 0; i < messages.length; i += MAX_MESSAGES_PER_TRANSFER) {
      out.push(...(await this.wallet.sendAndConfirm(messages.slice(i, i + MAX_MESSAGES_PER_TRANSFER), opts)))
    }
    return out
  }

  private async run(build: (root: OpenedContract<RootContract>, via: Sender) => Promise<void>, opts: CallOpts): Promise<TxSummary[]> {
    const opened = this.chain.open(this.root)
    return this.wallet.sendAndConfirm(await collectMessages((via) => build(opened, via)), opts)
  }
}
