// Starts one node (client, proxy or worker) from a validated config: identity, policy, backend, servers, shutdown.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type http from 'node:http'
import { Address } from '@ton/core'
import { Ledger, LedgerRollbackError } from '../payments/ledger.ts'
import { PartyLedger } from '../payments/party-ledger.ts'
import { ReceiptStore } from '../payments/receipts/store.ts'
import { ProxyBilling } from '../payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import { ProxySettlement } from '../payments/proxy-settlement.ts'
import { ClientAccount } from '../payments/client-account.ts'
import { WorkerPayouts } from '../payments/worker-payouts.ts'
import { walletOfKey, type ProxyChannel } from '../payments/channels.ts'
import { createChain, chainOptionsFromEnv, type Chain, ChainError, NodeWallet, loadOrCreateWalletKey, RootWatcher } from '../ton/chain-client/index.ts'
import { contractCodes, ProxyContract } from '../ton/contracts/index.ts'
import { HpkeKeyRing } from '../net/e2ee.ts'
import { NODE_CERT_VALIDITY_SEC, identityKeysFromSeed, parseAttestedCert, type EvidenceKind, type EvidenceProvider, type EvidenceVerifier, type Policy, RenewingIdentity, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, assertProductionPolicy, parsePolicy } from '../tee/index.ts'
import { LiveTrust, policyFromRoot, refusalUnder } from './trust.ts'
import { createBackend, type InferenceBackend } from '../inference/index.ts'
import { discoverProxies } from '../ton/chain-client/index.ts'
import { createClient } from '../client/client.ts'
import { createProxy } from '../proxy/proxy.ts'
import { ReliabilityPublisher, RELIABILITY_PATH } from '../proxy/reliability.ts'
import { createWorker } from '../worker/worker.ts'
import { AppAccounts } from '../client/apps.ts'
import { clientConsole, networkOf } from './client-console.ts'
import { StatsHistory } from './history.ts'
import { ConfigError, isLoopback, configHash, type ChainConfig, type NodeConfig, type TeeConfig } from './config.ts'
import type { Logger } from '../core/log.ts'
import { raceSignal } from '../core/time.ts'
import { listenPort, startOpsServer } from '../core/ops.ts'
import { ADMIN_TOKEN_HEADER, dashboardUrl, handleAdmin, hasAdminToken, loadOrCreateAdminToken, MinInterval, type AdminToken } from './admin.ts'
import { summarizeTransaction, Op } from '../ton/contracts/index.ts'
import { describeCertificate } from '../tee/index.ts'
import { serveDashboard } from './dashboard.ts'

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

/** How long the proxy waits for its rollback check at start-up before it serves without the chain. */
const SETTLEMENT_CONNECT_TIMEOUT_MS = 10_000
/** How often a proxy running without the chain tries to connect settlement again. */
const SETTLEMENT_RETRY_MS = 5_000
/** How long a client waits for its deposit check on a new proxy session before it uses the session anyway. */
const FUNDING_WAIT_MS = 5_000

