// Money commands on any chain, from a node's config: `cocoon client topup|withdraw|close`,
// `cocoon worker payout`, `cocoon proxy withdraw`.
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Address } from '@ton/core'
import { loadConfig, ConfigError, type NodeConfig } from '../node/config.ts'
import { createLogger } from '../core/log.ts'
import { createChain, chainOptionsFromEnv, NodeWallet, loadOrCreateWalletKey, collectMessages, discoverProxies } from '../ton/chain-client/index.ts'
import { contractCodes, ONE_TON_NANO, VOUCHER_MIN_VALUE_NANO } from '../ton/contracts/index.ts'
import { ClientAccount } from '../payments/client-account.ts'
import { WorkerPayouts } from '../payments/worker-payouts.ts'
import { PartyLedger } from '../payments/party-ledger.ts'
import { proxyContract } from '../payments/channels.ts'
import http2 from 'node:http2'
import { parsePolicy, SimulatedEvidenceVerifier, createPeerVerifier, createIdentity, identityKeysFromSeed, type EvidenceKind, type EvidenceVerifier } from '../tee/index.ts'
import { policyFromRoot } from '../node/trust.ts'
import { dialAttested } from '../net/attested.ts'
import { proxyIdOf } from '../net/peers.ts'
import { CONTROL_BODY_BYTES, PATHS, type FinalCharge } from '../net/protocol.ts'
import { call } from '../net/hop.ts'


/** "1.5" TON -> nanoTON, exactly (no floating point). */
export function parseTon(text: string, what: string): bigint {
  const m = /^(\d+)(?:\.(\d{1,9}))?$/.exec(text.trim())
  if (!m) throw new ConfigError(what, `"${text}" is not an amount of TON (e.g. 1.5)`)
  return BigInt(m[1]) * ONE_TON_NANO + BigInt((m[2] ?? '').padEnd(9, '0'))
}

export function formatTon(nano: bigint): string {
  const neg = nano < 0n
  const a = neg ? -nano : nano
  const frac = (a % ONE_TON_NANO).toString().padStart(9, '0').replace(/0+$/, '')
  return `${neg ? '-' : ''}${a / ONE_TON_NANO}${frac ? '.' + frac : ''}`
}

function needChain<C extends NodeConfig>(cfg: C, file: string): NonNullable<C['chain']> {
  if (!cfg.chain) throw new ConfigError(file, 'has no "chain" section: this node runs off-chain')
  return cfg.chain as NonNullable<C['chain']>
}

async function open(cfg: NodeConfig, file: string) {
  const c = needChain(cfg, file)
  const log = createLogger({ role: cfg.role, cmd: true }, 'warn')
  const chain = createChain({ ...chainOptionsFromEnv(process.env, { endpoint: c.endpoint, apiKeyFile: c.apiKeyFile })!, log })
  const root = Address.parse(c.root)
  const rootState = await chain.getRootState(root)
  const key = loadOrCreateWalletKey(c.walletKeyFile)
  const wallet = Object.assign(new NodeWallet(chain, key, { log }), { seed: key.secretKey.subarray(0, 32) })
  return { c, log, chain, root, rootState, wallet }
}

/** Which proxies a client command applies to: --proxy, else those the client has dealt with, else the root's registered ones. */
function clientProxies(explicit: string | undefined, ledger: PartyLedger, registered: string[]): string[] {
  if (explicit) return [explicit.toLowerCase()]
  const known = ledger.all().map((r) => r.proxy)
  return known.length ? known : registered
}

/** Dials the client's configured proxies (attested, as the client) to find `proxyId` and ask it for the final charge. */
async function askFinalCharge(cfg: NodeConfig, o: Awaited<ReturnType<typeof open>>, proxyId: string): Promise<FinalCharge> {
  if (cfg.role !== 'client') throw new Error('not a client')
  const base = parsePolicy(cfg.policy, 'policy')
  const policy = policyFromRoot(o.rootState, { role: 'client', acceptKinds: base.acceptKinds, maxCertAgeSec: base.maxCertAgeSec, tcbStatuses: base.tcbStatuses })
  const v: Partial<Record<EvidenceKind, EvidenceVerifier>> = { simulated: new SimulatedEvidenceVerifier() }
  if (base.acceptKinds.includes('tdx')) {
    const { TdxEvidenceVerifier } = await import('../tee/tdx/index.ts')
    v.tdx = new TdxEvidenceVerifier({ pccsUrl: process.env.COCOON_PCCS_URL })
  }
  if (!base.acceptKinds.includes('simulated')) delete v.simulated
  const verify = createPeerVerifier(policy, v, { cacheTtlMs: 0 })
  const identity = await createIdentity({ role: 'client', configHash: '00'.repeat(32), keys: await identityKeysFromSeed(o.wallet.seed) })
  let lastErr: Error = new Error('none of the configured or registered proxies has this payment key')
  // The proxy the root registered under this key first, then those the config names.
  const registered = discoverProxies(o.rootState, 'client').filter((p) => p.id === proxyId).map((p) => ({ host: p.host, port: p.port }))
  for (const target of [...registered, ...cfg.proxies]) {
    try {
      const { socket, peer } = await dialAttested({ ...target, identity, verify: (d, r) => verify(d, r), expectedRole: 'proxy' })
      if (proxyIdOf(peer) !== proxyId) {
        socket.destroy()
        continue
      }
      const session = http2.connect(`https://${target.host}`, { createConnection: () => socket })
      try {
        const r = await call(session, PATHS.close, { method: 'POST' })
        const body = (await r.read(CONTROL_BODY_BYTES)).toString()
        if (r.status !== 200) throw new Error(`proxy answered ${r.status}: ${body}`)
        return JSON.parse(body) as FinalCharge
      } finally {
        session.destroy()
      }
    } catch (err) {
      lastErr = err as Error
    }
  }
  throw lastErr
}

