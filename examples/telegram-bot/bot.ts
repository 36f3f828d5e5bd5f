// A Telegram bot on Cocoon: summaries, translation, voice transcription and chat, through a Cocoon client node,
// using only grammY and the official OpenAI SDK. Every answer ends with what it cost, in TON.
import fs from 'node:fs'
import { Bot, type Context } from 'grammy'
import OpenAI, { toFile } from 'openai'

/** Telegram's limit on one message's text, in characters. */
export const TELEGRAM_MESSAGE_LIMIT = 4096

export interface BotConfig {
  /** From @BotFather. */
  token: string
  /** The Cocoon client node's OpenAI base URL. Default http://127.0.0.1:10000/v1 (`npm start`). */
  baseUrl: string
  /** Chat model for answers, summaries and translations. Default stories260K (the devnet's). */
  model: string
  /** Speech model for voice messages. Default pocketsphinx-en-us (the devnet's). */
  speechModel: string
  /** Chat turns (a question and its answer each) remembered per chat. Default 6. */
  historyTurns: number
  /** Longest answer, in tokens. Default 256. */
  maxTokens: number
  /** Telegram Bot API root. Default Telegram's; tests point it at a local stand-in. */
  apiRoot?: string
}

const DEFAULTS = { baseUrl: 'http://127.0.0.1:10000/v1', model: 'stories260K', speechModel: 'pocketsphinx-en-us', historyTurns: 6, maxTokens: 256 }

/**
 * Config from a JSON file (COCOON_BOT_CONFIG, optional) overridden by the environment:
 * TELEGRAM_BOT_TOKEN or TELEGRAM_BOT_TOKEN_FILE, COCOON_BASE_URL, COCOON_MODEL, COCOON_SPEECH_MODEL.
 * The token never comes from argv.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): BotConfig {
  const file = env.COCOON_BOT_CONFIG ? (JSON.parse(fs.readFileSync(env.COCOON_BOT_CONFIG, 'utf8')) as Partial<BotConfig> & { tokenFile?: string }) : {}
  const tokenFile = env.TELEGRAM_BOT_TOKEN_FILE ?? file.tokenFile
  const token = env.TELEGRAM_BOT_TOKEN ?? (tokenFile ? fs.readFileSync(tokenFile, 'utf8').trim() : file.token)
  if (!token) throw new Error('no bot token: set TELEGRAM_BOT_TOKEN or TELEGRAM_BOT_TOKEN_FILE (from @BotFather)')
  return {
    ...DEFAULTS,
    ...file,
    token,
    ...(env.COCOON_BASE_URL ? { baseUrl: env.COCOON_BASE_URL } : {}),
    ...(env.COCOON_MODEL ? { model: env.COCOON_MODEL } : {}),
    ...(env.COCOON_SPEECH_MODEL ? { speechModel: env.COCOON_SPEECH_MODEL } : {}),
    ...(env.TELEGRAM_API_ROOT ? { apiRoot: env.TELEGRAM_API_ROOT } : {}),
  }
}

/** nanoTON as TON, without trailing zeros: 1230000 -> "0.00123". */
export function formatTon(nano: bigint): string {
  const whole = nano / 1_000_000_000n
  const frac = (nano % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '')
  return frac ? `${whole}.${frac}` : `${whole}`
}

/** Splits text into pieces of at most `limit` characters, at a paragraph, line or word break when there is one. */
export function splitMessage(text: string, limit = TELEGRAM_MESSAGE_LIMIT): string[] {
  const parts: string[] = []
  let rest = text
  while (rest.length > limit) {
    const window = rest.slice(0, limit)
    let cut = Math.max(window.lastIndexOf('\n\n'), window.lastIndexOf('\n'), window.lastIndexOf(' '))
    if (cut < limit / 2) cut = limit
    parts.push(rest.slice(0, cut).trimEnd())
    rest = rest.slice(cut).trimStart()
  }
  if (rest.length > 0 || parts.length === 0) parts.push(rest)
  return parts
}

/** The receipt id Cocoon puts on an answer's usage, when the network issues receipts. */
function receiptOf(usage: unknown): string | undefined {
  const id = (usage as { receipt_id?: unknown } | undefined)?.receipt_id
  return typeof id === 'string' && id.length > 0 ? id : undefined
}

/** The cost Cocoon puts on every answer's usage, nanoTON; 0 when absent. */
function costOf(usage: unknown): bigint {
  const c = (usage as { cost?: unknown } | undefined)?.cost
  return typeof c === 'number' && Number.isSafeInteger(c) && c >= 0 ? BigInt(c) : 0n
}

