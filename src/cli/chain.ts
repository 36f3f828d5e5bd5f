// `cocoon chain`: runs the embedded devnet chain until SIGINT/SIGTERM, then persists and returns (exit code 0).
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError } from '../node/config.ts'
import { createLogger, type Logger } from '../core/log.ts'
import { PortInUseError, portProblem } from '../core/ports.ts'
import { DEFAULT_CHAIN_HOST, DEFAULT_CHAIN_PORT, FAUCET_PATH, startDevnetChain } from '../ton/chain/index.ts'

export const DEFAULT_CHAIN_DIR = '.cocoon/chain'

export const CHAIN_USAGE = `usage: cocoon chain [--dir DIR] [--port ${DEFAULT_CHAIN_PORT}] [--host ${DEFAULT_CHAIN_HOST}]

Runs the embedded devnet TON chain (@ton/sandbox) persisted under DIR (default ${DEFAULT_CHAIN_DIR}),
serving toncenter v2 JSON-RPC at /api/v2/jsonRPC and a faucet at ${FAUCET_PATH}. Port 0 picks a free port.
`

/**
 * Runs the chain until SIGINT or SIGTERM (or `deps.signal`), then persists and resolves.
 * Prints `devnet chain listening on URL` on stdout once serving.
 */
export async function runChainCommand(argv: string[], deps: { log?: Logger; out?: (text: string) => void; signal?: AbortSignal } = {}): Promise<void> {
  const out = deps.out ?? ((text: string) => process.stdout.write(text))
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string', default: DEFAULT_CHAIN_DIR },
      port: { type: 'string', default: String(DEFAULT_CHAIN_PORT) },
      host: { type: 'string', default: DEFAULT_CHAIN_HOST },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  })
  if (values.help) {
    out(CHAIN_USAGE)
    return
  }
  const port = Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new ConfigError('--port', 'must be an integer from 0 to 65535')
  const problem = portProblem(port)
  if (problem) throw new ConfigError('--port', problem)
  const dir = path.resolve(values.dir!)
  const log = deps.log ?? createLogger({ role: 'chain' })

  const server = await startDevnetChain({ dir, port, host: values.host!, log }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EADDRINUSE') throw new PortInUseError('chain', values.host!, port)
    if (err.name === 'ChainDirLockedError') throw new ConfigError('--dir', err.message)
    throw err
  })
  out(`devnet chain listening on ${server.url}\n  toncenter JSON-RPC: ${server.endpoint}\n  faucet:             POST ${server.url}${FAUCET_PATH} {"address","amount"}\n  state:              ${dir}\n`)

  const signal = await new Promise<string>((resolve) => {
    const onSignal = (name: string) => () => resolve(name)
    const onInt = onSignal('SIGINT')
    const onTerm = onSignal('SIGTERM')
    process.on('SIGINT', onInt)
    process.on('SIGTERM', onTerm)
    deps.signal?.addEventListener('abort', () => resolve('abort'), { once: true })
    if (deps.signal?.aborted) resolve('abort')
    // kept registered: a second Ctrl-C while persisting must not kill the process half-way
  })
  log.info('devnet chain stopping', { signal })
  await server.close()
  out('devnet chain stopped; state persisted\n')
  process.exitCode = 0
}
