// The states of one request at a hop (the proxy's Exchange, the client node's ClientExchange): admitted → dispatched →
// relaying → settled, and back from dispatched to admitted for a retry before the first byte. One table of legal
// moves, checked on every move, and one base class that owns the state and the request's one AbortSignal.
import { timeoutReason } from '../core/time.ts'

export type ExchangeState = 'admitted' | 'dispatched' | 'relaying' | 'settled'

/** The legal moves. A retry goes from dispatched back to admitted: another worker (or proxy) is tried. */
const MOVES: Record<ExchangeState, readonly ExchangeState[]> = {
  admitted: ['dispatched', 'settled'],
  dispatched: ['admitted', 'relaying', 'settled'],
  relaying: ['settled'],
  settled: [],
}

/** Throws IllegalTransitionError unless an exchange may go from `from` to `to`. */
export function checkMove(from: ExchangeState, to: ExchangeState): void {
  if (!MOVES[from].includes(to)) throw new IllegalTransitionError(from, to)
}

export class IllegalTransitionError extends Error {
  readonly name = 'IllegalTransitionError'
  constructor(
    readonly from: ExchangeState,
    readonly to: ExchangeState,
  ) {
    super(`an exchange cannot go from ${from} to ${to}`)
  }
}

/**
 * What every hop's exchange shares: its state and the checked move between states, and its one AbortSignal,
 * which fires when the app goes away, the deadline passes or `cancel()` is called (whichever comes first gives
 * the reason). The deadline is a timer cleared as soon as the exchange settles or its signal fires, so a settled
 * request leaves no timer behind (AbortSignal.timeout's would stay pending for the whole timeout). The role's
 * exchange (proxy, client node) keeps only its own rules.
 */
export abstract class BaseExchange {
  #state: ExchangeState = 'admitted'
  /** Aborts when the app goes away, the deadline passes or `cancel()` is called: every exit follows it. */
  readonly signal: AbortSignal
  readonly #ctl = new AbortController()
  readonly #app: AbortSignal
  #timer?: NodeJS.Timeout
  readonly #onStateCb?: (state: ExchangeState) => void

  /**
   * @param app aborts when the app went away (its reason is the signal's).
   * @param deadline when the request's time is up, ms since epoch.
   * @param onState told each state the exchange enters, `admitted` first (tests, tracing).
   */
  constructor(
    app: AbortSignal,
    readonly deadline: number,
    onState?: (state: ExchangeState) => void,
  ) {
    this.signal = this.#ctl.signal
    this.#app = app
    this.#onStateCb = onState
    if (app.aborted) this.#ctl.abort(app.reason)
    else {
      app.addEventListener('abort', this.#onApp, { once: true })
      this.#timer = setTimeout(this.#onDeadline, Math.max(1, deadline - Date.now()))
      this.#timer.unref()
      this.signal.addEventListener('abort', this.#release, { once: true })
    }
    onState?.('admitted')
  }

  get state(): ExchangeState {
    return this.#state
  }

  /** Moves to `next` if the table allows it (else throws IllegalTransitionError); settling lets go of the deadline and the app's signal. */
  protected to(next: ExchangeState): void {
    checkMove(this.#state, next)
    this.#state = next
    if (next === 'settled') this.#release()
    this.#onStateCb?.(next)
  }

  /** Ends the exchange as the app going away would. */
  cancel(reason: Error = new Error('cancelled')): void {
    this.#ctl.abort(reason)
  }

  /** Why the signal fired: the deadline, or a cancel (the app went away, or `cancel()`). */
  abortKind(): 'timeout' | 'cancelled' | undefined {
    if (!this.signal.aborted) return undefined
    return (this.signal.reason as Error | undefined)?.name === 'TimeoutError' ? 'timeout' : 'cancelled'
  }

  /** ms left before the deadline. */
  remainingMs(): number {
    return this.deadline - Date.now()
  }

  readonly #onApp = (): void => this.#ctl.abort(this.#app.reason)
  readonly #onDeadline = (): void => this.#ctl.abort(timeoutReason())
  readonly #release = (): void => {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#app.removeEventListener('abort', this.#onApp)
  }
}
