// FAKE OpenAI-compatible upstream server (stands in for vLLM/SGLang) for protocol tests: slow deterministic SSE.
import http from 'node:http'

export interface FakeUpstream {
  url: string
  /** Requests whose connection closed before the answer finished (the worker cancelled). */
  cancelled: number
  completed: number
  started: number
  close(): Promise<void>
}

export async function startFakeUpstream(opts: { chunks?: number; delayMs?: number; model?: string } = {}): Promise<FakeUpstream> {
  const state = { cancelled: 0, completed: 0, started: 0 }
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const j = JSON.parse(body || '{}')
      const chat = req.url === '/v1/chat/completions'
      state.started++
      const n = Math.min(opts.chunks ?? 20, j.max_tokens ?? Infinity)
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      let i = 0
      let done = false
      const timer = setInterval(() => {
        if (i < n) {
          const c = chat
            ? { id: 'up', object: 'chat.completion.chunk', created: 1, model: j.model, choices: [{ index: 0, delta: { content: `w${i} ` }, finish_reason: null }] }
            : { id: 'up', object: 'text_completion', created: 1, model: j.model, choices: [{ index: 0, text: `w${i} `, finish_reason: null }] }
          res.write(`data: ${JSON.stringify(c)}\n\n`)
          i++
          return
        }
        clearInterval(timer)
        done = true
        if (j.stream_options?.include_usage) {
          res.write(`data: ${JSON.stringify({ id: 'up', object: 'chat.completion.chunk', created: 1, model: j.model, choices: [], usage: { prompt_tokens: 7, completion_tokens: n, total_tokens: 7 + n } })}\n\n`)
        }
        res.end('data: [DONE]\n\n')
        state.completed++
      }, opts.delayMs ?? 20)
      res.on('close', () => {
        clearInterval(timer)
        if (!done) state.cancelled++
      })
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}`,
    get cancelled() {
      return state.cancelled
    },
    get completed() {
      return state.completed
    },
    get started() {
      return state.started
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r())
        server.closeAllConnections()
      }),
  }
}
