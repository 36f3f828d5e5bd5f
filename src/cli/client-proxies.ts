// `cocoon client proxies [--json]`: the proxies a client node can use, with the scores it measured
// (RTT, time to first token, success rate, price, backoff). Asks the running client node (its /jsonstats);
// when it is not running, lists the proxies the root offers, unmeasured.
import { parseArgs } from 'node:util'
import { Address } from '@ton/core'
import { loadConfig, ConfigError } from '../node/config.ts'
import { createChain, chainOptionsFromEnv } from '../ton/chain-client/index.ts'
import { discoverProxies } from '../ton/chain-client/index.ts'

export interface ProxyRow {
  target: string
  proxyId: string | null
  source: string
  state: string
  score: number | null
  rttMs: number | null
  ttftMs: number | null
  successRate: number | null
  pricePerTokenNano: string | null
  backedOff: boolean
  backoffRemainingMs: number
  lastFailure: string | null
  requests: number
}

export async function runClientProxies(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean', default: false } } })
  if (!values.config) throw new ConfigError('client proxies', '--config FILE is required')
  const cfg = loadConfig(values.config)
  if (cfg.role !== 'client') throw new ConfigError(values.config, `is a ${cfg.role} config, not a client config`)
  const host = cfg.listen.host === '0.0.0.0' ? '127.0.0.1' : cfg.listen.host === '::' ? '::1' : cfg.listen.host
  let rows: ProxyRow[]
  let source: 'client' | 'root'
  try {
    const r = await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${cfg.listen.port}/jsonstats`, { signal: AbortSignal.timeout(3_000) })
    const stats = (await r.json()) as { proxies: Array<Record<string, any>> }
    source = 'client'
    rows = stats.proxies.map((p) => ({
      target: p.target,
      proxyId: p.proxyId ?? p.registeredId ?? null,
      source: p.source ?? 'config',
      state: p.state,
      score: p.score?.score ?? null,
      rttMs: p.score?.rttMs ?? null,
      ttftMs: p.score?.ttftMs ?? null,
      successRate: p.score?.successRate ?? null,
      pricePerTokenNano: p.score?.pricePerTokenNano ?? null,
      backedOff: p.score?.backedOff ?? false,
      backoffRemainingMs: p.score?.backoffRemainingMs ?? 0,
      lastFailure: p.score?.lastFailure?.reason ?? p.lastError ?? null,
      requests: p.requests ?? 0,
    }))
    rows.sort((a, b) => Number(a.backedOff) - Number(b.backedOff) || (a.score ?? Infinity) - (b.score ?? Infinity))
  } catch {
    if (!cfg.chain) throw new ConfigError(values.config, `the client node at ${host}:${cfg.listen.port} does not answer, and without a chain there is no registry to list`)
    const chain = createChain({ ...chainOptionsFromEnv(process.env, { endpoint: cfg.chain.endpoint, apiKeyFile: cfg.chain.apiKeyFile })! })
    const state = await chain.getRootState(Address.parse(cfg.chain.root))
    source = 'root'
    rows = discoverProxies(state, 'client').map((p) => ({
      target: `${p.host}:${p.port}`, proxyId: p.id, source: 'root', state: 'not running', score: null, rttMs: null, ttftMs: null,
      successRate: null, pricePerTokenNano: state.params.pricePerTokenNano.toString(), backedOff: false, backoffRemainingMs: 0, lastFailure: null, requests: 0,
    }))
  }
  if (values.json) {
    out(JSON.stringify({ source, proxies: rows }) + '\n')
    return 0
  }
  out(source === 'root' ? 'client node not running: the proxies the root offers, unmeasured\n' : 'proxies, best first (score = expected ms per successful request × price factor; lower is better)\n')
  for (const r of rows) {
    const f = (x: number | null, unit = '') => (x === null ? '-' : `${x}${unit}`)
    out(
      `  ${r.target.padEnd(24)} ${r.state.padEnd(12)} score ${f(r.score).padEnd(8)} rtt ${f(r.rttMs, 'ms').padEnd(8)} ttft ${f(r.ttftMs, 'ms').padEnd(8)} ` +
        `success ${r.successRate === null ? '-' : `${Math.round(r.successRate * 100)}%`}  requests ${r.requests}` +
        `${r.backedOff ? `  backed off ${Math.ceil(r.backoffRemainingMs / 1000)}s` : ''}${r.lastFailure ? `  last failure: ${r.lastFailure.slice(0, 80)}` : ''}\n`,
    )
  }
  return 0
}
