// How nodes reach a TON chain (devnet or real): the Chain seam, node wallets, root deployment,
// governance, and trust policy read from the root.
export {
  createChain,
  resolveEndpoint,
  devnetBaseUrl,
  chainOptionsFromEnv,
  type Chain,
  type ChainOptions,
  type CallOpts,
} from './chain.ts'
export {
  NodeWallet,
  nodeWalletContract,
  loadWalletKey,
  loadOrCreateWalletKey,
  collectMessages,
  devnetFaucet,
  type NodeWalletOptions,
  type WalletMessage,
  type WalletTransfer,
} from './wallet.ts'
export { deployRoot, rootFor, DEVNET_PARAMS, type DeployRootOptions, type DeployedRoot } from './devnet-root.ts'
export { RootGovernance, normalizeHash, hashList, type HashChange } from './governance.ts'
export { ProxyRegistry, type RegisterOptions } from './proxy-registry.ts'
export { RootWatcher, type RootWatcherOptions, type RootListener } from './root-watcher.ts'
export {
  ChainError,
  WalletKeyError,
  WalletSendError,
  ContractRejectedError,
  DeliveryTimeoutError,
  RootMismatchError,
} from './errors.ts'
export {
  TONCENTER_MAINNET_ENDPOINT,
  TONCENTER_TESTNET_ENDPOINT,
  DEVNET_DEFAULT_ENDPOINT,
  ROOT_REFRESH_INTERVAL_MS,
  ROOT_OP_VALUE_NANO,
  MAX_MESSAGES_PER_TRANSFER,
  DEFAULT_FAUCET_NANO,
} from './constants.ts'
export { tonConnectTransaction, TONCONNECT_NETWORK, TONCONNECT_VALID_SEC, type TonConnectTransaction } from './tonconnect.ts'
