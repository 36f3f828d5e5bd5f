// /v1/embeddings and /v1/audio/transcriptions through a real in-process network (RA-TLS, HTTP/2, the real
// stories260K model, real PocketSphinx), driven by the unchanged official OpenAI SDK.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import OpenAI, { toFile } from 'openai'
import { LlamaBackend } from '../../src/inference/llama.ts'
import { PocketSphinxBackend } from '../../src/inference/pocketsphinx.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../../src/payments/pricing.ts'
import { MAX_AUDIO_BODY_BYTES } from '../../src/net/protocol.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { MODELS_DIR } from '../helpers/procs.ts'
import { MAX_WORD_ERROR_RATE, SPOKEN_SENTENCE, speak, wav as wavFile, wordErrorRate } from '../helpers/speech.ts'
import type { Proxy } from '../../src/proxy/proxy.ts'
import type { Worker } from '../../src/worker/worker.ts'
import type { Client } from '../../src/client/client.ts'

const SPEECH_MODEL = 'pocketsphinx-en-us'
let proxy: Proxy
let workers: Worker[] = []
let client: Client
let url: string
let openai: OpenAI
let llama: LlamaBackend
let speech: PocketSphinxBackend
let wav: string
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-usecases-'))

const chargedNano = () => BigInt((proxy.stats().money as { chargedNano: string }).chargedNano)
type Costed = { cost?: number }

before(async () => {
  llama = await LlamaBackend.create({ modelPath: path.join(MODELS_DIR, 'stories260K.gguf'), modelId: 'stories260K', modelHash: 'ab'.repeat(32), threads: 1, parallel: 1 })
  speech = await PocketSphinxBackend.create({ parallel: 1 })
  const p = await startProxy()
  proxy = p.proxy
  workers = [await startWorker(llama, [p.workerPort]), await startWorker(speech, [p.workerPort])]
  ;({ client, url } = await startClient([p.clientPort]))
  await waitFor(() => (proxy.stats().workers as { connected: number }).connected === 2 && client.health().ok, 'two workers and the client')
  openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 })
  wav = speak(dir)
})

