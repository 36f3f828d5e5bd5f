// Tells when generated text has completed one JSON value, so a grammar-constrained answer ends there instead of
// running on through the whitespace the JSON grammar still allows.

/** Feed it the answer's text as it is generated; `push` returns true once a whole top-level object or array closed. */
export class JsonEnd {
  private depth = 0
  private started = false
  private inString = false
  private escaped = false
  private done = false

  push(text: string): boolean {
    if (this.done) return true
    for (let i = 0; i < text.length; i++) {
      const c = text[i]
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (c === '\\') this.escaped = true
        else if (c === '"') this.inString = false
        continue
      }
      if (c === '"') this.inString = true
      else if (c === '{' || c === '[') {
        this.depth++
        this.started = true
      } else if (c === '}' || c === ']') {
        this.depth--
        if (this.started && this.depth === 0) return (this.done = true)
      }
    }
    return false
  }
}
