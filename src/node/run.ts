// Starts one node (client, proxy or worker) from a validated config: identity, policy, backend, servers, shutdown.
import fs from 'node:fs'
import path from 'node:path'
import type http from 'node:http'
import { Address } from '@ton/core'
import { Ledger, LedgerRollbackError } from '../payments/ledger.ts'
import { PartyLedger } from '../payments/party-ledger.ts'
import { ProxyBilling } from '../payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import { ProxySettlement } from '../payments/proxy-settlement.ts'
import { ClientAccount } from '../payments/client-account.ts'
import { WorkerPayouts } from '../payments/worker-payouts.ts'
import { walletOfKey, type ProxyChannel } from '../payments/channels.ts'
import { createChain, chainOptionsFromEnv, type Chain, NodeWallet, loadOrCreateWalletKey, RootWatcher } from '../ton/chain-client/index.ts'
import { contractCodes } from '../ton/contracts/index.ts'
import { identityKeysFromSeed, type EvidenceKind, type EvidenceProvider, type EvidenceVerifier, type Policy, RenewingIdentity, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, assertProductionPolicy, parsePolicy } from '../tee/index.ts'
import { LiveTrust, policyFromRoot, refusalUnder } from './trust.ts'
import { createBackend, type InferenceBackend } from '../inference/index.ts'
import { createClient } from '../client/client.ts'
import { createProxy } from '../proxy/proxy.ts'
import { createWorker } from '../worker/worker.ts'
import { ConfigError, configHash, type ChainConfig, type NodeConfig, type TeeConfig } from './config.ts'
import type { Logger } from '../core/log.ts'
import { listenPort, startOpsServer } from '../core/ops.ts'

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

/** A node's view of the chain: the root it follows and its wallet. */
interface ChainContext {
  chain: Chain
  root: Address
  watcher: RootWatcher
  wallet: NodeWallet
  walletSeed: Buffer
}

async function openChain(c: ChainConfig, log: Logger): Promise<ChainContext> {
  const opts = chainOptionsFromEnv(process.env, { endpoint: c.endpoint, apiKeyFile: c.apiKeyFile })!
  const chain = createChain({ ...opts, log })
  const root = Address.parse(c.root)
  const watcher = new RootWatcher({ chain, root, log }, { refreshMs: c.policyRefreshSec * 1000 })
  await watcher.start()
  const key = loadOrCreateWalletKey(c.walletKeyFile)
  const wallet = new NodeWallet(chain, key, { log })
  log.info('on chain', { endpoint: chain.endpoint, root: root.toString(), wallet: wallet.address.toString(), rootVersion: watcher.state?.version })
  return { chain, root, watcher, wallet, walletSeed: key.secretKey.subarray(0, 32) }
}

