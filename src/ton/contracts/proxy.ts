// Wrapper for the proxy contract (contracts/proxy.tolk): stake, collected funds, state
// commits, margin withdrawal, worker payouts and close.
import {
  Address,
  beginCell,
  Cell,
  type Contract,
  type ContractProvider,
  type Sender,
} from '@ton/core'
import { opBody, sendOp } from './message.ts'
import { channelStateName, DEPOSIT_GAS_NANO, Op, type ChannelStateName } from './opcodes.ts'
import type { SendOpts } from './root.ts'
import {
  bufferToUint256,
  deriveAddress,
  paramsFromCell,
  proxyInitialData,
  uint256ToBuffer,
  type Params,
  type ProxyConfig,
} from './storage.ts'

export interface ProxyState {
  state: ChannelStateName
  /** Locked until close. */
  stakeNano: bigint
  /** Stake plus charges collected, minus payouts and withdrawals. */
  fundsNano: bigint
  /** Still owed to workers for tokens already charged to clients. */
  owedNano: bigint
  /** What the owner may withdraw now. */
  withdrawableNano: bigint
  tokensCharged: bigint
  tokensPaid: bigint
  commitSeqno: bigint
  /** 32-byte hash of the last state commit. */
  commitHash: Buffer
  /** Unix time the close delay ends (0 unless closing). */
  unlockAt: number
}

/** The receipt log as of the last state commit (get_receipts_root). */
export interface ReliabilityHash {
  /** The state commit that carried it (0 before the first). */
  seqno: bigint
  /** SHA-256 of the record's canonical JSON; 32 zero bytes when the commit stated none. */
  hash: Buffer
}

export interface ReceiptsRoot {
  /** The state commit that carried it (0 before the first). */
  seqno: bigint
  /** Representation hash of the receipts Dictionary<uint64, Cell>; 32 zero bytes while empty. */
  root: Buffer
  count: bigint
}

export interface ProxyIdentity {
  owner: Address
  root: Address
  publicKey: Buffer
  params: Params
}

export class ProxyContract implements Contract {
  constructor(
    readonly address: Address,
    readonly init?: { code: Cell; data: Cell },
  ) {}

  static createFromAddress(address: Address): ProxyContract {
    return new ProxyContract(address)
  }

  static createFromConfig(config: ProxyConfig, code: Cell, workchain = 0): ProxyContract {
    const init = { code, data: proxyInitialData(config) }
    return new ProxyContract(deriveAddress(init, workchain), init)
  }

  /**
   * Adds stake; the first call deploys the contract. Attaches `amountNano` plus
   * `gasNano` (default DEPOSIT_GAS_NANO); unused gas comes back.
   */
  async sendAddStake(
    provider: ContractProvider,
    via: Sender,
    opts: { amountNano: bigint; gasNano?: bigint; queryId?: bigint },
  ) {
    const body = opBody(Op.proxyAddStake, opts.queryId)
      .storeCoins(opts.amountNano)
      .endCell()
    await sendOp(provider, via, opts.amountNano + (opts.gasNano ?? DEPOSIT_GAS_NANO), body)
  }

  /**
   * Owner: records a (seqno, 32-byte hash) state commit with the receipt log's root and count;
   * seqno must grow and the count never shrinks. Without `receipts`, the last committed ones are
   * not known here, so an empty log is committed (which fails once receipts were committed).
   * `reliabilityHash`: the SHA-256 of the reliability record committed with it (default: none, zeros).
   */
  async sendCommitState(provider: ContractProvider, via: Sender, opts: SendOpts & { seqno: bigint; stateHash: Buffer; receipts?: { root: Buffer; count: bigint }; reliabilityHash?: Buffer }) {
    const body = commitStateBody(opts)
    await sendOp(provider, via, opts.value, body)
  }