export async function runMoney(role: 'client' | 'worker' | 'proxy', sub: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, options: { config: { type: 'string', short: 'c' }, amount: { type: 'string' }, proxy: { type: 'string' }, finish: { type: 'boolean', default: false } } })
  if (!values.config) throw new ConfigError(`${role} ${sub}`, '--config FILE is required')
  const cfg = loadConfig(values.config)
  if (cfg.role !== role) throw new ConfigError(values.config, `is a ${cfg.role} config, not a ${role} config`)
  const o = await open(cfg, values.config)
  const say = (obj: Record<string, unknown>) => process.stdout.write(JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n')

  if (role === 'client') {
    const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
    try {
      const account = new ClientAccount({ chain: o.chain, wallet: o.wallet, root: o.root, rootState: () => o.rootState, log: o.log })
      const proxies = clientProxies(values.proxy, ledger, [...o.rootState.proxies.keys()])
      if (proxies.length === 0) throw new ConfigError('--proxy', 'no proxy known: name one by its payment key (hex)')
      for (const proxyId of proxies) {
        if (sub === 'topup') {
          if (!values.amount) throw new ConfigError('--amount', 'is required (TON)')
          await account.topUp(proxyId, parseTon(values.amount, '--amount'))
        } else if (sub === 'withdraw') {
          if (!values.amount) throw new ConfigError('--amount', 'is required (TON)')
          await account.withdraw(proxyId, parseTon(values.amount, '--amount'))
        } else if (sub === 'close') {
          const before = await account.state(proxyId)
          if (!before) throw new ConfigError('--proxy', `no client contract with proxy ${proxyId.slice(0, 16)}…`)
          if (values.finish) await account.finishClose(proxyId)
          else if (before.state === 'active') {
            // First ask the proxy for its final charge (the rest comes back at once); if it is silent, close through the delay.
            const final = await askFinalCharge(cfg, o, proxyId).catch((err: Error) => {
              process.stderr.write(`the proxy did not sign a final charge (${err.message}); closing through the delay instead\n`)
              return undefined
            })
            if (final) await account.closeWithFinalCharge(proxyId, final.voucher, ledger.get(proxyId).told.tokens)
            else await account.requestClose(proxyId)
          }
        } else throw new ConfigError(`client ${sub}`, 'unknown command; use topup, withdraw or close')
        const s = await account.state(proxyId)
        say({ proxy: proxyId, contract: (await account.contractFor(proxyId)).address.toString(), state: s?.state, balanceTon: s ? formatTon(s.balanceNano) : null, stakeTon: s ? formatTon(s.stakeNano) : null, tokensCharged: s?.tokensCharged, unlockAt: s?.unlockAt })
      }
      return 0
    } finally {
      ledger.close()
    }
  }

  if (role === 'worker') {
    if (sub !== 'payout') throw new ConfigError(`worker ${sub}`, 'unknown command; use payout')
    const ledger = new PartyLedger(path.join(cfg.dataDir, 'ledger.sqlite'))
    try {
      const payouts = new WorkerPayouts({ chain: o.chain, wallet: o.wallet, root: o.root, rootState: () => o.rootState, ledger, log: o.log }, 0n)
      for (const r of ledger.all()) {
        const paid = await payouts.claim(r.proxy, true)
        say({ proxy: r.proxy, earnedTokens: r.told.tokens, voucheredTokens: r.vouchered, paidTokens: paid })
      }
      say({ wallet: o.wallet.address.toString(), balanceTon: formatTon(await o.wallet.balance()) })
      return 0
    } finally {
      ledger.close()
    }
  }

  if (sub !== 'withdraw') throw new ConfigError(`proxy ${sub}`, 'unknown command; use withdraw')
  if (cfg.role !== 'proxy') throw new ConfigError(values.config, `is a ${cfg.role} config, not a proxy config`)
  const paymentKey = loadOrCreateWalletKey(needChain(cfg, values.config).paymentKeyFile)
  const contract = o.chain.open(proxyContract({ root: o.root, owner: o.wallet.address, paymentKey: paymentKey.publicKey, params: o.rootState.params, codes: await contractCodes() }))
  const st = await contract.getState()
  const amount = values.amount ? parseTon(values.amount, '--amount') : st.withdrawableNano
  if (amount === 0n) {
    say({ contract: contract.address.toString(), withdrawn: '0', withdrawableTon: formatTon(st.withdrawableNano), note: 'nothing to withdraw: margin not yet collected from clients, or held for workers' })
    return 0
  }
  await o.wallet.sendAndConfirm(await collectMessages((via) => contract.sendWithdraw(via, { value: VOUCHER_MIN_VALUE_NANO, amountNano: amount })))
  const after = await contract.getState()
  say({ contract: contract.address.toString(), withdrawnTon: formatTon(amount), fundsTon: formatTon(after.fundsNano), withdrawableTon: formatTon(after.withdrawableNano) })
  return 0
}
