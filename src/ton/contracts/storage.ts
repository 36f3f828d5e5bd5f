// TypeScript codecs for the storage layouts in contracts/storage.tolk: the parameter
// snapshot, registered-proxy entries, and the initial data each contract is derived from.
import {
  Address,
  beginCell,
  Builder,
  Cell,
  contractAddress,
  Dictionary,
  type DictionaryValue,
  Slice,
  type StateInit,
} from '@ton/core'
import { ChannelState, ProxyListing, proxyListingName, REGISTRATION_DOMAIN, type ProxyListingName } from './opcodes.ts'

/** Network parameters held by the root and snapshotted into every proxy contract. */
export interface Params {
  /** Bumped by the root on every parameter change; any value is accepted in a set-params message. */
  paramsVersion: number
  /** nanoTON a client pays per adjusted token. */
  pricePerTokenNano: bigint
  /** nanoTON a worker earns per adjusted token; at most pricePerTokenNano. */
  workerFeePerTokenNano: bigint
  /** Token multipliers, 10000 = 1.0x. */
  promptMult: number
  cachedMult: number
  completionMult: number
  reasoningMult: number
  /** Adjusted tokens per second of transcribed audio, 10000 = one token per second. */
  audioSecondMult: number
  proxyCloseDelaySec: number
  clientCloseDelaySec: number
  minProxyStakeNano: bigint
  minClientStakeNano: bigint
}

export function storeParams(p: Params) {
  return (b: Builder) => {
    b.storeUint(p.paramsVersion, 32)
      .storeCoins(p.pricePerTokenNano)
      .storeCoins(p.workerFeePerTokenNano)
      .storeUint(p.promptMult, 32)
      .storeUint(p.cachedMult, 32)
      .storeUint(p.completionMult, 32)
      .storeUint(p.reasoningMult, 32)
      .storeUint(p.audioSecondMult, 32)
      .storeUint(p.proxyCloseDelaySec, 32)
      .storeUint(p.clientCloseDelaySec, 32)
      .storeCoins(p.minProxyStakeNano)
      .storeCoins(p.minClientStakeNano)
  }
}

export function paramsToCell(p: Params): Cell {
  return beginCell().store(storeParams(p)).endCell()
}

export function loadParams(s: Slice): Params {
  return {
    paramsVersion: s.loadUint(32),
    pricePerTokenNano: s.loadCoins(),
    workerFeePerTokenNano: s.loadCoins(),
    promptMult: s.loadUint(32),
    cachedMult: s.loadUint(32),
    completionMult: s.loadUint(32),
    reasoningMult: s.loadUint(32),
    audioSecondMult: s.loadUint(32),
    proxyCloseDelaySec: s.loadUint(32),
    clientCloseDelaySec: s.loadUint(32),
    minProxyStakeNano: s.loadCoins(),
    minClientStakeNano: s.loadCoins(),
  }
}

export function paramsFromCell(c: Cell): Params {
  const s = c.beginParse()
  const p = loadParams(s)
  s.endParse()
  return p
}

/** Where a proxy is reached: registered with it, and replaced by an update. */
export interface ProxyEndpoint {
  workerPort: number
  clientPort: number
  /** Host name or IP literal. */
  host: string
}

/** A proxy registered on the root, keyed there by its payment public key. */
export interface ProxyInfo extends ProxyEndpoint {
  /** Wallet that registered the proxy and owns its proxy contract; with the key and root it derives the proxy contract address. */
  owner: Address
  /** Image hash it registered with, lowercase hex. */
  imageHash: string
  /** Registration stake the root holds, nanoTON. */
  stakeNano: bigint
  state: ProxyListingName
  /** Unix time of registration. */
  registeredAt: number
  /** While leaving or delisted: when the stake can be withdrawn (unix time); 0 while listed. */
  unlockAt: number
}

export function endpointToCell(e: ProxyEndpoint): Cell {
  return beginCell()
    .storeUint(e.workerPort, 16)
    .storeUint(e.clientPort, 16)
    .storeRef(beginCell().storeStringTail(e.host).endCell())
    .endCell()
}

export function proxyInfoToCell(info: ProxyInfo): Cell {
  return beginCell().store((b) => ProxyInfoValue.serialize(info, b)).endCell()
}

/** Dictionary value codec for ProxyInfo (map<uint256, ProxyInfo> on the root). */
export const ProxyInfoValue: DictionaryValue<ProxyInfo> = {
  serialize(src, b) {
    b.storeAddress(src.owner)
      .storeUint(src.workerPort, 16)
      .storeUint(src.clientPort, 16)
      .storeRef(beginCell().storeStringTail(src.host).endCell())
      .storeUint(BigInt('0x' + src.imageHash), 256)
      .storeCoins(src.stakeNano)
      .storeUint(ProxyListing[src.state], 8)
      .storeUint(src.registeredAt, 32)
      .storeUint(src.unlockAt, 32)
  },
  parse(s) {
    return {
      owner: s.loadAddress(),
      workerPort: s.loadUint(16),
      clientPort: s.loadUint(16),
      host: s.loadRef().beginParse().loadStringTail(),
      imageHash: s.loadUintBig(256).toString(16).padStart(64, '0'),
      stakeNano: s.loadCoins(),
      state: proxyListingName(s.loadUint(8)),
      registeredAt: s.loadUint(32),
      unlockAt: s.loadUint(32),
    }
  },
}

