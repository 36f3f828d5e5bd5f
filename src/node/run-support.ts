// What the start-up of every role shares: the chain context, the dashboard's read-only API and admin token, and
// small server helpers.
import type http from 'node:http'
import { Address } from '@ton/core'
import { ProxyContract } from '../ton/contracts/index.ts'
import { TONCENTER_MAINNET_ENDPOINT, TONCENTER_TESTNET_ENDPOINT, type Chain, type NodeWallet, type RootWatcher } from '../ton/chain-client/index.ts'
import { type EvidenceKind, type EvidenceProvider, type EvidenceVerifier, type Policy, type RenewingIdentity, SimulatedEvidenceVerifier } from '../tee/index.ts'
import type { LiveTrust } from './trust.ts'
import type { NodeConfig } from './config.ts'
import { isLoopback } from './config.ts'
import type { Logger } from '../core/log.ts'
import { ADMIN_TOKEN_HEADER, dashboardUrl, hasAdminToken, loadOrCreateAdminToken, type AdminToken } from './admin.ts'

export interface RunningNode {
  role: NodeConfig['role']
  /** Bound ports, useful when the config asked for port 0. */
  ports: Record<string, number>
  stop(): Promise<void>
}

/** Services the entry point lends a node (what lives above `node`, e.g. the receipt checks of `cocoon receipt verify`). */
export interface NodeExtras {
  /** Runs every check of `cocoon receipt verify` on a receipt's JSON; the dashboard's Verify button. */
  verifyReceipt?: (receiptJson: Record<string, unknown>, chain: Chain | undefined) => Promise<Array<{ name: string; ok: boolean; detail: string }>>
}

/** What startNode (./run.ts) has set up for every role when it hands over to the role's own start-up. */
export interface RoleStart<C extends NodeConfig = NodeConfig> {
  cfg: C
  log: Logger
  extras: NodeExtras
  /** The chain, when the config names one. */
  cc: ChainContext | undefined
  /** The policy the config gives (allow-lists from the root are applied by `trust`). */
  base: Policy
  trust: LiveTrust
  verify: LiveTrust['verify']
  provider: EvidenceProvider | undefined
  /** The config's hash, stated in the node's certificate. */
  hash: string
  /** Logs a failed certificate renewal (it is retried). */
  onError: (err: Error) => void
  /** Stops following the root. */
  stopChain: () => void
}

/** A node's view of the chain: the root it follows and its wallet. */
export interface ChainContext {
  chain: Chain
  root: Address
  watcher: RootWatcher
  wallet: NodeWallet
  walletSeed: Buffer
}

export async function verifiers(policy: Policy): Promise<Partial<Record<EvidenceKind, EvidenceVerifier>>> {
  const v: Partial<Record<EvidenceKind, EvidenceVerifier>> = {}
  if (policy.acceptKinds.includes('simulated')) v.simulated = new SimulatedEvidenceVerifier()
  if (policy.acceptKinds.includes('tdx')) {
    const { TdxEvidenceVerifier } = await import('../tee/tdx/index.ts')
    v.tdx = new TdxEvidenceVerifier({ pccsUrl: process.env.COCOON_PCCS_URL })
  }
  return v
}

/** Reads a proxy contract's committed receipt root and the payment key it was deployed for (what clients and workers check proofs against). */
export function receiptsRootOn(chain: Chain): (proxyContract: string) => Promise<{ seqno: number; root: string; count: number; paymentKey: string }> {
  return async (addr) => {
    const p = chain.open(ProxyContract.createFromAddress(Address.parse(addr)))
    const [r, id] = await Promise.all([p.getReceiptsRoot(), p.getIdentity()])
    return { seqno: Number(r.seqno), root: r.root.toString('hex'), count: Number(r.count), paymentKey: id.publicKey.toString('hex') }
  }
}

/** When the certificate was made and when it renews (unix seconds). */
export function certTimes(identity: RenewingIdentity): { createdAt: number; renewsAt: number } {
  const createdAt = identity.current().claims.createdAt
  return { createdAt, renewsAt: createdAt + identity.renewSec }
}

/**
 * Read-only dashboard endpoints (GET /api/...). On loopback they need no token; on any other
 * address the admin token, in its header, like the money-moving ones.
 */
export function readOnlyApi(host: string, token: string, routes: Record<string, (url: URL) => unknown>): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
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

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

export function adminToken(dataDir: string, log: Logger): AdminToken {
  const t = loadOrCreateAdminToken(dataDir)
  if (t.created) log.info('admin token created', { file: t.file })
  return t
}

/**
 * Prints the dashboard URL. The first start, which generated the admin token, prints it once in
 * the URL (Jupyter-style) on stdout, never in the structured log; later starts point at the file.
 * COCOON_ADMIN_TOKEN_PRINT=0 keeps it off stdout (the devnet prints its own banner).
 */
export function announceDashboard(host: string, port: number, admin: AdminToken, log: Logger): void {
  log.info('dashboard', { url: dashboardUrl(host, port), adminTokenFile: admin.file })
  if (admin.created && process.env.COCOON_ADMIN_TOKEN_PRINT !== '0') process.stdout.write(`\n  Dashboard (with its admin token, shown once): ${dashboardUrl(host, port, admin.token)}\n\n`)
}

export function closeServer(s: http.Server): Promise<void> {
  return new Promise((resolve) => {
    s.close(() => resolve())
    s.closeAllConnections()
  })
}

export type NetworkName = 'mainnet' | 'testnet' | 'devnet' | 'custom'

/** The network a chain endpoint belongs to: toncenter's two, a loopback devnet, or something else. */
export function networkOf(endpoint: string): NetworkName {
  if (endpoint === 'mainnet' || endpoint === TONCENTER_MAINNET_ENDPOINT) return 'mainnet'
  if (endpoint === 'testnet' || endpoint === TONCENTER_TESTNET_ENDPOINT) return 'testnet'
  if (endpoint === 'devnet') return 'devnet'
  try {
    const h = new URL(endpoint).hostname
    if (h === '127.0.0.1' || h === 'localhost' || h === '[::1]') return 'devnet'
  } catch {}
  return 'custom'
}
