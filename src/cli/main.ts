// The `cocoon` command line: one binary with a subcommand per role and tool.
import { parseArgs } from 'node:util'
import { createLogger } from '../core/log.ts'
import { ConfigError } from '../core/errors.ts'
import { PortInUseError } from '../core/ports.ts'
import { stopWithSupervisor } from '../core/supervised.ts'
import { installFastSha256 } from '../ton/fast-sha256.ts'
import type { NodeExtras } from '../node/run.ts'

// Every cocoon process hashes TON cells with node:crypto, not jsSHA (see ton/fast-sha256.ts).
installFastSha256()

const USAGE = `cocoon — Confidential Compute Open Network (TypeScript)

Usage:
  cocoon devnet [--workers N] [--proxies N] [--model SPEC] [--dir DIR] [--port-offset K] [--threads N] [--no-chain] [--no-speech]
                                    run a whole local network (chain, proxy, workers, client) and serve the OpenAI API
  cocoon client --config FILE       run a client node (OpenAI API on 127.0.0.1:10000)
  cocoon proxy  --config FILE       run a proxy node
  cocoon worker --config FILE       run a worker node
  cocoon client topup|withdraw --config FILE --amount TON [--proxy KEY]
  cocoon client close --config FILE [--finish] [--proxy KEY]
                                    fund, withdraw from or close the client contract (any chain)
  cocoon client keys create --config FILE --name NAME [--limit TON] [--period day|month] [--models A,B]
  cocoon client keys list|revoke --config FILE [--name NAME]
                                    API keys for the apps behind a client node (shown once, stored hashed)
  cocoon worker payout --config FILE
                                    claim the worker's payouts now
  cocoon proxy withdraw --config FILE [--amount TON]
                                    withdraw the proxy's margin to its owner wallet
  cocoon client proxies --config FILE [--json]
                                    the proxies the client node can use, with their measured scores
  cocoon proxy register --config FILE [--host HOST] [--worker-port N] [--client-port N] [--stake TON] [--image HEX]
                                    register the proxy on the root (permissionless: allowed image + stake >= minProxyStake)
  cocoon proxy update --config FILE [--host HOST] [--worker-port N] [--client-port N]
                                    move the registered endpoint
  cocoon proxy unregister --config FILE [--finish]
                                    leave the registry; with --finish after the close delay, take the stake back
  cocoon chain  [--dir DIR] [--port 10090] [--host 127.0.0.1]
                                    run the embedded devnet TON chain (--host 0.0.0.0: reachable from other hosts)
  cocoon root show|deploy|set-params|allow-image|revoke-image|allow-model|revoke-model|delist-proxy
                                    read or govern the root contract (cocoon root --help)
  cocoon wallet address|balance|faucet --key FILE
                                    a node wallet: address, balance, devnet faucet
  cocoon attest inspect <cert.pem|quote-file>
  cocoon attest verify <quote-file> [--collateral FILE] [--now ISO-8601] [--json]
  cocoon attest quote --report-data HEX
  cocoon attest image [--tag TAG]   this checkout's simulated-TEE image hash (what the root allows for it)
  cocoon receipt verify <file|receipt_id> [--chain URL] [--answer FILE] [--client URL] [--json]
                                    check a receipt: signature, certificate, Merkle proof on chain, answer, cost
  cocoon audit --proxy ADDRESS [--chain URL] [--json]
                                    replay a proxy contract's commits: seqnos and counts only grow, roots well formed
  cocoon reliability verify --proxy URL [--contract ADDRESS] [--chain URL] [--json]
                                    check a proxy's published reliability record: its hash on chain, recomputed from receipts
  cocoon bench [--quick] [--out FILE]  measure protocol overhead, handshakes, inference and fees (docs/benchmarks.md)
  cocoon bench --soak MINUTES [--out FILE]
                                    100 streams for MINUTES, a worker restarted each minute: memory slope per node
  cocoon bench --scale [--workers N] [--streams N] [--out FILE]
                                    one proxy, N simulated workers (default 1000), N concurrent streams (10000)
  cocoon help

Environment: COCOON_MODELS (folder searched first for models), COCOON_LOG_LEVEL
(debug|info|warn|error), COCOON_<SETTING> overrides a config setting (see docs/operations.md).
`

