// A watcher that re-reads the root contract periodically, so a revoked image or model stops being trusted
// within one refresh. Turning the root's lists into a trust policy is the trust code's job (node/trust.ts).
import type { Address } from '@ton/core'
import { silentLogger, type Logger } from '../../core/log.ts'
import type { RootState } from '../contracts/root.ts'
import type { CallOpts, Chain } from './chain.ts'
import { ROOT_REFRESH_INTERVAL_MS } from './constants.ts'

export interface RootWatcherOptions {
  /** Time between reads of the root. Default ROOT_REFRESH_INTERVAL_MS (30 s). */
  refreshMs?: number
}

export type RootListener = (state: RootState, previous: RootState | undefined) => void

/**
 * Keeps the latest state of one root. `start` reads it once (and fails if it cannot); after that it
 * re-reads every `refreshMs` and calls subscribers when the version changes. A failed read is
 * logged and the last good state kept, so a flaky endpoint never drops a node's policy.
 */
export class RootWatcher {
  private current: RootState | undefined
  private readonly listeners = new Set<RootListener>()
  private readonly refreshMs: number
  private readonly log: Logger
  private timer: NodeJS.Timeout | undefined
  private inflight: Promise<RootState | undefined> | undefined
  private readonly stopped = new AbortController()
  private failures = 0

  constructor(
    private readonly deps: { chain: Chain; root: Address; log?: Logger },
    opts: RootWatcherOptions = {},
  ) {
    this.refreshMs = opts.refreshMs ?? ROOT_REFRESH_INTERVAL_MS
    this.log = deps.log ?? silentLogger
  }

  get root(): Address {
    return this.deps.root
  }

  /** The last state read, undefined before `start` resolves. */
  get state(): RootState | undefined {
    return this.current
  }

  /** Reads the root (rejecting with the chain's error if that fails) and starts refreshing. */
  async start(opts: CallOpts = {}): Promise<RootState> {
    if (this.current && this.timer) return this.current
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.stopped.signal]) : this.stopped.signal
    const state = await this.deps.chain.getRootState(this.deps.root, { signal })
    this.apply(state)
    this.schedule()
    return state
  }

  /** Calls `fn` on every version change (not for the state already held; read `state` for that). Returns an unsubscribe. */
  subscribe(fn: RootListener): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Reads the root now. Resolves with the state held afterwards; never rejects. */
  refresh(): Promise<RootState | undefined> {
    this.inflight ??= this.read().finally(() => {
      this.inflight = undefined
    })
    return this.inflight
  }

  stop(): void {
    this.stopped.abort()
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private async read(): Promise<RootState | undefined> {
    if (this.stopped.signal.aborted) return this.current
    try {
      const state = await this.deps.chain.getRootState(this.deps.root, { signal: this.stopped.signal })
      if (this.failures > 0) this.log.info('root readable again', { root: this.deps.root.toString(), failures: this.failures })
      this.failures = 0
      this.apply(state)
    } catch (err) {
      if (this.stopped.signal.aborted) return this.current
      this.failures++
      this.log.warn('root refresh failed; keeping the last state', {
        root: this.deps.root.toString(),
        version: this.current?.version,
        failures: this.failures,
        err,
      })
    }
    return this.current
  }

  private apply(state: RootState): void {
    const previous = this.current
    if (previous && state.version < previous.version) {
      // A lagging or hostile endpoint must not roll a revocation back: versions only move forward.
      this.log.warn('ignoring an older root version than already seen', { root: this.deps.root.toString(), seen: previous.version, got: state.version })
      return
    }
    this.current = state
    if (previous && previous.version === state.version) return
    if (previous) this.log.info('root changed', { root: this.deps.root.toString(), from: previous.version, to: state.version })
    for (const fn of this.listeners) {
      try {
        fn(state, previous)
      } catch (err) {
        this.log.error('root subscriber failed', { err })
      }
    }
  }

  private schedule(): void {
    if (this.stopped.signal.aborted) return
    this.timer = setTimeout(() => {
      void this.refresh().then(() => this.schedule())
    }, this.refreshMs)
    this.timer.unref()
  }
}