  /** Owner: withdraws margin (at most `withdrawableNano`). */
  async sendWithdraw(provider: ContractProvider, via: Sender, opts: SendOpts & { amountNano: bigint }) {
    const body = opBody(Op.proxyWithdraw, opts.queryId)
      .storeCoins(opts.amountNano)
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  /** Owner: starts the close. */
  async sendRequestClose(provider: ContractProvider, via: Sender, opts: SendOpts) {
    await sendOp(provider, via, opts.value, opBody(Op.proxyRequestClose, opts.queryId).endCell())
  }

  /** Owner: finishes the close; everything the contract holds goes to the owner. */
  async sendFinishClose(provider: ContractProvider, via: Sender, opts: SendOpts) {
    await sendOp(provider, via, opts.value, opBody(Op.proxyFinishClose, opts.queryId).endCell())
  }

  async getState(provider: ContractProvider): Promise<ProxyState> {
    const { stack } = await provider.get('proxyState', [])
    return {
      state: channelStateName(stack.readNumber()),
      stakeNano: stack.readBigNumber(),
      fundsNano: stack.readBigNumber(),
      owedNano: stack.readBigNumber(),
      withdrawableNano: stack.readBigNumber(),
      tokensCharged: stack.readBigNumber(),
      tokensPaid: stack.readBigNumber(),
      commitSeqno: stack.readBigNumber(),
      commitHash: uint256ToBuffer(stack.readBigNumber()),
      unlockAt: stack.readNumber(),
    }
  }

  async getReceiptsRoot(provider: ContractProvider): Promise<ReceiptsRoot> {
    const { stack } = await provider.get('get_receipts_root', [])
    return { seqno: stack.readBigNumber(), root: uint256ToBuffer(stack.readBigNumber()), count: stack.readBigNumber() }
  }

  /** The reliability record's hash as of the last commit (zeros when that commit stated none). */
  async getReliabilityHash(provider: ContractProvider): Promise<ReliabilityHash> {
    const { stack } = await provider.get('get_reliability_hash', [])
    return { seqno: stack.readBigNumber(), hash: uint256ToBuffer(stack.readBigNumber()) }
  }

  async getIdentity(provider: ContractProvider): Promise<ProxyIdentity> {
    const { stack } = await provider.get('proxyIdentity', [])
    return {
      owner: stack.readAddress(),
      root: stack.readAddress(),
      publicKey: uint256ToBuffer(stack.readBigNumber()),
      params: paramsFromCell(stack.readCell()),
    }
  }

  /** The client contract this proxy contract accepts charges from, computed on-chain. */
  async getClientContractAddress(provider: ContractProvider, owner: Address): Promise<Address> {
    const { stack } = await provider.get('clientContractAddressOf', [
      { type: 'slice', cell: beginCell().storeAddress(owner).endCell() },
    ])
    return stack.readAddress()
  }

  /** The worker contract this proxy contract pays, computed on-chain. */
  async getWorkerContractAddress(provider: ContractProvider, owner: Address): Promise<Address> {
    const { stack } = await provider.get('workerContractAddressOf', [
      { type: 'slice', cell: beginCell().storeAddress(owner).endCell() },
    ])
    return stack.readAddress()
  }
}

/** The body of a ProxyCommitState message. */
export function commitStateBody(opts: { queryId?: bigint; seqno: bigint; stateHash: Buffer; receipts?: { root: Buffer; count: bigint }; reliabilityHash?: Buffer }): Cell {
  return opBody(Op.proxyCommitState, opts.queryId)
    .storeUint(opts.seqno, 64)
    .storeUint(bufferToUint256(opts.stateHash), 256)
    .storeUint(bufferToUint256(opts.receipts?.root ?? Buffer.alloc(32)), 256)
    .storeUint(opts.receipts?.count ?? 0n, 64)
    .storeUint(bufferToUint256(opts.reliabilityHash ?? Buffer.alloc(32)), 256)
    .endCell()
}

/** A ProxyCommitState body as read back from a transaction (for audits). */
export interface CommitStateBody {
  queryId: bigint
  seqno: bigint
  stateHash: Buffer
  receiptsRoot: Buffer
  receiptsCount: bigint
  /** Zeros when the commit stated no reliability record, or predates the field (a body without it). */
  reliabilityHash: Buffer
}

/** Parses a ProxyCommitState body; undefined when the cell is not one. */
export function parseCommitStateBody(body: Cell): CommitStateBody | undefined {
  try {
    const s = body.beginParse()
    if (s.remainingBits < 32 || s.loadUint(32) !== Op.proxyCommitState) return undefined
    return {
      queryId: s.loadUintBig(64),
      seqno: s.loadUintBig(64),
      stateHash: uint256ToBuffer(s.loadUintBig(256)),
      receiptsRoot: uint256ToBuffer(s.loadUintBig(256)),
      receiptsCount: s.loadUintBig(64),
      reliabilityHash: s.remainingBits >= 256 ? uint256ToBuffer(s.loadUintBig(256)) : Buffer.alloc(32),
    }
  } catch {
    return undefined
  }
}
