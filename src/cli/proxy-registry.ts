// `cocoon proxy register|update|unregister`: a proxy operator puts its proxy on the root's registry
// permissionlessly (allowed image, stake, endpoint, signed by the payment key), moves its endpoint,
// and leaves (the stake comes back after the root's close delay, with `unregister --finish`).
import { parseArgs } from 'node:util'
import { Address } from '@ton/core'
import { loadConfig, ConfigError, type ProxyConfig } from '../node/config.ts'
import { createLogger } from '../core/log.ts'
import { createChain, chainOptionsFromEnv, NodeWallet, loadOrCreateWalletKey, normalizeHash, ProxyRegistry } from '../ton/chain-client/index.ts'
import { isOffered, type ProxyEndpoint, type ProxyInfo } from '../ton/contracts/index.ts'
import { simulatedImageHash } from '../tee/index.ts'
import { formatTon, parseTon } from './money.ts'

export const PROXY_REGISTRY_COMMANDS = ['register', 'update', 'unregister'] as const

function port(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(what, `"${text}" is not a port (1-65535)`)
  return n
}

/** The endpoint to publish: flags over the config's listen ports; the host must be one clients can reach. */
function endpointOf(cfg: ProxyConfig, v: { host?: string; 'worker-port'?: string; 'client-port'?: string }): ProxyEndpoint {
  const host = v.host ?? cfg.clientListen.host
  if (!host || host === '0.0.0.0' || host === '::') throw new ConfigError('--host', 'is required: the address clients and workers reach this proxy at')
  if (Buffer.byteLength(host) > 127) throw new ConfigError('--host', 'is longer than 127 bytes')
  return { host, workerPort: port(v['worker-port'], cfg.workerListen.port, '--worker-port'), clientPort: port(v['client-port'], cfg.clientListen.port, '--client-port') }
}

function entryJson(key: string, p: ProxyInfo | undefined, offered: boolean): Record<string, unknown> {
  if (!p) return { publicKey: key, registered: false }
  return {
    publicKey: key, registered: true, state: p.state, offered, host: p.host, workerPort: p.workerPort, clientPort: p.clientPort,
    imageHash: p.imageHash, stakeTon: formatTon(p.stakeNano), owner: p.owner.toString(), registeredAt: p.registeredAt, unlockAt: p.unlockAt,
  }
}

export async function runProxyRegistry(sub: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      host: { type: 'string' },
      'worker-port': { type: 'string' },
      'client-port': { type: 'string' },
      stake: { type: 'string' },
      image: { type: 'string' },
      finish: { type: 'boolean', default: false },
    },
  })
  if (!values.config) throw new ConfigError(`proxy ${sub}`, '--config FILE is required')
  const cfg = loadConfig(values.config)
  if (cfg.role !== 'proxy') throw new ConfigError(values.config, `is a ${cfg.role} config, not a proxy config`)
  const c = cfg.chain
  if (!c) throw new ConfigError(values.config, 'has no "chain" section: there is no root to register on')
  const log = createLogger({ role: 'proxy', cmd: true }, 'warn')
  const chain = createChain({ ...chainOptionsFromEnv(process.env, { endpoint: c.endpoint, apiKeyFile: c.apiKeyFile })!, log })
  const wallet = new NodeWallet(chain, loadOrCreateWalletKey(c.walletKeyFile), { log })
  const registry = new ProxyRegistry(chain, wallet, loadOrCreateWalletKey(c.paymentKeyFile), Address.parse(c.root))
  const key = registry.publicKeyHex

  if (sub === 'register') {
    const imageHash = values.image
      ? normalizeHash(values.image, '--image')
      : cfg.tee.kind === 'simulated'
        ? await simulatedImageHash(cfg.tee.imageTag ?? '')
        : undefined
    if (!imageHash) throw new ConfigError('--image', 'is required for a TDX proxy: its image hash (cocoon attest inspect shows it)')
    const before = await registry.state()
    const existing = before.proxies.get(key)
    if (existing) throw new ConfigError('register', `this payment key is already registered (${existing.state}); use cocoon proxy update to move it`)
    const stakeNano = values.stake ? parseTon(values.stake, '--stake') : before.params.minProxyStakeNano
    await registry.register(endpointOf(cfg, values), { imageHash, stakeNano })
  } else if (sub === 'update') {
    await registry.update(endpointOf(cfg, values))
  } else if (sub === 'unregister') {
    if (values.finish) await registry.withdrawStake()
    else await registry.unregister()
  } else throw new ConfigError(`proxy ${sub}`, 'unknown command; use register, update, unregister or withdraw')

  const st = await registry.state()
  const p = st.proxies.get(key)
  process.stdout.write(JSON.stringify({ ...entryJson(key, p, p ? isOffered(st, p) : false), wallet: wallet.address.toString(), walletTon: formatTon(await wallet.balance()) }) + '\n')
  return 0
}