/** Builds and starts the node described by `cfg`. */
export async function startNode(cfg: NodeConfig, log: Logger): Promise<RunningNode> {
  const base = parsePolicy(cfg.policy, 'policy')
  // A production node, and any node in a real TEE, must never trust forgeable simulated peers.
  if (cfg.production || cfg.tee.kind === 'tdx') assertProductionPolicy(base, 'policy')
  const cc = cfg.chain ? await openChain(cfg.chain, log) : undefined
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

  if (cfg.role === 'client') {
    // On chain, the client's identity key is its wallet key: the handshake proves it may spend from its client contracts.
    const keys = cc ? await identityKeysFromSeed(cc.walletSeed) : undefined
    const identity = await RenewingIdentity.start({ role: 'client', provider, configHash: hash }, { onError, keys })
    const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
    const c = cfg.chain
    const account = cc
      ? new ClientAccount({ chain: cc.chain, wallet: cc.wallet, root: cc.root, rootState: () => cc.watcher.state, log }, { depositNano: c!.depositNano, topUpBelowNano: c!.topUpBelowNano, topUpNano: c!.topUpNano })
      : undefined
    const client = createClient(cfg, {
      identity,
      verify,
      log,
      ledger,
      onProxy: account
        ? async (peer, proxyId) => {
            if (!peer.claims.paymentKey) return
            await account.ensureFunded(proxyId).catch((err) => log.error('could not fund the client contract for this proxy', { error: err }))
          }
        : undefined,
      funds: account ? (proxyId) => account.stats(proxyId) : undefined,
    })
    trust.onUpdate((p) => client.revalidate((peer) => refusalUnder(p, peer)))
    account?.start(ledger)
    const port = await client.start()
    return {
      role: 'client',
      ports: { api: port },
      stop: async () => {
        stopChain()
        account?.stop()
        identity.stop()
        await client.stop()
        ledger.close()
      },
    }
  }

  if (cfg.role === 'proxy') {
    const ledger = new Ledger(path.join(cfg.dataDir, 'ledger.sqlite'))
    let settlement: ProxySettlement | undefined
    let paymentKeyHex: string | undefined
    if (cc) {
      const paymentKey = loadOrCreateWalletKey(cfg.chain!.paymentKeyFile)
      paymentKeyHex = paymentKey.publicKey.toString('hex')
      const channel: ProxyChannel = { root: cc.root, owner: cc.wallet.address, paymentKey: paymentKey.publicKey, params: cc.watcher.state!.params, codes: await contractCodes() }
      settlement = new ProxySettlement(
        { chain: cc.chain, wallet: cc.wallet, paymentKey, channel, ledger, log },
        { intervalMs: cfg.chain!.settleIntervalSec ? cfg.chain!.settleIntervalSec * 1000 : undefined, chargeThresholdNano: cfg.chain!.chargeThresholdNano, stakeNano: cfg.chain!.stakeNano },
      )
    }
    const billing = new ProxyBilling({ ledger, params: () => settlement?.priceParams() ?? OFFCHAIN_PRICE_PARAMS, funds: settlement, log })
    if (ledger.integrity) {
      // Counters that do not match their own hash-chained events can be neither billed on nor committed.
      log.error('refusing to serve', { reason: ledger.integrity.message })
      billing.refuseService(ledger.integrity.message)
    } else if (settlement) {
      // Refuse to serve, without crashing, when the chain shows this ledger is stale or the contract cannot be staked.
      try {
        await settlement.checkRollback()
        await settlement.ensureStaked()
        settlement.start()
        log.info('proxy contract ready', { address: settlement.address.toString() })
      } catch (err) {
        const reason = err instanceof LedgerRollbackError ? `ledger rollback detected: ${err.message}` : `cannot settle on chain: ${(err as Error).message}`
        log.error('refusing to serve', { reason })
        billing.refuseService(reason)
      }
    }
    const identity = await RenewingIdentity.start({ role: 'proxy', provider, configHash: hash, paymentKey: paymentKeyHex }, { onError })
    const proxy = createProxy(cfg, {
      identity,
      verify,
      log,
      billing,
      clientAccount: cc ? (peer) => walletOfKey(peer.publicKey).toRawString() : undefined,
      payoutVoucher: settlement ? (a) => settlement.payoutVoucher(a) : undefined,
      finalCharge: settlement ? (c, inFlight) => settlement.finalCharge(c, inFlight) : undefined,
      chainStats: settlement ? () => settlement.stats() : undefined,
    })
    trust.onUpdate((p) => proxy.revalidate((peer) => refusalUnder(p, peer)))
    const ports = await proxy.start()
    const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, proxy, log, (req, res) => {
      // Loopback operators can trigger a settlement round now (tests, before a withdrawal).
      if (req.method !== 'POST' || req.url !== '/admin/settle') return false
      if (!settlement) return sendJson(res, 409, { error: 'this proxy runs without a chain' }), true
      settlement.settle({ force: true }).then(
        async (r) => {
          await proxy.pushStatements()
          sendJson(res, 200, { committed: r.committed ?? null, charged: r.charged, payoutVouchers: r.payoutVouchers })
        },
        (err: Error) => sendJson(res, 502, { error: err.message }),
      )
      return true
    })
    return {
      role: 'proxy',
      ports: { ...ports, stats: listenPort(ops) },
      stop: async () => {
        stopChain()
        settlement?.stop()
        identity.stop()
        await proxy.stop()
        await closeServer(ops)
        ledger.close()
      },
    }
  }

  const b = cfg.backend
  const backend: InferenceBackend = await createBackend({ ...b, apiKey: readSecret(b.apiKeyFile, 'COCOON_BACKEND_API_KEY') }, { log })
  let identity: RenewingIdentity
  try {
    identity = await RenewingIdentity.start({ role: 'worker', provider, configHash: hash, modelId: backend.model.id, modelHash: backend.model.hash || undefined }, { onError })
  } catch (err) {
    await backend.close()
    throw err
  }
  const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
  const payouts = cc ? new WorkerPayouts({ chain: cc.chain, wallet: cc.wallet, root: cc.root, rootState: () => cc.watcher.state, ledger, log }, cfg.chain!.payoutThresholdNano) : undefined
  const worker = createWorker(
    { ...cfg, payoutAddress: cc?.wallet.address.toRawString() },
    { backend, identity, verify, log, ledger, onVoucher: payouts ? (proxyId) => payouts.onVoucher(proxyId) : undefined, payoutContract: payouts ? (proxyId) => payouts.contractAddress(proxyId) : undefined },
  )
  trust.onUpdate((p) => worker.revalidate((peer) => refusalUnder(p, peer)))
  const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, worker, log, (req, res) => {
    if (req.method !== 'POST' || !req.url?.startsWith('/admin/payout')) return false
    if (!payouts) return sendJson(res, 409, { error: 'this worker runs without a chain' }), true
    Promise.all(ledger.all().map(async (r) => ({ proxy: r.proxy, tokensPaid: (await payouts.claim(r.proxy, true)).toString() }))).then(
      (list) => sendJson(res, 200, { payouts: list }),
      (err: Error) => sendJson(res, 502, { error: err.message }),
    )
    return true
  })
  worker.start()
  log.info('worker ready', { model: backend.model.id, modelHash: backend.model.hash, coefficient: cfg.coefficient ?? 1000 })
  return {
    role: 'worker',
    ports: { stats: listenPort(ops) },
    stop: async () => {
      stopChain()
      identity.stop()
      await worker.stop()
      await closeServer(ops)
      await backend.close()
      ledger.close()
    },
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function closeServer(s: http.Server): Promise<void> {
  return new Promise((resolve) => {
    s.close(() => resolve())
    s.closeAllConnections()
  })
}