/** Is this a chain that does not answer (timeout, network), as opposed to one that answered no? */
function isUnreachable(err: unknown): boolean {
  const e = err as Error & { cause?: unknown }
  return e?.name === 'TimeoutError' || e?.name === 'AbortError' || /timed out|no answer|ECONNREFUSED|ECONNRESET|fetch failed|network|socket/i.test(e?.message ?? '')
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

/** Reads a proxy contract's committed receipt root and the payment key it was deployed for (what clients and workers check proofs against). */
function receiptsRootOn(chain: Chain): (proxyContract: string) => Promise<{ seqno: number; root: string; count: number; paymentKey: string }> {
  return async (addr) => {
    const p = chain.open(ProxyContract.createFromAddress(Address.parse(addr)))
    const [r, id] = await Promise.all([p.getReceiptsRoot(), p.getIdentity()])
    return { seqno: Number(r.seqno), root: r.root.toString('hex'), count: Number(r.count), paymentKey: id.publicKey.toString('hex') }
  }
}

/** Builds and starts the node described by `cfg`. */
/** Services the entry point lends a node (what lives above `node`, e.g. the receipt checks of `cocoon receipt verify`). */
export interface NodeExtras {
  /** Runs every check of `cocoon receipt verify` on a receipt's JSON; the dashboard's Verify button. */
  verifyReceipt?: (receiptJson: Record<string, unknown>, chain: Chain | undefined) => Promise<Array<{ name: string; ok: boolean; detail: string }>>
}

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

  if (cfg.role === 'client') {
    // On chain, the client's identity key is its wallet key: the handshake proves it may spend from its client contracts.
    // Off chain it is a key kept in the data folder, so the proxy's account of this client (its charges and its
    // receipts) is the same one after a restart.
    const keys = await identityKeysFromSeed(cc ? cc.walletSeed : loadOrCreateSeed(path.join(cfg.dataDir, 'client-identity.key')))
    const identity = await RenewingIdentity.start({ role: 'client', provider, configHash: hash }, { onError, keys })
    const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
    const c = cfg.chain
    const account = cc
      ? new ClientAccount({ chain: cc.chain, wallet: cc.wallet, root: cc.root, rootState: () => cc.watcher.state, log, charged: (proxyId) => ledger.get(proxyId).told }, { depositNano: c!.depositNano, topUpBelowNano: c!.topUpBelowNano, topUpNano: c!.topUpNano, fundingBudgetNano: c!.fundingBudgetNano, statesFile: path.join(cfg.dataDir, 'client-contracts.json'), fundingFile: path.join(cfg.dataDir, 'client-funding.json') })
      : undefined
    const receipts = new ReceiptStore(path.join(cfg.dataDir, 'receipts.sqlite'))
    const apps = new AppAccounts(path.join(cfg.dataDir, 'apps.sqlite'))
    const admin = adminToken(cfg.dataDir, log)
    let consoleRoutes: ReturnType<typeof clientConsole> | undefined
    const client = createClient(cfg, {
      identity,
      verify,
      refreshPolicy: cc ? () => cc.watcher.refresh() : undefined,
      log,
      ledger,
      receipts,
      receiptsRoot: cc ? receiptsRootOn(cc.chain) : undefined,
      routes: (req, res) => consoleRoutes!(req, res),
      apps: {
        admit: (authorization, model) => apps.authorize(authorization, model, cfg.apiKeys)?.id ?? null,
        answered: (r) => apps.record(r),
        mayRead: (authorization) => {
          if (!cfg.apiKeys) return
          try {
            apps.authorize(authorization, '', true)
          } catch (err) {
            // Any valid key may read receipts; a model list or a spent quota limits asking, not reading.
            if ((err as Error).name === 'InvalidApiKeyError') throw err
          }
        },
      },
      refusedForFunds: account ? (proxyId, shortfallNano) => account.refusedForFunds(proxyId, shortfallNano) : undefined,
      onProxy: account
        ? async (peer, proxyId) => {
            if (!peer.claims.paymentKey) return
            // Bounded: while the chain is unreachable the session is used at once (the proxy admits on the last known balance).
            const funded = account.ensureFunded(proxyId).catch((err) => log.error('could not fund the client contract for this proxy', { error: err }))
            await Promise.race([funded, new Promise((r) => setTimeout(r, cc!.watcher.reachability.reachable ? FUNDING_WAIT_MS * 12 : 0).unref())])
          }
        : undefined,
      funds: account ? (proxyId) => account.stats(proxyId) : undefined,
      funded: account ? (proxyId) => account.isFunded(proxyId) : undefined,
      funding: account ? () => account.fundingStats() : undefined,
    })
    consoleRoutes = clientConsole({
      client,
      apps,
      ledger,
      adminToken: admin.token,
      loopback: isLoopback(cfg.listen.host),
      keysRequired: cfg.apiKeys,
      chain: cc && account ? { endpoint: cc.chain.endpoint, root: cc.root, rootState: () => cc.watcher.state, wallet: cc.wallet, account } : undefined,
      receipts,
      verifyReceipt: extras.verifyReceipt ? (j) => extras.verifyReceipt!(j, cc?.chain) : undefined,
    })
    if (cc) client.chainReachability = () => cc.watcher.reachability
    trust.onUpdate((p) => client.revalidate((peer) => refusalUnder(p, peer)))
    if (cc) {
      // The proxies the root offers are candidates too; the client keeps sessions to the best few.
      const discover = () => cc.watcher.state && client.setDiscovered(discoverProxies(cc.watcher.state, 'client'))
      discover()
      cc.watcher.subscribe(discover)
    }
    account?.start(ledger)
    const port = await client.start()
    log.info('API keys', { required: cfg.apiKeys })
    announceDashboard(cfg.listen.host, port, admin, log)
    return {
      role: 'client',
      ports: { api: port },
      stop: async () => {
        stopChain()
        account?.stop()
        identity.stop()
        await client.stop()
        ledger.close()
        receipts.close()
        apps.close()
      },
    }
  }

  if (cfg.role === 'proxy') {
    const ledger = new Ledger(path.join(cfg.dataDir, 'ledger.sqlite'))
    let settlement: ProxySettlement | undefined
    let stopRetry = () => {}
    let paymentKeyHex: string | undefined
    let reliability: ReliabilityPublisher | undefined
    if (cc) {
      const paymentKey = loadOrCreateWalletKey(cfg.chain!.paymentKeyFile)
      paymentKeyHex = paymentKey.publicKey.toString('hex')
      const channel: ProxyChannel = { root: cc.root, owner: cc.wallet.address, paymentKey: paymentKey.publicKey, params: cc.watcher.state!.params, codes: await contractCodes() }
      reliability = new ReliabilityPublisher({ ledger, proxyKey: paymentKeyHex, contract: () => settlement!.address.toString(), file: path.join(cfg.dataDir, 'reliability.json'), log })
      settlement = new ProxySettlement(
        { chain: cc.chain, wallet: cc.wallet, paymentKey, channel, ledger, log, reliability },
        {
          intervalMs: cfg.chain!.settleIntervalSec ? cfg.chain!.settleIntervalSec * 1000 : undefined,
          chargeThresholdNano: cfg.chain!.chargeThresholdNano,
          stakeNano: cfg.chain!.stakeNano,
          fundsCacheFile: path.join(cfg.dataDir, 'client-funds.json'),
        },
      )
    }
    const billing = new ProxyBilling({ ledger, params: () => settlement?.priceParams() ?? OFFCHAIN_PRICE_PARAMS, funds: settlement, log })
    if (ledger.integrity) {
      // Counters that do not match their own hash-chained events can be neither billed on nor committed.
      log.error('refusing to serve', { reason: ledger.integrity.message })
      billing.refuseService(ledger.integrity.message)
    } else if (settlement) {
      // Refuse to serve, without crashing, when the chain shows this ledger is stale or the contract cannot be staked.
      // When the chain does not answer, serve on the ledger and the last known balances, and connect settlement
      // (rollback check first) as soon as it answers again.
      const s = settlement
      const connect = async (): Promise<'ready' | 'unreachable'> => {
        try {
          await raceSignal(s.checkRollback(), AbortSignal.timeout(SETTLEMENT_CONNECT_TIMEOUT_MS))
          await s.ensureStaked()
          s.start()
          log.info('proxy contract ready', { address: s.address.toString() })
          return 'ready'
        } catch (err) {
          if (!(err instanceof LedgerRollbackError) && (!cc!.watcher.reachability.reachable || isUnreachable(err))) return 'unreachable'
          const reason = err instanceof LedgerRollbackError ? `ledger rollback detected: ${err.message}` : `cannot settle on chain: ${(err as Error).message}`
          log.error('refusing to serve', { reason })
          billing.refuseService(reason)
          return 'ready'
        }
      }
      if (!cc!.watcher.reachability.reachable || (await connect()) === 'unreachable') {
        log.warn('chain unreachable; serving on the ledger and the last known client balances; settlement starts when the chain returns')
        const retry = setInterval(() => {
          if (!cc!.watcher.reachability.reachable || retrying) return
          retrying = true
          void connect()
            .then((r) => r === 'ready' && clearInterval(retry))
            .finally(() => (retrying = false))
        }, SETTLEMENT_RETRY_MS)
        retry.unref()
        let retrying = false
        stopRetry = () => clearInterval(retry)
      }
    }
    const identity = await RenewingIdentity.start({ role: 'proxy', provider, configHash: hash, paymentKey: paymentKeyHex }, { onError })
    // COCOON_TIME_ROUTING=1 times every routing decision (for `cocoon bench --scale`); off, nothing is timed.
    const proxy = createProxy({ ...cfg, timeRouting: process.env.COCOON_TIME_ROUTING === '1' }, {
      identity,
      verify,
      log,
      billing,
      clientAccount: cc ? (peer) => walletOfKey(peer.publicKey).toRawString() : undefined,
      payoutVoucher: settlement ? (a) => settlement.payoutVoucher(a) : undefined,
      finalCharge: settlement ? (c, inFlight) => settlement.finalCharge(c, inFlight) : undefined,
      chainStats: settlement ? () => settlement.stats() : undefined,
      proxyContract: settlement ? () => settlement.address.toString() : undefined,
      reliability,
    })
    if (cc) proxy.chainReachability = () => cc.watcher.reachability
    trust.onUpdate((p) => proxy.revalidate((peer) => refusalUnder(p, peer)))
    const ports = await proxy.start()
    const admin = adminToken(cfg.dataDir, log)
    const settleOnce = new MinInterval<unknown>()
    const history = new StatsHistory(() => {
      const m = proxy.stats().money as Record<string, string>
      return { chargedNano: m.chargedNano, earnedByWorkersNano: m.earnedByWorkersNano, marginNano: m.marginNano, reservedNano: m.reservedNano }
    }).start()
    const network = cc ? networkOf(cc.chain.endpoint) : null
    const api = readOnlyApi(cfg.stats.host, admin.token, {
      '/api/node': () => ({ role: 'proxy', network, certificate: certTimes(identity) }),
      '/api/history': () => ({ samples: history.series() }),
      '/api/commits': async () => {
        const commits = ledger.commits(50)
        let transactions: Array<Record<string, unknown>> = []
        if (settlement && cc) {
          const txs = await cc.chain.client.getTransactions(settlement.address, { limit: 50 }).catch(() => [])
          transactions = txs
            .map((tx) => ({ tx, s: summarizeTransaction(tx) }))
            .filter(({ s }) => s.op === Op.proxyCommitState)
            .map(({ tx, s }) => ({ seqno: commitSeqno(tx), hash: tx.hash().toString('hex'), lt: tx.lt.toString(), at: tx.now, success: s.success }))
        }
        return { network, contract: settlement?.address.toString() ?? null, commits, transactions }
      },
      // One of the proxy contract's transactions, as the chain reports it (the devnet has no explorer to link to).
      '/api/tx': async (url) => {
        const hash = url.searchParams.get('hash') ?? ''
        if (!settlement || !cc || !/^[0-9a-f]{64}$/.test(hash)) throw Object.assign(new Error('no such transaction'), { status: 404 })
        const tx = (await cc.chain.client.getTransactions(settlement.address, { limit: 100 })).find((t) => t.hash().toString('hex') === hash)
        if (!tx) throw Object.assign(new Error('transaction not among the proxy contract’s latest 100'), { status: 404 })
        const s = summarizeTransaction(tx)
        return { hash, lt: tx.lt.toString(), at: tx.now, contract: settlement.address.toString(), from: s.from?.toString() ?? null, op: s.op === undefined ? null : '0x' + s.op.toString(16), commitSeqno: s.op === Op.proxyCommitState ? commitSeqno(tx) : null, success: s.success, exitCode: s.exitCode ?? null, valueNano: s.valueNano.toString() }
      },
    })
    const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, proxy, log, (req, res) =>
      serveReliability(req, res, reliability) ||
      serveDashboard(req, res) ||
      api(req, res) ||
      handleAdmin(req, res, admin.token, [
        {
          // A settlement round now (tests, before a withdrawal): at most one per ADMIN_MIN_INTERVAL_MS, however often it is called.
          path: '/admin/settle',
          throttle: settleOnce,
          run: async () => {
            if (!settlement) throw Object.assign(new Error('this proxy runs without a chain'), { status: 409 })
            const r = await settlement.settle({ force: true })
            await proxy.pushStatements()
            return { committed: r.committed ?? null, charged: r.charged, payoutVouchers: r.payoutVouchers }
          },
        },
      ]),
    )
    announceDashboard(cfg.stats.host, listenPort(ops), admin, log)
    return {
      role: 'proxy',
      ports: { ...ports, stats: listenPort(ops) },
      stop: async () => {
        stopChain()
        stopRetry()
        history.stop()
        settlement?.stop()
        identity.stop()
        await proxy.stop()
        await closeServer(ops)
        ledger.close()
      },
    }
  }

  const backend: InferenceBackend = await backendLoading!
  const hpke = cfg.e2ee === 'off' ? undefined : new HpkeKeyRing(NODE_CERT_VALIDITY_SEC * 1000)
  let identity: RenewingIdentity
  try {
    // The HPKE key is made here, in the TEE, and renewed with each certificate; replaced keys still open requests while a certificate naming them is valid.
    identity = await RenewingIdentity.start({ role: 'worker', provider, configHash: hash, modelId: backend.model.id, modelHash: backend.model.hash || undefined }, { onError, hpkeKey: hpke ? () => hpke.rotate() : undefined })
  } catch (err) {
    await backend.close()
    throw err
  }
  // Receipts state the worker's own image hash: its own evidence, checked as a peer's would be.
  const own = { pem: '', imageHash: '' }
  const vs = await verifiers(base)
  const refreshImage = async () => {
    const id = identity.current()
    if (id.certPem === own.pem) return
    const cert = await parseAttestedCert(Buffer.from(id.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))
    const v = cert.quote ? vs[cert.kind] : undefined
    own.imageHash = v ? (await v.verify(cert.quote!)).imageHash : ''
    own.pem = id.certPem
  }
  await refreshImage().catch((err) => log.warn('could not read this worker\'s own image hash; receipts state zeros', { error: err }))
  const imageTimer = setInterval(() => void refreshImage().catch(() => {}), 60_000).unref()
  const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
  const payouts = cc ? new WorkerPayouts({ chain: cc.chain, wallet: cc.wallet, root: cc.root, rootState: () => cc.watcher.state, ledger, log }, cfg.chain!.payoutThresholdNano) : undefined
  const worker = createWorker(
    { ...cfg, payoutAddress: cc?.wallet.address.toRawString() },
    { backend, identity, verify, log, ledger, hpke, imageHash: () => own.imageHash, receiptsRoot: cc ? receiptsRootOn(cc.chain) : undefined, onVoucher: payouts ? (proxyId) => payouts.onVoucher(proxyId) : undefined, payoutContract: payouts ? (proxyId) => payouts.contractAddress(proxyId) : undefined },
  )
  if (cc) worker.chainReachability = () => cc.watcher.reachability
  trust.onUpdate((p) => worker.revalidate((peer) => refusalUnder(p, peer)))
  if (cc) {
    // Workers serve every proxy the root offers, at once.
    const discover = () => cc.watcher.state && worker.setDiscovered(discoverProxies(cc.watcher.state, 'worker'))
    discover()
    cc.watcher.subscribe(discover)
  }
  const admin = adminToken(cfg.dataDir, log)
  const payoutOnce = new MinInterval<unknown>()
  const history = new StatsHistory(() => {
    const s = worker.stats() as { requests: Record<string, number>; proxies: Array<{ earned: { tokens: string; nano: string }; paidOnChainTokens: string }> }
    const sum = (f: (p: (typeof s.proxies)[number]) => string) => s.proxies.reduce((t, p) => t + BigInt(f(p)), 0n).toString()
    return { earnedNano: sum((p) => p.earned.nano), earnedTokens: sum((p) => p.earned.tokens), paidTokens: sum((p) => p.paidOnChainTokens), ...s.requests }
  }).start()
  const network = cc ? networkOf(cc.chain.endpoint) : null
  const api = readOnlyApi(cfg.stats.host, admin.token, {
    '/api/node': async () => ({
      role: 'worker',
      network,
      certificate: certTimes(identity),
      attestation: await attestationOf(identity),
      wallet: cc ? { address: cc.wallet.address.toString({ testOnly: network !== 'mainnet' }), balanceNano: (await cc.wallet.balance().catch(() => null))?.toString() ?? null } : null,
      payoutThresholdNano: cfg.chain?.payoutThresholdNano?.toString() ?? null,
    }),
    '/api/history': () => ({ samples: history.series() }),
  })
  const ops = await startOpsServer(cfg.stats.host, cfg.stats.port, worker, log, (req, res) =>
    serveDashboard(req, res) ||
    api(req, res) ||
    handleAdmin(req, res, admin.token, [
      {
        // `cocoon worker payout` from the dashboard: claims every proxy's voucher and waits for the transactions.
        path: '/admin/payout',
        throttle: payoutOnce,
        run: async () => {
          if (!payouts) throw Object.assign(new Error('this worker runs without a chain'), { status: 409 })
          const list = []
          for (const r of ledger.all()) list.push({ proxy: r.proxy, tokensPaid: (await payouts.claim(r.proxy, true)).toString() })
          return { payouts: list, walletBalanceNano: (await cc!.wallet.balance()).toString() }
        },
      },
    ]),
  )
  announceDashboard(cfg.stats.host, listenPort(ops), admin, log)
  worker.start()
  log.info('worker ready', { model: backend.model.id, modelHash: backend.model.hash, coefficient: cfg.coefficient ?? 1000 })
  return {
    role: 'worker',
    ports: { stats: listenPort(ops) },
    stop: async () => {
      clearInterval(imageTimer)
      stopChain()
      history.stop()
      identity.stop()
      await worker.stop()
      await closeServer(ops)
      await backend.close()
      ledger.close()
    },
  }
}

