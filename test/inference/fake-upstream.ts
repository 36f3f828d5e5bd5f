// FAKE OpenAI-compatible upstream for the openai backend's tests: streams deterministic SSE and records what it was sent. Not a model.

import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeUpstreamBehaviour {
  /** Tokens generated when max_tokens allows. Default 20. */
  length?: number
  /** Delay between events, ms. Default 0. */
  delayMs?: number
  /** Line ending of the SSE stream. Default '\n'. */
  eol?: '\n' | '\r\n'
  /** Write every event in two pieces, split in the middle, with a pause between. */
  splitWrites?: boolean
  /** Spread each event's JSON over two `data:` lines (legal SSE: they are joined with LF). */
  multiDataLines?: boolean
  /** Send `: keep-alive` comment lines between events. */
  comments?: boolean
  /** Never send usage, even when include_usage is set (some upstreams do not). */
  omitUsage?: boolean
  /** Also attach usage to the last content chunk (choices + usage in one chunk). */
  usageOnLastChoiceChunk?: boolean
  /** Usage details to report. */
  cachedTokens?: number
  reasoningTokens?: number
  /** Put reasoning tokens at the top level of usage, as some servers do. */
  topLevelReasoning?: boolean
  /** Generate `length` tokens whatever max_tokens says. */
  ignoreMaxTokens?: boolean
  /** Answer with this HTTP status and an OpenAI error body instead of streaming. */
  failStatus?: number
  /** Pause between `[DONE]` and the end of the response, ms. Default 0. */
  endDelayMs?: number
  /** Send this many content events, then destroy the connection. */
  dropAfter?: number
  /** Send this many content events, then an error event. */
  errorEventAfter?: number
}

export interface ReceivedRequest {
  path: string
  headers: http.IncomingHttpHeaders
  body: Record<string, unknown>
}

/** The word the fake emits at position i: deterministic so tests can predict the text. */
export const fakeWord = (i: number) => `w${i} `

export class FakeUpstream {
  behaviour: FakeUpstreamBehaviour = {}
  readonly received: ReceivedRequest[] = []
  /** Responses whose connection closed before the fake finished writing them. */
  closedEarly = 0
  /** Resolves on the next early close. */
  private closeWaiters: Array<() => void> = []
  /** TCP connections accepted, to check that the client reuses them. */
  connections = 0
  private server = http.createServer((req, res) => void this.handle(req, res)).on('connection', () => this.connections++)
  url = ''

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  nextEarlyClose(): Promise<void> {
    return new Promise((resolve) => this.closeWaiters.push(resolve))
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>
    const path = req.url ?? ''
    this.received.push({ path, headers: req.headers, body })
    const b = this.behaviour

    if (b.failStatus) {
      res.writeHead(b.failStatus, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { message: `fake upstream failure ${b.failStatus}`, type: 'server_error', code: null } }))
      return
    }
    const chat = path.endsWith('/chat/completions')
    const length = b.length ?? 20
    const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : Infinity
    const n = b.ignoreMaxTokens ? length : Math.min(length, maxTokens)
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true
    const id = chat ? 'chatcmpl-fake' : 'cmpl-fake'
    const head = { id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: 1_700_000_000, model: body.model }
    const choice = (text: string | undefined, finish: string | null, role = false) =>
      chat
        ? { index: 0, delta: finish !== null ? {} : role ? { role: 'assistant', content: '' } : { content: text }, finish_reason: finish }
        : { index: 0, text: text ?? '', logprobs: null, finish_reason: finish }
    const promptText = chat ? (body.messages as Array<{ content: string }>).map((m) => m.content).join(' ') : String(body.prompt)
    const usage: Record<string, unknown> = {
      prompt_tokens: promptText.split(/\s+/).filter(Boolean).length,
      completion_tokens: n,
      total_tokens: 0,
    }
    usage.total_tokens = (usage.prompt_tokens as number) + n
    if (b.cachedTokens !== undefined) usage.prompt_tokens_details = { cached_tokens: b.cachedTokens }
    if (b.reasoningTokens !== undefined) {
      if (b.topLevelReasoning) usage.reasoning_tokens = b.reasoningTokens
      else usage.completion_tokens_details = { reasoning_tokens: b.reasoningTokens }
    }

    let finished = false
    res.on('close', () => {
      if (finished) return
      this.closedEarly++
      for (const w of this.closeWaiters.splice(0)) w()
    })
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    const eol = b.eol ?? '\n'
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
    const send = async (data: string) => {
      if (res.destroyed) return
      let ev: string
      if (b.multiDataLines && data.startsWith('{')) {
        const cut = data.indexOf(',') + 1
        ev = `data: ${data.slice(0, cut)}${eol}data: ${data.slice(cut)}${eol}${eol}`
      } else ev = `data: ${data}${eol}${eol}`
      if (b.comments) ev = `: keep-alive${eol}` + ev
      if (b.splitWrites) {
        const mid = Math.floor(ev.length / 2)
        res.write(ev.slice(0, mid))
        await sleep(2)
        res.write(ev.slice(mid))
      } else res.write(ev)
      if (b.delayMs) await sleep(b.delayMs)
    }

    if (chat) await send(JSON.stringify({ ...head, choices: [choice(undefined, null, true)] }))
    for (let i = 0; i < n; i++) {
      if (res.destroyed) return
      if (b.dropAfter !== undefined && i === b.dropAfter) {
        await sleep(20) // let what was written reach the client first
        res.destroy()
        return
      }
      if (b.errorEventAfter !== undefined && i === b.errorEventAfter) {
        await send(JSON.stringify({ error: { message: 'fake upstream broke', type: 'server_error' } }))
        finished = true
        res.end()
        return
      }
      const chunk: Record<string, unknown> = { ...head, choices: [choice(fakeWord(i), null)] }
      if (b.usageOnLastChoiceChunk && includeUsage && i === n - 1) chunk.usage = usage
      await send(JSON.stringify(chunk))
    }
    if (res.destroyed) return
    await send(JSON.stringify({ ...head, choices: [choice(chat ? undefined : '', n < length ? 'length' : 'stop')] }))
    if (includeUsage && !b.omitUsage) await send(JSON.stringify({ ...head, choices: [], usage }))
    await send('[DONE]')
    if (b.endDelayMs) await sleep(b.endDelayMs)
    finished = true
    res.end()
  }
}
