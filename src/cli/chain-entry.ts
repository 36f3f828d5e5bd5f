// Standalone entry for `cocoon chain` (used by tests to spawn the chain as its own process): node --import tsx src/cli/chain-entry.ts [args]
import { runChainCommand } from './chain.ts'

try {
  await runChainCommand(process.argv.slice(2))
  process.exit(0)
} catch (err) {
  process.stderr.write(`cocoon chain: ${(err as Error).message}\n`)
  process.exit(2)
}
