// FAKE Telegram Bot API: a loopback HTTP server standing in for api.telegram.org (unreachable here), for bot tests.
// It serves the methods a long-polling bot uses, queues updates the test pushes, records what the bot sends, and
// serves uploaded files under /file/bot<token>/<path>.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface SentMessage {
  chat_id: number
  text: string
  reply_to?: number
}

export class FakeTelegram {
  readonly sent: SentMessage[] = []
  private readonly updates: Record<string, unknown>[] = []
  private readonly files = new Map<string, { path: string; bytes: Buffer }>()
  private nextUpdateId = 1
  private nextMessageId = 1000
  private waiting: Array<() => void> = []
  private server?: http.Server
  root = ''

  constructor(readonly token: string) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => void this.handle(req, res))
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r))
    this.root = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async stop(): Promise<void> {
    for (const w of this.waiting.splice(0)) w()
    this.server?.closeAllConnections()
    await new Promise((r) => this.server?.close(r))
  }

  /** Queues an update for the bot's next getUpdates. */
  push(update: Record<string, unknown>): number {
    const id = this.nextUpdateId++
    this.updates.push({ update_id: id, ...update })
    for (const w of this.waiting.splice(0)) w()
    return id
  }

  /** A private-chat text message update from a user; returns its message id. */
  message(chatId: number, fields: Record<string, unknown>): number {
    const message_id = this.nextMessageId++
    this.push({ message: { message_id, date: Math.floor(Date.now() / 1000), chat: { id: chatId, type: 'private', first_name: 'Alice' }, from: { id: chatId, is_bot: false, first_name: 'Alice' }, ...fields } })
    return message_id
  }

  /** Registers a file the bot can download after getFile. */
  addFile(fileId: string, path: string, bytes: Buffer): void {
    this.files.set(fileId, { path, bytes })
  }

  /** Waits until `n` messages were sent to `chatId` since `from` (an index into sent), and returns them. */
  async replies(chatId: number, from: number, n: number, timeoutMs = 240_000): Promise<SentMessage[]> {
    const end = Date.now() + timeoutMs
    for (;;) {
      const got = this.sent.slice(from).filter((m) => m.chat_id === chatId)
      if (got.length >= n) return got
      if (Date.now() > end) throw new Error(`timed out waiting for ${n} replies to chat ${chatId}; got ${JSON.stringify(got)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.root)
    const fileMatch = /^\/file\/bot([^/]+)\/(.+)$/.exec(url.pathname)
    if (fileMatch) {
      const f = [...this.files.values()].find((x) => x.path === fileMatch[2])
      if (fileMatch[1] !== this.token || !f) return void res.writeHead(404).end()
      return void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(f.bytes)
    }
    const m = /^\/bot([^/]+)\/(\w+)$/.exec(url.pathname)
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const text = Buffer.concat(chunks).toString()
    const params: Record<string, any> = text ? (req.headers['content-type']?.includes('json') ? JSON.parse(text) : Object.fromEntries(new URLSearchParams(text))) : {}
    const ok = (result: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, result }))
    if (!m || m[1] !== this.token) return void res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: false, error_code: 401, description: 'Unauthorized' }))
    switch (m[2]) {
      case 'getMe':
        return void ok({ id: 42, is_bot: true, first_name: 'Cocoon', username: 'cocoon_fake_bot', can_join_groups: false, can_read_all_group_messages: false, supports_inline_queries: false })
      case 'deleteWebhook':
      case 'sendChatAction':
        return void ok(true)
      case 'getUpdates': {
        const offset = Number(params.offset ?? 0)
        const pick = () => this.updates.filter((u) => (u.update_id as number) >= offset)
        if (pick().length === 0) await new Promise<void>((r) => { this.waiting.push(r); setTimeout(r, Math.min(1000, Number(params.timeout ?? 0) * 1000)) })
        return void ok(pick())
      }
      case 'sendMessage': {
        const chat_id = Number(params.chat_id)
        this.sent.push({ chat_id, text: String(params.text), reply_to: params.reply_parameters?.message_id })
        return void ok({ message_id: this.nextMessageId++, date: Math.floor(Date.now() / 1000), chat: { id: chat_id, type: 'private' }, text: String(params.text) })
      }
      case 'getFile': {
        const f = this.files.get(String(params.file_id))
        if (!f) return void res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: false, error_code: 400, description: 'Bad Request: invalid file_id' }))
        return void ok({ file_id: params.file_id, file_unique_id: `u-${params.file_id}`, file_size: f.bytes.length, file_path: f.path })
      }
      default:
        return void res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: false, error_code: 404, description: 'Not Found: method not faked' }))
    }
  }
}
