// The one seam every node uses to reach a TON chain, devnet or real: TonClient over toncenter-v2
// JSON-RPC, with rate limiting, retries and one ChainError for every failure.
import fs from 'node:fs'
import { Address, TonClient, type Contract, type OpenedContract } from '@ton/ton'
import { JSON_RPC_PATH, DEVNET_DEFAULT_ENDPOINT, TONCENTER_MAINNET_ENDPOINT, TONCENTER_RPS_WITH_KEY, TONCENTER_RPS_WITHOUT_KEY, TONCENTER_TESTNET_ENDPOINT } from './constants.ts'
import { RootContract, type RootState } from '../contracts/root.ts'
import { ChainError, RootMismatchError } from './errors.ts'
import { raceSignal } from '../../core/time.ts'
import { createTransport, type Transport, type TransportOptions } from './transport.ts'
import { portProblem, urlPort } from '../../core/ports.ts'

export interface CallOpts {
  signal?: AbortSignal
}

/**
 * A TON chain as nodes see it. Every method rejects with ChainError when the chain cannot be read
 * (after retrying transient failures); the wrappers opened with `open` go through the same transport.
 */
export interface Chain {
  /** The JSON-RPC endpoint, without credentials. */
  readonly endpoint: string
  /** For code that needs TonClient itself (transactions, estimates). */
  readonly client: TonClient
  /** Binds a contract wrapper to this chain: `chain.open(root).sendAllowHash(wallet.sender(), …)`. */
  open<T extends Contract>(contract: T): OpenedContract<T>
  /** Chain time in unix seconds: the time of the last block the endpoint has (the devnet: its clock). */
  now(opts?: CallOpts): Promise<number>
  getBalance(address: Address, opts?: CallOpts): Promise<bigint>
  /** Whether the account is active (has code). */
  isDeployed(address: Address, opts?: CallOpts): Promise<boolean>
  /** Everything the root holds. Rejects with RootMismatchError when no root is deployed there. */
  getRootState(root: Address, opts?: CallOpts): Promise<RootState>
}

/** The transport's options (endpoint, API key, timeouts, retries, rate limit); see TransportOptions. */
export type ChainOptions = TransportOptions

/** Any address works for reading the chain time; this one is never a contract. */
const CLOCK_PROBE = new Address(0, Buffer.alloc(32))

/**
 * Full JSON-RPC endpoint for `mainnet`, `testnet`, `devnet` (the local chain on its default port)
 * or a URL. A URL without a path gets `/api/v2/jsonRPC` appended, so `http://127.0.0.1:10090` works.
 */
