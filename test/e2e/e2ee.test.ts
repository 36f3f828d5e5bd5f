// Spec: end-to-end encryption with real processes and the real tiny model. The proxy is blind: a test hook
// (COCOON_TEST_TAP_FILE, tests only) records every byte the proxy reads from or writes to its client and
// worker HTTP/2 streams, and neither the prompt's canary nor any 16-byte window of the answer is in it.
// The same check on a client with E2EE off finds the canary: the check can fail.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI, { toFile } from 'openai'
import { cocoon, MODELS_DIR, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import { MAX_WORD_ERROR_RATE, SPOKEN_SENTENCE, speak, wordErrorRate } from '../helpers/speech.ts'
import { simulatedImageHash } from '../../src/tee/simulated.ts'
import { DEFAULT_POCKETSPHINX_MODEL_DIR } from '../../src/inference/pocketsphinx.ts'
import { HEADERS } from '../../src/net/protocol.ts'

const procs: Proc[] = []
let dir: string
let base: number
let tapFile: string
let on: OpenAI
let off: OpenAI
const MODEL = 'stories260K'
const SPEECH_MODEL = 'pocketsphinx-en-us'
/** espeak-ng speech (a WAV file), uploaded for transcriptions. */
let wav: Buffer
const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>
const clientUrl = (i: number) => `http://127.0.0.1:${base + 10000 + 5 * i}`

before(async () => {
  dir = tmpDir('e2ee')
  base = randomPortOffset()
  tapFile = path.join(dir, 'proxy-tap.bin')
  const image = await simulatedImageHash('')
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: { proxy: [image], worker: [image], client: '*' } }
  const write = (name: string, cfg: object) => {
    const f = path.join(dir, `${name}.json`)
    fs.writeFileSync(f, JSON.stringify(cfg))
    return f
  }
  const env = { COCOON_LOG_LEVEL: 'warn' }
  procs.push(
    cocoon(['proxy', '--config', write('proxy', { role: 'proxy', dataDir: path.join(dir, 'proxy'), tee: { kind: 'simulated' }, policy, stats: `127.0.0.1:${base + 11000}`, workerListen: `127.0.0.1:${base + 11001}`, clientListen: `127.0.0.1:${base + 11002}` })], {
      ...env,
      COCOON_TEST_TAP_FILE: tapFile,
    }),
  )
  const model = path.join(MODELS_DIR, 'stories260K.gguf')
  procs.push(cocoon(['worker', '--config', write('worker', { role: 'worker', dataDir: path.join(dir, 'worker'), tee: { kind: 'simulated' }, policy, stats: `127.0.0.1:${base + 12000}`, proxies: [`127.0.0.1:${base + 11001}`], backend: { kind: 'llama', model, threads: 1, parallel: 2 } })], env))
  // A speech worker (real PocketSphinx) for the transcription cases.
  procs.push(cocoon(['worker', '--config', write('worker-speech', { role: 'worker', dataDir: path.join(dir, 'worker-speech'), tee: { kind: 'simulated' }, policy, stats: `127.0.0.1:${base + 12005}`, proxies: [`127.0.0.1:${base + 11001}`], backend: { kind: 'pocketsphinx', model: DEFAULT_POCKETSPHINX_MODEL_DIR, modelId: SPEECH_MODEL, parallel: 1 } })], env))
  wav = fs.readFileSync(speak(dir))
  for (const [i, e2ee] of [[0, 'required'], [1, 'off']] as const) {
    procs.push(cocoon(['client', '--config', write(`client-${i}`, { role: 'client', dataDir: path.join(dir, `client-${i}`), policy, listen: `127.0.0.1:${base + 10000 + 5 * i}`, proxies: [`127.0.0.1:${base + 11002}`], e2ee })], env))
  }
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`).catch(() => null))?.workers.connected === 2, 'the two workers on the proxy', 120_000)
  for (const i of [0, 1]) await waitFor(async () => (await getJson(`${clientUrl(i)}/healthz`).catch(() => null))?.ok === true, `client ${i}`, 60_000)
  on = new OpenAI({ baseURL: `${clientUrl(0)}/v1`, apiKey: 'unused', maxRetries: 0 })
  off = new OpenAI({ baseURL: `${clientUrl(1)}/v1`, apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGTERM')
  await Promise.all(procs.map((p) => p.exited))
  fs.rmSync(dir, { recursive: true, force: true })
})

/** Every 16-byte window of `bytes` that the tapped bytes contain (each window looked up in a set of the tap's windows). */
function leakedBinaryWindows(tap: Buffer, bytes: Buffer): number {
  const seen = new Set<string>()
  for (let i = 0; i + 16 <= tap.length; i++) seen.add(tap.toString('latin1', i, i + 16))
  let n = 0
  for (let i = 0; i + 16 <= bytes.length; i++) if (seen.has(bytes.toString('latin1', i, i + 16))) n++
  return n
}

/** Every 16-byte window of `text` (UTF-8) that the tapped bytes contain. */
function leakedWindows(tap: Buffer, text: string): string[] {
  const b = Buffer.from(text, 'utf8')
  const found: string[] = []
  for (let i = 0; i + 16 <= b.length; i++) if (tap.includes(b.subarray(i, i + 16))) found.push(b.subarray(i, i + 16).toString())
  return found
}

async function streamText(client: OpenAI, prompt: string): Promise<{ text: string; usage: any }> {
  const s = await client.completions.create({ model: MODEL, prompt, max_tokens: 24, temperature: 0, stream: true })
  let text = ''
  let usage: any
  for await (const c of s) {
    text += c.choices[0]?.text ?? ''
    if (c.usage) usage = c.usage
  }
  return { text, usage }
}

test('the proxy is blind: no canary and no 16-byte window of any answer in what it read or wrote (E2EE on)', async () => {
  const canary = `canary-${crypto.randomBytes(8).toString('hex')}`
  fs.truncateSync(tapFile, 0)
  const answers: string[] = []
  const chat = await on.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `${canary} Once upon a time` }], max_tokens: 24, temperature: 0 })
  answers.push(chat.choices[0].message.content ?? '')
  const streamed = await streamText(on, `${canary} The little dog`)
  answers.push(streamed.text)
  const tap = fs.readFileSync(tapFile)
  assert.ok(tap.length > 1000, `the tap recorded the traffic (${tap.length} bytes)`)
  assert.equal(tap.includes(Buffer.from(canary)), false, 'the canary is not in what the proxy saw')
  assert.equal(tap.includes(Buffer.from(HEADERS.cacheScope)), false, 'the cache scope (which app asked) is sealed too')
  for (const a of answers) {
    assert.ok(Buffer.byteLength(a) >= 16, `answer long enough to check: ${JSON.stringify(a)}`)
    assert.deepEqual(leakedWindows(tap, a), [], 'no window of the answer is in what the proxy saw')
  }
  const stats = await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`)
  assert.ok(stats.e2ee.requests.on >= 2)
})

