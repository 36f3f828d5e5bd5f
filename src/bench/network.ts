// The network under test: `cocoon devnet` as it is today, plus one more worker whose openai backend is the fake backend.
//
// The devnet is started unchanged (so whatever it runs, its chain and payments included, is in
// the measured path), with a free port offset. The extra worker is a copy of the devnet's own
// worker config with four changes: its backend (openai, at the fake backend, declaring
// BENCH_UPSTREAM_MODEL_HASH), its stats port, enough slots for the load's concurrency, and
// per-instance values naming `worker-0` (data folder, wallet) renamed so the two workers never
// share state. When the devnet has a chain, the bench first allows that model hash on the root,
// as an operator would with `cocoon root allow-model`, and funds the worker's wallet from the faucet
// (its payout claims pay gas), as the devnet funds its own worker.
//
// A second client node serves the same network with end-to-end encryption off (`e2ee: "off"`), so
// the bench can measure E2EE on and off side by side in one run: a copy of the devnet client's config
// with its own data folder, port and wallet, funded from the devnet faucet as the devnet funds its client.
import fs from 'node:fs'
import path from 'node:path'
import { DEVNET_PORTS, devnetPortOffsetProblem, type DevnetState } from '../node/devnet.ts'
import { portIsFree } from '../core/ports.ts'
import type { LlamaBackendConfig } from '../inference/index.ts'
import { sleep } from '../core/time.ts'
import { createChain, devnetFaucet, loadOrCreateWalletKey, NodeWallet } from '../ton/chain-client/index.ts'
import { BENCH_UPSTREAM_MODEL, BENCH_UPSTREAM_MODEL_HASH, BENCH_WORKER_MAX_ACTIVE_REQUESTS, NETWORK_READY_TIMEOUT_MS } from './constants.ts'
import { getJsonOrUndefined, spawnCocoon, type CocoonProcess } from './procs.ts'

export interface BenchNetwork {
  /** The client node's root, e.g. http://127.0.0.1:10000 (the OpenAI API is under /v1). */
  clientUrl: string
  /** The second client node's root: the same network with end-to-end encryption off (`e2ee: "off"`). */
  plainClientUrl: string
  /** Model served by the openai-backed worker (the fake backend behind it). */
  upstreamModel: string
  /** The devnet's own llama worker: its model id and backend settings, to run the same backend in-process. */
  llama: { modelId: string; backend: LlamaBackendConfig }
  /** Node processes, for memory figures. `worker` is the openai-backed worker that serves the load. */
  pids: { client: number | null; proxy: number | null; worker: number; plainClient: number }
  /** Whether the devnet ran a chain (and so could settle payments) alongside the nodes. */
  hasChain: boolean
  /** Every process of the network by name (devnet supervisor, chain, nodes), for memory over time; the openai worker's pid changes with each restart. */
  processes(): Record<string, number | null>
  /** Stops the openai-backed worker and starts it again; resolves with its new pid once the proxy lists it again. */
  restartWorker(): Promise<number>
  /**
   * Receipts answered but not yet proven to their client node or to the openai worker (both client nodes' `pending`
   * and the worker's), or null without a chain (nothing is committed, so nothing gets proven).
   */
  receiptBacklog(): Promise<number | null>
  /** Credits the wallet of the devnet's client node from the faucet (a long run spends more than the devnet gives it); no-op without a chain. */
  fundClient(nano: bigint): Promise<void>
  stop(): Promise<void>
}

export interface BenchNetworkOptions {
  /** Root URL of the fake OpenAI backend. */
  backendUrl: string
  /** Where configs, state and logs go. */
  dir: string
  /** Devnet model spec; default the devnet's. */
  model?: string
  /** Run the devnet without its chain (and so without payments). Default false. */
  noChain?: boolean
  say: (line: string) => void
}

const OPENAI_WORKER = 'worker-openai'
/** The client node with E2EE off, and what the faucet gives its wallet (as the devnet gives its client). */
const PLAIN_CLIENT = 'client-e2ee-off'
const PLAIN_CLIENT_FUNDING_NANO = 20n * 1_000_000_000n
/** What the faucet gives the openai-backed worker's wallet, for the gas of its payout claims (as the devnet gives its worker). */
const OPENAI_WORKER_FUNDING_NANO = 5n * 1_000_000_000n
/** Its API port: the devnet client's plus one (free in every devnet layout). */
const plainClientPort = (offset: number) => DEVNET_PORTS.client + 1 + offset

