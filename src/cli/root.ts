// `cocoon root …`: read and govern the root contract (parameters, allow-lists, registered proxies)
// from the owner's wallet, on the devnet or a real network.
import { parseArgs } from 'node:util'
import { Address, fromNano, toNano } from '@ton/core'
import { chainOptionsFromEnv, createChain, type Chain, deployRoot, DEVNET_PARAMS, hashList, normalizeHash, RootGovernance, loadWalletKey, NodeWallet } from '../ton/chain-client/index.ts'
import { isOffered, type HashKindName, type RootState, type Params } from '../ton/contracts/index.ts'

export const ROOT_USAGE = `Usage: cocoon root COMMAND [options]

Commands:
  show                                   print the root's owner, parameters, allow-lists and proxies
  deploy [PARAM FLAGS] [--unique-id N]   deploy a new root owned by --wallet-key (devnet defaults)
  set-params PARAM FLAGS                 change parameters (unnamed ones keep their value)
  allow-image --role proxy|worker HASH   add an image hash to the proxy or worker allow-list
  revoke-image --role proxy|worker HASH  remove it
  allow-model HASH | revoke-model HASH   the same for model hashes
  delist-proxy --public-key HEX [--reason N]
                                         delist a registered proxy (governance, recorded on chain;
                                         proxies register themselves: cocoon proxy register)

Options:
  --endpoint URL       toncenter v2 JSON-RPC endpoint, or mainnet|testnet|devnet (env COCOON_CHAIN_ENDPOINT)
  --api-key-file FILE  toncenter API key (env COCOON_CHAIN_API_KEY or COCOON_CHAIN_API_KEY_FILE)
  --root ADDRESS       the root contract (env COCOON_ROOT)
  --wallet-key FILE    the owner's wallet seed file, for changes (env COCOON_WALLET_KEY_FILE)
  --value TON          attached to each change; unused gas comes back (default 0.05)
  --json               machine-readable output

Param flags (integers): --price-per-token-nano --worker-fee-per-token-nano --prompt-mult
  --cached-mult --completion-mult --reasoning-mult (10000 = 1.0x) --audio-second-mult (tokens per audio second, 10000 = 1)
  --proxy-close-delay-sec --client-close-delay-sec --min-proxy-stake-nano --min-client-stake-nano

Exit codes: 0 done, 1 the chain or the root refused (the contract's exit code is named), 2 usage.
`

export interface CliIo {
  stdout(text: string): void
  stderr(text: string): void
  env: NodeJS.ProcessEnv
}

/** A command line that cannot run as given (exit code 2). */
export class UsageError extends Error {
  readonly name = 'UsageError'
}

const PARAM_FLAGS: Record<string, keyof Omit<Params, 'paramsVersion'>> = {
  'price-per-token-nano': 'pricePerTokenNano',
  'worker-fee-per-token-nano': 'workerFeePerTokenNano',
  'prompt-mult': 'promptMult',
  'cached-mult': 'cachedMult',
  'completion-mult': 'completionMult',
  'reasoning-mult': 'reasoningMult',
  'audio-second-mult': 'audioSecondMult',
  'proxy-close-delay-sec': 'proxyCloseDelaySec',
  'client-close-delay-sec': 'clientCloseDelaySec',
  'min-proxy-stake-nano': 'minProxyStakeNano',
  'min-client-stake-nano': 'minClientStakeNano',
}
const BIGINT_PARAMS = new Set<keyof Params>(['pricePerTokenNano', 'workerFeePerTokenNano', 'minProxyStakeNano', 'minClientStakeNano'])

const OPTIONS = {
  endpoint: { type: 'string' },
  'api-key-file': { type: 'string' },
  root: { type: 'string' },
  'wallet-key': { type: 'string' },
  value: { type: 'string' },
  json: { type: 'boolean' },
  role: { type: 'string' },
  'public-key': { type: 'string' },
  reason: { type: 'string' },
  'unique-id': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...Object.fromEntries(Object.keys(PARAM_FLAGS).map((f) => [f, { type: 'string' }])),
} as const

type Values = Record<string, string | boolean | undefined>

function defaultIo(): CliIo {
  return { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t), env: process.env }
}