test('the same check with E2EE off finds the canary and the answer: the blind-proxy check can fail', async () => {
  const canary = `canary-${crypto.randomBytes(8).toString('hex')}`
  fs.truncateSync(tapFile, 0)
  const r = await off.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `${canary} Once upon a time` }], max_tokens: 24, temperature: 0 })
  const tap = fs.readFileSync(tapFile)
  assert.equal(tap.includes(Buffer.from(canary)), true)
  assert.equal(tap.includes(Buffer.from(HEADERS.cacheScope)), true, 'a plaintext request carries its cache scope in a hop header')
  assert.ok(leakedWindows(tap, r.choices[0].message.content ?? '').length > 0)
})

test('chat and completions, streamed and not, through the official openai SDK with E2EE on; greedy answers equal those without E2EE', async () => {
  const messages = [{ role: 'user' as const, content: 'Tell me a story' }]
  const chatOn = await on.chat.completions.create({ model: MODEL, messages, max_tokens: 20, temperature: 0 })
  const chatOff = await off.chat.completions.create({ model: MODEL, messages, max_tokens: 20, temperature: 0 })
  assert.ok(chatOn.choices[0].message.content)
  assert.equal(chatOn.choices[0].message.content, chatOff.choices[0].message.content)
  assert.ok((chatOn.usage as any).cost, 'usage carries the cost, written by the client node')
  assert.equal(chatOn.usage!.completion_tokens, chatOff.usage!.completion_tokens)

  const chatStream = await on.chat.completions.create({ model: MODEL, messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } })
  let streamed = ''
  let usage: any
  for await (const c of chatStream) {
    streamed += c.choices[0]?.delta?.content ?? ''
    if (c.usage) usage = c.usage
  }
  assert.equal(streamed, chatOn.choices[0].message.content)
  assert.ok(usage?.cost)

  const compOn = await on.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 })
  const compOff = await off.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 })
  assert.equal(compOn.choices[0].text, compOff.choices[0].text)
  const compStream = await streamText(on, 'Once upon a time')
  assert.equal(compStream.text.slice(0, compOn.choices[0].text.length), compOn.choices[0].text.slice(0, compStream.text.length))
  assert.ok(compStream.usage?.cost)

  // The mode is visible to the app and counted on both ends.
  const raw = await fetch(`${clientUrl(0)}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt: 'Hi', max_tokens: 2 }) })
  assert.equal(raw.headers.get('x-cocoon-e2ee'), 'on')
  await raw.arrayBuffer()
  const rawOff = await fetch(`${clientUrl(1)}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt: 'Hi', max_tokens: 2 }) })
  assert.equal(rawOff.headers.get('x-cocoon-e2ee'), 'off')
  await rawOff.arrayBuffer()
  const [c0, c1] = await Promise.all([getJson(`${clientUrl(0)}/jsonstats`), getJson(`${clientUrl(1)}/jsonstats`)])
  assert.equal(c0.e2ee.requests.off, 0)
  assert.ok(c0.e2ee.requests.on >= 5)
  assert.equal(c1.e2ee.requests.on, 0)
  assert.ok(c1.e2ee.requests.off >= 3)
  const w = await getJson(`http://127.0.0.1:${base + 12000}/jsonstats`)
  assert.equal(w.e2ee.key, true)
  assert.ok(w.e2ee.opened >= 5)
})

