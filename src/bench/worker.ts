// `cocoon bench worker --config FILE`: `cocoon worker`, plus the config's backend.modelHash for an openai backend.
//
// A network whose root restricts model hashes refuses a worker that claims none, and an
// openai-backed worker can only claim the hash its operator declares. The node config does not
// read `backend.modelHash` yet, so this shim puts it back after validation (startNode passes
// the backend settings through to createBackend). Once the config reads it, the bench can
// spawn `cocoon worker` directly and this file can go.
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from '../node/config.ts'
import { createLogger } from '../node/log.ts'
import { startNode } from '../node/run.ts'

const STOP_GRACE_MS = 5_000

export async function runBenchWorker(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true })
  if (!values.config) throw new ConfigError('worker', '--config FILE is required')
  const cfg = loadConfig(values.config)
  if (cfg.role !== 'worker') throw new ConfigError(values.config, `is a ${cfg.role} config, not a worker config`)
  const declared = (JSON.parse(fs.readFileSync(values.config, 'utf8')) as { backend?: { modelHash?: unknown } }).backend?.modelHash
  if (declared !== undefined) {
    if (typeof declared !== 'string' || !/^[0-9a-f]{64}$/.test(declared)) throw new ConfigError(`${values.config}: backend.modelHash`, 'must be 64 lowercase hex characters')
    Object.assign(cfg.backend, { modelHash: declared })
  }
  const log = createLogger({ role: 'worker' })
  const node = await startNode(cfg, log)
  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    log.info('shutting down', { signal })
    setTimeout(() => process.exit(1), STOP_GRACE_MS).unref()
    await node.stop()
    process.exit(0)
  }
  process.on('SIGINT', () => void shutdown('SIGINT'))
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  log.info('ready', { ports: node.ports })
}
