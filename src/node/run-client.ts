// Starts a client node: its identity, ledger, receipts, apps, funding on chain and the client console.
// Loaded by startNode (./run.ts) for a client only, so a node loads the code of its own role and not the others'.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { PartyLedger } from '../payments/party-ledger.ts'
import { ReceiptStore } from '../payments/receipts/store.ts'
import { ClientAccount } from '../payments/client-account.ts'
import { discoverProxies } from '../ton/chain-client/index.ts'
import { identityKeysFromSeed, RenewingIdentity } from '../tee/index.ts'
import { refusalUnder } from './trust.ts'
import { createClient } from '../client/client.ts'
import { AppAccounts } from '../client/apps.ts'
import { clientConsole } from './client-console.ts'
import { isLoopback, type ClientConfig } from './config.ts'
import { adminToken, announceDashboard, receiptsRootOn, type RoleStart, type RunningNode } from './run-support.ts'

export async function startClient(s: RoleStart<ClientConfig>): Promise<RunningNode> {
  const { cfg, log, cc, trust, verify, provider, hash, onError, stopChain, extras } = s
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
      admit: (authorization, model, worstNano) => apps.admit(authorization, model, cfg.apiKeys, worstNano),
      answered: (r) => apps.record(r),
      mayRead: (authorization) => {
        if (!cfg.apiKeys) return undefined
        // Any valid key reads its own app's receipts; a model list or a spent quota limits asking, not reading.
        return { keyId: apps.keyOf(authorization) }
      },
    },
    priceParams: cc ? () => cc.watcher.state?.params : undefined,
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

/** How long a client waits for its deposit check on a new proxy session before it uses the session anyway. */
const FUNDING_WAIT_MS = 5_000

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
