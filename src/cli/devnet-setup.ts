// `cocoon devnet-setup` (internal): the devnet's start-up work that needs the heavy libraries, run in a child
// process of its own. It resolves and hashes the models, computes this checkout's simulated image hash, and on a
// chain funds the devnet's wallets, deploys the root and registers the proxies. The supervisor (`cocoon devnet`)
// stays up for the whole session; since it never loads TON, x509 or the model code itself, its resident memory
// stays that of a small process (docs/benchmarks.md, "Idle memory").
//
// Protocol: the request is one JSON object on stdin (DevnetSetupRequest); the answers are JSON lines on stdout
// (DevnetSetupMessage), in this order: any number of `say`, then `resolved`, then (with a chain) more `say` and
// `chain`. A failure is one `error` line and exit code 1.
import path from 'node:path'
import { text } from 'node:stream/consumers'
import { simulatedImageHash } from '../tee/index.ts'
import { DEFAULT_POCKETSPHINX_MODEL_DIR, hashModelDir, resolveModel } from '../inference/index.ts'
import { sleep } from '../core/time.ts'
import { getJson } from '../core/http-client.ts'
import { DEVNET_POLL_TIMEOUT_MS, DEVNET_READY_TIMEOUT_MS, type DevnetProxyPorts, type DevnetState } from '../node/devnet.ts'
import { createChain, NodeWallet, devnetFaucet, loadOrCreateWalletKey, deployRoot, DEVNET_PARAMS, ProxyRegistry } from '../ton/chain-client/index.ts'
import { ONE_TON_NANO } from '../ton/contracts/index.ts'

/** The devnet's speech model id, served at /v1/audio/transcriptions. */
export const DEVNET_SPEECH_MODEL_ID = 'pocketsphinx-en-us'
/** How often the setup checks that the devnet that started it is still there. */
const SUPERVISOR_CHECK_MS = 1_000

/** What the supervisor asks for. */
export interface DevnetSetupRequest {
  dir: string
  /** The model spec (`--model`). */
  model: string
  withSpeech: boolean
  /** The chain's base URL, when the devnet runs one (it is started after `resolved`, so setup waits for it). */
  chainUrl: string | null
  /** Worker names: each has a wallet under <dir>/<name>/. */
  workers: string[]
  proxies: DevnetProxyPorts[]
}

/** A node config's `chain` section, per role. */
export type ChainSections = Record<'client' | 'proxy' | 'worker', Record<string, unknown>>

export type DevnetSetupMessage =
  | { say: string }
  | { resolved: { model: DevnetState['model']; speech: DevnetState['speech']; image: string } }
  | { chain: { root: string; sections: ChainSections } }
  | { error: string }

/** Starting balances the faucet gives each devnet wallet, nanoTON. */
const DEVNET_FUNDING = { owner: 100n * ONE_TON_NANO, proxy: 20n * ONE_TON_NANO, worker: 5n * ONE_TON_NANO, client: 20n * ONE_TON_NANO }

/** Runs the setup the request on stdin asks for, answering on stdout. */
export async function runDevnetSetup(): Promise<void> {
  const send = (m: DevnetSetupMessage) => process.stdout.write(JSON.stringify(m) + '\n')
  // Its stdin carries only the request, so it cannot tell its supervisor is gone by EOF, as the nodes do: it
  // watches its parent instead, and stops if the devnet was killed mid-setup.
  const parent = process.ppid
  setInterval(() => process.ppid !== parent && process.exit(1), SUPERVISOR_CHECK_MS).unref()
  try {
    const req = JSON.parse(await text(process.stdin)) as DevnetSetupRequest
    const model = await resolveModel(req.model, {}).catch((err: Error) => {
      throw new Error(`${err.message}; set COCOON_MODELS to a folder that holds the model, or pass --model FILE`)
    })
    send({ say: `model ${model.id} (sha256 ${model.sha256.slice(0, 16)}…) at ${model.path}` })
    let speech: DevnetState['speech'] = null
    if (req.withSpeech) {
      speech = { id: DEVNET_SPEECH_MODEL_ID, dir: DEFAULT_POCKETSPHINX_MODEL_DIR, sha256: await hashModelDir(DEFAULT_POCKETSPHINX_MODEL_DIR) }
      send({ say: `speech model ${speech.id} (sha256 ${speech.sha256.slice(0, 16)}…) at ${speech.dir}` })
    }
    const image = await simulatedImageHash('')
    send({ resolved: { model: { id: model.id, path: model.path, sha256: model.sha256 }, speech, image } })
    if (req.chainUrl) {
      const modelHashes = [model.sha256, ...(speech ? [speech.sha256] : [])]
      send({ chain: await setUpChain({ ...req, chainUrl: req.chainUrl, image, modelHashes }, (line) => send({ say: line })) })
    }
  } catch (err) {
    send({ error: (err as Error).message })
    process.exitCode = 1
  }
}

