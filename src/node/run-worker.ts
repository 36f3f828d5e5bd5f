// Starts a worker node: its backend, HPKE keys, own image hash, payouts on chain and dashboard API.
// Loaded by startNode (./run.ts) for a worker only, so a node loads the code of its own role and not the others'.
import path from 'node:path'
import { PartyLedger } from '../payments/party-ledger.ts'
import { WorkerPayouts } from '../payments/worker-payouts.ts'
import { discoverProxies } from '../ton/chain-client/index.ts'
import { HpkeKeyRing } from '../net/e2ee.ts'
import { NODE_CERT_VALIDITY_SEC, parseAttestedCert, RenewingIdentity, describeCertificate } from '../tee/index.ts'
import { refusalUnder } from './trust.ts'
import type { InferenceBackend } from '../inference/index.ts'
import { createWorker } from '../worker/worker.ts'
import { StatsHistory } from './history.ts'
import type { WorkerConfig } from './config.ts'
import { listenPort, startOpsServer } from '../core/ops.ts'
import { handleAdmin, MinInterval } from './admin.ts'
import { serveDashboard } from './dashboard.ts'
import { adminToken, announceDashboard, certTimes, closeServer, readOnlyApi, receiptsRootOn, verifiers, networkOf, type RoleStart, type RunningNode } from './run-support.ts'

export async function startWorker(s: RoleStart<WorkerConfig>, backendLoading: Promise<InferenceBackend>): Promise<RunningNode> {
  const { cfg, log, cc, trust, verify, provider, hash, onError, stopChain, base } = s
  const backend: InferenceBackend = await backendLoading
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

/** What the node's certificate presents: evidence kind, image hash (simulated quotes carry it), not-after. */
async function attestationOf(identity: RenewingIdentity): Promise<Record<string, unknown>> {
  const d = await describeCertificate(identity.current().certPem)
  return { kind: identity.current().kind, imageHash: d.quote?.simulatedImageHash ?? null, quoteBytes: d.quote?.bytes ?? 0, notAfter: d.notAfter, claims: d.claims ?? null }
}
