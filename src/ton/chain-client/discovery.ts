// Proxy discovery: which proxies the root offers, as dial targets for clients (client port) and workers
// (worker port). Pure over a RootState; nodes call it on every root refresh.
import { offeredProxies, type RootState } from '../contracts/root.ts'

export interface DiscoveredProxy {
  /** The proxy's payment public key, hex: the id its attested claims must carry. */
  id: string
  host: string
  port: number
  imageHash: string
  stakeNano: bigint
}

/** The proxies the root offers (listed, staked, allowed image), with the port `role` dials. */
export function discoverProxies(state: RootState, role: 'client' | 'worker'): DiscoveredProxy[] {
  return [...offeredProxies(state)].map(([id, p]) => ({
    id,
    host: p.host,
    port: role === 'client' ? p.clientPort : p.workerPort,
    imageHash: p.imageHash,
    stakeNano: p.stakeNano,
  }))
}
