// The devnet's layout: its default ports and the state file it writes, shared by the supervisor (`cocoon devnet`) and the bench.

/** Default ports of a devnet, after the reference's conventions; an offset shifts them all. */
export const DEVNET_PORTS = {
  client: 10000,
  proxyStats: 11000,
  proxyWorkers: 11001,
  proxyClients: 11002,
  worker: (i: number) => 12000 + 10 * i,
  chain: 10080,
}

/** What a running devnet wrote to DIR/devnet.json, for tools and tests. */
export interface DevnetState {
  pid: number
  baseUrl: string
  ports: { chain: number; client: number; proxyStats: number; proxyWorkers: number; proxyClients: number; workers: number[] }
  chain: { url: string; endpoint: string; root: string | null; ownerKey: string } | null
  children: Record<string, { pid: number | null; config: string; log: string }>
  model: { id: string; path: string; sha256: string }
  /** The speech worker's model (PocketSphinx), or null when the devnet runs without one. */
  speech: { id: string; dir: string; sha256: string } | null
}
