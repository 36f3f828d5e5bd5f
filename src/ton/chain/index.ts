// The embedded devnet chain (`cocoon chain`): @ton/sandbox persisted on disk, served as toncenter v2 JSON-RPC.
export { startDevnetChain, type DevnetChainServer, type DevnetChainServerOptions } from './server.ts'
export {
  DevnetChain,
  DevnetBlockchain,
  FAUCET_ADDRESS,
  type DevnetChainOptions,
  type AccountInfo,
  type AccountStatus,
  type ChainHead,
  type ChainStats,
  type FaucetOutcome,
  type FeeEstimate,
  type GetMethodOutcome,
  type SendOutcome,
} from './devnet.ts'
export { DevnetClock, type ClockState } from './clock.ts'
export type { IndexedTransaction, TransactionQuery } from './txindex.ts'
export { TONCENTER_METHODS } from './toncenter.ts'
export {
  ChainClosedError,
  ChainDirLockedError,
  ChainStateCorruptError,
  ChainTimeError,
  EmulationFailedError,
  ExternalMessageRejectedError,
  FaucetLimitError,
  InvalidAddressError,
  InvalidParamsError,
  MalformedMessageError,
  MalformedRequestError,
  PayloadTooLargeError,
  RouteNotFoundError,
  TransactionNotFoundError,
  UnknownMethodError,
} from './errors.ts'
export {
  DEFAULT_CHAIN_HOST,
  DEFAULT_CHAIN_PORT,
  FAUCET_MAX_NANO,
  FAUCET_PATH,
  JSON_RPC_PATH,
  TIME_PATH,
  TX_INDEX_PER_ACCOUNT,
} from './constants.ts'
