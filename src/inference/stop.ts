// Stop-string matching over streamed text: never emits the stop text, and holds back a tail that could still become one.

export interface StopPush {
  /** Text that is safe to emit now. */
  emit: string
  /** A stop string matched: `emit` ends right before it, and generation must end. */
  stopped: boolean
}

/**
 * Feeds text pieces as they are decoded. A stop string may be split across pieces, so any
 * tail of the text that is a prefix of a stop string is held back until the next piece
 * proves or disproves it; `flush()` releases it when generation ends for another reason.
 */
export class StopMatcher {
  private readonly stops: string[]
  private held = ''

  constructor(stops: readonly string[] = []) {
    // Empty stop strings would match everywhere; OpenAI ignores them too.
    this.stops = stops.filter((s) => s.length > 0)
  }

  get active(): boolean {
    return this.stops.length > 0
  }

  push(text: string): StopPush {
    if (this.stops.length === 0) return { emit: text, stopped: false }
    const buf = this.held + text
    let first = -1
    for (const s of this.stops) {
      const i = buf.indexOf(s)
      if (i !== -1 && (first === -1 || i < first)) first = i
    }
    if (first !== -1) {
      this.held = ''
      return { emit: buf.slice(0, first), stopped: true }
    }
    const keep = this.partialTail(buf)
    this.held = keep === 0 ? '' : buf.slice(buf.length - keep)
    return { emit: keep === 0 ? buf : buf.slice(0, buf.length - keep), stopped: false }
  }

  /** Releases held-back text (generation ended without completing a stop string). */
  flush(): string {
    const out = this.held
    this.held = ''
    return out
  }

  /** Length of the longest tail of `buf` that is a proper prefix of some stop string. */
  private partialTail(buf: string): number {
    let best = 0
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > best; k--) {
        if (buf.endsWith(s.slice(0, k))) {
          best = k
          break
        }
      }
    }
    return best
  }
}
