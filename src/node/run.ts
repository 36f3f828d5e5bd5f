// Starts one node (client, proxy or worker) from a validated config: identity, policy, backend, servers, shutdown.
import fs from 'node:fs'
import path from 'node:path'
import { Ledger } from '../payments/ledger.ts'
import { PartyLedger } from '../payments/party-ledger.ts'
import { ProxyBilling } from '../payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import type http from 'node:http'
import type { EvidenceKind, EvidenceProvider, EvidenceVerifier, Policy } from '../tee/types.ts'
import { RenewingIdentity } from '../tee/renew.ts'
import { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../tee/simulated.ts'
import { createPeerVerifier } from '../tee/verify.ts'
import { assertProductionPolicy, parsePolicy } from '../tee/policy.ts'
import { VERIFICATION_CACHE_TTL_MS } from '../tee/constants.ts'
import { createBackend } from '../inference/create.ts'
import type { InferenceBackend } from '../inference/types.ts'
import type { PeerVerifier } from '../net/attested.ts'
import { createClient } from '../client/client.ts'
import { createProxy } from '../proxy/proxy.ts'
import { createWorker } from '../worker/worker.ts'
import { ConfigError, configHash, type NodeConfig, type TeeConfig } from './config.ts'
import type { Logger } from './log.ts'
import { listenPort, startOpsServer } from './ops.ts'

export interface RunningNode {
  role: NodeConfig['role']
  /** Bound ports, useful when the config asked for port 0. */
  ports: Record<string, number>
  stop(): Promise<void>
}

async function evidenceProvider(tee: TeeConfig): Promise<EvidenceProvider | undefined> {
  if (tee.kind === 'none') return undefined
  if (tee.kind === 'simulated') return new SimulatedEvidenceProvider(await simulatedImageHash(tee.imageTag ?? ''))
  const { ConfigfsTsmProvider } = await import('../tee/tdx/index.ts')
  return new ConfigfsTsmProvider()
}

async function verifiers(policy: Policy): Promise<Partial<Record<EvidenceKind, EvidenceVerifier>>> {
  const v: Partial<Record<EvidenceKind, EvidenceVerifier>> = {}
  if (policy.acceptKinds.includes('simulated')) v.simulated = new SimulatedEvidenceVerifier()
  if (policy.acceptKinds.includes('tdx')) {
    const { TdxEvidenceVerifier } = await import('../tee/tdx/index.ts')
    v.tdx = new TdxEvidenceVerifier({ pccsUrl: process.env.COCOON_PCCS_URL })
  }
  return v
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

/** Builds and starts the node described by `cfg`. */
export async function startNode(cfg: NodeConfig, log: Logger): Promise<RunningNode> {
  const policy: Policy = parsePolicy(cfg.policy, 'policy')
  // A production node, and any node in a real TEE, must never trust forgeable simulated peers.
  if (cfg.production || cfg.tee.kind === 'tdx') assertProductionPolicy(policy, 'policy')
  const verifyFn = createPeerVerifier(policy, await verifiers(policy), { cacheTtlMs: VERIFICATION_CACHE_TTL_MS })
  const verify: PeerVerifier = (der, role) => verifyFn(der, role)
  const provider = await evidenceProvider(cfg.tee)
  const hash = configHash(cfg)
  const onError = (err: Error) => log.error('certificate renewal failed; retrying', { error: err })

  if (cfg.role === 'client') {
    const identity = await RenewingIdentity.start({ role: 'client', provider, configHash: hash }, { onError })
    const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
    const client = createClient(cfg, { identity, verify, log, ledger })
    const port = await client.start()
    return {
      role: 'client',
      ports: { api: port },
      stop: async () => {
        identity.stop()
        await client.stop()
        ledger.close()
      },
    }
  }

  if (cfg.role === 'proxy') {
    const identity = await RenewingIdentity.start({ role: 'proxy', provider, configHash: hash }, { onError })
    const ledger = new Ledger(path.join(cfg.dataDir, 'ledger.sqlite'))
    const billing = new ProxyBilling({ ledger, params: () => OFFCHAIN_PRICE_PARAMS, log })
    const proxy = createProxy(cfg, { identity, verify, log, billing })
    const ports = await proxy.start()
    const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, proxy, log)
    return {
      role: 'proxy',
      ports: { ...ports, stats: listenPort(ops) },
      stop: async () => {
        identity.stop()
        await proxy.stop()
        ledger.close()
        await closeServer(ops)
      },
    }
  }

  const b = cfg.backend
  const backend: InferenceBackend = await createBackend(
    { ...b, apiKey: readSecret(b.apiKeyFile, 'COCOON_BACKEND_API_KEY') },
    { log },
  )
  let identity: RenewingIdentity
  try {
    identity = await RenewingIdentity.start({ role: 'worker', provider, configHash: hash, modelId: backend.model.id, modelHash: backend.model.hash || undefined }, { onError })
  } catch (err) {
    await backend.close()
    throw err
  }
  const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
  const worker = createWorker(cfg, { backend, identity, verify, log, ledger })
  const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, worker, log)
  worker.start()
  log.info('worker ready', { model: backend.model.id, modelHash: backend.model.hash, coefficient: cfg.coefficient ?? 1000 })
  return {
    role: 'worker',
    ports: { stats: listenPort(ops) },
    stop: async () => {
      identity.stop()
      await worker.stop()
      ledger.close()
      await closeServer(ops)
      await backend.close()
    },
  }
}

function closeServer(s: http.Server): Promise<void> {
  return new Promise((resolve) => {
    s.close(() => resolve())
    s.closeAllConnections()
  })
}
