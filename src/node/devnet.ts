// The devnet's layout: its default ports and the state file it writes, shared by the supervisor (`cocoon devnet`) and the bench.
import { portProblem } from '../core/ports.ts'

/** How long the devnet may take to be ready (the chain's /healthz, then every node). */
export const DEVNET_READY_TIMEOUT_MS = 120_000
/** One readiness poll (chain /healthz, proxy /jsonstats, client /healthz and /v1/models). */
export const DEVNET_POLL_TIMEOUT_MS = 10_000

/**
 * Default ports of a devnet, after the reference's conventions; an offset shifts them all. The chain
 * is on 10090, `cocoon chain`'s default (DEFAULT_CHAIN_PORT, kept equal by test/node/ports.test.ts,
 * not imported: that would load the whole chain into every process that only needs the layout).
 * Not 10080: fetch refuses it.
 */
export const DEVNET_PORTS = {
  client: 10000,
  proxyStats: 11000,
  proxyWorkers: 11001,
  proxyClients: 11002,
  worker: (i: number) => 12000 + 10 * i,
  chain: 10090,
}

/** Ports of one devnet proxy. */
export interface DevnetProxyPorts {
  /** Its child name: `proxy`, then `proxy-1`, `proxy-2`… */
  name: string
  stats: number
  workers: number
  clients: number
}

/** Ports of devnet proxy i: the first at 11000/11001/11002, each next one 10 higher. */
export function devnetProxyPorts(i: number, offset: number): DevnetProxyPorts {
  const step = 10 * i + offset
  return { name: i === 0 ? 'proxy' : `proxy-${i}`, stats: DEVNET_PORTS.proxyStats + step, workers: DEVNET_PORTS.proxyWorkers + step, clients: DEVNET_PORTS.proxyClients + step }
}

export interface DevnetPorts {
  chain: number
  client: number
  proxyStats: number
  proxyWorkers: number
  proxyClients: number
  workers: number[]
  /** Every proxy's ports (proxyStats/proxyWorkers/proxyClients are the first one's). */
  proxies: DevnetProxyPorts[]
}

/** The devnet's ports for `--port-offset K`. */
export function devnetPorts(offset: number, workers: number, proxies = 1): DevnetPorts {
  return {
    chain: DEVNET_PORTS.chain + offset,
    client: DEVNET_PORTS.client + offset,
    proxyStats: DEVNET_PORTS.proxyStats + offset,
    proxyWorkers: DEVNET_PORTS.proxyWorkers + offset,
    proxyClients: DEVNET_PORTS.proxyClients + offset,
    workers: Array.from({ length: workers }, (_, i) => DEVNET_PORTS.worker(i) + offset),
    proxies: Array.from({ length: proxies }, (_, i) => devnetProxyPorts(i, offset)),
  }
}

/** Each port with the role that wants it, for messages ("port 10000 for the client"). */
export function devnetPortsByRole(p: DevnetPorts, withChain = true): Array<{ role: string; port: number }> {
  return [
    ...(withChain ? [{ role: 'chain', port: p.chain }] : []),
    { role: 'client', port: p.client },
    { role: 'proxy (stats)', port: p.proxyStats },
    { role: 'proxy (worker listener)', port: p.proxyWorkers },
    { role: 'proxy (client listener)', port: p.proxyClients },
    ...p.proxies.slice(1).flatMap((x) => [
      { role: `${x.name} (stats)`, port: x.stats },
      { role: `${x.name} (worker listener)`, port: x.workers },
      { role: `${x.name} (client listener)`, port: x.clients },
    ]),
    ...p.workers.map((port, i) => ({ role: `worker-${i}`, port })),
  ]
}

/** Why `--port-offset offset` cannot be used (a port out of range or one `fetch` refuses), or undefined. */
export function devnetPortOffsetProblem(offset: number, workers: number, withChain = true, proxies = 1): string | undefined {
  for (const { role, port } of devnetPortsByRole(devnetPorts(offset, workers, proxies), withChain)) {
    const problem = portProblem(port)
    if (problem) return `--port-offset ${offset} puts the ${role} on port ${port}: ${problem}`
  }
  return undefined
}

/** What a running devnet wrote to DIR/devnet.json, for tools and tests. */
export interface DevnetState {
  pid: number
  baseUrl: string
  ports: DevnetPorts
  chain: { url: string; endpoint: string; root: string | null; ownerKey: string } | null
  /** Every child process by name (chain, proxy, proxy-1…, worker-0…, client), with its PID, so a test can kill one. */
  children: Record<string, { pid: number | null; role: 'chain' | 'proxy' | 'worker' | 'client'; ports: Record<string, number>; config: string; log: string }>
  model: { id: string; path: string; sha256: string }
  /** The speech worker's model (PocketSphinx), or null when the devnet runs without one. */
  speech: { id: string; dir: string; sha256: string } | null
}
