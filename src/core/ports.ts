// The one list of ports that `fetch` refuses (the Fetch standard's "bad ports"), and the checks every port goes through.
import net from 'node:net'

/**
 * Ports the Fetch standard blocks (https://fetch.spec.whatwg.org/#port-blocking). Node's
 * `fetch` (undici) refuses to dial them with "bad port", so a node must never listen on one:
 * nothing could poll or call it. Node 20's undici blocks exactly this list.
 */
export const FETCH_BAD_PORTS: ReadonlySet<number> = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139,
  143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659,
  4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
])

export function isBadPort(port: number): boolean {
  return FETCH_BAD_PORTS.has(port)
}

/** Why `port` cannot be used, or undefined when it can (0, "any free port", is fine). */
export function portProblem(port: number): string | undefined {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) return `port ${port} is out of range (0 to 65535)`
  if (isBadPort(port)) return `port ${port} is on the Fetch standard's list of blocked ports; fetch and browsers refuse to connect to it, so choose another`
  return undefined
}

/** The port a URL dials: its explicit port, or its scheme's default. */
export function urlPort(url: URL): number {
  if (url.port) return Number(url.port)
  return url.protocol === 'https:' ? 443 : url.protocol === 'http:' ? 80 : 0
}

/** A port some role wanted is already taken by another process. */
export class PortInUseError extends Error {
  readonly name = 'PortInUseError'
  constructor(
    readonly role: string,
    readonly host: string,
    readonly port: number,
  ) {
    super(`port ${port} (${host}:${port}) is already in use, so the ${role} cannot listen on it; stop whatever holds it or choose another port`)
  }
}

/** Resolves true when `host:port` can be bound right now (it is closed again at once). */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(true)))
  })
}
