// The Cocoon TON contracts from TypeScript: compiled code, one wrapper per contract,
// storage codecs, voucher signing, exit codes and the gas/fee report.
export { compileContract, contractCode, contractCodes, ContractCompileError, CONTRACT_NAMES, CONTRACTS_DIR } from './compile.ts'
export type { CompiledContract, ContractCodes, ContractName } from './compile.ts'
export { ONE_TON_NANO } from './units.ts'
export { ContractExitCode, contractExitCodeName } from './errors.ts'
export type { ContractExitCodeName } from './errors.ts'
export {
  Op, VOUCHER_DOMAIN, HashKind, ChannelState, channelStateName, VOUCHER_MIN_VALUE_NANO, DEPOSIT_GAS_NANO,
} from './opcodes.ts'
export { REGISTRATION_DOMAIN, ProxyListing, proxyListingName } from './opcodes.ts'
export type { OpName, HashKindName, ChannelStateName, ProxyListingName } from './opcodes.ts'
export {
  paramsToCell, paramsFromCell, proxyInfoToCell, endpointToCell, registrationCell, bufferToUint256, uint256ToBuffer,
  rootInitialData, proxyInitialData, clientInitialData, workerInitialData,
} from './storage.ts'
export type { Params, ProxyInfo, ProxyEndpoint, ProxyRegistration, DelistRecord, RootConfig, ProxyConfig, ClientConfig, WorkerConfig, ChannelCodes } from './storage.ts'
export { RootContract, signRegistration, isOffered, offeredProxies } from './root.ts'
export type { RootState, SendOpts, SignedRegistration } from './root.ts'
export { ProxyContract, commitStateBody, parseCommitStateBody } from './proxy.ts'
export type { ProxyState, ProxyIdentity, ReceiptsRoot, ReliabilityHash, CommitStateBody } from './proxy.ts'
export { ClientContract, topUpBody } from './client.ts'
export type { ClientState, ClientIdentity, TopUpMessage } from './client.ts'
export { WorkerContract } from './worker.ts'
export type { WorkerState } from './worker.ts'
export {
  signVoucher, verifyVoucher, checkVoucher, voucherCell, parseVoucherCell, voucherMessageBody,
  signedVoucherToBase64, signedVoucherFromBase64, InvalidVoucherError, VOUCHER_KINDS,
} from './vouchers.ts'
export type { Voucher, SignedVoucher, VoucherKind, VoucherExpectation } from './vouchers.ts'
export { measureContractFees, writeContractFeeReport, CONTRACT_FEE_REPORT_PATH, CONTRACT_FEE_REPORT_VERSION, FEE_REPORT_PARAMS } from './fees.ts'
export type { ContractFeeReport, OpCost } from './fees.ts'
export { summarizeTransaction, feesBurntNano } from './transactions.ts'
export type { TxSummary } from './transactions.ts'
