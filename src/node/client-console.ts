// The client node's dashboard endpoints beside its OpenAI API: read-only /api/* (network, money, requests, keys)
// and token-guarded POST /admin/* (top-up, API keys).
import type http from 'node:http'
import type { Address } from '@ton/core'
import type { Client } from '../client/client.ts'
import type { AppAccounts, LimitPeriod } from '../client/apps.ts'
import type { ClientAccount } from '../payments/client-account.ts'
import type { PartyLedger } from '../payments/party-ledger.ts'
import { heldReceiptJson, type ReceiptStore } from '../payments/receipts/store.ts'
import { devnetBaseUrl, devnetFaucet, tonConnectTransaction, type NodeWallet } from '../ton/chain-client/index.ts'
import { ONE_TON_NANO, type RootState } from '../ton/contracts/index.ts'
import { handleAdmin, hasAdminToken, MinInterval, type AdminRoute } from './admin.ts'
import { serveDashboard } from './dashboard.ts'
import { networkOf, type NetworkName } from './run-support.ts'

/** Largest dashboard POST body. */
const MAX_ADMIN_BODY_BYTES = 16 * 1024
/** The largest top-up one click may ask the devnet faucet for. */
export const MAX_DEVNET_TOPUP_NANO = 100n * ONE_TON_NANO

export interface ClientConsoleDeps {
  client: Client
  apps: AppAccounts
  ledger: PartyLedger
  adminToken: string
  /** The OpenAI listener is loopback: read-only endpoints need no token. */
  loopback: boolean
  /** Whether API keys are required on the OpenAI API. */
  keysRequired: boolean
  chain?: { endpoint: string; root: Address; rootState: () => RootState | undefined; wallet: NodeWallet; account: ClientAccount }
  /** The receipts this node holds, for each request's receipt state. */
  receipts?: ReceiptStore
  /** The checks of `cocoon receipt verify`, lent by the entry point. */
  verifyReceipt?: (receiptJson: Record<string, unknown>) => Promise<Array<{ name: string; ok: boolean; detail: string }>>
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** "1.5" TON -> nanoTON, exactly; at most 9 decimals. */
export function tonToNano(v: unknown, what: string): bigint {
  const text = typeof v === 'number' ? String(v) : v
  const m = typeof text === 'string' ? /^(\d{1,12})(?:\.(\d{1,9}))?$/.exec(text.trim()) : null
  if (!m) throw new HttpError(400, `'${what}' must be an amount of TON with at most 9 decimals, e.g. "1.5"`)
  return BigInt(m[1]) * ONE_TON_NANO + BigInt((m[2] ?? '').padEnd(9, '0'))
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const parts: Buffer[] = []
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > MAX_ADMIN_BODY_BYTES) throw new HttpError(413, `body over ${MAX_ADMIN_BODY_BYTES} bytes`)
    parts.push(c as Buffer)
  }
  if (size === 0) return {}
  try {
    const v = JSON.parse(Buffer.concat(parts).toString('utf8'))
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>
  } catch {}
  throw new HttpError(400, 'the body must be a JSON object')
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

