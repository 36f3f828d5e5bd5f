// Token-by-token detokenization that never splits a UTF-8 character and keeps word-leading spaces.

import type { LlamaModel, Token } from 'node-llama-cpp'
import { DETOKENIZE_CONTEXT_TOKENS, MAX_UTF8_HOLD_TOKENS } from './constants.ts'

const REPLACEMENT_CHAR = 0xfffd

/**
 * Turns generated tokens into text pieces. Two problems make "detokenize each token" wrong:
 * - byte-fallback vocabularies split one character over several tokens, and each alone
 *   decodes to U+FFFD: we hold tokens back while the decoded text ends in U+FFFD (at most
 *   MAX_UTF8_HOLD_TOKENS, after which the model really did emit an invalid sequence);
 * - SentencePiece drops the leading space of the first token in a call: we pass the last
 *   few committed tokens as context so " upon" stays " upon".
 */
export class IncrementalDetokenizer {
  private pending: Token[] = []
  private context: Token[]

  /** `previous`: tokens already in the sequence (e.g. the prompt), used as spacing context. */
  constructor(private readonly model: LlamaModel, previous: readonly Token[] = []) {
    this.context = previous.slice(-DETOKENIZE_CONTEXT_TOKENS)
  }

  /** Adds one token; returns the text it completes ('' while a character is incomplete). */
  push(token: Token): string {
    this.pending.push(token)
    const text = this.model.detokenize(this.pending, false, this.context)
    if (text.length > 0 && text.charCodeAt(text.length - 1) === REPLACEMENT_CHAR && this.pending.length < MAX_UTF8_HOLD_TOKENS) return ''
    this.commit()
    return text
  }

  /** Releases whatever is held (generation ended in the middle of a character). */
  flush(): string {
    if (this.pending.length === 0) return ''
    const text = this.model.detokenize(this.pending, false, this.context)
    this.commit()
    return text
  }

  private commit(): void {
    const all = this.context.concat(this.pending)
    this.context = all.length > DETOKENIZE_CONTEXT_TOKENS ? all.slice(-DETOKENIZE_CONTEXT_TOKENS) : all
    this.pending = []
  }
}
