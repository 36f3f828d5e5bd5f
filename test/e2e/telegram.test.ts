// Telegram's use cases end to end on `cocoon devnet` (real child processes, chain, model and PocketSphinx):
// the official SDK's embeddings.create and audio.transcriptions.create, and the example bot
// (examples/telegram-bot) driven through a FAKE Telegram Bot API on loopback.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import OpenAI, { toFile } from 'openai'
import { cocoon, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { FakeTelegram } from '../helpers/fake-telegram.ts'
import { MAX_WORD_ERROR_RATE, SPOKEN_SENTENCE, speak, wordErrorRate } from '../helpers/speech.ts'
import { createBot, formatTon, friendlyError, splitMessage, TELEGRAM_MESSAGE_LIMIT, type CocoonBot } from '../../examples/telegram-bot/bot.ts'

let devnet: Proc
let dir: string
let baseUrl: string
let openai: OpenAI
let clientStats: string

/** What the client node says its proxies charged it so far, nanoTON. */
async function chargedNano(): Promise<bigint> {
  const s = (await (await fetch(clientStats)).json()) as { proxies: Array<{ charged: { nano: string } }> }
  return s.proxies.reduce((t, p) => t + BigInt(p.charged.nano), 0n)
}

/** The cost a reply ends with, back in nanoTON. */
function shownCostNano(text: string): bigint {
  const m = /— cost (\d+)(?:\.(\d{1,9}))? TON$/.exec(text)
  assert.ok(m, `the reply ends with its cost: ${JSON.stringify(text.slice(-80))}`)
  return BigInt(m[1]) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'))
}

before(async () => {
  dir = tmpDir('telegram')
  devnet = cocoon(['devnet', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 180_000)
  baseUrl = m[1]
  clientStats = baseUrl.replace(/\/v1$/, '/jsonstats')
  openai = new OpenAI({ baseURL: baseUrl, apiKey: 'not-needed-locally', maxRetries: 0, timeout: 180_000 })
})

after(async () => {
  if (devnet?.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('the official SDK on the devnet', () => {
  it('embeddings.create: right shape, deterministic, with usage, billed on the client’s channel', async () => {
    const before = await chargedNano()
    const ask = () => openai.embeddings.create({ model: 'stories260K', input: ['Summarize this chat', 'Translate this message'] })
    const a = await ask()
    assert.equal(a.object, 'list')
    assert.deepEqual(a.data.map((d) => [d.index, d.embedding.length]), [[0, 64], [1, 64]])
    assert.ok(a.usage.prompt_tokens > 0 && a.usage.total_tokens === a.usage.prompt_tokens)
    const cost = BigInt((a.usage as { cost?: number }).cost!)
    assert.ok(cost > 0n)
    assert.equal((await chargedNano()) - before, cost, 'the client node was charged what the answer says')
    const b = await ask()
    assert.deepEqual(b.data.map((d) => d.embedding), a.data.map((d) => d.embedding), 'the same input embeds the same')
  })

  it('audio.transcriptions.create on espeak-ng speech: most words right, billed per audio second', async (t) => {
    const wav = speak(dir)
    const before = await chargedNano()
    const r = await openai.audio.transcriptions.create({ model: 'pocketsphinx-en-us', file: await toFile(fs.readFileSync(wav), 'speech.wav') })
    const wer = wordErrorRate(SPOKEN_SENTENCE, r.text)
    t.diagnostic(`devnet transcript "${r.text}": word error rate ${wer.toFixed(3)} (bound ${MAX_WORD_ERROR_RATE})`)
    assert.ok(wer <= MAX_WORD_ERROR_RATE, `heard "${r.text}"`)
    const usage = (r as unknown as { usage: { type: string; seconds: number; cost: number } }).usage
    assert.equal(usage.type, 'duration')
    // DEVNET_PARAMS: 2000 nanoTON a token, an audio second is 100 tokens.
    assert.equal(usage.cost, usage.seconds * 200_000)
    assert.equal((await chargedNano()) - before, BigInt(usage.cost))
  })
})

describe('the Telegram bot example against a FAKE Telegram Bot API', () => {
  const token = '123456:FAKE-token-for-tests'
  let tg: FakeTelegram
  let cb: CocoonBot
  let running: Promise<void>

  before(async () => {
    tg = new FakeTelegram(token)
    await tg.start()
    cb = createBot({ token, baseUrl, model: 'stories260K', speechModel: 'pocketsphinx-en-us', historyTurns: 2, maxTokens: 48, apiRoot: tg.root })
    running = cb.bot.start({ drop_pending_updates: false })
  })

  after(async () => {
    await cb?.bot.stop()
    await running?.catch(() => {})
    await tg?.stop()
  })

  it('/summarize as a reply: a summary that ends with its cost, which is what the network charged', async () => {
    const chat = 501
    // The replied-to message is older history (e.g. a friend's message in a group), not a new update.
    const original = 77
    const from = tg.sent.length
    const before = await chargedNano()
    tg.message(chat, { text: '/summarize', entities: [{ type: 'bot_command', offset: 0, length: 10 }], reply_to_message: { message_id: original, date: 0, chat: { id: chat, type: 'private' }, text: 'Tom and Lily went to the park. They played with a red ball all day. Then it rained and they ran home.' } })
    const [r] = await tg.replies(chat, from, 1)
    assert.match(r.text, /^Summary:\n/)
    const shown = shownCostNano(r.text)
    assert.ok(shown > 0n)
    assert.equal((await chargedNano()) - before, shown)
  })

  it('/summarize after forwarded messages summarizes them', async () => {
    const chat = 502
    const from = tg.sent.length
    const origin = { type: 'user', date: 0, sender_user: { id: 7, is_bot: false, first_name: 'Bob' } }
    tg.message(chat, { text: 'The meeting moved to Friday.', forward_origin: origin })
    tg.message(chat, { text: 'Bring the slides.', forward_origin: origin })
    const [ack] = await tg.replies(chat, from, 1)
    assert.match(ack.text, /send \/summarize/)
    tg.message(chat, { text: '/summarize', entities: [{ type: 'bot_command', offset: 0, length: 10 }] })
    const got = await tg.replies(chat, from, 2)
    assert.match(got[1].text, /^Summary:\n/)
    assert.ok(shownCostNano(got[1].text) > 0n)
  })

  it('/translate <language> translates the replied-to message, with its cost', async () => {
    const chat = 503
    const original = 78
    const from = tg.sent.length
    tg.message(chat, { text: '/translate French', entities: [{ type: 'bot_command', offset: 0, length: 10 }], reply_to_message: { message_id: original, date: 0, chat: { id: chat, type: 'private' }, text: 'Good morning, how are you?' } })
    const [r] = await tg.replies(chat, from, 1)
    assert.match(r.text, /^French:\n/)
    assert.ok(shownCostNano(r.text) > 0n)
  })

  it('a voice message is transcribed and answered; the cost covers both and matches the charge', async (t) => {
    const chat = 504
    const wav = speak(dir, SPOKEN_SENTENCE, 'voice.wav')
    tg.addFile('voice-1', 'voice/file_1.wav', fs.readFileSync(wav))
    const from = tg.sent.length
    const before = await chargedNano()
    tg.message(chat, { voice: { file_id: 'voice-1', file_unique_id: 'v1', duration: 4, mime_type: 'audio/wav' } })
    const [r] = await tg.replies(chat, from, 1)
    const heard = /^🎙 "([^"]*)"/.exec(r.text)
    assert.ok(heard, r.text)
    const wer = wordErrorRate(SPOKEN_SENTENCE, heard[1])
    t.diagnostic(`bot heard "${heard[1]}": word error rate ${wer.toFixed(3)}`)
    assert.ok(wer <= MAX_WORD_ERROR_RATE)
    const shown = shownCostNano(r.text)
    assert.equal((await chargedNano()) - before, shown, 'transcription and answer together')
    assert.ok(shown > 4n * 200_000n, 'at least the audio seconds')
  })

  it('other text is a chat with a short per-chat history', async () => {
    const chat = 505
    for (const [i, q] of ['Hello!', 'Tell me about cats.', 'And dogs?'].entries()) {
      const from = tg.sent.length
      tg.message(chat, { text: q })
      const [r] = await tg.replies(chat, from, 1)
      assert.ok(shownCostNano(r.text) > 0n)
      assert.equal(cb.history.get(chat)!.length, Math.min(2 * (i + 1), 4), 'history keeps the last two turns')
    }
    assert.equal(cb.history.get(chat)![0].content, 'Tell me about cats.')
  })

  it('/receipt shows the last answer’s receipt and, once the proxy committed it on chain, that it verified', async () => {
    const chat = 505 // the chat above: its last answer was a chat completion
    let text = ''
    for (let i = 0; i < 40 && !/verified against/.test(text); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1_000))
      const from = tg.sent.length
      tg.message(chat, { text: '/receipt', entities: [{ type: 'bot_command', offset: 0, length: 8 }] })
      ;[{ text }] = await tg.replies(chat, from, 1)
      assert.match(text, /^Receipt \S+ for stories260K: (verified against the proxy's on-chain commit|not verified yet)/)
    }
    assert.match(text, /verified against the proxy's on-chain commit #\d+/)
    const fresh = 507
    const from = tg.sent.length
    tg.message(fresh, { text: '/receipt', entities: [{ type: 'bot_command', offset: 0, length: 8 }] })
    const [none] = await tg.replies(fresh, from, 1)
    assert.match(none.text, /^I have no receipt for my last answer here/)
  })

  it('a voice answer’s /receipt covers the transcription and the reply', async () => {
    const chat = 504 // the voice chat above
    const from = tg.sent.length
    tg.message(chat, { text: '/receipt', entities: [{ type: 'bot_command', offset: 0, length: 8 }] })
    const [r] = await tg.replies(chat, from, 1)
    assert.match(r.text, /^Receipt \S+ for pocketsphinx-en-us: .*\nReceipt \S+ for stories260K: /)
  })

  it('failures come back as one friendly line, never a stack trace', async () => {
    const chat = 506
    tg.addFile('voice-2', 'voice/file_2.oga', Buffer.from('this is not audio at all'))
    const from = tg.sent.length
    tg.message(chat, { voice: { file_id: 'voice-2', file_unique_id: 'v2', duration: 1 } })
    const [r] = await tg.replies(chat, from, 1)
    assert.match(r.text, /^I could not do that: .*unsupported audio format/)
    assert.doesNotMatch(r.text, /\n\s+at /)
  })
})

describe('the bot’s pure helpers', () => {
  it('splits long answers at Telegram’s limit, on word breaks', () => {
    const text = Array.from({ length: 3000 }, (_, i) => `word${i}`).join(' ')
    const parts = splitMessage(text)
    assert.ok(parts.length > 1)
    for (const p of parts) assert.ok(p.length <= TELEGRAM_MESSAGE_LIMIT)
    assert.equal(parts.join(' '), text)
    assert.deepEqual(splitMessage('x'.repeat(5000)).map((p) => p.length), [4096, 904])
  })

  it('formats nanoTON as TON exactly', () => {
    assert.equal(formatTon(1_230_000n), '0.00123')
    assert.equal(formatTon(2_000_000_000n), '2')
    assert.equal(formatTon(1n), '0.000000001')
  })

  it('turns rate limits and errors into friendly lines', () => {
    assert.match(friendlyError(Object.assign(new Error('429 slow down'), { status: 429 })), /too many requests/)
    assert.match(friendlyError(Object.assign(new Error('402'), { status: 402 })), /out of funds/)
    assert.match(friendlyError(new TypeError('x is undefined')), /^Sorry, something went wrong/)
  })
})
