// A watcher that re-reads the root contract periodically, so a revoked image or model stops being trusted
// within one refresh. Turning the root's lists into a trust policy is the trust code's job (node/trust.ts).
import fs from 'node:fs'
import path from 'node:path'
import { Address } from '@ton/core'
import { silentLogger, type Logger } from '../../core/log.ts'
import { clearableTimeout } from '../../core/time.ts'
import type { RootState } from '../contracts/root.ts'
import type { CallOpts, Chain } from './chain.ts'
import { ROOT_REFRESH_INTERVAL_MS } from './constants.ts'

export interface RootWatcherOptions {
  /** Time between reads of the root. Default ROOT_REFRESH_INTERVAL_MS (30 s). */
  refreshMs?: number
  /**
   * Where the last root state read is kept (JSON). With it, a node starts while the chain is unreachable,
   * on the root as last seen, and follows the chain again when it returns. Default: no cache.
   */
  cacheFile?: string
  /** How long one read may take before the chain counts as unreachable. Default max(ROOT_READ_TIMEOUT_MS, refreshMs). */
  readTimeoutMs?: number
}

/** A root read that takes longer than this counts as the chain being unreachable. */
export const ROOT_READ_TIMEOUT_MS = 5_000

/** Whether the chain answers, as the last root read found. */
export interface ChainReachability {
  reachable: boolean
  /** Epoch ms since when it has not answered (absent when reachable). */
  unreachableSince?: number
  lastError?: string
}

/** A root state as JSON (addresses raw, amounts as strings), for the cache file. */
export function rootStateToJson(s: RootState): unknown {
  return {
    ...s,
    owner: s.owner.toRawString(),
    params: Object.fromEntries(Object.entries(s.params).map(([k, v]) => [k, typeof v === 'bigint' ? `${v}n` : v])),
    proxies: [...s.proxies.entries()].map(([k, v]) => [k, { ...v, owner: v.owner.toRawString(), stakeNano: v.stakeNano.toString() }]),
    delisted: [...(s.delisted ?? new Map()).entries()],
  }
}

