// Devnet chain time: follows the wall clock, can be frozen or moved forward by tests, and never goes back.
import { ChainTimeError } from './errors.ts'

/** What survives a restart: how far ahead of the wall clock the chain runs, whether it is frozen, and the last time handed out. */
export interface ClockState {
  offsetSeconds: number
  frozenAt?: number
  lastSeconds: number
}

export const wallClockSeconds = (): number => Math.floor(Date.now() / 1000)

export class DevnetClock {
  private offsetSeconds: number
  private frozenAt: number | undefined
  private lastSeconds: number

  constructor(
    state: Partial<ClockState> = {},
    private readonly wall: () => number = wallClockSeconds,
  ) {
    this.offsetSeconds = state.offsetSeconds ?? 0
    this.frozenAt = state.frozenAt
    this.lastSeconds = state.lastSeconds ?? 0
  }

  /** Current chain time in unix seconds: frozen time, else wall clock plus offset; never less than a time already handed out. */
  now(): number {
    const t = this.frozenAt ?? this.wall() + this.offsetSeconds
    if (t > this.lastSeconds) this.lastSeconds = t
    return this.lastSeconds
  }

  /** Freezes chain time at `unixSeconds` (not earlier than now). */
  set(unixSeconds: number): number {
    const current = this.now()
    if (!Number.isSafeInteger(unixSeconds) || unixSeconds < current) throw new ChainTimeError(unixSeconds, current)
    this.frozenAt = unixSeconds
    this.lastSeconds = unixSeconds
    return unixSeconds
  }

  /** Moves chain time forward by `seconds`, frozen or not. */
  advance(seconds: number): number {
    if (!Number.isSafeInteger(seconds) || seconds < 0) throw new ChainTimeError(this.now() + seconds, this.now())
    if (this.frozenAt !== undefined) this.frozenAt += seconds
    else this.offsetSeconds += seconds
    return this.now()
  }

  /** Unfreezes: time runs with the wall clock again, continuing from the current chain time. */
  follow(): number {
    const current = this.now()
    this.frozenAt = undefined
    this.offsetSeconds = Math.max(0, current - this.wall())
    return this.now()
  }

  get frozen(): boolean {
    return this.frozenAt !== undefined
  }

  state(): ClockState {
    return { offsetSeconds: this.offsetSeconds, lastSeconds: this.lastSeconds, ...(this.frozenAt === undefined ? {} : { frozenAt: this.frozenAt }) }
  }
}
