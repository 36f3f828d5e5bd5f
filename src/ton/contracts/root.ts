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
import { sign } from '@ton/crypto'
import {
  bufferToUint256,
  DelistRecordValue,
  deriveAddress,
  endpointToCell,
  paramsFromCell,
  paramsToCell,
  ProxyInfoValue,
  registrationCell,
  rootInitialData,
  Uint256Key,
  type DelistRecord,
  type Params,
  type ProxyEndpoint,
  type ProxyInfo,
  type ProxyRegistration,
  type RootConfig,
} from './storage.ts'
import { opBody, sendOp } from './message.ts'
import { DEPOSIT_GAS_NANO } from './opcodes.ts'

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
  /** Every registry entry (listed, leaving, delisted), keyed by the proxy's payment public key, lowercase hex. */
  proxies: Map<string, ProxyInfo>
  /** Governance record of delisted proxy keys, lowercase hex. */
  delisted: Map<string, DelistRecord>
}

/** A proxy registration: what it registers and the signature of its payment key over it. */
export interface SignedRegistration extends ProxyRegistration {
  /** The proxy's Ed25519 payment public key (32 bytes). */
  publicKey: Buffer
  /** 64-byte Ed25519 signature over registrationCell(...).hash(). */
  signature: Buffer
}

/** Signs a registration with the proxy's payment key (64-byte Ed25519 secret key). */
export function signRegistration(r: ProxyRegistration, secretKey: Buffer): SignedRegistration {
  return { ...r, publicKey: secretKey.subarray(32), signature: sign(registrationCell(r).hash(), secretKey) }
}

/**
 * Whether the root offers this proxy to clients and workers (same rule as the `isProxyOffered` get-method):
 * listed, stake at least the current minimum, image still on the proxy allow-list.
 */
export function isOffered(state: Pick<RootState, 'params' | 'proxyImageHashes'>, p: ProxyInfo): boolean {
  return p.state === 'listed' && p.stakeNano >= state.params.minProxyStakeNano && state.proxyImageHashes.includes(p.imageHash)
}

/** The proxies the root offers, keyed by payment public key (hex). */
export function offeredProxies(state: RootState): Map<string, ProxyInfo> {
  return new Map([...state.proxies].filter(([, p]) => isOffered(state, p)))
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

  /**
   * Anyone (the proxy's operator wallet, which must be `reg.owner`): registers a proxy with its stake.
   * Attaches the stake plus `value` for gas; the unused gas comes back.
   */
  async sendRegisterProxy(
    provider: ContractProvider,
    via: Sender,
    opts: SendOpts & { registration: SignedRegistration; stakeNano: bigint },
  ) {
    const r = opts.registration
    const body = opBody(Op.rootRegisterProxy, opts.queryId)
      .storeUint(bufferToUint256(r.publicKey), 256)
      .storeCoins(opts.stakeNano)
      .storeBuffer(r.signature, 64)
      .storeRef(registrationCell(r))
      .endCell()
    await sendOp(provider, via, opts.stakeNano + opts.value, body)
  }

  /** The proxy's owner wallet: replaces its endpoint. */
  async sendUpdateProxy(provider: ContractProvider, via: Sender, opts: SendOpts & { publicKey: Buffer; endpoint: ProxyEndpoint }) {
    const body = opBody(Op.rootUpdateProxy, opts.queryId)
      .storeUint(bufferToUint256(opts.publicKey), 256)
      .storeRef(endpointToCell(opts.endpoint))
      .endCell()
    await sendOp(provider, via, opts.value, body)
  }

  /** Anyone: adds `amountNano` to a listed proxy's stake (attaches it plus `value`, at least DEPOSIT_GAS_NANO). */
  async sendAddProxyStake(provider: ContractProvider, via: Sender, opts: Partial<SendOpts> & { publicKey: Buffer; amountNano: bigint }) {
    const body = opBody(Op.rootAddProxyStake, opts.queryId)
      .storeUint(bufferToUint256(opts.publicKey), 256)
      .storeCoins(opts.amountNano)
      .endCell()
    await sendOp(provider, via, opts.amountNano + (opts.value ?? DEPOSIT_GAS_NANO * 2n), body)
  }

  /** The proxy's owner wallet: leaves the registry; the stake unlocks after the proxy close delay. */
  async sendUnregisterProxy(provider: ContractProvider, via: Sender, opts: SendOpts & { publicKey: Buffer }) {
    await sendOp(provider, via, opts.value, keyBody(Op.rootUnregisterProxy, opts))
  }

  /** The proxy's owner wallet: after the delay, takes the stake back (sent as Withdrawal) and removes the entry. */
  async sendWithdrawProxyStake(provider: ContractProvider, via: Sender, opts: SendOpts & { publicKey: Buffer }) {
    await sendOp(provider, via, opts.value, keyBody(Op.rootWithdrawProxyStake, opts))
  }

  /** Root owner: delists a proxy (recorded for good; its stake returns to its owner after the close delay). */
  async sendDelistProxy(provider: ContractProvider, via: Sender, opts: SendOpts & { publicKey: Buffer; reason?: number }) {
    const body = opBody(Op.rootDelistProxy, opts.queryId)
      .storeUint(bufferToUint256(opts.publicKey), 256)
      .storeUint(opts.reason ?? 0, 32)
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
    const delistedCell = stack.readCellOpt()
    const delisted = new Map<string, DelistRecord>()
    if (delistedCell) {
      const d = Dictionary.loadDirect(Uint256Key, DelistRecordValue, delistedCell)
      for (const [k, v] of d) delisted.set(k.toString(16).padStart(64, '0'), v)
    }
    return { owner, version, uniqueId, params, proxyImageHashes, workerImageHashes, modelHashes, proxies, delisted }
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

  async getIsProxyOffered(provider: ContractProvider, publicKey: Buffer): Promise<boolean> {
    const { stack } = await provider.get('isProxyOffered', [{ type: 'int', value: bufferToUint256(publicKey) }])
    return stack.readBoolean()
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

function keyBody(op: number, opts: SendOpts & { publicKey: Buffer }): Cell {
  return opBody(op, opts.queryId).storeUint(bufferToUint256(opts.publicKey), 256).endCell()
}
