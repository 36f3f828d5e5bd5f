// `cocoon wallet …`: a node's wallet from its key file: address, balance, and devnet faucet funding.
import { parseArgs } from 'node:util'
import { fromNano, toNano } from '@ton/core'
import { chainOptionsFromEnv, createChain, devnetBaseUrl, type Chain, DEFAULT_FAUCET_NANO, devnetFaucet, loadOrCreateWalletKey, loadWalletKey, nodeWalletContract, NodeWallet } from '../ton/chain-client/index.ts'
import { UsageError, type CliIo } from './root.ts'

export const WALLET_USAGE = `Usage: cocoon wallet COMMAND --key FILE [options]

Commands:
  address   print the wallet address (creates FILE, a private 32-byte seed, if it does not exist)
  balance   print the balance and whether the wallet is deployed
  faucet    fund the wallet from the devnet chain's faucet (devnet only)

Options:
  --key FILE           the wallet seed file (mode 0600; never printed)
  --endpoint URL       toncenter v2 JSON-RPC endpoint, or mainnet|testnet|devnet (env COCOON_CHAIN_ENDPOINT)
  --api-key-file FILE  toncenter API key (env COCOON_CHAIN_API_KEY or COCOON_CHAIN_API_KEY_FILE)
  --amount TON         faucet amount (default 10)
  --json               machine-readable output
`

const OPTIONS = {
  key: { type: 'string' },
  endpoint: { type: 'string' },
  'api-key-file': { type: 'string' },
  amount: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

/** Runs `cocoon wallet …`; resolves with the exit code (2 usage, 1 chain failure). */
export async function runWallet(argv: string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t), env: process.env, ...ioOverrides }
  const [cmd, ...rest] = argv
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      io.stdout(WALLET_USAGE)
      return 0
    }
    const { values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true })
    if (values.help) {
      io.stdout(WALLET_USAGE)
      return 0
    }
    if (!['address', 'balance', 'faucet'].includes(cmd)) throw new UsageError(`unknown command ${JSON.stringify(cmd)}; expected address, balance or faucet`)
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
    if (!values.key) throw new UsageError('--key FILE is required')
    const json = values.json === true
    const openChain = (): Chain => {
      const opts = chainOptionsFromEnv(io.env, { endpoint: values.endpoint, apiKeyFile: values['api-key-file'] })
      if (!opts) throw new UsageError('no chain endpoint: give --endpoint URL (or mainnet, testnet, devnet) or set COCOON_CHAIN_ENDPOINT')
      return createChain(opts)
    }

    if (cmd === 'address') {
      const key = loadOrCreateWalletKey(values.key)
      const address = nodeWalletContract(key.publicKey).address
      const friendly = address.toString({ bounceable: false })
      io.stdout(json ? JSON.stringify({ address: friendly, raw: address.toRawString(), publicKey: key.publicKey.toString('hex') }) + '\n' : `${friendly}\n`)
      return 0
    }
    if (cmd === 'balance') {
      const chain = openChain()
      const wallet = new NodeWallet(chain, loadWalletKey(values.key))
      const [balance, deployed] = await Promise.all([wallet.balance(), chain.isDeployed(wallet.address)])
      const address = wallet.address.toString({ bounceable: false })
      io.stdout(
        json
          ? JSON.stringify({ address, balanceNano: balance.toString(), deployed }) + '\n'
          : `${address}: ${fromNano(balance)} TON${deployed ? '' : ' (not deployed yet: the first transfer deploys it)'}\n`,
      )
      return 0
    }
    // faucet
    const amount = values.amount === undefined ? DEFAULT_FAUCET_NANO : parseTon(values.amount)
    const chain = openChain()
    const wallet = new NodeWallet(chain, loadOrCreateWalletKey(values.key))
    const out = await devnetFaucet(devnetBaseUrl(chain.endpoint), wallet.address, amount)
    const address = wallet.address.toString({ bounceable: false })
    io.stdout(
      json
        ? JSON.stringify({ address, amountNano: amount.toString(), balanceNano: out.balanceNano.toString() }) + '\n'
        : `credited ${fromNano(amount)} TON to ${address}; balance ${fromNano(out.balanceNano)} TON\n`,
    )
    return 0
  } catch (err) {
    const e = err as Error & { code?: string }
    const where = `cocoon wallet${cmd ? ` ${cmd}` : ''}`
    if (e?.name === 'UsageError' || e?.name === 'WalletKeyError' || (e?.name === 'TypeError' && e.code?.startsWith('ERR_PARSE_ARGS'))) {
      io.stderr(`${where}: ${e.message}\n(see cocoon wallet --help)\n`)
      return 2
    }
    if (e?.name === 'ChainError') {
      io.stderr(`${where}: ${e.message}\n`)
      return 1
    }
    throw err
  }
}

function parseTon(text: string): bigint {
  if (!/^[0-9]+(\.[0-9]{1,9})?$/.test(text)) throw new UsageError(`--amount must be an amount of TON such as 10 or 0.5, got ${JSON.stringify(text)}`)
  return toNano(text)
}
