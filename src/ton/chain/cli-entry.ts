// Standalone entry for `cocoon chain` (used by tests to spawn the chain as its own process): node --import tsx cli-entry.ts [args]
import { runChainCommand } from './cli.ts'

try {
  await runChainCommand(process.argv.slice(2))
  process.exit(0)
} catch (err) {
  process.stderr.write(`cocoon chain: ${(err as Error).message}\n`)
  process.exit(2)
}
