// Shared set-up for the chain-client tests: a real devnet chain on loopback (port 0, temp dir),
// reached over HTTP through createChain, and funded node wallets.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { toNano } from '@ton/core'
import { silentLogger } from '../../src/core/log.ts'
import { startDevnetChain, type DevnetChainServer } from '../../src/ton/chain/server.ts'
import { createChain, type Chain } from '../../src/ton/chain-client/chain.ts'
import { devnetFaucet, loadOrCreateWalletKey, NodeWallet } from '../../src/ton/chain-client/wallet.ts'

export interface Devnet {
  server: DevnetChainServer
  chain: Chain
  dir: string
  /** A wallet whose seed lives in `dir/<name>.key`, funded with `ton` from the faucet (0: not funded). */
  wallet(name: string, ton?: string): Promise<{ wallet: NodeWallet; keyFile: string }>
  close(): Promise<void>
}

export async function startDevnet(): Promise<Devnet> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-ton-'))
  const server = await startDevnetChain({ dir: path.join(dir, 'chain'), port: 0, log: silentLogger })
  const chain = createChain({ endpoint: server.endpoint })
  return {
    server,
    chain,
    dir,
    async wallet(name, ton = '10') {
      const keyFile = path.join(dir, `${name}.key`)
      const wallet = new NodeWallet(chain, loadOrCreateWalletKey(keyFile), { pollIntervalMs: 50 })
      if (ton !== '0') await devnetFaucet(server.url, wallet.address, toNano(ton))
      return { wallet, keyFile }
    },
    async close() {
      await server.close()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Collects what a CLI run writes. */
export function captureIo(env: NodeJS.ProcessEnv = {}) {
  const out = { stdout: '', stderr: '' }
  return {
    out,
    io: { stdout: (t: string) => void (out.stdout += t), stderr: (t: string) => void (out.stderr += t), env },
  }
}

/** Distinct 32-byte test hashes as hex. */
export function hash(n: number): string {
  return n.toString(16).padStart(2, '0').repeat(32)
}
