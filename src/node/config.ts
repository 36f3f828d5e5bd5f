// Node configuration: JSON files per role, validated at start-up with messages that name the field, plus env overrides.
import fs from 'node:fs'
import crypto from 'node:crypto'
import path from 'node:path'
import { Address } from '@ton/core'
import type { Capability, LlamaBackendConfig, OpenAIBackendConfig, PocketSphinxBackendConfig } from '../inference/index.ts'
import type { Role } from '../tee/index.ts'
import { portProblem, urlPort } from '../core/ports.ts'
import { MAX_E2EE_RECIPIENTS } from '../net/e2ee.ts'
import { ConfigError } from '../core/errors.ts'

export { ConfigError } from '../core/errors.ts'

export interface HostPort {
  host: string
  port: number
}

export interface TeeConfig {
  /** 'simulated' for machines without TDX (devnet), 'tdx' inside a TDX guest, 'none' for unattested clients. */
  kind: 'simulated' | 'tdx' | 'none'
  /** Simulated only: stands for a different image build (changes the simulated image hash). */
  imageTag?: string
}

/**
 * The backend settings a worker config holds, one shape per kind: the inference backend's own, except
 * that the openai backend's API key is read from a file (secrets never in the config itself or argv).
 */
export type BackendConfig = LlamaBackendConfig | (Omit<OpenAIBackendConfig, 'apiKey'> & { apiKeyFile?: string }) | PocketSphinxBackendConfig

/** Where a node settles: the chain endpoint, the root contract and the node's wallet. */
interface ChainCommon {
  /** toncenter-v2 JSON-RPC URL, or 'mainnet' | 'testnet' | 'devnet'. */
  endpoint: string
  /** The root contract's address. */
  root: string
  /** A file holding the toncenter API key (or COCOON_CHAIN_API_KEY). */
  apiKeyFile?: string
  /** The node's wallet seed (created if absent, mode 0600). Default <dataDir>/wallet.key. */
  walletKeyFile: string
  /** How often the root (allow-lists, parameters) is re-read. Default 30. */
  policyRefreshSec: number
}

export interface ClientChainConfig extends ChainCommon {
  /** First deposit into each client contract. Default 1 TON. */
  depositNano?: bigint
  /** Top up when the balance falls below this (0 = never). */
  topUpBelowNano?: bigint
  /** Amount of each top-up. Default: depositNano. */
  topUpNano?: bigint
  /** Most the node puts into client contracts automatically (deposits and top-ups, all proxies together). Default: no limit. */
  fundingBudgetNano?: bigint
}

export interface ProxyChainConfig extends ChainCommon {
  /** The voucher-signing key seed. Default <dataDir>/payment.key. */
  paymentKeyFile: string
  /** Seconds between settlement rounds. Default 30. */
  settleIntervalSec?: number
  /** Charge a client on chain once this much is unsettled. */
  chargeThresholdNano?: bigint
  /** Stake to keep in the proxy contract (default: the root's minimum). */
  stakeNano?: bigint
}

export interface WorkerChainConfig extends ChainCommon {
  /** Claim payouts once this much is unclaimed. Default 0.1 TON. */
  payoutThresholdNano?: bigint
}

/** The chain section of any role's config (each role's config names its own). */
export type ChainConfig = ClientChainConfig | ProxyChainConfig | WorkerChainConfig

interface Common {
  role: Role
  /** A production node refuses simulated evidence, for itself and from its peers. Default false. */
  production: boolean
  /** Where the node's ledger and keys live. Default .cocoon/<role>. */
  dataDir: string
  tee: TeeConfig
  /** Raw policy JSON; parsed by tee/policy. */
  policy: unknown
}

export interface ClientConfig extends Common {
  role: 'client'
  /** Settle on chain; absent, the node runs off-chain (prices from the defaults, nobody pays). */
  chain?: ClientChainConfig
  listen: HostPort
  /** Proxies named in the config; on chain, the root's offered proxies are discovered as well. */
  proxies: HostPort[]
  /** Sessions kept open at once, to the best-scored proxies. Default 2. */
  maxProxySessions?: number
  defaultMaxCoefficient?: number
  defaultTimeoutSec?: number
  maxBodyBytes?: number
  /** Require an API key (Authorization: Bearer) on the OpenAI API. Default: off on loopback, on when listening anywhere else. */
  apiKeys: boolean
  /**
   * End-to-end encryption to the worker (docs/e2ee.md). `required` (default): every chat and completions
   * request is encrypted to verified workers, and a model no E2EE worker serves is refused. `optional`:
   * encrypted when a verified worker has an HPKE key, else plaintext through the (attested) proxy. `off`: plaintext.
   */
  e2ee: 'required' | 'optional' | 'off'
  /** Workers each encrypted request's key is wrapped for (k), so the proxy keeps a choice and retries. Default 3. */
  e2eeRecipients?: number
}

