// Wrapper for the client contract (contracts/client.tolk): deposit, charge vouchers,
// withdrawal down to the stake, and both ways to close.
import {
  Address,
  beginCell,
  Cell,
  storeStateInit,
  type Contract,
  type ContractProvider,
  type Sender,
} from '@ton/core'
import { opBody, sendOp } from './message.ts'
import { channelStateName, DEPOSIT_GAS_NANO, Op, VOUCHER_MIN_VALUE_NANO, type ChannelStateName } from './opcodes.ts'
import type { SendOpts } from './root.ts'
import {
  clientInitialData,
  deriveAddress,
  paramsFromCell,
  uint256ToBuffer,
  type ClientConfig,
  type Params,
} from './storage.ts'
import { voucherMessageBody, type SignedVoucher } from './vouchers.ts'

export interface ClientState {
  state: ChannelStateName
  /** Deposited and not yet charged; includes the stake. */
  balanceNano: bigint
  /** The part of the balance that cannot be withdrawn while open. */
  stakeNano: bigint
  /** Cumulative adjusted tokens charged. */
  tokensCharged: bigint
  /** Unix time the close delay ends (0 unless closing). */
  unlockAt: number
}

export interface ClientIdentity {
  owner: Address
  proxy: Address
  proxyPublicKey: Buffer
  params: Params
}

/** The body of a client contract top-up: opcode, query id, the amount to credit. */
export function topUpBody(amountNano: bigint, queryId?: bigint): Cell {
  return opBody(Op.clientTopUp, queryId).storeCoins(amountNano).endCell()
}

/** A top-up message for an external wallet to send. */
export interface TopUpMessage {
  address: Address
  valueNano: bigint
  body: Cell
  stateInit?: Cell
}

export class ClientContract implements Contract {
  constructor(
    readonly address: Address,
    readonly init?: { code: Cell; data: Cell },
  ) {}

  static createFromAddress(address: Address): ClientContract {
    return new ClientContract(address)
  }

  static createFromConfig(config: ClientConfig, code: Cell, workchain = 0): ClientContract {
    const init = { code, data: clientInitialData(config) }
    return new ClientContract(deriveAddress(init, workchain), init)
  }

  /**
   * Deposits `amountNano`; the first call deploys the contract. Attaches the amount plus
   * `gasNano` (default DEPOSIT_GAS_NANO); unused gas comes back.
   */
  async sendTopUp(provider: ContractProvider, via: Sender, opts: { amountNano: bigint; gasNano?: bigint; queryId?: bigint }) {
    await sendOp(provider, via, opts.amountNano + (opts.gasNano ?? DEPOSIT_GAS_NANO), topUpBody(opts.amountNano, opts.queryId))
  }

  /**
   * The top-up as one message for someone else's wallet to send (TON Connect's sendTransaction):
   * the contract address, the value (amount plus gas; unused gas comes back to the payer), the
   * body, and the state init when the contract is not deployed yet (the first deposit deploys it).
   */
  topUpMessage(opts: { amountNano: bigint; gasNano?: bigint; queryId?: bigint; deployed: boolean }): TopUpMessage {
    return {
      address: this.address,
      valueNano: opts.amountNano + (opts.gasNano ?? DEPOSIT_GAS_NANO),
      body: topUpBody(opts.amountNano, opts.queryId),
      stateInit: !opts.deployed && this.init ? beginCell().store(storeStateInit(this.init)).endCell() : undefined,
    }
  }

  /**
   * Applies a charge or final-charge voucher (anyone may submit it). `value` defaults to
   * VOUCHER_MIN_VALUE_NANO; what gas does not use comes back to the sender.
   */
  async sendVoucher(provider: ContractProvider, via: Sender, opts: { voucher: SignedVoucher; value?: bigint; queryId?: bigint }) {
    await sendOp(provider, via, opts.value ?? VOUCHER_MIN_VALUE_NANO, voucherMessageBody(opts.voucher, opts.queryId))
  }

  /** Owner: withdraws `amountNano`, never below the stake. */
  async sendWithdraw(provider: ContractProvider, via: Sender, opts: SendOpts & { amountNano: bigint }) {
    const body = opBody(Op.clientWithdraw, opts.queryId)
      .storeCoins(opts.amountNano)
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  /** Owner: starts the close (the proxy may still charge until the delay passes). */
  async sendRequestClose(provider: ContractProvider, via: Sender, opts: SendOpts) {
    await sendOp(provider, via, opts.value, opBody(Op.clientRequestClose, opts.queryId).endCell())
  }

  /** Owner: after the close delay, takes back everything not charged. */
  async sendFinishClose(provider: ContractProvider, via: Sender, opts: SendOpts) {
    await sendOp(provider, via, opts.value, opBody(Op.clientFinishClose, opts.queryId).endCell())
  }

  async getState(provider: ContractProvider): Promise<ClientState> {
    const { stack } = await provider.get('clientState', [])
    return {
      state: channelStateName(stack.readNumber()),
      balanceNano: stack.readBigNumber(),
      stakeNano: stack.readBigNumber(),
      tokensCharged: stack.readBigNumber(),
      unlockAt: stack.readNumber(),
    }
  }

  async getIdentity(provider: ContractProvider): Promise<ClientIdentity> {
    const { stack } = await provider.get('clientIdentity', [])
    return {
      owner: stack.readAddress(),
      proxy: stack.readAddress(),
      proxyPublicKey: uint256ToBuffer(stack.readBigNumber()),
      params: paramsFromCell(stack.readCell()),
    }
  }
}