function str(v: Values, name: string): string | undefined {
  const x = v[name]
  return typeof x === 'string' ? x : undefined
}

function required(v: Values, name: string, what: string): string {
  const x = str(v, name)
  if (x === undefined || x === '') throw new UsageError(`--${name} ${what} is required`)
  return x
}

function parseAddress(text: string, what: string): Address {
  try {
    return Address.parse(text.trim())
  } catch {
    throw new UsageError(`${what} ${JSON.stringify(text)} is not a TON address`)
  }
}

function parseInteger(text: string, flag: string, max: bigint): bigint {
  if (!/^[0-9]+$/.test(text)) throw new UsageError(`--${flag} must be a non-negative integer, got ${JSON.stringify(text)}`)
  const n = BigInt(text)
  if (n > max) throw new UsageError(`--${flag} must be at most ${max}`)
  return n
}

function parseTon(text: string, flag: string): bigint {
  if (!/^[0-9]+(\.[0-9]{1,9})?$/.test(text)) throw new UsageError(`--${flag} must be an amount of TON such as 0.05, got ${JSON.stringify(text)}`)
  return toNano(text)
}

function parseHash(text: string | undefined, what: string): Buffer {
  if (text === undefined) throw new UsageError(`give the ${what} as 64 hex characters`)
  try {
    return Buffer.from(normalizeHash(text, what), 'hex')
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

/** The parameter flags given, converted; unknown values are usage errors. */
function paramFlags(v: Values): Partial<Omit<Params, 'paramsVersion'>> {
  const out: Record<string, number | bigint> = {}
  for (const [flag, key] of Object.entries(PARAM_FLAGS)) {
    const text = str(v, flag)
    if (text === undefined) continue
    out[key] = BIGINT_PARAMS.has(key) ? parseInteger(text, flag, (1n << 120n) - 1n) : Number(parseInteger(text, flag, 0xffff_ffffn))
  }
  return out as Partial<Omit<Params, 'paramsVersion'>>
}

function imageKind(v: Values): HashKindName {
  const role = str(v, 'role')
  if (role === 'proxy') return 'proxyImage'
  if (role === 'worker') return 'workerImage'
  throw new UsageError(`--role proxy|worker is required${role === undefined ? '' : `, got ${JSON.stringify(role)}`}`)
}

const KIND_LABEL: Record<HashKindName, string> = { proxyImage: 'proxy image', workerImage: 'worker image', model: 'model' }

/** A multiplier as a factor: 10000 -> 1.0x, 1000 -> 0.1x. */
function ratio(mult: number): string {
  const r = mult / 10_000
  return `${Number.isInteger(r) ? r.toFixed(1) : r}x`
}

function stateJson(address: Address, s: RootState): Record<string, unknown> {
  return {
    address: address.toString(),
    owner: s.owner.toString(),
    version: s.version,
    uniqueId: s.uniqueId,
    params: Object.fromEntries(Object.entries(s.params).map(([k, x]) => [k, typeof x === 'bigint' ? x.toString() : x])),
    proxyImageHashes: s.proxyImageHashes,
    workerImageHashes: s.workerImageHashes,
    modelHashes: s.modelHashes,
    proxies: [...s.proxies].map(([publicKey, p]) => ({
      publicKey, owner: p.owner.toString(), host: p.host, workerPort: p.workerPort, clientPort: p.clientPort,
      imageHash: p.imageHash, stakeNano: p.stakeNano.toString(), state: p.state, offered: isOffered(s, p), registeredAt: p.registeredAt, unlockAt: p.unlockAt,
    })),
    delisted: [...s.delisted].map(([publicKey, d]) => ({ publicKey, at: d.at, reason: d.reason })),
  }
}

function stateText(address: Address, s: RootState): string {
  const p = s.params
  const list = (title: string, hashes: string[]) => `${title} (${hashes.length})\n${hashes.map((h) => `  ${h}\n`).join('')}`
  return (
    `root     ${address.toString()}\n` +
    `owner    ${s.owner.toString()}\n` +
    `version  ${s.version} (unique id ${s.uniqueId})\n` +
    `params   (paramsVersion ${p.paramsVersion})\n` +
    `  price per token       ${p.pricePerTokenNano} nanoTON\n` +
    `  worker fee per token  ${p.workerFeePerTokenNano} nanoTON\n` +
    `  multipliers           prompt ${ratio(p.promptMult)}, cached ${ratio(p.cachedMult)}, completion ${ratio(p.completionMult)}, reasoning ${ratio(p.reasoningMult)}\n` +
    `  audio second          ${p.audioSecondMult / 10_000} adjusted tokens (${(p.pricePerTokenNano * BigInt(p.audioSecondMult)) / 10_000n} nanoTON)\n` +
    `  close delays          proxy ${p.proxyCloseDelaySec} s, client ${p.clientCloseDelaySec} s\n` +
    `  minimum stakes        proxy ${fromNano(p.minProxyStakeNano)} TON, client ${fromNano(p.minClientStakeNano)} TON\n` +
    list('proxy images', s.proxyImageHashes) +
    list('worker images', s.workerImageHashes) +
    list('models', s.modelHashes) +
    `proxies (${s.proxies.size})\n` +
    [...s.proxies]
      .map(([key, x]) =>
        `  ${key}  ${x.host} clients :${x.clientPort} workers :${x.workerPort}  owner ${x.owner.toString()}\n` +
        `    ${x.state}${isOffered(s, x) ? ' (offered)' : ' (not offered)'}, stake ${fromNano(x.stakeNano)} TON, image ${x.imageHash.slice(0, 16)}…${x.unlockAt ? `, stake unlocks at ${x.unlockAt}` : ''}\n`)
      .join('') +
    (s.delisted.size ? `delisted (${s.delisted.size})\n` + [...s.delisted].map(([key, d]) => `  ${key}  at ${d.at} reason ${d.reason}\n`).join('') : '')
  )
}

/** Runs `cocoon root …`; resolves with the exit code. Output goes to `io` (default: the process). */
export async function runRoot(argv: string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io = { ...defaultIo(), ...ioOverrides }
  const [cmd, ...rest] = argv
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      io.stdout(ROOT_USAGE)
      return 0
    }
    const { values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true })
    if (values.help) {
      io.stdout(ROOT_USAGE)
      return 0
    }
    await command(cmd, values as Values, positionals, io)
    return 0
  } catch (err) {
    return reportError(cmd, err, io)
  }
}

