// Counting the timers a piece of code leaves pending, to show that a request's deadline does not outlive it.
import { createHook } from 'node:async_hooks'

/**
 * How many timers `fn` set that are still pending once it returned: counted by async_hooks, which sees every
 * Timeout (unref'd ones too, and the one AbortSignal.timeout sets) and its end (fired or cleared). Only timers
 * set while `fn` runs count, so keep anything else (servers, sockets) out of it.
 */
export async function timersLeftBy(fn: () => unknown): Promise<number> {
  const pending = new Set<number>()
  const hook = createHook({
    init(id, type) {
      if (type === 'Timeout') pending.add(id)
    },
    destroy(id) {
      pending.delete(id)
    },
  }).enable()
  try {
    await fn()
    // Destroy hooks are delivered after the current tick.
    await new Promise((r) => setImmediate(r))
    await new Promise((r) => setImmediate(r))
  } finally {
    hook.disable()
  }
  return pending.size
}
