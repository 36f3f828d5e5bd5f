// Spec: end-to-end encryption with real processes and the real tiny model. The proxy is blind: a test hook
// (COCOON_TEST_TAP_FILE, tests only) records every byte the proxy reads from or writes to its client and
// worker HTTP/2 streams, and neither the prompt's canary nor any 16-byte window of the answer is in it.
// The same check on a client with E2EE off finds the canary: the check can fail.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { cocoon, MODELS_DIR, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import { simulatedImageHash } from '../../src/tee/simulated.ts'

const procs: Proc[] = []
let dir: string
let base: number
let tapFile: string
let on: OpenAI
let off: OpenAI
const MODEL = 'stories260K'
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
  for (const [i, e2ee] of [[0, 'required'], [1, 'off']] as const) {
    procs.push(cocoon(['client', '--config', write(`client-${i}`, { role: 'client', dataDir: path.join(dir, `client-${i}`), policy, listen: `127.0.0.1:${base + 10000 + 5 * i}`, proxies: [`127.0.0.1:${base + 11002}`], e2ee })], env))
  }
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`).catch(() => null))?.workers.connected === 1, 'the worker on the proxy', 120_000)
  for (const i of [0, 1]) await waitFor(async () => (await getJson(`${clientUrl(i)}/healthz`).catch(() => null))?.ok === true, `client ${i}`, 60_000)
  on = new OpenAI({ baseURL: `${clientUrl(0)}/v1`, apiKey: 'unused', maxRetries: 0 })
  off = new OpenAI({ baseURL: `${clientUrl(1)}/v1`, apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGTERM')
  await Promise.all(procs.map((p) => p.exited))
  fs.rmSync(dir, { recursive: true, force: true })
})

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