/**
 * Waits for the chain, funds the devnet's wallets, deploys the root with this checkout's simulated
 * image hash and the model's hash on its allow-lists, and registers the proxies. Idempotent, so a
 * restarted devnet reuses its chain state.
 */
async function setUpChain(o: DevnetSetupRequest & { chainUrl: string; image: string; modelHashes: string[] }, say: (line: string) => void): Promise<{ root: string; sections: ChainSections }> {
  const deadline = Date.now() + DEVNET_READY_TIMEOUT_MS
  const healthy = () =>
    getJson(`${o.chainUrl}/healthz`, DEVNET_POLL_TIMEOUT_MS)
      .then((h) => (h as { ok: boolean }).ok)
      .catch(() => false)
  while (!(await healthy())) {
    if (Date.now() > deadline) throw new Error(`the devnet chain did not come up at ${o.chainUrl} within ${DEVNET_READY_TIMEOUT_MS / 1000}s; see ${path.join(o.dir, 'logs', 'chain.log')}`)
    await sleep(200)
  }
  const endpoint = `${o.chainUrl}/api/v2/jsonRPC`
  const chain = createChain({ endpoint })
  const fund = async (file: string, amount: bigint) => {
    const w = new NodeWallet(chain, loadOrCreateWalletKey(file))
    const have = await w.balance()
    if (have < amount / 2n) await devnetFaucet(o.chainUrl, w.address, amount - have)
    return w
  }
  // The faucet credits at once, so every wallet is funded side by side.
  const [owner, ...proxyWallets] = await Promise.all([
    fund(path.join(o.dir, 'owner.key'), DEVNET_FUNDING.owner),
    ...o.proxies.map((pp) => fund(path.join(o.dir, pp.name, 'wallet.key'), DEVNET_FUNDING.proxy)),
    ...o.workers.map((name) => fund(path.join(o.dir, name, 'wallet.key'), DEVNET_FUNDING.worker)),
    fund(path.join(o.dir, 'client', 'wallet.key'), DEVNET_FUNDING.client),
  ])
  const { address, state } = await deployRoot(chain, owner, { params: DEVNET_PARAMS, proxyImageHashes: [o.image], workerImageHashes: [o.image], modelHashes: o.modelHashes })
  // Each proxy registers itself from its own wallet, as any proxy with an allowed image and a stake may: no owner action.
  await Promise.all(
    o.proxies.map(async (pp, i) => {
      const registry = new ProxyRegistry(chain, proxyWallets[i], loadOrCreateWalletKey(path.join(o.dir, pp.name, 'payment.key')), address)
      const published = { host: '127.0.0.1', workerPort: pp.workers, clientPort: pp.clients }
      const entry = state.proxies.get(registry.publicKeyHex)
      if (!entry) await registry.register(published, { imageHash: o.image })
      else if (entry.state === 'listed' && (entry.host !== published.host || entry.workerPort !== published.workerPort || entry.clientPort !== published.clientPort)) {
        await registry.update(published)
      }
    }),
  )
  say(`root ${address.toString()} deployed with this build's image hash and the model hash`)
  const common = { endpoint, root: address.toString(), policyRefreshSec: 2 }
  return {
    root: address.toString(),
    sections: {
      proxy: { ...common, settleIntervalSec: 5, chargeThresholdNano: '10000000' },
      worker: { ...common, payoutThresholdNano: '10000000' },
      client: { ...common, depositNano: String(5n * ONE_TON_NANO), topUpBelowNano: String(ONE_TON_NANO), topUpNano: String(5n * ONE_TON_NANO) },
    },
  }
}
