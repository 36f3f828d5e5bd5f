// Reads the final usage (tokens and cost) out of an answer as it is relayed to the app, without changing a byte.
import { MAX_BODY_BYTES } from '../net/protocol.ts'

export interface AnswerUsage {
  promptTokens: number
  completionTokens: number
  /** nanoTON, as the proxy put it in usage.cost. */
  costNano: string
  /** The answer's receipt (usage.receipt_id), when the proxy made one. */
  receiptId: string | null
}

/** Keeps only what it needs: for SSE the current line, for JSON the body up to the body limit. */
export class UsageTap {
  private buf = ''
  private bytes = 0
  private usage?: AnswerUsage

  constructor(private readonly sse: boolean) {}

  write(chunk: Buffer): void {
    if (this.sse) {
      this.buf += chunk.toString('utf8')
      let nl: number
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim()
        this.buf = this.buf.slice(nl + 1)
        if (line.startsWith('data:') && line.includes('"usage"')) this.take(line.slice(5))
      }
      if (this.buf.length > MAX_BODY_BYTES) this.buf = ''
      return
    }
    this.bytes += chunk.length
    if (this.bytes <= MAX_BODY_BYTES) this.buf += chunk.toString('utf8')
  }

  /** The answer's usage, once it ended; undefined when it carried none. */
  result(): AnswerUsage | undefined {
    if (!this.sse && this.buf) {
      this.take(this.buf)
      this.buf = ''
    }
    return this.usage
  }

  private take(json: string): void {
    try {
      const u = (JSON.parse(json) as { usage?: Record<string, unknown> | null }).usage
      if (!u || typeof u !== 'object') return
      const int = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0)
      const cost = u.cost
      this.usage = {
        promptTokens: int(u.prompt_tokens),
        completionTokens: int(u.completion_tokens),
        costNano: typeof cost === 'number' && Number.isSafeInteger(cost) && cost >= 0 ? String(cost) : typeof cost === 'string' && /^\d+$/.test(cost) ? cost : '0',
        receiptId: typeof u.receipt_id === 'string' && /^[\w-]{1,128}$/.test(u.receipt_id) ? u.receipt_id : null,
      }
    } catch {
      // Not JSON: not ours to judge here; the app gets the bytes as they are.
    }
  }
}
