// One app request at the client node, as an object with states: admitted → dispatched → relaying → settled.
// One AbortSignal (the app's request closed, the deadline, a cancel) drives every exit of every attempt.
// Failover between proxies before the first byte, the E2EE fresh-recipients retry (once per proxy) and the
// settle-once rule each live in one place here; one attempt on one proxy (relay) is the host's.
import type { Logger } from '../core/log.ts'
import { BaseExchange, type ExchangeState } from '../net/exchange.ts'
import { NoProxyAvailableError, RequestTimeoutError, UpstreamError } from '../net/errors.ts'

export type Outcome = 'succeeded' | 'failed' | 'cancelled' | 'timeout' | 'rejected'

/** How one attempt on one proxy ended: `done` (the app was answered, or went away), or `retry` before the first byte. */
export type AttemptEnd<U> = { kind: 'done'; outcome: Outcome; usage?: U; cheated?: boolean } | { kind: 'retry'; error: Error; fresh?: boolean }

/** The app's request closed before its answer was complete. */
export class AppClosedError extends Error {
  readonly name = 'AppClosedError'
  constructor() {
    super('app went away')
  }
}

/** What the exchange needs of the client node. `L` is a proxy link, `S` a sealed (E2EE) request. */
export interface ClientExchangeHost<L, S extends { recipients: string[] }, U> {
  log: Logger
  /** The proxies ready now, best first. */
  links(): L[]
  /** Seals the request to workers of `link` not in `exclude`; undefined for plaintext; throws when no worker can be encrypted to. */
  seal(link: L, exclude: ReadonlySet<string>): Promise<S | undefined>
  /** One attempt: sends the request to `link` and relays its answer to the app, following `ex.signal`; `retry` only before the first byte. */
  relay(link: L, sealed: S | undefined, ex: ClientExchange<L, S, U>, allowFresh: boolean): Promise<AttemptEnd<U>>
  /** Another proxy is tried after one failed. */
  failedOver(link: L): void
  /** A proxy failed before answering. */
  proxyFailed(link: L, err: Error): void
  /** Every recipient on `link` failed before the first byte: its candidate list is dropped for a fresh one. */
  freshRecipients(link: L): void
  /** The outcome, once: with the attempt that answered, if one did; `e2eeRefused` when no worker could be encrypted to. */
  settled(outcome: Outcome, answered?: { link: L; sealed?: S; end: Extract<AttemptEnd<U>, { kind: 'done' }> }, e2eeRefused?: boolean): void
  /** Told each state the exchange enters (tests, tracing). */
  onState?: (state: ExchangeState) => void
}

/** The client node's side of one app request. Build it, then `run()` it once; it throws the error the app should get, if any. */
export class ClientExchange<L, S extends { recipients: string[] }, U> extends BaseExchange {
  constructor(
    private readonly host: ClientExchangeHost<L, S, U>,
    /** The app's timeout for the whole request, ms. */
    readonly timeoutMs: number,
    /** Aborts when the app's request closed before its answer was complete. */
    app: AbortSignal,
  ) {
    super(app, Date.now() + timeoutMs, host.onState)
  }

  /** The attempt got the proxy's answer headers: no other proxy is tried from here. */
  relaying(): void {
    if (this.state === 'dispatched') this.to('relaying')
  }

  /** Ends the exchange as the app going away would. */
  override cancel(reason: Error = new AppClosedError()): void {
    super.cancel(reason)
  }

  /**
   * Runs the request to its end: proxies in order until one answers (failover before the first byte), and on
   * one whose every named recipient failed before the first byte, once, a fresh set of recipients. Resolves once
   * the app was answered (or went away); throws the error to answer it with when no proxy could.
   */
  async run(): Promise<void> {
    const { host } = this
    const tried = new Set<L>()
    const freshTried = new Set<L>()
    const usedRecipients = new Set<string>()
    let lastErr: Error | undefined
    let e2eeErr: Error | undefined
    for (;;) {
      const link = host.links().find((l) => !tried.has(l))
      if (!link) break
      tried.add(link)
      if (tried.size > 1) host.failedOver(link)
      if (this.remainingMs() <= 0) break
      let sealed: S | undefined
      try {
        sealed = await host.seal(link, usedRecipients)
      } catch (err) {
        // This proxy has no worker this client may encrypt to; another proxy may.
        e2eeErr = err as Error
        continue
      }
      this.to('dispatched')
      let r = await host.relay(link, sealed, this, !freshTried.has(link))
      if (r.kind === 'retry' && r.fresh && sealed && !freshTried.has(link) && this.abortKind() !== 'cancelled') {
        // Every recipient failed before the first byte: a fresh set from a fresh list, once per proxy. The app sees nothing of it.
        freshTried.add(link)
        for (const x of sealed.recipients) usedRecipients.add(x)
        host.freshRecipients(link)
        host.log.info('all recipients failed before the first byte; retrying with a fresh set', { proxy: String((link as { target?: string }).target ?? '') })
        this.to('admitted')
        try {
          sealed = await host.seal(link, usedRecipients)
        } catch (err) {
          this.settle('rejected', undefined, true)
          throw err
        }
        if (this.remainingMs() <= 0) break
        this.to('dispatched')
        r = await host.relay(link, sealed, this, false)
      }
      if (r.kind === 'done') return this.settle(r.outcome, { link, sealed, end: r })
      host.proxyFailed(link, r.error)
      lastErr = r.error
      if (this.abortKind() === 'cancelled') return this.settle('cancelled')
      host.log.warn('proxy failed before answering; failing over', { proxy: String((link as { target?: string }).target ?? ''), error: r.error.message })
      this.to('admitted')
    }
    if (this.remainingMs() <= 0 || this.abortKind() === 'timeout') {
      this.settle('timeout')
      throw new RequestTimeoutError(this.timeoutMs)
    }
    if (e2eeErr && !lastErr) {
      this.settle('rejected', undefined, true)
      throw e2eeErr
    }
    this.settle(lastErr ? 'failed' : 'rejected')
    throw lastErr ? new UpstreamError(`no proxy could take the request: ${lastErr.message}`) : new NoProxyAvailableError()
  }

  /** The one exit, taken once: the outcome is counted once, whichever way the request ended. */
  private settle(outcome: Outcome, answered?: { link: L; sealed?: S; end: Extract<AttemptEnd<U>, { kind: 'done' }> }, e2eeRefused = false): void {
    if (this.state === 'settled') return
    this.to('settled')
    this.host.settled(outcome, answered, e2eeRefused)
  }
}
