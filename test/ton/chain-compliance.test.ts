// Runs the Chain compliance suite against every chain reachable from here: always the devnet chain on
// loopback; testnet when COCOON_TEST_CHAIN_ENDPOINT names one (read-only checks; no network in CI).
import { createChain } from '../../src/ton/chain-client/chain.ts'
import { chainCompliance } from './chain-compliance.ts'
import { startDevnet } from './helpers.ts'

chainCompliance('devnet chain over toncenter JSON-RPC', async () => {
  const net = await startDevnet()
  const { wallet } = await net.wallet('compliance', '5')
  return { chain: net.chain, funded: wallet, close: () => net.close() }
})

const real = process.env.COCOON_TEST_CHAIN_ENDPOINT
chainCompliance(
  `real network (${real ?? 'unset'})`,
  async () => ({ chain: createChain({ endpoint: real!, apiKey: process.env.COCOON_TEST_CHAIN_API_KEY }) }),
  real ? undefined : 'COCOON_TEST_CHAIN_ENDPOINT is not set (no network here)',
)