export function rootStateFromJson(j: any): RootState {
  return {
    ...j,
    owner: Address.parseRaw(j.owner),
    params: Object.fromEntries(Object.entries(j.params).map(([k, v]) => [k, typeof v === 'string' && v.endsWith('n') ? BigInt(v.slice(0, -1)) : v])) as unknown as RootState['params'],
    proxies: new Map((j.proxies as Array<[string, any]>).map(([k, v]) => [k, { ...v, owner: Address.parseRaw(v.owner), stakeNano: BigInt(v.stakeNano ?? 0) }])),
    delisted: new Map(Array.isArray(j.delisted) ? (j.delisted as Array<[string, any]>) : []),
  }
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
  private readonly cacheFile: string | undefined
  private cacheWritten = false
  private readonly refreshMs: number
  private readonly log: Logger
  private timer: NodeJS.Timeout | undefined
  private inflight: Promise<RootState | undefined> | undefined
  private readonly stopped = new AbortController()
  private failures = 0
  private unreachableSince: number | undefined
  private lastError: string | undefined
  private readonly readTimeoutMs: number

  constructor(
    private readonly deps: { chain: Chain; root: Address; log?: Logger },
    opts: RootWatcherOptions = {},
  ) {
    this.refreshMs = opts.refreshMs ?? ROOT_REFRESH_INTERVAL_MS
    this.readTimeoutMs = opts.readTimeoutMs ?? Math.max(ROOT_READ_TIMEOUT_MS, this.refreshMs)
    this.cacheFile = opts.cacheFile
    this.log = deps.log ?? silentLogger
  }

  get root(): Address {
    return this.deps.root
  }

  /** The last state read, undefined before `start` resolves. */
  get state(): RootState | undefined {
    return this.current
  }

  /**
   * Reads the root and starts refreshing. If the chain does not answer and a cache file holds the root as
   * last seen, starts on that (the node runs without the chain until a read succeeds); else rejects with
   * the chain's error.
   */
  async start(opts: CallOpts = {}): Promise<RootState> {
    if (this.current && this.timer) return this.current
    try {
      this.apply(await this.readRoot(opts.signal))
    } catch (err) {
      const cached = this.readCache()
      if (!cached || opts.signal?.aborted) throw err
      this.markUnreachable(err)
      this.log.warn('chain unreachable; starting on the root as last seen, and running without the chain until it returns', { root: this.deps.root.toString(), version: cached.version, error: (err as Error).message })
      this.apply(cached)
    }
    this.schedule()
    return this.current!
  }

  /** Whether the last read of the root succeeded. */
  get reachability(): ChainReachability {
    return this.unreachableSince === undefined ? { reachable: true } : { reachable: false, unreachableSince: this.unreachableSince, lastError: this.lastError }
  }

  private markUnreachable(err: unknown): void {
    this.unreachableSince ??= Date.now()
    this.lastError = (err as Error)?.message ?? String(err)
  }

  private readCache(): RootState | undefined {
    if (!this.cacheFile) return undefined
    try {
      const j = JSON.parse(fs.readFileSync(this.cacheFile, 'utf8'))
      if (j.root !== this.deps.root.toRawString()) return undefined
      return rootStateFromJson(j.state)
    } catch {
      return undefined
    }
  }

  private writeCache(state: RootState): void {
    if (!this.cacheFile) return
    try {
      fs.mkdirSync(path.dirname(this.cacheFile), { recursive: true })
      const tmp = `${this.cacheFile}.tmp`
      fs.writeFileSync(tmp, JSON.stringify({ root: this.deps.root.toRawString(), savedAt: Date.now(), state: rootStateToJson(state) }))
      fs.renameSync(tmp, this.cacheFile)
    } catch (err) {
      this.log.warn('could not save the root state cache', { error: (err as Error).message })
    }
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
      const state = await this.readRoot()
      if (this.failures > 0 || this.unreachableSince !== undefined) this.log.info('root readable again; the chain is back', { root: this.deps.root.toString(), failures: this.failures })
      this.failures = 0
      this.unreachableSince = undefined
      this.lastError = undefined
      this.apply(state)
    } catch (err) {
      if (this.stopped.signal.aborted) return this.current
      this.failures++
      this.markUnreachable(err)
      this.log.warn('root refresh failed; keeping the last state', {
        root: this.deps.root.toString(),
        version: this.current?.version,
        failures: this.failures,
        err,
      })
    }
    return this.current
  }

  /**
   * One read of the root, given up after readTimeoutMs, on stop, or when `signal` aborts. The deadline is a
   * clearable timer, not AbortSignal.timeout: on Node 20 a timeout signal that only AbortSignal.any refers to can be
   * garbage-collected before it fires, and the read then hangs for good on a chain that stopped answering (seen with
   * a smaller heap, where the GC runs sooner; test/ton/root-watcher-timeout.test.ts).
   */
  private async readRoot(signal?: AbortSignal): Promise<RootState> {
    const deadline = clearableTimeout(this.readTimeoutMs)
    try {
      return await this.deps.chain.getRootState(this.deps.root, { signal: AbortSignal.any([...(signal ? [signal] : []), this.stopped.signal, deadline.signal]) })
    } finally {
      deadline.clear()
    }
  }

  private apply(state: RootState): void {
    const previous = this.current
    if (previous && state.version < previous.version) {
      // A lagging or hostile endpoint must not roll a revocation back: versions only move forward.
      this.log.warn('ignoring an older root version than already seen', { root: this.deps.root.toString(), seen: previous.version, got: state.version })
      return
    }
    this.current = state
    if (!previous || previous.version !== state.version || !this.cacheWritten) {
      this.writeCache(state)
      this.cacheWritten = true
    }
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
