// Wrapper for the worker contract (contracts/worker.tolk): cumulative payout vouchers.
import { Address, Cell, SendMode, type Contract, type ContractProvider, type Sender } from '@ton/core'
import { VOUCHER_MIN_VALUE_NANO } from './opcodes.ts'
import { deriveAddress, uint256ToBuffer, workerInitialData, type WorkerConfig } from './storage.ts'
import { voucherMessageBody, type SignedVoucher } from './vouchers.ts'

export interface WorkerState {
  owner: Address
  proxy: Address
  proxyPublicKey: Buffer
  /** Cumulative adjusted tokens paid out. */
  tokensPaid: bigint
}

export class WorkerContract implements Contract {
  constructor(
    readonly address: Address,
    readonly init?: { code: Cell; data: Cell },
  ) {}

  static createFromAddress(address: Address): WorkerContract {
    return new WorkerContract(address)
  }

  static createFromConfig(config: WorkerConfig, code: Cell, workchain = 0): WorkerContract {
    const init = { code, data: workerInitialData(config) }
    return new WorkerContract(deriveAddress(init, workchain), init)
  }

  /**
   * Applies a payout voucher (anyone may submit it; the first one deploys the contract).
   * The worker wallet receives the payout plus what gas does not use.
   */
  async sendPayout(provider: ContractProvider, via: Sender, opts: { voucher: SignedVoucher; value?: bigint; queryId?: bigint }) {
    await provider.internal(via, {
      value: opts.value ?? VOUCHER_MIN_VALUE_NANO,
      sendMode: SendMode.PAY_GAS_SEPARATELY,
      body: voucherMessageBody(opts.voucher, opts.queryId),
    })
  }

  async getState(provider: ContractProvider): Promise<WorkerState> {
    const { stack } = await provider.get('workerState', [])
    return {
      owner: stack.readAddress(),
      proxy: stack.readAddress(),
      proxyPublicKey: uint256ToBuffer(stack.readBigNumber()),
      tokensPaid: stack.readBigNumber(),
    }
  }
}
