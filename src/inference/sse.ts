// Incremental Server-Sent Events parser: feed decoded text as it arrives, get complete `data` payloads out.

/**
 * Follows the WHATWG event-stream rules that matter for OpenAI streams: lines end in LF, CRLF
 * or CR (a CR at the end of one read may pair with an LF at the start of the next), `data:`
 * lines of one event are joined with LF, lines starting with `:` are comments, other fields
 * (`event`, `id`, `retry`) are ignored, and an event is dispatched at a blank line.
 */
export class SseParser {
  private buf = ''
  private data: string[] = []
  private hasData = false
  /** The previous read ended in CR, so an LF at the start of this one belongs to it. */
  private skipLf = false

  /** Returns the data payloads of the events completed by this piece of text. */
  push(text: string): string[] {
    const out: string[] = []
    let s = this.buf + text
    if (this.skipLf && s.charCodeAt(0) === 10) s = s.slice(1)
    this.skipLf = false
    let start = 0
    const n = s.length
    for (let i = start; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      this.line(s.slice(start, i), out)
      if (c === 13) {
        if (i + 1 < n) {
          if (s.charCodeAt(i + 1) === 10) i++
        } else {
          this.skipLf = true
        }
      }
      start = i + 1
    }
    this.buf = start === 0 ? s : s.slice(start)
    return out
  }

  /** Ends the stream; an event without its closing blank line is dropped, as the spec says. */
  end(): void {
    this.buf = ''
    this.data = []
    this.hasData = false
  }

  private line(line: string, out: string[]): void {
    if (line.length === 0) {
      if (this.hasData) out.push(this.data.length === 1 ? this.data[0] : this.data.join('\n'))
      this.data = []
      this.hasData = false
      return
    }
    if (line.charCodeAt(0) === 58 /* ':' comment */) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    if (field !== 'data') return
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    this.data.push(value)
    this.hasData = true
  }
}