export function resolveEndpoint(spec: string): string {
  switch (spec) {
    case 'mainnet':
      return TONCENTER_MAINNET_ENDPOINT
    case 'testnet':
      return TONCENTER_TESTNET_ENDPOINT
    case 'devnet':
      return DEVNET_DEFAULT_ENDPOINT
  }
  let url: URL
  try {
    url = new URL(spec)
  } catch {
    throw new ChainError(`chain endpoint ${JSON.stringify(spec)} is not a URL (nor mainnet, testnet or devnet)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ChainError(`chain endpoint must be http(s), got ${url.protocol}`)
  const problem = portProblem(urlPort(url))
  if (problem) throw new ChainError(`chain endpoint ${url.origin}: ${problem}`)
  if (url.pathname === '/' || url.pathname === '') url.pathname = JSON_RPC_PATH
  return url.toString()
}

/** The base URL of a devnet chain (for its faucet) from its JSON-RPC endpoint. */
export function devnetBaseUrl(endpoint: string): string {
  const url = new URL(resolveEndpoint(endpoint))
  if (url.pathname.endsWith(JSON_RPC_PATH)) url.pathname = url.pathname.slice(0, -JSON_RPC_PATH.length)
  return url.toString().replace(/\/$/, '')
}

function defaultRps(endpoint: string, apiKey: string | undefined): number {
  const host = new URL(endpoint).hostname
  if (host === 'toncenter.com' || host.endsWith('.toncenter.com')) return apiKey ? TONCENTER_RPS_WITH_KEY : TONCENTER_RPS_WITHOUT_KEY
  return 0
}

/**
 * Chain options from the environment, for nodes and the CLI: `COCOON_CHAIN_ENDPOINT` (URL or
 * mainnet/testnet/devnet), `COCOON_CHAIN_API_KEY` or `COCOON_CHAIN_API_KEY_FILE`. Explicit
 * arguments win. Returns undefined when no endpoint is configured anywhere.
 */
export function chainOptionsFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  explicit: { endpoint?: string; apiKeyFile?: string } = {},
): ChainOptions | undefined {
  const spec = explicit.endpoint ?? env.COCOON_CHAIN_ENDPOINT
  if (!spec) return undefined
  const keyFile = explicit.apiKeyFile ?? env.COCOON_CHAIN_API_KEY_FILE
  let apiKey = keyFile ? undefined : env.COCOON_CHAIN_API_KEY || undefined
  if (keyFile) {
    try {
      apiKey = fs.readFileSync(keyFile, 'utf8').trim() || undefined
    } catch (err) {
      throw new ChainError(`cannot read the chain API key file ${keyFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  return { endpoint: resolveEndpoint(spec), apiKey }
}

function asChainError(err: unknown, what: string): Error {
  if (err instanceof ChainError || (err as Error)?.name === 'AbortError' || (err as Error)?.name === 'TimeoutError') return err as Error
  return new ChainError(`${what}: ${(err as Error)?.message ?? String(err)}`, undefined, { cause: err })
}

class TonChain implements Chain {
  readonly endpoint: string
  readonly client: TonClient
  private readonly transport: Transport

  constructor(opts: ChainOptions) {
    const endpoint = resolveEndpoint(opts.endpoint)
    this.transport = createTransport({
      endpoint,
      apiKey: opts.apiKey,
      timeoutMs: opts.timeoutMs,
      retries: opts.retries,
      rateLimitRps: opts.rateLimitRps ?? defaultRps(endpoint, opts.apiKey),
      log: opts.log,
    })
    const u = new URL(endpoint)
    this.endpoint = `${u.protocol}//${u.host}${u.pathname}`
    // The key goes to the transport only; TonClient never sees it (it would add it again).
    this.client = new TonClient({ endpoint, httpAdapter: this.transport.adapter })
  }

  open<T extends Contract>(contract: T): OpenedContract<T> {
    return this.client.open(contract)
  }

  async now(opts: CallOpts = {}): Promise<number> {
    const info = (await this.transport.call('getAddressInformation', { address: CLOCK_PROBE.toString() }, opts)) as { sync_utime?: unknown }
    const t = Number(info?.sync_utime)
    if (!Number.isSafeInteger(t) || t <= 0) throw new ChainError(`chain at ${this.endpoint} reported no sync_utime`, undefined, { method: 'getAddressInformation' })
    return t
  }

  async getBalance(address: Address, opts: CallOpts = {}): Promise<bigint> {
    try {
      return await raceSignal(this.client.getBalance(address), opts.signal)
    } catch (err) {
      throw asChainError(err, `reading the balance of ${address.toString()}`)
    }
  }

  async isDeployed(address: Address, opts: CallOpts = {}): Promise<boolean> {
    try {
      return await raceSignal(this.client.isContractDeployed(address), opts.signal)
    } catch (err) {
      throw asChainError(err, `reading the state of ${address.toString()}`)
    }
  }

  async getRootState(root: Address, opts: CallOpts = {}): Promise<RootState> {
    try {
      return await raceSignal(this.open(RootContract.createFromAddress(root)).getState(), opts.signal)
    } catch (err) {
      if (err instanceof ChainError || opts.signal?.aborted) throw asChainError(err, 'reading the root')
      // A get-method failure: say "not deployed" when that is why.
      if (!(await this.isDeployed(root, opts))) throw new RootMismatchError(root, 'no contract is deployed at this address')
      throw asChainError(err, `reading root ${root.toString()} (is it a Cocoon root?)`)
    }
  }
}

/** A Chain over the toncenter-v2 JSON-RPC endpoint in `opts` (toncenter, or the devnet chain). */
export function createChain(opts: ChainOptions): Chain {
  return new TonChain(opts)
}