test('embeddings and transcriptions are sealed too: no canary, no 16-byte window of the audio file or of any answer in what the proxy saw', async () => {
  const canary = `canary-${crypto.randomBytes(8).toString('hex')}`
  fs.truncateSync(tapFile, 0)
  const emb = await on.embeddings.create({ model: MODEL, input: `${canary} Lily found a red ball`, encoding_format: 'float' }).withResponse()
  assert.equal(emb.response.headers.get('x-cocoon-e2ee'), 'on')
  assert.equal(emb.data.data[0].embedding.length, 64)
  assert.ok((emb.data.usage as any).cost, 'usage carries the cost, written by the client node')
  const tr = await on.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(wav, 'speech.wav') }).withResponse()
  assert.equal(tr.response.headers.get('x-cocoon-e2ee'), 'on')
  assert.ok(wordErrorRate(SPOKEN_SENTENCE, tr.data.text) <= MAX_WORD_ERROR_RATE, `heard "${tr.data.text}"`)
  assert.ok((tr.data as any).usage?.cost, 'usage carries the cost')
  const text = await on.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(wav, 'speech.wav'), response_format: 'text' }).withResponse()
  assert.equal(text.response.headers.get('content-type'), 'text/plain; charset=utf-8')
  assert.equal(String(text.data).trim(), tr.data.text)
  const tap = fs.readFileSync(tapFile)
  assert.ok(tap.length > wav.length, `the tap recorded the traffic (${tap.length} bytes)`)
  assert.equal(tap.includes(Buffer.from(canary)), false, 'the canary is not in what the proxy saw')
  assert.equal(tap.includes(Buffer.from(HEADERS.cacheScope)), false, 'the cache scope (which app asked) is sealed too')
  assert.equal(leakedBinaryWindows(tap, wav), 0, 'no 16-byte window of the uploaded audio is in what the proxy saw')
  assert.ok(Buffer.byteLength(tr.data.text) >= 16, `transcription long enough to check: ${JSON.stringify(tr.data.text)}`)
  assert.deepEqual(leakedWindows(tap, tr.data.text), [], 'no window of the transcription is in what the proxy saw')
  const vector = JSON.stringify(emb.data.data[0].embedding.slice(0, 4)).slice(1, -1)
  assert.equal(tap.includes(Buffer.from(vector)), false, 'the embedding vector is not in what the proxy saw')
  const [p, c] = await Promise.all([getJson(`http://127.0.0.1:${base + 11000}/jsonstats`), getJson(`${clientUrl(0)}/jsonstats`)])
  assert.ok(p.e2ee.requests.on >= 3)
  assert.equal(c.e2ee.requests.off, 0)
})

