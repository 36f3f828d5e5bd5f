// Starts a proxy node: its ledger, billing, settlement on chain, reliability record and dashboard API.
// Loaded by startNode (./run.ts) for a proxy only, so a node loads the code of its own role and not the others'.
import type http from 'node:http'
import path from 'node:path'
import { Ledger, LedgerRollbackError } from '../payments/ledger.ts'
import { ProxyBilling } from '../payments/billing.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import { ProxySettlement } from '../payments/proxy-settlement.ts'
import { walletOfKey, type ProxyChannel } from '../payments/channels.ts'
import { loadOrCreateWalletKey } from '../ton/chain-client/index.ts'
import { contractCodes, summarizeTransaction, Op } from '../ton/contracts/index.ts'
import { RenewingIdentity } from '../tee/index.ts'
import { refusalUnder } from './trust.ts'
import { createProxy } from '../proxy/proxy.ts'
import { ReliabilityPublisher, RELIABILITY_PATH } from '../proxy/reliability.ts'
import { StatsHistory } from './history.ts'
import type { ProxyConfig } from './config.ts'
import { raceSignal } from '../core/time.ts'
import { listenPort, startOpsServer } from '../core/ops.ts'
import { handleAdmin, MinInterval } from './admin.ts'
import { serveDashboard } from './dashboard.ts'
import { adminToken, announceDashboard, certTimes, closeServer, readOnlyApi, sendJson, networkOf, type RoleStart, type RunningNode } from './run-support.ts'

/** How long the proxy waits for its rollback check at start-up before it serves without the chain. */
const SETTLEMENT_CONNECT_TIMEOUT_MS = 10_000
/** How often a proxy running without the chain tries to connect settlement again. */
const SETTLEMENT_RETRY_MS = 5_000

export async function startProxy(s: RoleStart<ProxyConfig>): Promise<RunningNode> {
  const { cfg, log, cc, trust, verify, provider, hash, onError, stopChain } = s
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

/** Is this a chain that does not answer (timeout, network), as opposed to one that answered no? */
function isUnreachable(err: unknown): boolean {
  const e = err as Error & { cause?: unknown }
  return e?.name === 'TimeoutError' || e?.name === 'AbortError' || /timed out|no answer|ECONNREFUSED|ECONNRESET|fetch failed|network|socket/i.test(e?.message ?? '')
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