after(async () => {
  await client?.stop()
  for (const w of workers) await w.stop()
  await proxy?.stop()
  await llama?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('/v1/models', () => {
  it('lists, per model, the endpoints its workers serve', async () => {
    const list = await openai.models.list()
    const endpoints = Object.fromEntries(list.data.map((m) => [m.id, (m as unknown as { endpoints: string[] }).endpoints]))
    assert.deepEqual(endpoints, {
      stories260K: ['/v1/chat/completions', '/v1/completions', '/v1/embeddings'],
      [SPEECH_MODEL]: ['/v1/audio/transcriptions'],
    })
  })
})

describe('/v1/embeddings', () => {
  it('embeds a list of strings: one unit vector per input, in order, with usage and its cost billed', async () => {
    const before = chargedNano()
    const r = await openai.embeddings.create({ model: 'stories260K', input: ['Once upon a time', 'The cat sat on the mat'], encoding_format: 'float' })
    assert.equal(r.object, 'list')
    assert.equal(r.model, 'stories260K')
    assert.deepEqual(r.data.map((d) => [d.object, d.index, d.embedding.length]), [['embedding', 0, 64], ['embedding', 1, 64]])
    for (const d of r.data) assert.ok(Math.abs(Math.hypot(...d.embedding) - 1) < 1e-6, 'L2-normalized')
    assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding)
    assert.ok(r.usage.prompt_tokens > 5)
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens)
    // Billed at the prompt price: adjusted = prompt tokens at 1.0x.
    const cost = (r.usage as Costed).cost!
    assert.equal(cost, r.usage.prompt_tokens * Number(OFFCHAIN_PRICE_PARAMS.pricePerTokenNano))
    assert.equal(chargedNano() - before, BigInt(cost), 'the proxy charged exactly what the answer says')
  })

  it('is deterministic, and the SDK default (base64) decodes to the same vector', async () => {
    const a = await openai.embeddings.create({ model: 'stories260K', input: 'Lily found a red ball', encoding_format: 'float' })
    const b = await openai.embeddings.create({ model: 'stories260K', input: 'Lily found a red ball', encoding_format: 'float' })
    assert.deepEqual(a.data[0].embedding, b.data[0].embedding)
    const c = await openai.embeddings.create({ model: 'stories260K', input: 'Lily found a red ball' })
    assert.equal(c.data[0].embedding.length, 64)
    c.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - a.data[0].embedding[i]) < 1e-6))
    const raw = await fetch(`${url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stories260K', input: 'Lily found a red ball', encoding_format: 'base64' }) })
    const j = (await raw.json()) as { data: Array<{ embedding: string }> }
    assert.equal(typeof j.data[0].embedding, 'string')
    assert.equal(Buffer.from(j.data[0].embedding, 'base64').length, 64 * 4, 'little-endian float32')
  })

  it('takes token arrays, counting exactly their tokens', async () => {
    const r = await openai.embeddings.create({ model: 'stories260K', input: [[403, 407, 261, 378], [403, 407]], encoding_format: 'float' })
    assert.equal(r.data.length, 2)
    assert.equal(r.usage.prompt_tokens, 6)
  })

  it('accepts dimensions equal to the model’s and refuses others with a clear 400', async () => {
    const ok = await openai.embeddings.create({ model: 'stories260K', input: 'hi', dimensions: 64, encoding_format: 'float' })
    assert.equal(ok.data[0].embedding.length, 64)
    await assert.rejects(openai.embeddings.create({ model: 'stories260K', input: 'hi', dimensions: 16 }), (e: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(e.status, 400)
      assert.match(e.message, /64-dimensional vectors and cannot shorten them/)
      return true
    })
  })

  it('refuses bad input with 400s and bills nothing for them', async () => {
    const before = chargedNano()
    for (const [input, re] of [
      ['', /'input\[0\]' is empty/],
      [[], /'input' must be/],
      [[[1, 2], 'mixed'], /'input' must be/],
      [[[999999]], /outside the vocabulary/],
    ] as const) {
      await assert.rejects(openai.embeddings.create({ model: 'stories260K', input: input as string }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && re.test(e.message))
    }
    await assert.rejects(openai.embeddings.create({ model: 'stories260K', input: 'x', encoding_format: 'int8' as 'float' }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400)
    await assert.rejects(openai.embeddings.create({ model: SPEECH_MODEL, input: 'x' }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && /not served at \/v1\/embeddings/.test(e.message))
    assert.equal(chargedNano(), before)
  })
})

describe('/v1/audio/transcriptions', () => {
  const seconds = () => Math.ceil(Number(execFileSync('soxi', ['-D', wav]).toString().trim()))

  it('transcribes espeak-ng speech (json), within the word-error-rate bound, billed per audio second', async (t) => {
    const before = chargedNano()
    const r = await openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(wav), 'speech.wav') })
    const wer = wordErrorRate(SPOKEN_SENTENCE, r.text)
    t.diagnostic(`said: "${SPOKEN_SENTENCE}" heard: "${r.text}" word error rate ${wer.toFixed(3)} (bound ${MAX_WORD_ERROR_RATE})`)
    assert.ok(wer <= MAX_WORD_ERROR_RATE, `word error rate ${wer} > ${MAX_WORD_ERROR_RATE}: heard "${r.text}"`)
    const usage = (r as unknown as { usage: { type: string; seconds: number; cost: number } }).usage
    assert.equal(usage.type, 'duration')
    assert.equal(usage.seconds, seconds())
    const perSecond = (OFFCHAIN_PRICE_PARAMS.pricePerTokenNano * BigInt(OFFCHAIN_PRICE_PARAMS.audioSecondMult)) / 10_000n
    assert.equal(BigInt(usage.cost), BigInt(usage.seconds) * perSecond)
    assert.equal(chargedNano() - before, BigInt(usage.cost))
  })

  it('answers text and verbose_json (with segments) too', async () => {
    const text = await openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(wav), 'speech.wav'), response_format: 'text', language: 'en', temperature: 0 })
    assert.equal(typeof text, 'string')
    assert.ok(wordErrorRate(SPOKEN_SENTENCE, text) <= MAX_WORD_ERROR_RATE)
    const v = await openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(wav), 'speech.wav'), response_format: 'verbose_json' })
    assert.equal(v.language, 'english')
    assert.ok(Math.abs(v.duration - Number(execFileSync('soxi', ['-D', wav]).toString())) < 0.01)
    assert.ok(v.segments && v.segments.length >= 1)
    for (const s of v.segments!) assert.ok(s.start >= 0 && s.end > s.start && s.end <= v.duration + 0.01 && s.text.trim().length > 0)
    assert.equal(v.segments!.map((s) => s.text.trim()).join(' '), v.text)
  })

  it('reads FLAC through sox', async () => {
    const flac = path.join(dir, 'speech.flac')
    execFileSync('sox', [wav, flac])
    const r = await openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(flac), 'speech.flac') })
    assert.ok(wordErrorRate(SPOKEN_SENTENCE, r.text) <= MAX_WORD_ERROR_RATE)
  })

  it('refuses unsupported formats, other languages and bad fields with clear 400s, billing nothing', async () => {
    const before = chargedNano()
    const bad = async (p: Promise<unknown>, re: RegExp) =>
      assert.rejects(p, (e: InstanceType<typeof OpenAI.APIError>) => {
        assert.equal(e.status, 400, e.message)
        assert.match(e.message, re)
        return true
      })
    await bad(openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(Buffer.from('just some text, not audio'), 'notes.txt') }), /unsupported audio format; this worker accepts wav, flac, ogg/)
    const webm = Buffer.concat([Buffer.from([0x1a, 0x45, 0xdf, 0xa3]), Buffer.alloc(64)])
    await bad(openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(webm, 'voice.webm') }), /unsupported audio format 'webm'/)
    await bad(openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(wav), 'speech.wav'), language: 'de' }), /transcribes 'en' only/)
    await bad(openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(fs.readFileSync(wav), 'speech.wav'), response_format: 'srt' }), /'response_format' must be one of json, text, verbose_json/)
    await bad(openai.audio.transcriptions.create({ model: 'stories260K', file: await toFile(fs.readFileSync(wav), 'speech.wav') }), /not served at \/v1\/audio\/transcriptions/)
    const res = await fetch(`${url}/v1/audio/transcriptions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: SPEECH_MODEL }) })
    assert.equal(res.status, 400)
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /multipart\/form-data/)
    assert.equal(chargedNano(), before)
  })

  it('refuses audio longer than the proxy reserved for, before any work, billing nothing', async () => {
    // 200 s of 100 Hz 8-bit samples in 20 kB: the proxy reserves for at most bytes / 500 = ~41 s.
    const long = wavFile({ rate: 100, bits: 8, dataBytes: 20_000 })
    const before = chargedNano()
    await assert.rejects(openai.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(long, 'long.wav') }), (e: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(e.status, 400)
      assert.match(e.message, /the audio is 200 s long; at most 41 s are accepted/)
      return true
    })
    assert.equal(chargedNano(), before)
  })

  it(`answers 413 for an upload over ${MAX_AUDIO_BODY_BYTES} bytes`, async () => {
    const form = new FormData()
    form.set('model', SPEECH_MODEL)
    form.set('file', new Blob([new Uint8Array(MAX_AUDIO_BODY_BYTES + 1)]), 'big.wav')
    const res = await fetch(`${url}/v1/audio/transcriptions`, { method: 'POST', body: form })
    assert.equal(res.status, 413)
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'request_too_large')
  })
})