/** The ledger seqno a commit-state transaction carried (op, query id, then the seqno). */
function commitSeqno(tx: { inMessage?: { body: { beginParse(): { loadUint(n: number): number; loadUintBig(n: number): bigint } } } | null | undefined }): number | null {
  try {
    const b = tx.inMessage!.body.beginParse()
    b.loadUint(32)
    b.loadUintBig(64)
    return Number(b.loadUintBig(64))
  } catch {
    return null
  }
}

/** What the node's certificate presents: evidence kind, image hash (simulated quotes carry it), not-after. */
async function attestationOf(identity: RenewingIdentity): Promise<Record<string, unknown>> {
  const d = await describeCertificate(identity.current().certPem)
  return { kind: identity.current().kind, imageHash: d.quote?.simulatedImageHash ?? null, quoteBytes: d.quote?.bytes ?? 0, notAfter: d.notAfter, claims: d.claims ?? null }
}

/** When the certificate was made and when it renews (unix seconds). */
function certTimes(identity: RenewingIdentity): { createdAt: number; renewsAt: number } {
  const createdAt = identity.current().claims.createdAt
  return { createdAt, renewsAt: createdAt + identity.renewSec }
}

/**
 * Read-only dashboard endpoints (GET /api/...). On loopback they need no token; on any other
 * address the admin token, in its header, like the money-moving ones.
 */
