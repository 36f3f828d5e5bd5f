// Linux network namespaces as separate hosts for end-to-end tests: one namespace per host, each joined by a veth
// pair to a bridge in the root namespace (which also gives the test process a route to every host), on a /24 the
// test picks itself. Needs root and iproute2; `createHosts` throws NetnsUnavailableError where that is missing.
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'

export class NetnsUnavailableError extends Error {
  readonly name = 'NetnsUnavailableError'
}

export interface Hosts {
  /** Namespace name of a host. */
  ns(host: string): string
  /** The host's address on the shared /24. */
  addr(host: string): string
  /** The bridge's address (the root namespace, where the test process runs). */
  bridgeAddr: string
  /** Deletes every namespace, veth and the bridge; idempotent. Kill the processes inside first. */
  destroy(): void
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
}

/** Third octets of 10.77.x.0/24 already on some interface here (for example left by a crashed run). */
function usedSubnets(): Set<number> {
  const used = new Set<number>()
  for (const m of ip(['-4', '-o', 'addr', 'show']).matchAll(/inet 10\.77\.(\d+)\./g)) used.add(Number(m[1]))
  return used
}

/**
 * Creates one network namespace per host name, all on 10.77.N.0/24 (N random, not in use here) behind one bridge.
 * Names carry a random tag, so a leftover from a crashed run never collides; everything is deleted by `destroy()`
 * and, as a last resort, when the test process exits.
 */
export function createHosts(names: string[]): Hosts {
  if (process.platform !== 'linux') throw new NetnsUnavailableError('network namespaces need Linux')
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new NetnsUnavailableError('creating network namespaces needs root')
  try {
    ip(['netns', 'list'])
  } catch (err) {
    throw new NetnsUnavailableError(`iproute2 (ip netns) is not usable: ${(err as Error).message.split('\n')[0]}`)
  }
  const tag = crypto.randomBytes(3).toString('hex')
  const used = usedSubnets()
  const free = Array.from({ length: 254 }, (_, i) => i + 1).filter((n) => !used.has(n))
  if (free.length === 0) throw new NetnsUnavailableError('no free 10.77.x.0/24 subnet')
  const subnet = free[crypto.randomInt(free.length)]
  const bridge = `ccbr${tag}`
  const namespaces: string[] = []
  const links: string[] = []
  let destroyed = false
  const destroy = () => {
    if (destroyed) return
    destroyed = true
    process.off('exit', destroy)
    for (const l of links) try { ip(['link', 'del', l]) } catch {}
    for (const n of namespaces) try { ip(['netns', 'del', n]) } catch {}
    try { ip(['link', 'del', bridge]) } catch {}
  }
  process.on('exit', destroy)
  const addrs = new Map(names.map((h, i) => [h, `10.77.${subnet}.${i + 1}`]))
  const nsName = (h: string) => `cocoon-${tag}-${h}`
  try {
    ip(['link', 'add', bridge, 'type', 'bridge'])
    links.push(bridge)
    ip(['addr', 'add', `10.77.${subnet}.254/24`, 'dev', bridge])
    ip(['link', 'set', bridge, 'up'])
    names.forEach((h, i) => {
      const ns = nsName(h)
      ip(['netns', 'add', ns])
      namespaces.push(ns)
      const veth = `cc${tag}v${i}`
      ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
      links.push(veth)
      ip(['link', 'set', veth, 'master', bridge, 'up'])
      ip(['-n', ns, 'addr', 'add', `${addrs.get(h)}/24`, 'dev', 'eth0'])
      ip(['-n', ns, 'link', 'set', 'eth0', 'up'])
      ip(['-n', ns, 'link', 'set', 'lo', 'up'])
    })
  } catch (err) {
    destroy()
    const msg = (err as { stderr?: string }).stderr?.trim() || (err as Error).message
    // Only iproute2 runs in this stage: whatever it refuses (permission, no veth or bridge support, a read-only /run)
    // is this machine's limit, not the code under test.
    throw new NetnsUnavailableError(`cannot create network namespaces here: ${msg.split('\n')[0]}`)
  }
  return {
    ns: (h) => {
      if (!addrs.has(h)) throw new Error(`no host ${h}`)
      return nsName(h)
    },
    addr: (h) => {
      const a = addrs.get(h)
      if (!a) throw new Error(`no host ${h}`)
      return a
    },
    bridgeAddr: `10.77.${subnet}.254`,
    destroy,
  }
}