export interface ProxyConfig extends Common {
  role: 'proxy'
  chain?: ProxyChainConfig
  stats: HostPort
  workerListen: HostPort
  clientListen: HostPort
  maxAttempts?: number
  /** Requests that may wait for a worker slot (0: none wait, a busy network answers 429). */
  queueDepth?: number
  /** Longest wait for a worker slot, ms. */
  queueMaxWaitMs?: number
}

export interface WorkerConfig extends Common {
  role: 'worker'
  chain?: WorkerChainConfig
  stats: HostPort
  proxies: HostPort[]
  backend: BackendConfig
  coefficient?: number
  maxActiveRequests?: number
  maxTokensCap?: number
  /** `on` (default): an HPKE key in the claims, encrypted requests served. `off`: plaintext only, like workers before E2EE. */
  e2ee: 'on' | 'off'
}

export type NodeConfig = ClientConfig | ProxyConfig | WorkerConfig

/** Is this listen host reachable only from this machine? */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/** Parses "host:port" (IPv6 in brackets). */
export function parseHostPort(v: unknown, where: string): HostPort {
  if (typeof v !== 'string') throw new ConfigError(where, 'must be a "host:port" string')
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v)
  if (!m) throw new ConfigError(where, `"${v}" is not "host:port"`)
  const port = Number(m[3])
  const problem = portProblem(port)
  if (problem) throw new ConfigError(where, problem)
  return { host: m[1] ?? m[2], port }
}

/** Checks the port a URL setting dials against the blocked-port list. */
/** Parses an http(s) URL setting and checks its port is one fetch accepts. */
function checkedUrl(v: string, where: string): URL {
  let url: URL
  try {
    url = new URL(v)
  } catch {
    throw new ConfigError(where, `"${v}" is not a URL`)
  }
  const problem = portProblem(urlPort(url))
  if (problem) throw new ConfigError(where, problem)
  return url
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(where, 'must be an object')
  return v as Record<string, unknown>
}

function optInt(o: Record<string, unknown>, key: string, where: string, min: number, max: number): number | undefined {
  const v = o[key]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new ConfigError(`${where}.${key}`, `must be an integer in [${min}, ${max}]`)
  return v
}

function optStr(o: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = o[key]
  if (v === undefined) return undefined
  if (typeof v !== 'string') throw new ConfigError(`${where}.${key}`, 'must be a string')
  return v
}

/** Configured proxies: required off-chain; on chain optional (the root's registered proxies are discovered too). */
function proxiesSetting(v: unknown, where: string, onChain: boolean): HostPort[] {
  if (v === undefined && onChain) return []
  if (Array.isArray(v) && v.length === 0 && onChain) return []
  return hostPorts(v, where)
}

function hostPorts(v: unknown, where: string): HostPort[] {
  if (!Array.isArray(v) || v.length === 0) throw new ConfigError(where, 'must be a non-empty array of "host:port"')
  return v.map((x, i) => parseHostPort(x, `${where}[${i}]`))
}

const KNOWN_KEYS: Record<Role, string[]> = {
  client: ['role', 'production', 'dataDir', 'chain', 'tee', 'policy', 'listen', 'proxies', 'maxProxySessions', 'defaultMaxCoefficient', 'defaultTimeoutSec', 'maxBodyBytes', 'apiKeys', 'e2ee', 'e2eeRecipients'],
  proxy: ['role', 'production', 'dataDir', 'chain', 'tee', 'policy', 'stats', 'workerListen', 'clientListen', 'maxAttempts', 'queueDepth', 'queueMaxWaitMs'],
  worker: ['role', 'production', 'dataDir', 'chain', 'tee', 'policy', 'stats', 'proxies', 'backend', 'coefficient', 'maxActiveRequests', 'maxTokensCap', 'e2ee'],
}

function tee(v: unknown, where: string, role: Role): TeeConfig {
  const o = obj(v ?? { kind: role === 'client' ? 'none' : 'simulated' }, where)
  const kind = o.kind
  if (kind !== 'simulated' && kind !== 'tdx' && kind !== 'none') throw new ConfigError(`${where}.kind`, 'must be "simulated", "tdx" or "none"')
  if (kind === 'none' && role !== 'client') throw new ConfigError(`${where}.kind`, `a ${role} must run in a TEE ("tdx" or "simulated")`)
  return { kind, imageTag: optStr(o, 'imageTag', where) }
}