function reportError(cmd: string | undefined, err: unknown, io: CliIo): number {
  const e = err as Error & { code?: string }
  const where = `cocoon root${cmd ? ` ${cmd}` : ''}`
  if (e?.name === 'UsageError' || e?.name === 'WalletKeyError' || (e?.name === 'TypeError' && e.code?.startsWith('ERR_PARSE_ARGS'))) {
    io.stderr(`${where}: ${e.message}\n(see cocoon root --help)\n`)
    return 2
  }
  switch (e?.name) {
    case 'ContractRejectedError':
      io.stderr(`${where}: refused on chain: ${e.message}\n`)
      return 1
    case 'ChainError':
    case 'WalletSendError':
    case 'DeliveryTimeoutError':
    case 'RootMismatchError':
      io.stderr(`${where}: ${e.message}\n`)
      return 1
  }
  throw err
}

interface Context {
  chain: Chain
  values: Values
  io: CliIo
}

function openChain(v: Values, io: CliIo): Chain {
  const opts = chainOptionsFromEnv(io.env, { endpoint: str(v, 'endpoint'), apiKeyFile: str(v, 'api-key-file') })
  if (!opts) throw new UsageError('no chain endpoint: give --endpoint URL (or mainnet, testnet, devnet) or set COCOON_CHAIN_ENDPOINT')
  return createChain(opts)
}

function rootAddress(ctx: Context): Address {
  const text = str(ctx.values, 'root') ?? ctx.io.env.COCOON_ROOT
  if (!text) throw new UsageError('no root: give --root ADDRESS or set COCOON_ROOT')
  return parseAddress(text, 'root')
}

function ownerWallet(ctx: Context): NodeWallet {
  const file = str(ctx.values, 'wallet-key') ?? ctx.io.env.COCOON_WALLET_KEY_FILE
  if (!file) throw new UsageError('changes are signed by the owner: give --wallet-key FILE (or set COCOON_WALLET_KEY_FILE)')
  return new NodeWallet(ctx.chain, loadWalletKey(file))
}