function readOnlyApi(host: string, token: string, routes: Record<string, (url: URL) => unknown>): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://node')
    const route = routes[url.pathname]
    if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) return false
    if (!isLoopback(host) && !hasAdminToken(req, token)) {
      sendJson(res, 401, { error: { message: `send the admin token in the ${ADMIN_TOKEN_HEADER} header`, type: 'invalid_request_error', code: 'invalid_admin_token', param: null } })
      return true
    }
    Promise.resolve()
      .then(() => route(url))
      .then(
        (body) => sendJson(res, 200, body),
        (err: Error & { status?: number }) => sendJson(res, err.status ?? 502, { error: { message: err.message.slice(0, 500), type: 'api_error', code: 'dashboard_error', param: null } }),
      )
    return true
  }
}

/**
 * GET /cocoon/v1/reliability: the proxy's committed reliability record, public (no certificate, no token),
 * like /jsonstats. `?receipts=1` adds the receipt cells it was derived from, so anyone can recompute it.
 */
function serveReliability(req: http.IncomingMessage, res: http.ServerResponse, publisher: ReliabilityPublisher | undefined): boolean {
  const url = new URL(req.url ?? '/', 'http://node')
  if (url.pathname !== RELIABILITY_PATH) return false
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendJson(res, 405, { error: { message: `use GET ${RELIABILITY_PATH}`, type: 'invalid_request_error', code: 'method_not_allowed', param: null } })
    return true
  }
  const c = publisher?.current()
  if (!c) {
    const message = publisher ? 'no reliability record committed yet: the first one goes with the next state commit' : 'this proxy runs without a chain: it commits no reliability record'
    sendJson(res, 404, { error: { message, type: 'invalid_request_error', code: 'no_reliability_record', param: null } })
    return true
  }
  sendJson(res, 200, url.searchParams.get('receipts') === '1' ? { ...c, receipts: publisher!.receipts() } : c)
  return true
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