test('the same check with E2EE off finds the embeddings canary, the audio and its transcription: that check can fail too', async () => {
  const canary = `canary-${crypto.randomBytes(8).toString('hex')}`
  fs.truncateSync(tapFile, 0)
  const emb = await off.embeddings.create({ model: MODEL, input: `${canary} Lily found a red ball`, encoding_format: 'float' }).withResponse()
  assert.equal(emb.response.headers.get('x-cocoon-e2ee'), 'off')
  const tr = await off.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(wav, 'speech.wav') }).withResponse()
  assert.equal(tr.response.headers.get('x-cocoon-e2ee'), 'off')
  const tap = fs.readFileSync(tapFile)
  assert.equal(tap.includes(Buffer.from(canary)), true)
  assert.equal(tap.includes(Buffer.from(HEADERS.cacheScope)), true, 'a plaintext request carries its cache scope in a hop header')
  assert.ok(leakedBinaryWindows(tap, wav) > wav.length / 2, 'the audio is in what the proxy saw')
  assert.ok(leakedWindows(tap, tr.data.text).length > 0, 'the transcription is in what the proxy saw')
})

test('embeddings and transcriptions through the official openai SDK give the same results with E2EE on and off', async () => {
  const input = ['Once upon a time', 'The cat sat on the mat']
  const [eOn, eOff] = await Promise.all([on.embeddings.create({ model: MODEL, input, encoding_format: 'float' }), off.embeddings.create({ model: MODEL, input, encoding_format: 'float' })])
  assert.deepEqual(eOn.data.map((d) => d.embedding), eOff.data.map((d) => d.embedding))
  assert.equal(eOn.usage.prompt_tokens, eOff.usage.prompt_tokens)
  const b64 = await on.embeddings.create({ model: MODEL, input: input[0] })
  b64.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - eOn.data[0].embedding[i]) < 1e-6))
  const tOn = await on.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(wav, 'speech.wav'), response_format: 'verbose_json' })
  const tOff = await off.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(wav, 'speech.wav'), response_format: 'verbose_json' })
  assert.equal(tOn.text, tOff.text)
  assert.deepEqual(tOn.segments, tOff.segments)
  // A refusal after the worker opened the request reaches the app as the same clear error, sealed on the way.
  for (const c of [on, off]) {
    await assert.rejects(c.audio.transcriptions.create({ model: SPEECH_MODEL, file: await toFile(Buffer.from('just some text, not audio'), 'notes.txt') }), (e: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(e.status, 400)
      assert.match(e.message, /unsupported audio format/)
      return true
    })
  }
  const w = await getJson(`http://127.0.0.1:${base + 12005}/jsonstats`)
  assert.equal(w.e2ee.key, true)
  assert.ok(w.e2ee.opened >= 3, `the speech worker opened sealed transcriptions (${w.e2ee.opened})`)
})