function hash256(o: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = optStr(o, key, where)
  if (v !== undefined && !/^[0-9a-f]{64}$/.test(v)) throw new ConfigError(`${where}.${key}`, 'must be a SHA-256 in 64 lowercase hex characters')
  return v
}

const BACKEND_KEYS: Record<BackendConfig['kind'], string[]> = {
  llama: ['kind', 'model', 'modelId', 'threads', 'contextSize', 'parallel', 'gpu', 'expectedSha256', 'embeddings', 'matryoshka'],
  openai: ['kind', 'model', 'modelId', 'baseUrl', 'apiKeyFile', 'upstreamModel', 'timeoutMs', 'modelHash', 'capabilities', 'cacheSalt'],
  pocketsphinx: ['kind', 'model', 'modelId', 'parallel'],
}

function optBool(o: Record<string, unknown>, key: string, where: string): boolean | undefined {
  const v = o[key]
  if (v === undefined) return undefined
  if (typeof v !== 'boolean') throw new ConfigError(`${where}.${key}`, 'must be true or false')
  return v
}

const CAPABILITIES: readonly Capability[] = ['chat', 'completions', 'embeddings', 'transcriptions']

function capabilities(o: Record<string, unknown>, where: string): Capability[] | undefined {
  const v = o.capabilities
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.length === 0 || !v.every((c) => CAPABILITIES.includes(c as Capability))) {
    throw new ConfigError(`${where}.capabilities`, `must be a non-empty list of ${CAPABILITIES.map((c) => `"${c}"`).join(', ')}`)
  }
  return v as Capability[]
}

function backend(v: unknown, where: string): BackendConfig {
  const o = obj(v, where)
  const kind = o.kind ?? 'llama'
  if (kind !== 'llama' && kind !== 'openai' && kind !== 'pocketsphinx') throw new ConfigError(`${where}.kind`, 'must be "llama", "openai" or "pocketsphinx"')
  if ('apiKey' in o) throw new ConfigError(`${where}.apiKey`, 'secrets do not belong in the config; use apiKeyFile or COCOON_BACKEND_API_KEY')
  for (const k of Object.keys(o)) if (!BACKEND_KEYS[kind].includes(k)) throw new ConfigError(`${where}.${k}`, `unknown setting for the ${kind} backend`)
  const model = optStr(o, 'model', where)
  if (!model) throw new ConfigError(`${where}.model`, 'is required')
  const modelId = optStr(o, 'modelId', where)
  if (kind === 'llama') {
    if (o.gpu !== undefined && o.gpu !== false && o.gpu !== 'auto') throw new ConfigError(`${where}.gpu`, 'must be false (CPU only) or "auto"')
    return {
      kind,
      model,
      modelId,
      threads: optInt(o, 'threads', where, 1, 256),
      contextSize: optInt(o, 'contextSize', where, 64, 1 << 20),
      parallel: optInt(o, 'parallel', where, 1, 256),
      gpu: o.gpu as false | 'auto' | undefined,
      expectedSha256: hash256(o, 'expectedSha256', where),
      embeddings: optBool(o, 'embeddings', where),
      matryoshka: optBool(o, 'matryoshka', where),
    }
  }
  if (kind === 'pocketsphinx') return { kind, model, modelId, parallel: optInt(o, 'parallel', where, 1, 256) }
  const baseUrl = optStr(o, 'baseUrl', where)
  if (!baseUrl) throw new ConfigError(`${where}.baseUrl`, 'is required for the openai backend')
  checkedUrl(baseUrl, `${where}.baseUrl`)
  return {
    kind,
    model,
    modelId,
    baseUrl,
    upstreamModel: optStr(o, 'upstreamModel', where),
    timeoutMs: optInt(o, 'timeoutMs', where, 1, 3_600_000),
    modelHash: hash256(o, 'modelHash', where),
    apiKeyFile: optStr(o, 'apiKeyFile', where),
    capabilities: capabilities(o, where),
    cacheSalt: optBool(o, 'cacheSalt', where),
  }
}

const CHAIN_KEYS: Record<Role, string[]> = {
  client: ['depositNano', 'topUpBelowNano', 'topUpNano', 'fundingBudgetNano'],
  proxy: ['paymentKeyFile', 'settleIntervalSec', 'chargeThresholdNano', 'stakeNano'],
  worker: ['payoutThresholdNano'],
}

