// A fast FAKE OpenAI-compatible backend for load tests: a fixed answer of N chunks of B bytes, streamed (SSE) or whole.
//
// It stands in for vLLM or SGLang so that the bench measures the network, not a model. Every
// answer is the same text: chunk i is B bytes of ASCII. Streaming answers are N
// `chat.completion.chunk` events (or `text_completion` for /v1/completions), the last with
// finish_reason "stop", then one usage event (`choices: []`), then `data: [DONE]`. The
// non-streaming answer carries the same text in one object with the same usage.
import http from 'node:http'
import { parseArgs } from 'node:util'
import { FAKE_CHUNK_BYTES, FAKE_CHUNK_COUNT, FAKE_CHUNK_DELAY_MS, FAKE_PROMPT_TOKENS } from './constants.ts'

export interface FakeBackendOptions {
  /** Content chunks per answer. Default FAKE_CHUNK_COUNT (50). */
  chunks?: number
  /** Bytes of text per chunk. Default FAKE_CHUNK_BYTES (128). */
  chunkBytes?: number
  /** Pause between chunks, ms; 0 writes them back to back. Default FAKE_CHUNK_DELAY_MS (0). */
  delayMs?: number
  /** Prompt tokens reported in usage. Default FAKE_PROMPT_TOKENS (16). */
  promptTokens?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0 (any free port). */
  port?: number
}

export interface FakeBackend {
  /** Server root, e.g. http://127.0.0.1:40123 (the OpenAI API is under /v1). */
  url: string
  /** Answers completed, and answers whose connection closed first. */
  readonly completed: number
  readonly cancelled: number
  close(): Promise<void>
}

/** The text of chunk `i`: `bytes` printable ASCII characters, no quotes or backslashes, so JSON needs no escaping. */
export function fakeChunkText(i: number, bytes: number): string {
  const word = `w${i} lorem ipsum dolor sit amet `
  return word.repeat(Math.ceil(bytes / word.length)).slice(0, bytes)
}

interface Answer {
  /** The SSE events, each a complete `data: ...\n\n` string. */
  events: string[]
  /** The non-streaming JSON body. */
  whole: string
}

function buildAnswer(kind: 'chat' | 'completion', model: string, o: Required<Pick<FakeBackendOptions, 'chunks' | 'chunkBytes' | 'promptTokens'>>): Answer {
  const id = kind === 'chat' ? 'chatcmpl-bench' : 'cmpl-bench'
  const usage = { prompt_tokens: o.promptTokens, completion_tokens: o.chunks, total_tokens: o.promptTokens + o.chunks }
  const texts = Array.from({ length: o.chunks }, (_, i) => fakeChunkText(i, o.chunkBytes))
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'
  const events = texts.map((t, i) => {
    const finish = i === o.chunks - 1 ? 'stop' : null
    const choice = kind === 'chat' ? { index: 0, delta: { content: t }, finish_reason: finish } : { index: 0, text: t, finish_reason: finish }
    return `data: ${JSON.stringify({ id, object, created: 0, model, choices: [choice] })}\n\n`
  })
  events.push(`data: ${JSON.stringify({ id, object, created: 0, model, choices: [], usage })}\n\n`, 'data: [DONE]\n\n')
  const text = texts.join('')
  const whole =
    kind === 'chat'
      ? { id, object: 'chat.completion', created: 0, model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage }
      : { id, object: 'text_completion', created: 0, model, choices: [{ index: 0, text, finish_reason: 'stop' }], usage }
  return { events, whole: JSON.stringify(whole) }
}

export async function startFakeBackend(opts: FakeBackendOptions = {}): Promise<FakeBackend> {
  const o = {
    chunks: opts.chunks ?? FAKE_CHUNK_COUNT,
    chunkBytes: opts.chunkBytes ?? FAKE_CHUNK_BYTES,
    promptTokens: opts.promptTokens ?? FAKE_PROMPT_TOKENS,
  }
  const delayMs = opts.delayMs ?? FAKE_CHUNK_DELAY_MS
  const state = { completed: 0, cancelled: 0 }
  // Answers are built once per (kind, model): serving one costs only the writes.
  const answers = new Map<string, Answer>()
  const answerFor = (kind: 'chat' | 'completion', model: string) => {
    const key = `${kind}\0${model}`
    let a = answers.get(key)
    if (!a) {
      a = buildAnswer(kind, model, o)
      answers.set(key, a)
    }
    return a
  }

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' && path === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'any', object: 'model', created: 0, owned_by: 'bench' }] }))
      return
    }
    const kind = path === '/v1/chat/completions' ? 'chat' : path === '/v1/completions' ? 'completion' : undefined
    if (req.method !== 'POST' || !kind) {
      req.resume()
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { message: `unknown endpoint ${req.method} ${path}`, type: 'invalid_request_error', code: 'not_found', param: null } }))
      return
    }
    const parts: Buffer[] = []
    req.on('data', (c: Buffer) => parts.push(c))
    req.on('end', () => {
      let body: { model?: unknown; stream?: unknown }
      try {
        body = JSON.parse(Buffer.concat(parts).toString('utf8') || '{}')
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: { message: 'bad JSON', type: 'invalid_request_error', code: 'invalid_json', param: null } }))
        return
      }
      const answer = answerFor(kind, typeof body.model === 'string' ? body.model : 'bench')
      if (body.stream !== true) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer.whole) })
        res.end(answer.whole, () => state.completed++)
        return
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      let i = 0
      let done = false
      res.once('close', () => {
        if (!done) state.cancelled++
      })
      const finish = () => {
        done = true
        state.completed++
        res.end()
      }
      if (delayMs <= 0) {
        // One write per event, as a streaming server does; the socket coalesces what it can.
        for (const ev of answer.events) res.write(ev)
        return finish()
      }
      const tick = () => {
        if (res.destroyed) return
        res.write(answer.events[i++])
        // The usage event and [DONE] follow the last content chunk at once.
        if (i >= o.chunks) {
          while (i < answer.events.length) res.write(answer.events[i++])
          return finish()
        }
        setTimeout(tick, delayMs)
      }
      tick()
    })
  })
  server.keepAliveTimeout = 65_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve())
  })
  const addr = server.address() as { address: string; port: number }
  return {
    url: `http://${opts.host ?? '127.0.0.1'}:${addr.port}`,
    get completed() {
      return state.completed
    },
    get cancelled() {
      return state.cancelled
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/**
 * `cocoon bench fake-backend [--port N] [--chunks N] [--chunk-bytes B] [--delay-ms D]`: runs the
 * fake backend until SIGINT/SIGTERM. Prints one JSON line `{"url": ...}` once it listens.
 */
export async function runFakeBackendCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      chunks: { type: 'string', default: String(FAKE_CHUNK_COUNT) },
      'chunk-bytes': { type: 'string', default: String(FAKE_CHUNK_BYTES) },
      'delay-ms': { type: 'string', default: String(FAKE_CHUNK_DELAY_MS) },
    },
    strict: true,
  })
  const int = (name: string, v: string, min: number) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw Object.assign(new Error(`--${name} must be an integer >= ${min}`), { name: 'UsageError' })
    return n
  }
  const backend = await startFakeBackend({
    host: values.host,
    port: int('port', values.port!, 0),
    chunks: int('chunks', values.chunks!, 1),
    chunkBytes: int('chunk-bytes', values['chunk-bytes']!, 1),
    delayMs: int('delay-ms', values['delay-ms']!, 0),
  })
  process.stdout.write(JSON.stringify({ url: backend.url }) + '\n')
  const stop = () => void backend.close().then(() => process.exit(0))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
