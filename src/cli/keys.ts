// `cocoon client keys create|list|revoke`: the client node's API keys, in its data folder (stored hashed).
import path from 'node:path'
import { parseArgs } from 'node:util'
import { AppAccounts, type LimitPeriod } from '../client/apps.ts'
import { ConfigError, loadConfig } from '../node/config.ts'
import { formatTon, parseTon } from './money.ts'

export async function runKeys(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  const { values, positionals } = parseArgs({
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { config: { type: 'string', short: 'c' }, name: { type: 'string' }, limit: { type: 'string' }, period: { type: 'string', default: 'month' }, models: { type: 'string' }, json: { type: 'boolean', default: false } },
  })
  if (!values.config) throw new ConfigError(`client keys ${sub ?? ''}`.trim(), '--config FILE is required')
  const cfg = loadConfig(values.config)
  if (cfg.role !== 'client') throw new ConfigError(values.config, `is a ${cfg.role} config, not a client config`)
  const apps = new AppAccounts(path.join(cfg.dataDir, 'apps.sqlite'))
  const out = (s: string) => process.stdout.write(s + '\n')
  try {
    if (sub === 'create') {
      if (!values.name) throw new ConfigError('--name', 'is required')
      const period = values.period as LimitPeriod
      if (period !== 'day' && period !== 'month') throw new ConfigError('--period', "must be 'day' or 'month'")
      const limitNano = values.limit ? parseTon(values.limit, '--limit') : null
      if (limitNano === 0n) throw new ConfigError('--limit', 'must be above 0 (leave it out for no limit)')
      if (apps.listKeys().some((k) => k.name === values.name && k.revokedAt == null)) throw new ConfigError('--name', `a key named '${values.name}' exists; revoke it first`)
      const models = values.models ? values.models.split(',').map((m) => m.trim()).filter(Boolean) : []
      const { key, info } = apps.createKey({ name: values.name, limitNano, period, models })
      if (values.json) out(JSON.stringify({ key, ...info }))
      else out(`created API key '${info.name}' (${info.id})${limitNano ? `, limit ${formatTon(limitNano)} TON per ${period}` : ', no limit'}${models.length ? `, models ${models.join(', ')}` : ''}\n\n  ${key}\n\nIt is shown once; only its hash is kept. Apps send it as "Authorization: Bearer ${info.prefix}…" (the openai SDK's apiKey).`)
      return 0
    }
    if (sub === 'list') {
      const keys = apps.listKeys()
      if (values.json) out(JSON.stringify(keys))
      else if (!keys.length) out('no API keys')
      else
        for (const k of keys)
          out(`${k.id}  ${k.name.padEnd(20)} ${k.prefix}…  ${k.revokedAt ? 'revoked' : 'active '}  spent ${formatTon(BigInt(k.spentNano))}${k.limitNano ? ` of ${formatTon(BigInt(k.limitNano))}` : ''} TON this ${k.period}  ${k.requests} requests${k.models.length ? `  models: ${k.models.join(',')}` : ''}`)
      return 0
    }
    if (sub === 'revoke') {
      const id = values.name ?? positionals[0]
      if (!id) throw new ConfigError('client keys revoke', 'name the key: --name NAME (or its id)')
      const info = apps.revokeKey(id)
      if (!info) throw new ConfigError('client keys revoke', `no key '${id}'`)
      out(values.json ? JSON.stringify(info) : `revoked API key '${info.name}' (${info.id})`)
      return 0
    }
    throw new ConfigError(`client keys ${sub ?? ''}`.trim(), 'use create, list or revoke')
  } finally {
    apps.close()
  }
}