function nano(o: Record<string, unknown>, key: string, where: string): bigint | undefined {
  const v = o[key]
  if (v === undefined) return undefined
  if ((typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || (typeof v === 'string' && /^\d+$/.test(v))) return BigInt(v)
  throw new ConfigError(`${where}.${key}`, 'must be a whole number of nanoTON (a number or a decimal string)')
}

function chainConfig(v: unknown, where: string, role: 'client', dataDir: string): ClientChainConfig
function chainConfig(v: unknown, where: string, role: 'proxy', dataDir: string): ProxyChainConfig
function chainConfig(v: unknown, where: string, role: 'worker', dataDir: string): WorkerChainConfig
function chainConfig(v: unknown, where: string, role: Role, dataDir: string): ChainConfig {
  const o = obj(v, where)
  const known = ['endpoint', 'root', 'apiKeyFile', 'walletKeyFile', 'policyRefreshSec', ...CHAIN_KEYS[role]]
  for (const k of Object.keys(o)) if (!known.includes(k)) throw new ConfigError(`${where}.${k}`, `unknown chain setting for a ${role}`)
  if ('apiKey' in o) throw new ConfigError(`${where}.apiKey`, 'secrets do not belong in the config; use apiKeyFile or COCOON_CHAIN_API_KEY')
  const endpoint = optStr(o, 'endpoint', where)
  if (!endpoint) throw new ConfigError(`${where}.endpoint`, "is required (a URL, or 'mainnet' / 'testnet' / 'devnet')")
  if (/^https?:\/\//.test(endpoint)) checkedUrl(endpoint, `${where}.endpoint`)
  const root = optStr(o, 'root', where)
  if (!root) throw new ConfigError(`${where}.root`, 'is required (the root contract address)')
  try {
    Address.parse(root)
  } catch {
    throw new ConfigError(`${where}.root`, `"${root}" is not a TON address`)
  }
  const common: ChainCommon = {
    endpoint,
    root,
    apiKeyFile: optStr(o, 'apiKeyFile', where),
    walletKeyFile: optStr(o, 'walletKeyFile', where) ?? path.join(dataDir, 'wallet.key'),
    policyRefreshSec: optInt(o, 'policyRefreshSec', where, 1, 86_400) ?? 30,
  }
  if (role === 'client') {
    return { ...common, depositNano: nano(o, 'depositNano', where), topUpBelowNano: nano(o, 'topUpBelowNano', where), topUpNano: nano(o, 'topUpNano', where), fundingBudgetNano: nano(o, 'fundingBudgetNano', where) }
  }
  if (role === 'proxy') {
    return {
      ...common,
      paymentKeyFile: optStr(o, 'paymentKeyFile', where) ?? path.join(dataDir, 'payment.key'),
      settleIntervalSec: optInt(o, 'settleIntervalSec', where, 1, 86_400),
      chargeThresholdNano: nano(o, 'chargeThresholdNano', where),
      stakeNano: nano(o, 'stakeNano', where),
    }
  }
  return { ...common, payoutThresholdNano: nano(o, 'payoutThresholdNano', where) }
}

/**
 * Environment overrides, applied before validation: COCOON_<KEY> for top-level keys, with
 * camelCase keys in UPPER_SNAKE (COCOON_LISTEN, COCOON_MAX_ACTIVE_REQUESTS). Lists of host:port
 * are comma-separated; numbers are parsed.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, role: Role, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const out = { ...raw }
  for (const key of KNOWN_KEYS[role]) {
    if (key === 'role' || key === 'production' || key === 'chain' || key === 'tee' || key === 'policy' || key === 'backend') continue
    const name = 'COCOON_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase()
    const v = env[name]
    if (v === undefined || v === '') continue
    if (key === 'proxies') out[key] = v.split(',').map((s) => s.trim())
    else if (v === 'true' || v === 'false') out[key] = v === 'true'
    else if (/^-?\d+(\.\d+)?$/.test(v)) out[key] = Number(v)
    else out[key] = v
  }
  return out
}

/** Validates a parsed config object for `role` (from the file, or the CLI's --role). */
export function validateConfig(raw: unknown, where = 'config'): NodeConfig {
  const o = obj(raw, where)
  const role = o.role
  if (role !== 'client' && role !== 'proxy' && role !== 'worker') throw new ConfigError(`${where}.role`, 'must be "client", "proxy" or "worker"')
  for (const k of Object.keys(o)) if (!KNOWN_KEYS[role].includes(k)) throw new ConfigError(`${where}.${k}`, `unknown setting for a ${role}`)
  if (o.production !== undefined && typeof o.production !== 'boolean') throw new ConfigError(`${where}.production`, 'must be true or false')
  const production = o.production === true
  const dataDir = optStr(o, 'dataDir', where) ?? `.cocoon/${role}`
  const common = { production, dataDir, tee: tee(o.tee, `${where}.tee`, role), policy: o.policy }
  const chain = <R extends Role>(r: R) => (o.chain === undefined ? undefined : chainConfig(o.chain, `${where}.chain`, r as any, dataDir) as Extract<NodeConfig, { role: R }>['chain'])
  if (production && common.tee.kind === 'simulated') throw new ConfigError(`${where}.tee.kind`, 'a production node cannot run on a simulated TEE')
  if (o.policy === undefined) throw new ConfigError(`${where}.policy`, 'is required (which evidence and images to trust)')
  if (role === 'client') {
    const listen = parseHostPort(o.listen ?? '127.0.0.1:10000', `${where}.listen`)
    if (o.apiKeys !== undefined && typeof o.apiKeys !== 'boolean') throw new ConfigError(`${where}.apiKeys`, 'must be true or false')
    return {
      role,
      ...common,
      chain: chain(role),
      listen,
      apiKeys: (o.apiKeys as boolean | undefined) ?? !isLoopback(listen.host),
      proxies: proxiesSetting(o.proxies, `${where}.proxies`, o.chain !== undefined),
      maxProxySessions: optInt(o, 'maxProxySessions', where, 1, 64),
      defaultMaxCoefficient: optInt(o, 'defaultMaxCoefficient', where, 0, 1e9),
      defaultTimeoutSec: optInt(o, 'defaultTimeoutSec', where, 1, 3600),
      maxBodyBytes: optInt(o, 'maxBodyBytes', where, 1024, 1 << 30),
      e2ee: oneOf(o, 'e2ee', where, ['required', 'optional', 'off'] as const) ?? 'required',
      e2eeRecipients: optInt(o, 'e2eeRecipients', where, 1, MAX_E2EE_RECIPIENTS),
    }
  }
  if (role === 'proxy') {
    return {
      role,
      ...common,
      chain: chain(role),
      stats: parseHostPort(o.stats ?? '127.0.0.1:11000', `${where}.stats`),
      workerListen: parseHostPort(o.workerListen ?? '0.0.0.0:11001', `${where}.workerListen`),
      clientListen: parseHostPort(o.clientListen ?? '0.0.0.0:11002', `${where}.clientListen`),
      maxAttempts: optInt(o, 'maxAttempts', where, 1, 10),
      queueDepth: optInt(o, 'queueDepth', where, 0, 100_000),
      queueMaxWaitMs: optInt(o, 'queueMaxWaitMs', where, 1, 3_600_000),
    }
  }
  return {
    role,
    ...common,
    chain: chain(role),
    stats: parseHostPort(o.stats ?? '127.0.0.1:12000', `${where}.stats`),
    proxies: proxiesSetting(o.proxies, `${where}.proxies`, o.chain !== undefined),
    backend: backend(o.backend, `${where}.backend`),
    coefficient: optInt(o, 'coefficient', where, 0, 1e9 - 1),
    maxActiveRequests: optInt(o, 'maxActiveRequests', where, 1, 10_000),
    maxTokensCap: optInt(o, 'maxTokensCap', where, 1, 1 << 20),
    e2ee: oneOf(o, 'e2ee', where, ['on', 'off'] as const) ?? 'on',
  }
}

function oneOf<T extends string>(o: Record<string, unknown>, key: string, where: string, values: readonly T[]): T | undefined {
  const v = o[key]
  if (v === undefined) return undefined
  if (!values.includes(v as T)) throw new ConfigError(`${where}.${key}`, `must be ${values.map((x) => JSON.stringify(x)).join(', ')}`)
  return v as T
}

/** Reads, overrides from the environment and validates a config file. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  let raw: unknown
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw new ConfigError(file, (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `not valid JSON: ${(err as Error).message}`)
  }
  const o = obj(raw, file)
  const role = o.role as Role
  return validateConfig(KNOWN_KEYS[role] ? applyEnvOverrides(o, role, env) : o, file)
}

/** SHA-256 of the effective configuration, canonical JSON; it goes into the attested claims. */
export function configHash(c: NodeConfig): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canon) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().filter((k) => (v as any)[k] !== undefined).map((k) => [k, canon((v as any)[k])])) : v
  return crypto.createHash('sha256').update(JSON.stringify(canon(c), (_k, v) => (typeof v === 'bigint' ? v.toString() : v))).digest('hex')
}