function governance(ctx: Context): RootGovernance {
  const value = str(ctx.values, 'value')
  return new RootGovernance(ctx.chain, ownerWallet(ctx), rootAddress(ctx), value === undefined ? undefined : parseTon(value, 'value'))
}

async function command(cmd: string, values: Values, positionals: string[], io: CliIo): Promise<void> {
  const known = ['show', 'deploy', 'set-params', 'allow-image', 'revoke-image', 'allow-model', 'revoke-model', 'delist-proxy']
  if (!known.includes(cmd)) throw new UsageError(`unknown command ${JSON.stringify(cmd)}; expected one of ${known.join(', ')}`)
  const takesHash = ['allow-image', 'revoke-image', 'allow-model', 'revoke-model'].includes(cmd)
  if (positionals.length > (takesHash ? 1 : 0)) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[takesHash ? 1 : 0])}`)
  const json = values.json === true
  const ctx: Context = { chain: openChain(values, io), values, io }
  /** After a change: the new state, briefly. */
  const done = async (gov: RootGovernance, what: string) => {
    const s = await gov.state()
    io.stdout(json ? JSON.stringify({ ok: true, done: what, ...stateJson(gov.address, s) }) + '\n' : `${what} on ${gov.address.toString()} (version ${s.version})\n`)
  }

  switch (cmd) {
    case 'show': {
      const address = rootAddress(ctx)
      const s = await ctx.chain.getRootState(address)
      io.stdout(json ? JSON.stringify(stateJson(address, s)) + '\n' : stateText(address, s))
      return
    }
    case 'deploy': {
      const wallet = ownerWallet(ctx)
      const uniqueId = str(values, 'unique-id')
      const params = { ...DEVNET_PARAMS, ...paramFlags(values) }
      const out = await deployRoot(ctx.chain, wallet, { params, uniqueId: uniqueId === undefined ? 0 : Number(parseInteger(uniqueId, 'unique-id', 0xffff_ffffn)) })
      const what = out.deployed ? 'deployed root' : 'root already deployed'
      io.stdout(json ? JSON.stringify({ ok: true, deployed: out.deployed, ...stateJson(out.address, out.state) }) + '\n' : `${what} ${out.address.toString()}\n`)
      return
    }
    case 'set-params': {
      const changes = paramFlags(values)
      if (Object.keys(changes).length === 0) throw new UsageError('give at least one parameter flag, e.g. --price-per-token-nano 2000')
      const gov = governance(ctx)
      await gov.setParams(changes)
      await done(gov, `set ${Object.keys(changes).join(', ')}`)
      return
    }
    case 'allow-image':
    case 'revoke-image':
    case 'allow-model':
    case 'revoke-model': {
      const kind: HashKindName = cmd.endsWith('model') ? 'model' : imageKind(values)
      const hash = parseHash(positionals[0], `${KIND_LABEL[kind]} hash`).toString('hex')
      const gov = governance(ctx)
      const allow = cmd.startsWith('allow')
      // Say plainly when there is nothing to do, rather than showing the root's "already listed" refusal.
      const listed = hashList(await gov.state(), kind).includes(hash)
      if (listed === allow) {
        io.stdout(json ? JSON.stringify({ ok: true, unchanged: true }) + '\n' : `${KIND_LABEL[kind]} ${hash} is ${allow ? 'already' : 'not'} on the list; nothing to do\n`)
        return
      }
      if (allow) await gov.allowHash(kind, hash)
      else await gov.revokeHash(kind, hash)
      await done(gov, `${allow ? 'allowed' : 'revoked'} ${KIND_LABEL[kind]} ${hash}`)
      return
    }
    case 'delist-proxy': {
      const publicKey = parseHash(required(values, 'public-key', 'HEX'), 'proxy public key')
      const reasonText = str(values, 'reason')
      const reason = reasonText === undefined ? 0 : Number(parseInteger(reasonText, 'reason', 0xffff_ffffn))
      const gov = governance(ctx)
      await gov.delistProxy(publicKey, reason)
      await done(gov, `delisted proxy ${publicKey.toString('hex')} (reason ${reason})`)
      return
    }
  }
}
