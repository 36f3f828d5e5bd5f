// Starts one node (client, proxy or worker) from a validated config: policy, chain and evidence here, then the
// role's own start-up (./run-client.ts, ./run-proxy.ts, ./run-worker.ts), loaded for that role only: a node
// loads neither the other roles' code nor their dependencies.
import fs from 'node:fs'
import path from 'node:path'
import { Address } from '@ton/core'
import { createChain, chainOptionsFromEnv, ChainError, NodeWallet, loadOrCreateWalletKey, RootWatcher } from '../ton/chain-client/index.ts'
import { contractCodes } from '../ton/contracts/index.ts'
import { type EvidenceProvider, SimulatedEvidenceProvider, simulatedImageHash, assertProductionPolicy, parsePolicy } from '../tee/index.ts'
import { LiveTrust, policyFromRoot } from './trust.ts'
import { createBackend } from '../inference/index.ts'
import { ConfigError, configHash, type ChainConfig, type NodeConfig, type TeeConfig } from './config.ts'
import type { Logger } from '../core/log.ts'
import { verifiers, type ChainContext, type NodeExtras, type RoleStart, type RunningNode } from './run-support.ts'

export type { NodeExtras, RunningNode } from './run-support.ts'

async function evidenceProvider(tee: TeeConfig): Promise<EvidenceProvider | undefined> {
  if (tee.kind === 'none') return undefined
  if (tee.kind === 'simulated') return new SimulatedEvidenceProvider(await simulatedImageHash(tee.imageTag ?? ''))
  const { ConfigfsTsmProvider } = await import('../tee/tdx/index.ts')
  return new ConfigfsTsmProvider()
}

function readSecret(file: string | undefined, envName: string): string | undefined {
  if (process.env[envName]) return process.env[envName]
  if (!file) return undefined
  try {
    return fs.readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new ConfigError(file, `cannot read secret file: ${(err as Error).message}`)
  }
}

async function openChain(c: ChainConfig, dataDir: string, log: Logger): Promise<ChainContext> {
  const opts = chainOptionsFromEnv(process.env, { endpoint: c.endpoint, apiKeyFile: c.apiKeyFile })!
  const chain = createChain({ ...opts, log })
  const root = Address.parse(c.root)
  // The root as last seen is kept in the data folder, so the node can start while the chain is unreachable.
  const watcher = new RootWatcher({ chain, root, log }, { refreshMs: c.policyRefreshSec * 1000, cacheFile: path.join(dataDir, 'root-state.json') })
  await watcher.start().catch((err: Error) => {
    throw new ChainError(`cannot read the root contract ${root.toString()} from the chain at ${chain.endpoint}, and no root state from an earlier run is cached in the data folder: ${err.message}; is the chain running, and are chain.endpoint and chain.root right?`)
  })
  const key = loadOrCreateWalletKey(c.walletKeyFile)
  const wallet = new NodeWallet(chain, key, { log })
  log.info('on chain', { endpoint: chain.endpoint, root: root.toString(), wallet: wallet.address.toString(), rootVersion: watcher.state?.version })
  return { chain, root, watcher, wallet, walletSeed: key.secretKey.subarray(0, 32) }
}

/** Builds and starts the node described by `cfg`. */
export async function startNode(cfg: NodeConfig, log: Logger, extras: NodeExtras = {}): Promise<RunningNode> {
  const base = parsePolicy(cfg.policy, 'policy')
  // A production node, and any node in a real TEE, must never trust forgeable simulated peers.
  if (cfg.production || cfg.tee.kind === 'tdx') assertProductionPolicy(base, 'policy')
  // A worker loads its model while it reads the chain: start-up takes the longer of the two, not their sum.
  const backendLoading =
    cfg.role === 'worker' ? createBackend(cfg.backend.kind === 'openai' ? { ...cfg.backend, apiKey: readSecret(cfg.backend.apiKeyFile, 'COCOON_BACKEND_API_KEY') } : cfg.backend, { log }) : undefined
  backendLoading?.catch(() => {})
  let cc: ChainContext | undefined
  try {
    cc = cfg.chain ? await openChain(cfg.chain, cfg.dataDir, log) : undefined
  } catch (err) {
    await backendLoading?.then((b) => b.close()).catch(() => {})
    throw err
  }
  // Compile the contracts now (about a second of CPU), not in the middle of serving the first payment.
  if (cc) await contractCodes()
  // With a chain, the allow-lists come from the root and follow it; the config gives the rest.
  const policyNow = () => (cc ? policyFromRoot(cc.watcher.state!, { role: cfg.role, acceptKinds: base.acceptKinds, maxCertAgeSec: base.maxCertAgeSec, tcbStatuses: base.tcbStatuses }) : base)
  const trust = new LiveTrust(policyNow(), await verifiers(base))
  cc?.watcher.subscribe(() => {
    log.info('root changed; applying its allow-lists', { version: cc.watcher.state?.version })
    trust.update(policyNow())
  })
  const verify = trust.verify
  const provider = await evidenceProvider(cfg.tee)
  const hash = configHash(cfg)
  const onError = (err: Error) => log.error('certificate renewal failed; retrying', { error: err })
  const stopChain = () => cc?.watcher.stop()
  const start: Omit<RoleStart, 'cfg'> = { log, extras, cc, base, trust, verify, provider, hash, onError, stopChain }
  if (cfg.role === 'client') return (await import('./run-client.ts')).startClient({ ...start, cfg })
  if (cfg.role === 'proxy') return (await import('./run-proxy.ts')).startProxy({ ...start, cfg })
  return (await import('./run-worker.ts')).startWorker({ ...start, cfg }, backendLoading!)
}
