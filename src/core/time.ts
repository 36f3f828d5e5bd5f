// Small timing helpers shared by the nodes: sleeps that end early on abort, and racing a promise against a signal.

/** Resolves after `ms`, or at once when `signal` aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** Resolves after `ms`; rejects with the signal's reason as soon as `signal` aborts. */
export function sleepOrAbort(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    function onAbort() {
      clearTimeout(t)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Settles like `p`, or rejects with the signal's reason when `signal` aborts first (`p` keeps running). */
export function raceSignal<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p
  if (signal.aborted) {
    p.catch(() => {}) // abandoned: its own failure must not surface as an unhandled rejection
    return Promise.reject(signal.reason)
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

/** The reason a deadline aborts with: the same TimeoutError AbortSignal.timeout gives. */
export function timeoutReason(): DOMException {
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError')
}

/** The longest delay a Node timer keeps: a longer one (or a non-finite one) fires at once, with a warning. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** A timer delay for `ms`, within what a Node timer can hold (1 ms to MAX_TIMER_MS; NaN counts as the longest). */
export function timerDelay(ms: number): number {
  return Number.isNaN(ms) ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, Math.max(1, ms))
}

/**
 * A deadline for one request: `signal` aborts with a TimeoutError after `ms`, as AbortSignal.timeout's would,
 * but `clear()` lets go of its timer at once. Call it when the request ends: AbortSignal.timeout's timer stays
 * pending (holding its signal) for the whole timeout, a growing set at high request rates with long timeouts.
 */
export function clearableTimeout(ms: number): { signal: AbortSignal; clear(): void } {
  const ac = new AbortController()
  const t = setTimeout(() => ac.abort(timeoutReason()), timerDelay(ms))
  t.unref() // like AbortSignal.timeout's: a pending deadline keeps no process alive
  return { signal: ac.signal, clear: () => clearTimeout(t) }
}

/** Costly items a long loop handles before it lets the event loop run (see pacer). */
export const ITEMS_PER_TURN = 32

/**
 * For a long synchronous loop over costly items: `await pace()` once per item lets the event loop run (I/O,
 * timers, other requests) after every `perTurn` items, so the loop does not stall everything else the process serves.
 */
export function pacer(perTurn = ITEMS_PER_TURN): () => Promise<void> | undefined {
  let n = 0
  return () => (++n % perTurn === 0 ? turn() : undefined)
}

/** `items.map(fn)` for costly `fn`, taking turns with the event loop (see pacer). */
export async function mapYielding<T, R>(items: readonly T[], fn: (item: T) => R, perTurn = ITEMS_PER_TURN): Promise<R[]> {
  const pace = pacer(perTurn)
  const out: R[] = []
  for (const item of items) {
    await pace()
    out.push(fn(item))
  }
  return out
}

/** Resolves after the event loop has had a turn (pending I/O and timers run first). */
export function turn(): Promise<void> {
  return new Promise<void>((r) => setImmediate(r))
}
