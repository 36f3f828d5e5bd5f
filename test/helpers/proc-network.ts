// A network of real `cocoon` processes on loopback (one proxy, workers on the openai backend against a FAKE upstream,
// one or more client nodes), for fault tests that must cross process boundaries.
import fs from 'node:fs'
import path from 'node:path'
import { cocoon, randomPortOffset, tmpDir, type Proc } from './procs.ts'
import { startFakeUpstream, type FakeUpstream } from './fake-upstream.ts'
import { waitFor } from './network.ts'
import { simulatedImageHash } from '../../src/tee/simulated.ts'

export interface ProcNetwork {
  /** Base URLs of the client nodes' OpenAI APIs (without /v1). */
  clients: string[]
  proxyStats(): Promise<any>
  workerStats(i: number): Promise<any>
  clientStats(i: number): Promise<any>
  upstream: FakeUpstream
  procs: Proc[]
  stop(): Promise<void>
}

export async function startProcNetwork(opts: {
  workers?: number
  clients?: number
  /** Extra proxy config (e.g. queueDepth). */
  proxy?: Record<string, unknown>
  /** Extra worker config (e.g. maxActiveRequests). */
  worker?: Record<string, unknown>
  upstream?: { chunks?: number; delayMs?: number }
  model?: string
}): Promise<ProcNetwork> {
  const dir = tmpDir('procnet')
  const base = randomPortOffset()
  const host = '127.0.0.1'
  const model = opts.model ?? 'upstream-model'
  const upstream = await startFakeUpstream(opts.upstream ?? {})
  const image = await simulatedImageHash('')
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: { proxy: [image], worker: [image], client: '*' } }
  const write = (name: string, cfg: object) => {
    const f = path.join(dir, `${name}.json`)
    fs.writeFileSync(f, JSON.stringify(cfg))
    return f
  }
  const env = { COCOON_LOG_LEVEL: 'warn' }
  const procs: Proc[] = []
  procs.push(cocoon(['proxy', '--config', write('proxy', { role: 'proxy', dataDir: path.join(dir, 'proxy'), tee: { kind: 'simulated' }, policy, stats: `${host}:${base + 11000}`, workerListen: `${host}:${base + 11001}`, clientListen: `${host}:${base + 11002}`, ...opts.proxy })], env))
  const workers = opts.workers ?? 1
  for (let i = 0; i < workers; i++) {
    const cfg = { role: 'worker', dataDir: path.join(dir, `worker-${i}`), tee: { kind: 'simulated' }, policy, stats: `${host}:${base + 12000 + 10 * i}`, proxies: [`${host}:${base + 11001}`], backend: { kind: 'openai', model, baseUrl: upstream.url }, ...opts.worker }
    procs.push(cocoon(['worker', '--config', write(`worker-${i}`, cfg)], env))
  }
  const clients: string[] = []
  for (let i = 0; i < (opts.clients ?? 1); i++) {
    const port = base + 10000 + 5 * i
    procs.push(cocoon(['client', '--config', write(`client-${i}`, { role: 'client', dataDir: path.join(dir, `client-${i}`), policy, listen: `${host}:${port}`, proxies: [`${host}:${base + 11002}`] })], env))
    clients.push(`http://${host}:${port}`)
  }
  const json = async (url: string) => (await fetch(url)).json() as Promise<any>
  const net: ProcNetwork = {
    clients,
    upstream,
    procs,
    proxyStats: () => json(`http://${host}:${base + 11000}/jsonstats`),
    workerStats: (i) => json(`http://${host}:${base + 12000 + 10 * i}/jsonstats`),
    clientStats: (i) => json(`${clients[i]}/jsonstats`),
    async stop() {
      for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGTERM')
      await Promise.all(procs.map((p) => p.exited))
      await upstream.close()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  try {
    await waitFor(async () => (await net.proxyStats().catch(() => null))?.workers.connected === workers, 'the workers on the proxy', 60_000)
    for (const c of clients) await waitFor(async () => (await json(`${c}/healthz`).catch(() => null))?.ok === true, 'a client on the proxy', 60_000)
  } catch (err) {
    await net.stop()
    throw err
  }
  return net
}