function adminToken(dataDir: string, log: Logger): AdminToken {
  const t = loadOrCreateAdminToken(dataDir)
  if (t.created) log.info('admin token created', { file: t.file })
  return t
}

/**
 * Prints the dashboard URL. The first start, which generated the admin token, prints it once in
 * the URL (Jupyter-style) on stdout, never in the structured log; later starts point at the file.
 * COCOON_ADMIN_TOKEN_PRINT=0 keeps it off stdout (the devnet prints its own banner).
 */
function announceDashboard(host: string, port: number, admin: AdminToken, log: Logger): void {
  log.info('dashboard', { url: dashboardUrl(host, port), adminTokenFile: admin.file })
  if (admin.created && process.env.COCOON_ADMIN_TOKEN_PRINT !== '0') process.stdout.write(`\n  Dashboard (with its admin token, shown once): ${dashboardUrl(host, port, admin.token)}\n\n`)
}

function closeServer(s: http.Server): Promise<void> {
  return new Promise((resolve) => {
    s.close(() => resolve())
    s.closeAllConnections()
  })
}

/** A 32-byte secret seed kept in a file readable by its owner only, made on first use. */
function loadOrCreateSeed(file: string): Buffer {
  try {
    const seed = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex')
    if (seed.length === 32) return seed
    throw new Error(`${file} does not hold a 32-byte hex seed`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const seed = crypto.randomBytes(32)
  fs.writeFileSync(file, seed.toString('hex') + '\n', { mode: 0o600, flag: 'wx' })
  return seed
}