/** One friendly line for a failure: never a stack trace. */
export function friendlyError(err: unknown): string {
  const status = (err as { status?: number }).status
  if (status === 429) return 'I am getting too many requests right now. Please try again in a minute.'
  if (status === 402) return 'The Cocoon account behind this bot is out of funds. Please tell the bot owner.'
  if (status === 413) return 'That file is too large for me.'
  if (status === 400) return `I could not do that: ${String((err as Error).message ?? '').replace(/^\d+\s*/, '').slice(0, 200)}`
  if (status === 503 || status === 502 || status === 504) return 'The Cocoon network is busy or unreachable right now. Please try again soon.'
  if (err instanceof OpenAI.APIConnectionError) return 'I cannot reach the Cocoon client node right now. Please try again soon.'
  return 'Sorry, something went wrong on my side. Please try again.'
}

type Turn = { role: 'user' | 'assistant'; content: string }

export interface CocoonBot {
  bot: Bot
  /** Per-chat history, for tests and inspection. */
  history: Map<number, Turn[]>
}

export function createBot(cfg: BotConfig, deps: { openai?: OpenAI } = {}): CocoonBot {
  const openai = deps.openai ?? new OpenAI({ baseURL: cfg.baseUrl, apiKey: 'cocoon-client-node', maxRetries: 1, timeout: 180_000 })
  const bot = new Bot(cfg.token, cfg.apiRoot ? { client: { apiRoot: cfg.apiRoot } } : undefined)
  const history = new Map<number, Turn[]>()
  const forwarded = new Map<number, string[]>()
  /** Per chat: the receipt ids of the last answer (a voice answer has two: transcription and reply). */
  const receipts = new Map<number, string[]>()
  let pendingReceipts: string[] = []

  const complete = async (messages: OpenAI.Chat.ChatCompletionMessageParam[]): Promise<{ text: string; nano: bigint }> => {
    const r = await openai.chat.completions.create({ model: cfg.model, messages, max_tokens: cfg.maxTokens, temperature: 0 })
    const receipt = receiptOf(r.usage)
    if (receipt) pendingReceipts.push(receipt)
    return { text: (r.choices[0]?.message?.content ?? '').trim() || '(no answer)', nano: costOf(r.usage) }
  }

  const reply = async (ctx: Context, text: string, nano: bigint) => {
    receipts.set(ctx.chat!.id, pendingReceipts)
    pendingReceipts = []
    for (const part of splitMessage(`${text}\n\n— cost ${formatTon(nano)} TON`)) await ctx.reply(part)
  }

  const transcribe = async (ctx: Context, fileId: string): Promise<{ text: string; nano: bigint }> => {
    const file = await ctx.api.getFile(fileId)
    if (!file.file_path) throw Object.assign(new Error('Telegram did not give a download path for the file'), { status: 400 })
    const root = cfg.apiRoot ?? 'https://api.telegram.org'
    const res = await fetch(`${root}/file/bot${cfg.token}/${file.file_path}`)
    if (!res.ok) throw new Error(`file download failed with HTTP ${res.status}`)
    const name = file.file_path.split('/').pop() ?? 'voice.ogg'
    const r = await openai.audio.transcriptions.create({ model: cfg.speechModel, file: await toFile(Buffer.from(await res.arrayBuffer()), name) })
    const usage = (r as unknown as { usage?: unknown }).usage
    const receipt = receiptOf(usage)
    if (receipt) pendingReceipts.push(receipt)
    return { text: r.text.trim(), nano: costOf(usage) }
  }

  const summarize = (text: string) =>
    complete([
      { role: 'system', content: 'Summarize the text the user sends in two or three short sentences.' },
      { role: 'user', content: text },
    ])

  const guarded = (fn: (ctx: Context) => Promise<void>) => async (ctx: Context) => {
    pendingReceipts = []
    try {
      await ctx.replyWithChatAction('typing').catch(() => {})
      await fn(ctx)
    } catch (err) {
      await ctx.reply(friendlyError(err)).catch(() => {})
    }
  }

  bot.command(['start', 'help'], (ctx) =>
    ctx.reply(
      'I answer through Cocoon, private AI on TON.\n' +
        '• /summarize as a reply to a message, or after forwarding me messages\n' +
        '• /translate <language> as a reply to a message (or /translate <language> <text>)\n' +
        '• a voice message: I transcribe it and answer\n' +
        '• anything else: we chat (/reset forgets our chat)\n' +
        'Each answer ends with what it cost in TON.',
    ),
  )

  bot.command('reset', async (ctx) => {
    history.delete(ctx.chat.id)
    forwarded.delete(ctx.chat.id)
    await ctx.reply('Forgotten.')
  })

  bot.command(
    'summarize',
    guarded(async (ctx) => {
      const chatId = ctx.chat!.id
      const target = ctx.message?.reply_to_message
      let text = target?.text ?? target?.caption ?? ''
      let nano = 0n
      if (!text && target?.voice) ({ text, nano } = await transcribe(ctx, target.voice.file_id))
      if (!text) text = (forwarded.get(chatId) ?? []).join('\n\n')
      if (!text) return void (await ctx.reply('Reply /summarize to a message, or forward me some messages first and then send /summarize.'))
      forwarded.delete(chatId)
      const s = await summarize(text)
      await reply(ctx, `Summary:\n${s.text}`, nano + s.nano)
    }),
  )

  bot.command(
    'translate',
    guarded(async (ctx) => {
      const [language, ...words] = (ctx.match as string).trim().split(/\s+/).filter(Boolean)
      const text = words.join(' ') || ctx.message?.reply_to_message?.text || ctx.message?.reply_to_message?.caption || ''
      if (!language || !text) return void (await ctx.reply('Usage: reply to a message with /translate <language>, or send /translate <language> <text>.'))
      const t = await complete([
        { role: 'system', content: `Translate the user's message into ${language}. Answer with the translation only.` },
        { role: 'user', content: text },
      ])
      await reply(ctx, `${language}:\n${t.text}`, t.nano)
    }),
  )

  bot.command(
    'receipt',
    guarded(async (ctx) => {
      const ids = receipts.get(ctx.chat!.id) ?? []
      if (ids.length === 0) return void (await ctx.reply('I have no receipt for my last answer here: this Cocoon network does not issue receipts yet, or I have not answered yet.'))
      const lines: string[] = []
      for (const id of ids) {
        // The client node keeps each answer's receipt and checks its proof against the chain.
        const r = (await openai.get(`/receipts/${encodeURIComponent(id)}`)) as { proof?: string | null; commit?: { seqno?: number } | null; fields?: Record<string, unknown> }
        const verified = r.proof ? `verified against the proxy's on-chain commit${r.commit?.seqno !== undefined ? ` #${r.commit.seqno}` : ''}` : 'not verified yet: the proxy has not committed it on chain'
        const model = typeof r.fields?.model_id === 'string' ? ` for ${r.fields.model_id}` : ''
        lines.push(`Receipt ${id}${model}: ${verified}.`)
      }
      await ctx.reply(lines.join('\n'))
    }),
  )

  bot.on(
    'message:voice',
    guarded(async (ctx) => {
      const heard = await transcribe(ctx, ctx.message!.voice!.file_id)
      if (!heard.text) return void (await reply(ctx, 'I could not make out any words in that voice message.', heard.nano))
      // A long voice message gets a summary; a short one is a question or a remark to answer.
      const long = heard.text.split(/\s+/).length > 60
      const a = long ? await summarize(heard.text) : await chat(ctx.chat!.id, heard.text)
      await reply(ctx, `🎙 "${heard.text}"\n\n${long ? 'Summary: ' : ''}${a.text}`, heard.nano + a.nano)
    }),
  )

  const chat = async (chatId: number, text: string) => {
    const turns = history.get(chatId) ?? []
    const a = await complete([{ role: 'system', content: 'You are a helpful assistant in a Telegram chat. Be brief.' }, ...turns, { role: 'user', content: text }])
    turns.push({ role: 'user', content: text }, { role: 'assistant', content: a.text })
    history.set(chatId, turns.slice(-2 * cfg.historyTurns))
    return a
  }

  bot.on(
    'message:text',
    guarded(async (ctx) => {
      const chatId = ctx.chat!.id
      const msg = ctx.message!
      const text = msg.text ?? ''
      if (msg.forward_origin) {
        // Forwarded messages are gathered for /summarize; the first of a batch gets an acknowledgement.
        const list = forwarded.get(chatId) ?? []
        list.push(text)
        forwarded.set(chatId, list.slice(-50))
        if (list.length === 1) await ctx.reply('Got it. Forward more if you like, then send /summarize.')
        return
      }
      if (text.startsWith('/')) return void (await ctx.reply('I do not know that command. Try /help.'))
      const a = await chat(chatId, text)
      await reply(ctx, a.text, a.nano)
    }),
  )

  bot.catch((err) => {
    // Handler errors are answered above; this is the last resort, so the bot keeps running.
    console.error(`bot: update ${err.ctx?.update?.update_id} failed: ${(err.error as Error)?.message ?? err.error}`)
  })
  return { bot, history }
}
