// Named defaults of the chain client (how every node reaches a TON chain), units in the names.

import { ONE_TON_NANO } from '../contracts/units.ts'

/** toncenter API v2 JSON-RPC endpoints of the public networks. */
export const TONCENTER_MAINNET_ENDPOINT = 'https://toncenter.com/api/v2/jsonRPC'
export const TONCENTER_TESTNET_ENDPOINT = 'https://testnet.toncenter.com/api/v2/jsonRPC'
/** The local devnet chain (`cocoon chain`) at its default port. */
export const DEVNET_DEFAULT_ENDPOINT = 'http://127.0.0.1:10090/api/v2/jsonRPC'

/** The toncenter-v2 JSON-RPC path that `TonClient` posts to. */
export const JSON_RPC_PATH = '/api/v2/jsonRPC'
/** The devnet chain's faucet (devnet only). */
export const FAUCET_PATH = '/devnet/faucet'

/** One HTTP request to the chain, per attempt. */
export const CHAIN_REQUEST_TIMEOUT_MS = 15_000
/** Retries of a transient failure (network error, 429, 5xx) after the first attempt. */
export const CHAIN_RETRIES = 3
/** First retry delay; doubles per retry, with jitter, up to CHAIN_RETRY_MAX_DELAY_MS. */
export const CHAIN_RETRY_BASE_DELAY_MS = 300
export const CHAIN_RETRY_MAX_DELAY_MS = 5_000
/** toncenter's public limits: 1 request per second without an API key, 10 with a free key. */
export const TONCENTER_RPS_WITHOUT_KEY = 1
export const TONCENTER_RPS_WITH_KEY = 10

/** How long a wallet send waits for the wallet's seqno to advance before retrying once. */
export const WALLET_SEND_TIMEOUT_MS = 60_000
/** Seqno and transaction polling interval (the devnet answers on the first poll). */
export const WALLET_POLL_INTERVAL_MS = 1_000
/** How long to wait for the transactions a sent message caused on its destination. */
export const TX_CONFIRM_TIMEOUT_MS = 60_000
/** Internal messages in one wallet transfer (V5R1 takes up to 255; 4 keeps transfers small and V4-compatible). */
export const MAX_MESSAGES_PER_TRANSFER = 4
/** Transactions read per page when looking for a message's transaction. */
export const TX_SEARCH_PAGE = 20

/** Value attached to a root governance op; what gas does not use comes back as Excesses. */
export const ROOT_OP_VALUE_NANO = 50_000_000n
/** Value a new root is deployed with; it pays the root's storage fees. */
export const ROOT_DEPLOY_VALUE_NANO = 200_000_000n

/** How often nodes re-read the root (allow-lists, parameters). */
export const ROOT_REFRESH_INTERVAL_MS = 30_000

/** What `cocoon wallet faucet` asks the devnet faucet for unless told otherwise. */
export const DEFAULT_FAUCET_NANO = 10n * ONE_TON_NANO