/** A governance record of a delisted proxy key (kept on the root for good). */
export interface DelistRecord {
  /** Unix time of the delisting. */
  at: number
  /** The owner's reason code. */
  reason: number
}

export const DelistRecordValue: DictionaryValue<DelistRecord> = {
  serialize(src, b) {
    b.storeUint(src.at, 32).storeUint(src.reason, 32)
  },
  parse(s) {
    return { at: s.loadUint(32), reason: s.loadUint(32) }
  },
}

/** What a proxy signs with its payment key to register on `root` from the wallet `owner`. */
export interface ProxyRegistration extends ProxyEndpoint {
  root: Address
  owner: Address
  /** 32-byte image hash (must be on the root's proxy allow-list). */
  imageHash: Buffer
}

export function registrationCell(r: ProxyRegistration): Cell {
  return beginCell()
    .storeUint(REGISTRATION_DOMAIN, 32)
    .storeAddress(r.root)
    .storeAddress(r.owner)
    .storeBuffer(r.imageHash, 32)
    .storeRef(endpointToCell(r))
    .endCell()
}

/** Key of the root's hash dictionaries and proxy registry: a uint256. */
export const Uint256Key = Dictionary.Keys.BigUint(256)

/** 32-byte buffer (hash or Ed25519 public key) to the uint256 the contracts store. */
export function bufferToUint256(buf: Buffer): bigint {
  if (buf.length !== 32) throw new RangeError(`expected 32 bytes, got ${buf.length}`)
  return BigInt('0x' + buf.toString('hex'))
}

export function uint256ToBuffer(n: bigint): Buffer {
  return Buffer.from(n.toString(16).padStart(64, '0'), 'hex')
}

// ---------------------------------------------------------------- root

export interface RootConfig {
  owner: Address
  params: Params
  /** Lets one owner deploy several roots; defaults to 0. */
  uniqueId?: number
}

export function rootInitialData(c: RootConfig): Cell {
  const emptyRegistry = beginCell()
    .storeDict(null) // proxy image hashes
    .storeDict(null) // worker image hashes
    .storeDict(null) // model hashes
    .storeDict(null) // proxies
    .endCell()
  return beginCell()
    .storeAddress(c.owner)
    .storeUint(0, 32) // version
    .storeUint(c.uniqueId ?? 0, 32)
    .storeRef(paramsToCell(c.params))
    .storeRef(emptyRegistry)
    .storeDict(null) // delisted proxy keys
    .endCell()
}

// ---------------------------------------------------------------- proxy

export interface ChannelCodes {
  client: Cell
  worker: Cell
}

export interface ProxyConfig {
  /** Operator wallet: sends owner ops, receives margin and the stake at close. */
  owner: Address
  root: Address
  /** Ed25519 payment public key (32 bytes) the proxy signs vouchers with. */
  publicKey: Buffer
  /** Parameter snapshot, normally read from the root. */
  params: Params
  codes: ChannelCodes
}

export function proxyInitialData(c: ProxyConfig): Cell {
  const identity = beginCell()
    .storeAddress(c.owner)
    .storeAddress(c.root)
    .storeBuffer(c.publicKey, 32)
    .storeRef(paramsToCell(c.params))
    .storeRef(beginCell().storeRef(c.codes.client).storeRef(c.codes.worker).endCell())
    .endCell()
  return beginCell()
    .storeUint(ChannelState.active, 8)
    .storeCoins(0n) // stake
    .storeCoins(0n) // funds
    .storeUint(0n, 64) // tokens charged
    .storeUint(0n, 64) // tokens paid
    .storeUint(0n, 64) // commit seqno
    .storeUint(0n, 256) // commit hash
    .storeUint(0, 32) // unlock at
    .storeRef(identity)
    .storeRef(beginCell().storeUint(0n, 256).storeUint(0n, 64).storeUint(0n, 256).endCell()) // receipts: root, count, reliability hash
    .endCell()
}

// ---------------------------------------------------------------- client

export interface ClientConfig {
  /** The client's wallet. */
  owner: Address
  /** The proxy contract. */
  proxy: Address
  proxyPublicKey: Buffer
  /** Must equal the proxy contract's snapshot, or the proxy contract rejects the charges. */
  params: Params
}

export function clientInitialData(c: ClientConfig): Cell {
  const identity = beginCell()
    .storeAddress(c.owner)
    .storeAddress(c.proxy)
    .storeBuffer(c.proxyPublicKey, 32)
    .storeRef(paramsToCell(c.params))
    .endCell()
  return beginCell()
    .storeUint(ChannelState.active, 8)
    .storeCoins(0n) // balance
    .storeUint(0n, 64) // tokens charged
    .storeUint(0, 32) // unlock at
    .storeRef(identity)
    .endCell()
}

// ---------------------------------------------------------------- worker

export interface WorkerConfig {
  /** The worker's wallet: receives every payout. */
  owner: Address
  proxy: Address
  proxyPublicKey: Buffer
}

export function workerInitialData(c: WorkerConfig): Cell {
  return beginCell()
    .storeAddress(c.owner)
    .storeAddress(c.proxy)
    .storeBuffer(c.proxyPublicKey, 32)
    .storeUint(0n, 64) // tokens paid
    .endCell()
}

/** Address of a contract from its code and initial data (basechain unless told). */
export function deriveAddress(init: StateInit, workchain = 0): Address {
  return contractAddress(workchain, init)
}
