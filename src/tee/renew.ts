// Short-lived RA-TLS certificates, renewed before they expire: same identity key, fresh claims and evidence.
import type { webcrypto } from 'node:crypto'
import type { Identity } from './types.ts'
import { createIdentity, generateIdentityKeys, type CreateIdentityOptions } from './cert.ts'

/** Lifetime of a node's certificate. Short, so stale evidence ages out quickly. */
export const NODE_CERT_VALIDITY_SEC = 4 * 3600
/** A new certificate is made after this long, well before the old one expires. */
export const NODE_CERT_RENEW_SEC = 3600
/** Retry delay when a renewal fails (e.g. the quote provider is busy). */
export const RENEW_RETRY_SEC = 60

/** Where a node gets its current identity; servers re-read it when it is renewed. */
export interface IdentitySource {
  current(): Identity
  /** Called with each new identity. Live sessions keep the certificate they were opened with. */
  onRenew(cb: (id: Identity) => void): void
}

/** An identity that never changes (tests, one-shot tools). */
export function fixedIdentity(id: Identity): IdentitySource {
  return { current: () => id, onRenew: () => {} }
}

export class RenewingIdentity implements IdentitySource {
  private id: Identity
  private readonly listeners: Array<(id: Identity) => void> = []
  private timer?: NodeJS.Timeout

  private constructor(
    first: Identity,
    private readonly keys: webcrypto.CryptoKeyPair,
    private readonly opts: Omit<CreateIdentityOptions, 'keys'>,
    readonly renewSec: number,
    private readonly onError: (err: Error) => void,
    private readonly hpkeKey?: () => Promise<string>,
  ) {
    this.id = first
  }

  /**
   * Creates the first certificate now and renews every `renewSec` (default NODE_CERT_RENEW_SEC).
   * `hpkeKey`, when given, is called for each certificate and returns the HPKE public key its claims
   * carry: a worker rotates its end-to-end encryption key with the certificate, so each key has fresh evidence.
   */
  static async start(
    opts: Omit<CreateIdentityOptions, 'keys' | 'hpkeKey'>,
    o: { renewSec?: number; onError?: (err: Error) => void; keys?: webcrypto.CryptoKeyPair; hpkeKey?: () => Promise<string> } = {},
  ): Promise<RenewingIdentity> {
    const keys = o.keys ?? (await generateIdentityKeys())
    const validitySec = opts.validitySec ?? NODE_CERT_VALIDITY_SEC
    const full = { ...opts, validitySec }
    const first = await createIdentity({ ...full, keys, hpkeKey: await o.hpkeKey?.() })
    const r = new RenewingIdentity(first, keys, full, o.renewSec ?? NODE_CERT_RENEW_SEC, o.onError ?? (() => {}), o.hpkeKey)
    if (r.renewSec >= validitySec) throw new RangeError('certificates must be renewed before they expire')
    r.schedule(r.renewSec)
    return r
  }

  current(): Identity {
    return this.id
  }

  onRenew(cb: (id: Identity) => void): void {
    this.listeners.push(cb)
  }

  /** Makes a new certificate at once (also used by the timer). */
  async renew(): Promise<Identity> {
    this.id = await createIdentity({ ...this.opts, keys: this.keys, hpkeKey: await this.hpkeKey?.() })
    for (const l of this.listeners) l(this.id)
    return this.id
  }

  private schedule(sec: number): void {
    this.timer = setTimeout(() => {
      this.renew().then(
        () => this.schedule(this.renewSec),
        (err: Error) => {
          this.onError(err)
          this.schedule(RENEW_RETRY_SEC)
        },
      )
    }, sec * 1000)
    this.timer.unref()
  }

  stop(): void {
    clearTimeout(this.timer)
  }
}