/** The routes, for ClientDeps.routes. */
export function clientConsole(d: ClientConsoleDeps): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const chain = d.chain
  const network: NetworkName | null = chain ? networkOf(chain.endpoint) : null
  const proxyIds = () => {
    const ids = new Set<string>()
    for (const p of (d.client.stats().proxies as Array<{ proxyId: string | null }>) ?? []) if (p.proxyId) ids.add(p.proxyId)
    return [...ids]
  }
  const pickProxy = (v: unknown): string => {
    const ids = proxyIds()
    if (typeof v === 'string' && v) {
      if (!/^[0-9a-f]{64}$/.test(v)) throw new HttpError(400, "'proxy' must be a proxy payment key (64 hex)")
      return v
    }
    if (!ids.length) throw new HttpError(409, 'no proxy connected yet')
    return ids[0]
  }
  const needChain = () => {
    if (!chain) throw new HttpError(409, 'this client runs without a chain: nothing to top up')
    return chain
  }

  const api: Record<string, (url: URL) => Promise<unknown> | unknown> = {
    '/api/node': () => ({ role: 'client', network, keysRequired: d.keysRequired, loopback: d.loopback }),
    '/api/network': async () => {
      const rs = chain?.rootState()
      const stats = d.client.stats().proxies as Array<Record<string, unknown>>
      return {
        network,
        chain: chain ? { endpoint: chain.endpoint, root: chain.root.toString() } : null,
        params: rs
          ? {
              version: rs.version,
              pricePerTokenNano: rs.params.pricePerTokenNano.toString(),
              workerFeePerTokenNano: rs.params.workerFeePerTokenNano.toString(),
              promptMult: rs.params.promptMult,
              cachedMult: rs.params.cachedMult,
              completionMult: rs.params.completionMult,
              reasoningMult: rs.params.reasoningMult,
              minClientStakeNano: rs.params.minClientStakeNano.toString(),
            }
          : null,
        proxies: rs
          ? [...rs.proxies.entries()].map(([id, info]) => {
              const link = stats.find((p) => p.proxyId === id)
              return { id, host: info.host, clientPort: info.clientPort, state: link?.state ?? 'not configured', requests: link?.requests ?? 0, failovers: link?.failovers ?? 0, activeRequests: link?.activeRequests ?? 0, imageHash: link?.imageHash ?? null }
            })
          : stats.map((p) => ({ id: p.proxyId, host: p.target, clientPort: null, state: p.state, requests: p.requests, failovers: p.failovers, activeRequests: p.activeRequests, imageHash: p.imageHash })),
      }
    },
    '/api/money': async () => {
      const stats = d.client.stats().proxies as Array<Record<string, any>>
      const wallet = chain ? { address: chain.wallet.address.toString({ testOnly: network !== 'mainnet' }), balanceNano: (await chain.wallet.balance().catch(() => null))?.toString() ?? null } : null
      return {
        network,
        wallet,
        proxies: stats
          .filter((p) => p.proxyId)
          .map((p) => ({
            proxy: p.proxyId,
            state: p.state,
            contractState: p.contractState ?? null,
            balanceNano: p.balanceNano ?? null,
            stakeNano: p.stakeNano ?? null,
            chargedNano: p.charged?.nano ?? '0',
            chargedTokens: p.charged?.tokens ?? '0',
            chargedOnChainTokens: p.chargedOnChainTokens ?? p.chargedOnChain?.tokens ?? '0',
            activeRequests: p.activeRequests,
          })),
        spend: d.apps.spendSeries(60_000, 24 * 3600_000),
      }
    },
    '/api/requests': (url) => {
      const limit = Math.min(500, Math.max(1, Number(url.searchParams.get('limit') ?? 50) || 50))
      return {
        requests: d.apps.recent(limit, url.searchParams.get('key') ?? undefined).map((r) => {
          const h = r.receiptId ? d.receipts?.get(r.receiptId) : undefined
          return { ...r, receipt: h ? (h.verified ? 'verified' : h.commit ? 'committed' : 'held') : null }
        }),
      }
    },
    '/api/receipts/verify': async (url) => {
      const id = url.searchParams.get('id') ?? ''
      const h = d.receipts?.get(id)
      if (!h) throw new HttpError(404, `no receipt '${id.slice(0, 64)}' on this node`)
      if (!d.verifyReceipt) throw new HttpError(501, 'receipt checks are not available in this process')
      const checks = await d.verifyReceipt(heldReceiptJson(h))
      return { id, ok: checks.every((c) => c.ok), checks }
    },
    '/api/keys': (url) => {
      const key = url.searchParams.get('key')
      return { keysRequired: d.keysRequired, keys: d.apps.listKeys(), ...(key ? { spend: d.apps.spendSeries(3600_000, 31 * 24 * 3600_000, key) } : {}) }
    },
    '/api/topup-tx': async (url) => {
      const c = needChain()
      if (network === 'devnet') throw new HttpError(409, 'the devnet tops up from its faucet (POST /admin/topup)')
      const amount = tonToNano(url.searchParams.get('amount'), 'amount')
      const proxy = pickProxy(url.searchParams.get('proxy'))
      const msg = await c.account.topUpMessage(proxy, amount)
      return tonConnectTransaction(msg, { nowSec: Math.floor(Date.now() / 1000), network: network === 'mainnet' ? 'mainnet' : network === 'testnet' ? 'testnet' : undefined })
    },
  }

  const topUpOnce = new MinInterval<unknown>(2_000)
  const admin: AdminRoute[] = [
    {
      // Devnet: the faucet funds the wallet, then the wallet tops up the client contract; answers once both are confirmed.
      path: '/admin/topup',
      throttle: topUpOnce,
      run: async (req) => {
        const c = needChain()
        const body = await readJson(req)
        if (network !== 'devnet') throw new HttpError(409, `on ${network} the top-up is paid from your own wallet: use TON Connect (GET /api/topup-tx)`)
        const amount = tonToNano(body.amountTon ?? '1', 'amountTon')
        if (amount <= 0n || amount > MAX_DEVNET_TOPUP_NANO) throw new HttpError(400, `'amountTon' must be above 0 and at most ${MAX_DEVNET_TOPUP_NANO / ONE_TON_NANO} TON`)
        const proxy = pickProxy(body.proxy)
        await devnetFaucet(devnetBaseUrl(c.endpoint), c.wallet.address, amount + ONE_TON_NANO / 10n)
        await c.account.topUp(proxy, amount)
        const s = await c.account.state(proxy)
        return { proxy, toppedUpNano: amount.toString(), balanceNano: s?.balanceNano.toString() ?? null, stakeNano: s?.stakeNano.toString() ?? null }
      },
    },
    {
      path: '/admin/keys/create',
      run: async (req) => {
        const b = await readJson(req)
        if (typeof b.name !== 'string' || !b.name.trim() || b.name.length > 64) throw new HttpError(400, "'name' must be 1-64 characters")
        const limit = b.limitTon === undefined || b.limitTon === null || b.limitTon === '' ? null : tonToNano(b.limitTon, 'limitTon')
        if (limit === 0n) throw new HttpError(400, "'limitTon' must be above 0 (leave it out for no limit)")
        const period = (b.period ?? 'month') as LimitPeriod
        if (period !== 'day' && period !== 'month') throw new HttpError(400, "'period' must be 'day' or 'month'")
        const models = b.models === undefined ? [] : b.models
        if (!Array.isArray(models) || !models.every((m) => typeof m === 'string' && m.length > 0 && m.length <= 128)) throw new HttpError(400, "'models' must be a list of model names")
        if (d.apps.listKeys().some((k) => k.name === b.name && k.revokedAt == null)) throw new HttpError(409, `a key named '${b.name}' exists; revoke it first`)
        return d.apps.createKey({ name: b.name, limitNano: limit, period, models: models as string[] })
      },
    },
    {
      path: '/admin/keys/revoke',
      run: async (req) => {
        const b = await readJson(req)
        if (typeof b.id !== 'string' || !b.id) throw new HttpError(400, "'id' (or the key's name) is required")
        const info = d.apps.revokeKey(b.id)
        if (!info) throw new HttpError(404, `no key '${b.id.slice(0, 64)}'`)
        return info
      },
    },
  ]

  return (req, res) => {
    if (serveDashboard(req, res)) return true
    if (handleAdmin(req, res, d.adminToken, admin)) return true
    const url = new URL(req.url ?? '/', 'http://x')
    const route = api[url.pathname]
    if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) return false
    // Read-only pages need no token on loopback; a client reachable from elsewhere shows its money only to the token.
    if (!d.loopback && !hasAdminToken(req, d.adminToken)) {
      sendJson(res, 401, { error: { message: 'this node is reachable beyond loopback: send the admin token in the x-cocoon-admin-token header', type: 'invalid_request_error', code: 'invalid_admin_token', param: null } })
      return true
    }
    Promise.resolve()
      .then(() => route(url))
      .then(
        (body) => sendJson(res, 200, body),
        (err: Error & { status?: number }) => sendJson(res, err instanceof HttpError ? err.status : 502, { error: { message: err.message.slice(0, 500), type: 'api_error', code: 'dashboard_error', param: null } }),
      )
    return true
  }
}

export { HttpError as ConsoleHttpError }
