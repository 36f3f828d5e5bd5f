// The V8 heap limit of the nodes the devnet and the bench start. Under steady load V8 lets its heap grow far past
// what is live (a proxy at 100 streams holds about 60 MiB of live objects; without a limit its heap kept growing
// toward 300 MiB and more over a 12-minute soak), so resident memory climbs for many minutes before it levels off.
// With a limit, V8 collects sooner and resident memory stays flat (docs/benchmarks.md, "Soak").

/** Old-space limit, MiB, given to a proxy, client or worker node the devnet or the bench starts. */
export const DEFAULT_NODE_HEAP_MIB = 192
/** Environment variable that sets that limit in MiB; 0 leaves V8's default (a quarter of memory, up to 4 GiB). */
export const NODE_HEAP_ENV = 'COCOON_NODE_HEAP_MIB'
/** The roles that get the limit: the chain holds the whole devnet chain in memory and keeps V8's default. */
const LIMITED_ROLES = new Set(['proxy', 'client', 'worker'])

/** Thrown for a COCOON_NODE_HEAP_MIB that is not 0 or a whole number of MiB from 64 up; `problem` says so without the variable's name. */
export class NodeHeapSettingError extends Error {
  readonly name = 'NodeHeapSettingError'
  constructor(readonly problem: string) {
    super(`${NODE_HEAP_ENV} ${problem}`)
  }
}

/** The heap limit COCOON_NODE_HEAP_MIB asks for, in MiB (0: V8's default); DEFAULT_NODE_HEAP_MIB when unset. */
export function nodeHeapMib(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[NODE_HEAP_ENV]
  if (raw === undefined || raw === '') return DEFAULT_NODE_HEAP_MIB
  if (!/^\d{1,6}$/.test(raw.trim()) || (Number(raw) !== 0 && Number(raw) < 64)) throw new NodeHeapSettingError(`must be 0 (V8's default) or a heap limit of at least 64 MiB, not '${raw.slice(0, 20)}'`)
  return Number(raw)
}

/**
 * Node flags for a `cocoon <role>` child: `--max-old-space-size` for proxy, client and worker nodes, unless
 * NODE_OPTIONS already sets a heap limit (the operator's choice wins) or COCOON_NODE_HEAP_MIB is 0.
 * Throws NodeHeapSettingError on a bad COCOON_NODE_HEAP_MIB.
 */
export function nodeHeapArgs(role: string, env: NodeJS.ProcessEnv = process.env): string[] {
  if (!LIMITED_ROLES.has(role)) return []
  if (/--max-old-space-size|--max-heap-size/.test(env.NODE_OPTIONS ?? '')) return []
  const mib = nodeHeapMib(env)
  return mib === 0 ? [] : [`--max-old-space-size=${mib}`]
}
