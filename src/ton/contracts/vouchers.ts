// Building, signing and checking proxy-signed vouchers: cumulative charge vouchers for
// client contracts and cumulative payout vouchers for worker contracts.
//
// Layout (one cell): domain:uint32 ("coc1") | op:uint32 | target:MsgAddress | tokens:uint64.
// Signature: Ed25519 over the cell's representation hash, by the proxy's payment key.
// `op` is the opcode of the message that carries the voucher, and `target` the contract
// it is valid for, so a voucher for one contract or purpose never works on another.
import { Address, beginCell, Cell } from '@ton/core'
import { createPrivateKey, sign as ed25519Sign, verify as ed25519Verify, type KeyObject } from 'node:crypto'
import { ed25519PublicKey } from '../../core/ed25519.ts'
import { Op, VOUCHER_DOMAIN } from './opcodes.ts'

/** What a voucher authorises. Each kind is carried by its own message opcode. */
export type VoucherKind = 'clientCharge' | 'clientFinalCharge' | 'workerPayout'

export const VOUCHER_KINDS: readonly VoucherKind[] = ['clientCharge', 'clientFinalCharge', 'workerPayout']

export interface Voucher {
  kind: VoucherKind
  /** The client or worker contract the voucher is valid for. */
  target: Address
  /** Cumulative adjusted tokens (charged to the client, or paid to the worker), not nanoTON. */
  tokens: bigint
}

export interface SignedVoucher extends Voucher {
  /** 64-byte Ed25519 signature over voucherCell(v).hash(). */
  signature: Buffer
}

export class InvalidVoucherError extends Error {
  readonly name = 'InvalidVoucherError'
  constructor(readonly reason: string) {
    super(`invalid voucher: ${reason}`)
  }
}

function kindOfOp(op: number): VoucherKind | undefined {
  return VOUCHER_KINDS.find((k) => Op[k] === op)
}

/** The cell the proxy signs. */
export function voucherCell(v: Voucher): Cell {
  if (v.tokens < 0n || v.tokens >= 1n << 64n) throw new RangeError(`voucher tokens out of uint64 range: ${v.tokens}`)
  return beginCell()
    .storeUint(VOUCHER_DOMAIN, 32)
    .storeUint(Op[v.kind], 32)
    .storeAddress(v.target)
    .storeUint(v.tokens, 64)
    .endCell()
}

export function parseVoucherCell(cell: Cell): Voucher {
  const s = cell.beginParse()
  if (s.loadUint(32) !== VOUCHER_DOMAIN) throw new InvalidVoucherError('wrong domain tag')
  const kind = kindOfOp(s.loadUint(32))
  if (!kind) throw new InvalidVoucherError('unknown op')
  const target = s.loadAddress()
  const tokens = s.loadUintBig(64)
  s.endParse()
  return { kind, target, tokens }
}

// Ed25519 through node:crypto (OpenSSL), not @ton/crypto's pure-JS tweetnacl: the same deterministic signatures,
// at a fraction of the CPU (tweetnacl was the largest library cost in the proxy's and client's profiles).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
/** Key objects of the few keys a node signs with; cleared if it ever grows past this. (Public keys: core/ed25519.ts.) */
const MAX_CACHED_KEYS = 256
const keyCache = new Map<string, KeyObject>()

function cachedKey(raw: Buffer, make: () => KeyObject): KeyObject {
  const id = raw.toString('hex')
  let k = keyCache.get(id)
  if (!k) {
    if (keyCache.size >= MAX_CACHED_KEYS) keyCache.clear()
    k = make()
    keyCache.set(id, k)
  }
  return k
}

/** Signs a voucher with the proxy's 64-byte Ed25519 secret key (seed then public key, as from @ton/crypto keyPairFromSeed). */
export function signVoucher(v: Voucher, secretKey: Buffer): SignedVoucher {
  const seed = secretKey.subarray(0, 32)
  const key = cachedKey(secretKey, () => createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' }))
  return { ...v, signature: ed25519Sign(null, voucherCell(v).hash(), key) }
}

/** True when the signature is the proxy's over exactly this voucher. */
export function verifyVoucher(v: SignedVoucher, proxyPublicKey: Buffer): boolean {
  if (v.signature.length !== 64 || proxyPublicKey.length !== 32) return false
  return ed25519Verify(null, voucherCell(v).hash(), ed25519PublicKey(proxyPublicKey), v.signature)
}

/** What the holder of a voucher expects it to be before keeping or submitting it. */
export interface VoucherExpectation {
  kind: VoucherKind
  /** The proxy that must have signed it: its Ed25519 payment key, as hex (the proxy's id) or bytes. */
  signer: string | Buffer
  /** The contract it must be valid for, when the holder knows it. */
  target?: Address
  /** The most tokens it may carry (e.g. what the proxy said was earned or charged). */
  maxTokens?: bigint
}

const KIND_NAMES: Record<VoucherKind, string> = { clientCharge: 'charge', clientFinalCharge: 'final charge', workerPayout: 'payout' }

/**
 * The one check of a voucher received from a proxy (worker statements, payout claims, a client's final
 * charge): decodes it and throws InvalidVoucherError naming what is wrong, so nothing forged, cross-purpose,
 * for another contract or inflated is kept or paid gas for.
 */
export function checkVoucher(voucher: string | SignedVoucher, expect: VoucherExpectation): SignedVoucher {
  const v = typeof voucher === 'string' ? signedVoucherFromBase64(voucher) : voucher
  const want = KIND_NAMES[expect.kind]
  if (v.kind !== expect.kind) throw new InvalidVoucherError(`a ${KIND_NAMES[v.kind]} voucher is not a ${want}`)
  if (expect.target && !v.target.equals(expect.target)) throw new InvalidVoucherError(`the ${want} is for another contract`)
  const signer = typeof expect.signer === 'string' ? Buffer.from(expect.signer, 'hex') : expect.signer
  if (!verifyVoucher(v, signer)) throw new InvalidVoucherError(`the ${want} is not signed by this proxy`)
  if (expect.maxTokens !== undefined && v.tokens > expect.maxTokens) {
    throw new InvalidVoucherError(`the ${want} (${v.tokens} tokens) is more than the proxy said (${expect.maxTokens})`)
  }
  return v
}

/** Internal-message body that applies the voucher at its target contract. */
export function voucherMessageBody(v: SignedVoucher, queryId = 0n): Cell {
  return beginCell()
    .storeUint(Op[v.kind], 32)
    .storeUint(queryId, 64)
    .storeBuffer(v.signature, 64)
    .storeRef(voucherCell(v))
    .endCell()
}

/** Portable form for the wire and for ledgers: one base64 BOC, signature then a ref to the voucher cell. */
export function signedVoucherToBase64(v: SignedVoucher): string {
  return beginCell().storeBuffer(v.signature, 64).storeRef(voucherCell(v)).endCell().toBoc().toString('base64')
}

export function signedVoucherFromBase64(b64: string): SignedVoucher {
  let cell: Cell
  try {
    cell = Cell.fromBase64(b64)
  } catch {
    throw new InvalidVoucherError('not a base64 BOC')
  }
  const s = cell.beginParse()
  if (s.remainingBits !== 512 || s.remainingRefs !== 1) throw new InvalidVoucherError('bad envelope')
  const signature = s.loadBuffer(64)
  return { ...parseVoucherCell(s.loadRef()), signature }
}
