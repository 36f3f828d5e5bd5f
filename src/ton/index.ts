// The TON seam. This file lists the embedded devnet chain; contracts and the Chain interface add their own exports.
export {
  startDevnetChain,
  runChainCommand,
  DevnetChain,
  DevnetClock,
  FAUCET_ADDRESS,
  DEFAULT_CHAIN_PORT,
  FAUCET_MAX_NANO,
  JSON_RPC_PATH,
  type DevnetChainServer,
  type DevnetChainServerOptions,
  type DevnetChainOptions,
} from './chain/index.ts'
