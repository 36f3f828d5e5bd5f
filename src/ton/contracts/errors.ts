// Exit codes of the Cocoon contracts, mirrored from contracts/errors.tolk.
// test/contracts/errors.test.ts parses the Tolk file and fails if the two drift.

/** Exit code thrown by a Cocoon contract, by meaning. Each code has one meaning across all contracts. */
export const ContractExitCode = {
  NotOwner: 100,
  InsufficientValue: 101,
  UnknownOp: 0xffff,
  InvalidParams: 110,
  UnknownHashKind: 111,
  HashAlreadyListed: 112,
  HashNotListed: 113,
  ProxyNotRegistered: 114,
  VoucherBadDomain: 120,
  VoucherWrongOp: 121,
  VoucherWrongTarget: 122,
  VoucherBadSignature: 123,
  VoucherNotNewer: 124,
  ChargeExceedsBalance: 130,
  WithdrawBelowStake: 131,
  ClientNotActive: 132,
  ClientNotClosing: 133,
  ClientClosed: 134,
  CloseTooEarly: 135,
  NotChannelContract: 140,
  ProxyNotActive: 141,
  ProxyNotClosing: 142,
  ProxyClosed: 143,
  SeqnoNotNewer: 144,
  StakeTooLow: 145,
  InsufficientFunds: 146,
  ExceedsWithdrawable: 147,
  ReceiptsShrink: 148,
  ReceiptsRootMalformed: 149,
  ProxyImageNotAllowed: 150,
  ProxyStakeBelowMinimum: 151,
  ProxyAlreadyRegistered: 152,
  ProxyDelisted: 153,
  RegistrationBadSignature: 154,
  RegistrationWrongRoot: 155,
  RegistrationWrongOwner: 156,
  NotProxyOwner: 157,
  ProxyNotListed: 158,
  ProxyStillListed: 159,
} as const

export type ContractExitCodeName = keyof typeof ContractExitCode

const byCode = new Map<number, ContractExitCodeName>(
  Object.entries(ContractExitCode).map(([name, code]) => [code, name as ContractExitCodeName]),
)

/** Name of a Cocoon exit code, or undefined for TVM and unknown codes. */
export function contractExitCodeName(code: number): ContractExitCodeName | undefined {
  return byCode.get(code)
}

/** The Tolk constant name of a code's meaning: `NotOwner` -> `ERR_NOT_OWNER`. */
export function tolkErrorConstName(name: ContractExitCodeName): string {
  return 'ERR_' + name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase()
}