/** Port offsets tried for the devnet; the default ports may belong to a devnet the user runs. */
const PORT_OFFSET_BASE = 20_000
const PORT_OFFSET_STEP = 100
const PORT_OFFSET_SLOTS = 200
const PORT_OFFSET_ATTEMPTS = 20

export async function startBenchNetwork(o: BenchNetworkOptions): Promise<BenchNetwork> {
  const logDir = path.join(o.dir, 'logs')
  fs.mkdirSync(logDir, { recursive: true })
  const offset = await freePortOffset()
  const workerStatsPort = DEVNET_PORTS.worker(1) + offset
  const procs: CocoonProcess[] = []
  const stop = async () => {
    // The extra worker first, so the proxy does not log it as a failure while the devnet stops.
    for (const p of [...procs].reverse()) await p.stop()
  }
  try {
    o.say(`starting cocoon devnet (port offset ${offset}; logs in ${logDir})`)
    const devnetArgs = ['devnet', '--workers', '1', '--threads', '1', '--no-speech', '--dir', o.dir, '--port-offset', String(offset)]
    if (o.model) devnetArgs.push('--model', o.model)
    if (o.noChain) devnetArgs.push('--no-chain')
    const devnet = spawnCocoon('devnet', devnetArgs, path.join(logDir, 'devnet-stdout.log'))
    procs.push(devnet)
    await devnet.waitForLine(/Cocoon devnet is ready/, NETWORK_READY_TIMEOUT_MS)
    const state = JSON.parse(fs.readFileSync(path.join(o.dir, 'devnet.json'), 'utf8')) as DevnetState
    const worker0 = JSON.parse(fs.readFileSync(state.children['worker-0'].config, 'utf8')) as Record<string, unknown>

    if (state.chain?.root) {
      o.say('allowing the fake backend\'s model hash on the devnet root')
      const allow = spawnCocoon(
        'root allow-model',
        ['root', 'allow-model', BENCH_UPSTREAM_MODEL_HASH, '--endpoint', state.chain.endpoint, '--root', state.chain.root, '--wallet-key', state.chain.ownerKey],
        path.join(logDir, 'root-allow-model.log'),
      )
      const { code } = await allow.exited
      if (code !== 0) throw new Error(`cocoon root allow-model failed (exit code ${code}); see ${path.join(logDir, 'root-allow-model.log')}`)
    }

    const cfg = {
      ...renameInstance(worker0, 'worker-0', OPENAI_WORKER),
      stats: `127.0.0.1:${workerStatsPort}`,
      backend: { kind: 'openai', model: BENCH_UPSTREAM_MODEL, baseUrl: o.backendUrl, modelHash: BENCH_UPSTREAM_MODEL_HASH },
      maxActiveRequests: BENCH_WORKER_MAX_ACTIVE_REQUESTS,
    }
    const cfgFile = path.join(o.dir, `${OPENAI_WORKER}.json`)
    fs.writeFileSync(cfgFile, JSON.stringify(cfg, null, 2) + '\n')
    const dataDir = (cfg as { dataDir?: unknown }).dataDir
    if (state.chain && typeof dataDir === 'string') {
      // Its own wallet pays the gas of its payout claims, as the devnet's worker's does: unfunded, every claim failed.
      o.say('funding the wallet of the openai-backed worker')
      fs.mkdirSync(dataDir, { recursive: true })
      await fundFromFaucet(state.chain, path.join(dataDir, 'wallet.key'), OPENAI_WORKER_FUNDING_NANO)
    }
    const proxyStats = `http://127.0.0.1:${state.ports.proxyStats}/jsonstats`
    type ProxyStats = { workers?: { refused?: number; list?: Array<{ model: { id: string } }> } }
    const refusedBefore = ((await getJson(proxyStats)) as ProxyStats | undefined)?.workers?.refused ?? 0
    const clientRoot = state.baseUrl.replace(/\/v1$/, '')
    let worker: CocoonProcess
    let restarts = 0
    const startWorker = async (): Promise<CocoonProcess> => {
      const log = path.join(logDir, restarts === 0 ? `${OPENAI_WORKER}.log` : `${OPENAI_WORKER}.${restarts}.log`)
      const w = spawnCocoon(OPENAI_WORKER, ['worker', '--config', cfgFile], log)
      procs.push(w)
      let exited = false
      void w.exited.then(() => (exited = true))
      await waitJoined(() => exited, log)
      return w
    }
    /** Waits until the proxy lists a worker of the bench model; fails if the worker exits or time runs out. */
    const waitJoined = async (exited: () => boolean, log: string) => {
      const deadline = Date.now() + NETWORK_READY_TIMEOUT_MS
      for (;;) {
        const stats = (await getJson(proxyStats)) as ProxyStats | undefined
        if (stats?.workers?.list?.some((w) => w.model.id === BENCH_UPSTREAM_MODEL)) break
        if (exited()) throw new Error(`the openai-backed worker exited before joining the proxy; see ${log}`)
        // A refusal right after the allow-model may only mean the proxy has not re-read the root yet;
        // the worker dials again, so only a refusal that lasts until the deadline counts.
        if (Date.now() > deadline) {
          const refused = (stats?.workers?.refused ?? 0) > refusedBefore
          throw new Error(
            refused
              ? `the proxy refused the openai-backed worker (${lastRefusal(state.children.proxy?.log) ?? 'see its log'}); logs in ${logDir}`
              : `the openai-backed worker did not join the proxy in ${NETWORK_READY_TIMEOUT_MS / 1000}s; see ${logDir}`,
          )
        }
        await sleep(100)
      }
    }
    worker = await startWorker()
    const plain = await startPlainClient({ state, dir: o.dir, logDir, port: plainClientPort(offset), say: o.say })
    procs.push(plain.proc)
    const backend = worker0.backend as LlamaBackendConfig
    return {
      clientUrl: clientRoot,
      plainClientUrl: plain.url,
      upstreamModel: BENCH_UPSTREAM_MODEL,
      llama: { modelId: state.model.id, backend },
      pids: { client: state.children.client?.pid ?? null, proxy: state.children.proxy?.pid ?? null, worker: worker.pid, plainClient: plain.proc.pid },
      hasChain: state.chain !== null && state.chain !== undefined,
      processes: () => ({
        supervisor: state.pid,
        chain: state.children.chain?.pid ?? null,
        client: state.children.client?.pid ?? null,
        proxy: state.children.proxy?.pid ?? null,
        'worker-0': state.children['worker-0']?.pid ?? null,
        [OPENAI_WORKER]: worker.pid,
        [PLAIN_CLIENT]: plain.proc.pid,
      }),
      async restartWorker() {
        await worker.stop()
        procs.splice(procs.indexOf(worker), 1)
        // The proxy drops the link when the worker goes; wait for that before waiting for the new one.
        for (let i = 0; i < 50; i++) {
          const stats = (await getJson(proxyStats)) as ProxyStats | undefined
          if (!stats?.workers?.list?.some((w) => w.model.id === BENCH_UPSTREAM_MODEL)) break
        await sleep(100)
        }
        restarts++
        worker = await startWorker()
        return worker.pid
      },
      async receiptBacklog() {
        if (!state.chain) return null
        const pendingAt = async (root: string) => ((await getJson(`${root}/jsonstats`)) as { receipts?: { pending?: number } } | undefined)?.receipts?.pending
        const pending = await Promise.all([pendingAt(clientRoot), pendingAt(plain.url), pendingAt(`http://127.0.0.1:${workerStatsPort}`)])
        return pending.every((n) => typeof n === 'number') ? (pending as number[]).reduce((a, b) => a + b, 0) : null
      },
      async fundClient(nano) {
        if (state.chain) await fundFromFaucet(state.chain, path.join(o.dir, 'client', 'wallet.key'), nano)
      },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * Starts the client node with E2EE off: the devnet client's config with its own data folder (so its
 * own wallet, funded from the faucet when there is a chain), its own port and `e2ee: "off"`. Resolves
 * once it is healthy and lists the bench model.
 */
async function startPlainClient(o: { state: DevnetState; dir: string; logDir: string; port: number; say: (line: string) => void }): Promise<{ proc: CocoonProcess; url: string }> {
  const client = o.state.children.client
  if (!client) throw new Error('the devnet ran no client node')
  const dataDir = path.join(o.dir, PLAIN_CLIENT)
  fs.mkdirSync(dataDir, { recursive: true })
  const cfg: Record<string, unknown> = { ...(JSON.parse(fs.readFileSync(client.config, 'utf8')) as Record<string, unknown>), dataDir, listen: `127.0.0.1:${o.port}`, e2ee: 'off' }
  delete cfg.walletKeyFile
  if (o.state.chain) {
    o.say(`funding the wallet of the client node with E2EE off`)
    await fundFromFaucet(o.state.chain, path.join(dataDir, 'wallet.key'), PLAIN_CLIENT_FUNDING_NANO)
  }
  const cfgFile = path.join(o.dir, `${PLAIN_CLIENT}.json`)
  fs.writeFileSync(cfgFile, JSON.stringify(cfg, null, 2) + '\n')
  const log = path.join(o.logDir, `${PLAIN_CLIENT}.log`)
  o.say(`starting a second client node with E2EE off (port ${o.port})`)
  const proc = spawnCocoon(PLAIN_CLIENT, ['client', '--config', cfgFile], log)
  let exited = false
  void proc.exited.then(() => (exited = true))
  const url = `http://127.0.0.1:${o.port}`
  const deadline = Date.now() + NETWORK_READY_TIMEOUT_MS
  for (;;) {
    const health = (await getJson(`${url}/healthz`)) as { ok?: boolean } | undefined
    const models = health?.ok ? ((await getJson(`${url}/v1/models`)) as { data?: Array<{ id: string }> } | undefined) : undefined
    if (models?.data?.some((m) => m.id === BENCH_UPSTREAM_MODEL)) return { proc, url }
    if (exited) throw new Error(`the client node with E2EE off exited before it was ready; see ${log}`)
    if (Date.now() > deadline) {
      await proc.stop()
      throw new Error(`the client node with E2EE off was not ready in ${NETWORK_READY_TIMEOUT_MS / 1000}s; see ${log}`)
    }
    await sleep(200)
  }
}

/** Credits the wallet whose seed is in `keyFile` (created if absent) from the devnet chain's faucet. */
async function fundFromFaucet(chain: NonNullable<DevnetState['chain']>, keyFile: string, nano: bigint): Promise<void> {
  const wallet = new NodeWallet(createChain({ endpoint: chain.endpoint }), loadOrCreateWalletKey(keyFile))
  await devnetFaucet(chain.url, wallet.address, nano)
}

/** A copy of `v` with `from` replaced by `to` in every string: per-instance file names and labels. */
export function renameInstance<T>(v: T, from: string, to: string): T {
  if (typeof v === 'string') return v.split(from).join(to) as T
  if (Array.isArray(v)) return v.map((x) => renameInstance(x, from, to)) as T
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, renameInstance(x, from, to)])) as T
  return v
}

