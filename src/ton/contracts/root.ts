// Wrapper for the root contract (contracts/root.tolk): registry, allow-lists, parameters.
import {
  Address,
  Cell,
  Dictionary,
  type Contract,
  type ContractProvider,
  type Sender,
} from '@ton/core'
import { HashKind, Op, type HashKindName } from './opcodes.ts'
import {
  bufferToUint256,
  deriveAddress,
  paramsFromCell,
  paramsToCell,
  proxyInfoToCell,
  ProxyInfoValue,
  rootInitialData,
  Uint256Key,
  type Params,
  type ProxyInfo,
  type RootConfig,
} from './storage.ts'
import { opBody, sendOp } from './message.ts'

export interface SendOpts {
  /** nanoTON attached; what gas does not use comes back as Excesses. */
  value: bigint
  queryId?: bigint
}

/** Everything the root holds, as read by `rootConfig`. Hash lists are lowercase hex. */
export interface RootState {
  owner: Address
  version: number
  uniqueId: number
  params: Params
  proxyImageHashes: string[]
  workerImageHashes: string[]
  modelHashes: string[]
  /** Keyed by the proxy's payment public key, lowercase hex. */
  proxies: Map<string, ProxyInfo>
}

function hashKeys(dict: Cell | null): string[] {
  if (!dict) return []
  const d = Dictionary.loadDirect(Uint256Key, Dictionary.Values.Bool(), dict)
  return d.keys().map((k) => k.toString(16).padStart(64, '0'))
}

export class RootContract implements Contract {
  constructor(
    readonly address: Address,
    readonly init?: { code: Cell; data: Cell },
  ) {}

  static createFromAddress(address: Address): RootContract {
    return new RootContract(address)
  }

  static createFromConfig(config: RootConfig, code: Cell, workchain = 0): RootContract {
    const init = { code, data: rootInitialData(config) }
    return new RootContract(deriveAddress(init, workchain), init)
  }

  /** Deploys with an empty body; the value funds the root's storage. */
  async sendDeploy(provider: ContractProvider, via: Sender, value: bigint) {
    await sendOp(provider, via, value, Cell.EMPTY)
  }

  /** Owner: replaces the parameters (the root assigns paramsVersion). */
  async sendSetParams(provider: ContractProvider, via: Sender, opts: SendOpts & { params: Params }) {
    const body = opBody(Op.rootSetParams, opts.queryId)
      .storeRef(paramsToCell(opts.params))
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  /** Owner: adds a 32-byte hash to an allow-list. */
  async sendAllowHash(provider: ContractProvider, via: Sender, opts: SendOpts & { kind: HashKindName; hash: Buffer }) {
    await sendOp(provider, via, opts.value, hashBody(Op.rootAllowHash, opts))
  }

  /** Owner: removes a 32-byte hash from an allow-list. */
  async sendRevokeHash(provider: ContractProvider, via: Sender, opts: SendOpts & { kind: HashKindName; hash: Buffer }) {
    await sendOp(provider, via, opts.value, hashBody(Op.rootRevokeHash, opts))
  }

  /** Owner: registers (or updates) a proxy under its payment public key. */
  async sendRegisterProxy(
    provider: ContractProvider,
    via: Sender,
    opts: SendOpts & { publicKey: Buffer; info: ProxyInfo },
  ) {
    const body = opBody(Op.rootRegisterProxy, opts.queryId)
      .storeUint(bufferToUint256(opts.publicKey), 256)
      .storeRef(proxyInfoToCell(opts.info))
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  async sendUnregisterProxy(provider: ContractProvider, via: Sender, opts: SendOpts & { publicKey: Buffer }) {
    const body = opBody(Op.rootUnregisterProxy, opts.queryId)
      .storeUint(bufferToUint256(opts.publicKey), 256)
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  async sendChangeOwner(provider: ContractProvider, via: Sender, opts: SendOpts & { newOwner: Address }) {
    const body = opBody(Op.rootChangeOwner, opts.queryId)
      .storeAddress(opts.newOwner)
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  /** Everything in one get-method call. */
  async getState(provider: ContractProvider): Promise<RootState> {
    const { stack } = await provider.get('rootConfig', [])
    const owner = stack.readAddress()
    const version = stack.readNumber()
    const uniqueId = stack.readNumber()
    const params = paramsFromCell(stack.readCell())
    const proxyImageHashes = hashKeys(stack.readCellOpt())
    const workerImageHashes = hashKeys(stack.readCellOpt())
    const modelHashes = hashKeys(stack.readCellOpt())
    const proxiesCell = stack.readCellOpt()
    const proxies = new Map<string, ProxyInfo>()
    if (proxiesCell) {
      const d = Dictionary.loadDirect(Uint256Key, ProxyInfoValue, proxiesCell)
      for (const [k, v] of d) proxies.set(k.toString(16).padStart(64, '0'), v)
    }
    return { owner, version, uniqueId, params, proxyImageHashes, workerImageHashes, modelHashes, proxies }
  }

  async getOwner(provider: ContractProvider): Promise<Address> {
    return (await provider.get('owner', [])).stack.readAddress()
  }

  async getVersion(provider: ContractProvider): Promise<number> {
    return (await provider.get('version', [])).stack.readNumber()
  }

  async getParams(provider: ContractProvider): Promise<Params> {
    const { stack } = await provider.get('params', [])
    return {
      paramsVersion: stack.readNumber(),
      pricePerTokenNano: stack.readBigNumber(),
      workerFeePerTokenNano: stack.readBigNumber(),
      promptMult: stack.readNumber(),
      cachedMult: stack.readNumber(),
      completionMult: stack.readNumber(),
      reasoningMult: stack.readNumber(),
      audioSecondMult: stack.readNumber(),
      proxyCloseDelaySec: stack.readNumber(),
      clientCloseDelaySec: stack.readNumber(),
      minProxyStakeNano: stack.readBigNumber(),
      minClientStakeNano: stack.readBigNumber(),
    }
  }

  async getIsHashAllowed(provider: ContractProvider, kind: HashKindName, hash: Buffer): Promise<boolean> {
    const { stack } = await provider.get('isHashAllowed', [
      { type: 'int', value: BigInt(HashKind[kind]) },
      { type: 'int', value: bufferToUint256(hash) },
    ])
    return stack.readBoolean()
  }
}

function hashBody(op: number, opts: SendOpts & { kind: HashKindName; hash: Buffer }): Cell {
  return opBody(op, opts.queryId)
    .storeUint(HashKind[opts.kind], 8)
    .storeUint(bufferToUint256(opts.hash), 256)
    .endCell()
}
