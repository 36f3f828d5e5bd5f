// Named defaults of the embedded devnet chain (`cocoon chain`), units in the names.

import { ONE_TON_NANO } from '../contracts/units.ts'

/** Where `cocoon chain` listens unless told otherwise (not 10080: `fetch` refuses that port; see core/ports.ts). */
export const DEFAULT_CHAIN_PORT = 10090
export const DEFAULT_CHAIN_HOST = '127.0.0.1'

/** The paths nodes reach the chain on are the chain client's (JSON_RPC_PATH, FAUCET_PATH); the devnet serves them. */
export { JSON_RPC_PATH, FAUCET_PATH } from '../chain-client/constants.ts'
export const TIME_PATH = '/devnet/time'
export const HEALTH_PATH = '/healthz'
export const STATS_PATH = '/jsonstats'

/** Transactions kept per account in our own index (oldest dropped first). */
export const TX_INDEX_PER_ACCOUNT = 200
/** How often account state is written even without new messages (clock changes, direct sandbox edits). */
export const SNAPSHOT_INTERVAL_MS = 5_000
/** The transaction log is rewritten once it holds this many lines more than twice what the index keeps. */
export const TX_LOG_COMPACT_SLACK_LINES = 1_000

/** Largest HTTP request body accepted (a contract deploy BOC is well below this). */
export const MAX_REQUEST_BODY_BYTES = 2 * 1024 * 1024
/** Most nanoTON the faucet credits in one call. */
export const FAUCET_MAX_NANO = 10_000n * ONE_TON_NANO
/** A message cascade longer than this is cut off (protects the devnet against endless ping-pong). */
export const MAX_TRANSACTIONS_PER_BATCH = 10_000

/** toncenter's defaults and bounds for getTransactions. */
export const GET_TRANSACTIONS_DEFAULT_LIMIT = 10
export const GET_TRANSACTIONS_MAX_LIMIT = 100

/** estimateFee emulates on a copy of the account topped up to at least this, so unfunded accounts can be estimated. */
export const ESTIMATE_FEE_MIN_BALANCE_NANO = 1_000_000n * ONE_TON_NANO

/** runGetMethod on an account without code answers with this exit code, as tonlib does. */
export const EXIT_CODE_NOT_ACTIVE = -13

/** The masterchain shard id every synthetic block id carries. */
export const MASTERCHAIN_SHARD = '-9223372036854775808'
