// Opcodes and protocol constants of the Cocoon contracts, mirrored from
// contracts/messages.tolk and contracts/storage.tolk (drift-tested in test/contracts).

/** Message opcodes: crc32("cocoon.<snake_name>"), except Excesses. */
export const Op = {
  rootSetParams: 0x19d12a04,
  rootAllowHash: 0xf38035d1,
  rootRevokeHash: 0x4fa16096,
  rootRegisterProxy: 0x2e5a8880,
  rootUpdateProxy: 0x4a01f5b5,
  rootAddProxyStake: 0x977c62cf,
  rootUnregisterProxy: 0x92708000,
  rootWithdrawProxyStake: 0x58d3ff0e,
  rootDelistProxy: 0x617e4020,
  rootChangeOwner: 0xcaa785b8,
  proxyAddStake: 0xbe51936c,
  proxyCommitState: 0x9fe4a6a3,
  proxyWithdraw: 0x437f7c8b,
  proxyRequestClose: 0xcecd54af,
  proxyFinishClose: 0xa4be7999,
  proxyChargeDeposit: 0x50d4de62,
  proxyPayoutRequest: 0x9448cab2,
  clientTopUp: 0x6f0bf775,
  clientCharge: 0x0ee16837,
  clientFinalCharge: 0xed19cf59,
  clientWithdraw: 0x0c21d94c,
  clientRequestClose: 0xfe8ed923,
  clientFinishClose: 0x52cc1c76,
  workerPayout: 0xc1a09fdb,
  excesses: 0xd53276db,
  withdrawal: 0x659c4450,
  workerPayment: 0x92a8604b,
} as const

export type OpName = keyof typeof Op

/** Tolk struct name of each opcode, as declared in contracts/messages.tolk. */
export function tolkStructName(name: OpName): string {
  return name[0].toUpperCase() + name.slice(1)
}

/** Domain tag at the start of every voucher: ASCII "coc1". */
export const VOUCHER_DOMAIN = 0x636f6331

/** Domain tag of a proxy's registration signature: ASCII "cocr". */
export const REGISTRATION_DOMAIN = 0x636f6372

/** State of a proxy's entry in the root's registry. */
export const ProxyListing = { listed: 0, leaving: 1, delisted: 2 } as const
export type ProxyListingName = keyof typeof ProxyListing

export function proxyListingName(state: number): ProxyListingName {
  const name = (Object.keys(ProxyListing) as ProxyListingName[]).find((k) => ProxyListing[k] === state)
  if (!name) throw new RangeError(`unknown proxy listing state ${state}`)
  return name
}

/** Allow-list kinds on the root. */
export const HashKind = { proxyImage: 1, workerImage: 2, model: 3 } as const
export type HashKindName = keyof typeof HashKind

/** Lifecycle state of a proxy or client contract. */
export const ChannelState = { active: 0, closing: 1, closed: 2 } as const
export type ChannelStateName = keyof typeof ChannelState

export function channelStateName(state: number): ChannelStateName {
  const name = (Object.keys(ChannelState) as ChannelStateName[]).find((k) => ChannelState[k] === state)
  if (!name) throw new RangeError(`unknown channel state ${state}`)
  return name
}

/** Value a voucher message must carry (VOUCHER_MIN_VALUE_NANO in contracts/fees.tolk). */
export const VOUCHER_MIN_VALUE_NANO = 50_000_000n
/** What a top-up or stake deposit must carry above the amount (DEPOSIT_GAS_NANO). */
export const DEPOSIT_GAS_NANO = 10_000_000n