/** Commands that start a long-running process: a failed start is one line on stderr, exit code 1, and nothing left running. */
const STARTING = new Set(['client', 'proxy', 'worker', 'chain', 'devnet'])

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  const starting = STARTING.has(cmd) && !(rest[0] && !rest[0].startsWith('-'))
  if (starting && cmd !== 'devnet') stopWithSupervisor()
  try {
    switch (cmd) {
      case 'client':
      case 'proxy':
      case 'worker':
        if (cmd === 'client' && rest[0] === 'proxies') {
          const { runClientProxies } = await import('./client-proxies.ts')
          process.exitCode = await runClientProxies(rest.slice(1))
          return
        }
        if (cmd === 'proxy' && ['register', 'update', 'unregister'].includes(rest[0])) {
          const { runProxyRegistry } = await import('./proxy-registry.ts')
          process.exitCode = await runProxyRegistry(rest[0], rest.slice(1))
          return
        }
        if (cmd === 'client' && rest[0] === 'keys') {
          const { runKeys } = await import('./keys.ts')
          process.exitCode = await runKeys(rest.slice(1))
          return
        }
        if (rest[0] && !rest[0].startsWith('-')) {
          const { runMoney } = await import('./money.ts')
          process.exitCode = await runMoney(cmd, rest[0], rest.slice(1))
          return
        }
        return await runRole(cmd, rest)
      case 'devnet': {
        const { runDevnet } = await import('./devnet.ts')
        return await runDevnet(rest)
      }
      case 'devnet-setup': {
        // Internal: the devnet's start-up work in a child of its own (./devnet-setup.ts).
        const { runDevnetSetup } = await import('./devnet-setup.ts')
        return await runDevnetSetup()
      }
      case 'chain': {
        const { runChainCommand } = await import('./chain.ts')
        return await runChainCommand(rest)
      }
      case 'root': {
        const { runRoot } = await import('./root.ts')
        process.exitCode = await runRoot(rest)
        return
      }
      case 'wallet': {
        const { runWallet } = await import('./wallet.ts')
        process.exitCode = await runWallet(rest)
        return
      }
      case 'bench': {
        const { runBench } = await import('../bench/index.ts')
        return await runBench(rest)
      }
      case 'receipt': {
        const { runReceipt } = await import('./receipts.ts')
        process.exitCode = await runReceipt(rest)
        return
      }
      case 'audit': {
        const { runAudit } = await import('./receipts.ts')
        process.exitCode = await runAudit(rest)
        return
      }
      case 'reliability': {
        const { runReliability } = await import('./reliability.ts')
        process.exitCode = await runReliability(rest)
        return
      }
      case 'attest': {
        const { runAttest } = await import('./attest.ts')
        process.exitCode = await runAttest(rest)
        return
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE)
        return
      default:
        process.stderr.write(`cocoon: unknown command '${cmd}'\n\n${USAGE}`)
        process.exitCode = 2
    }
  } catch (err) {
    const e = err as Error
    const usage = e.name === 'UsageError' || (e.name === 'TypeError' && typeof (e as NodeJS.ErrnoException).code === 'string' && (e as NodeJS.ErrnoException).code!.startsWith('ERR_PARSE_ARGS_'))
    if (starting) {
      // Whatever went wrong, a start that fails says so in one line and exits, leaving no half-started servers or timers behind.
      const known = usage || OPERATIONAL_ERRORS.has(e.name) || START_ERRORS.has(e.name)
      process.stderr.write(`cocoon ${cmd}: ${oneLine(known ? e.message : `could not start: ${e.message}`)}\n`)
      if (!known && process.env.COCOON_LOG_LEVEL === 'debug') process.stderr.write(`${e.stack}\n`)
      process.exit(usage ? 2 : 1)
    }
    if (e.name === 'ConfigError' || e.name === 'InvalidPolicyError' || usage) {
      process.stderr.write(`cocoon ${cmd}: ${e.message}\n`)
      process.exitCode = 2
      return
    }
    if (OPERATIONAL_ERRORS.has(e.name)) {
      process.stderr.write(`cocoon ${cmd}: ${e.message}\n`)
      process.exitCode = 1
      return
    }
    throw err
  }
}

/** Why a node, the chain or the devnet could not start: the message is the whole story. */
const START_ERRORS = new Set(['ConfigError', 'InvalidPolicyError', 'PortInUseError', 'DevnetStartError'])

/** An error message as one line, cut to a readable length (it may quote outside input). */
function oneLine(text: string): string {
  const line = text.replace(/\s*\n\s*/g, ' ').trim()
  return line.length > 500 ? line.slice(0, 500) + '…' : line
}

/** Failures with a message meant for the operator: printed without a stack trace, exit code 1. */
const OPERATIONAL_ERRORS = new Set([
  'ModelDownloadError',
  'ModelFileNotFoundError',
  'ModelHashMismatchError',
  'InvalidModelSpecError',
  'ChainError',
  'WalletKeyError',
  'WalletSendError',
  'ContractRejectedError',
  'DeliveryTimeoutError',
  'RootMismatchError',
  'LedgerRollbackError',
])

async function runRole(role: 'client' | 'proxy' | 'worker', args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true })
  if (!values.config) throw new ConfigError(role, '--config FILE is required')
  // Loaded here, not at the top, like the node below: the devnet's supervisor never needs it.
  const { loadConfig } = await import('../node/config.ts')
  const cfg = loadConfig(values.config)
  if (cfg.role !== role) throw new ConfigError(values.config, `is a ${cfg.role} config, not a ${role} config`)
  const log = createLogger({ role })
  // Loaded here, not at the top: the other commands (devnet, chain, root, ...) never need a node's whole stack.
  const { startNode } = await import('../node/run.ts')
  // The dashboard's Verify button runs the same checks as `cocoon receipt verify` (loaded when first pressed).
  const verifyReceipt: NodeExtras['verifyReceipt'] = async (j, chain) => (await import('./receipts.ts')).verifyReceiptJson(j as never, { chain })
  const node = await startNode(cfg, log, { verifyReceipt }).catch((err: NodeJS.ErrnoException & { address?: string; port?: number }) => {
    if (err.code === 'EADDRINUSE') throw new PortInUseError(role, err.address ?? '127.0.0.1', err.port ?? 0)
    throw err
  })
  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    log.info('shutting down', { signal })
    const force = setTimeout(() => process.exit(1), 5_000)
    force.unref()
    await node.stop()
    process.exit(0)
  }
  process.on('SIGINT', () => void shutdown('SIGINT'))
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  log.info('ready', { ports: node.ports })
}