/** The reason of the last "peer refused" line in a node's log. */
function lastRefusal(logFile: string | undefined): string | undefined {
  if (!logFile) return undefined
  try {
    const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"peer refused"'))
    return (JSON.parse(lines.at(-1) ?? '{}') as { reason?: string }).reason
  } catch {
    return undefined
  }
}

/** A node's stats while the bench runs: a short wait, so that a stuck node does not stall the sampling. */
const getJson = (url: string) => getJsonOrUndefined(url, 2_000)

/** A devnet port offset whose ports (and the extra worker's) are all free now. */
async function freePortOffset(): Promise<number> {
  for (let i = 0; i < PORT_OFFSET_ATTEMPTS; i++) {
    const offset = PORT_OFFSET_BASE + Math.floor(Math.random() * PORT_OFFSET_SLOTS) * PORT_OFFSET_STEP
    if (devnetPortOffsetProblem(offset, 2)) continue
    const ports = [DEVNET_PORTS.client, DEVNET_PORTS.client + 1, DEVNET_PORTS.proxyStats, DEVNET_PORTS.proxyWorkers, DEVNET_PORTS.proxyClients, DEVNET_PORTS.worker(0), DEVNET_PORTS.worker(1), DEVNET_PORTS.chain]
    const free = await Promise.all(ports.map((p) => portIsFree('127.0.0.1', p + offset)))
    if (free.every(Boolean)) return offset
  }
  throw new Error('found no free set of ports for the devnet')
}
