// End to end through real child processes: `cocoon devnet` with the real model, driven by the unchanged official OpenAI SDK.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { cocoon, isAlive, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { DEFAULT_NODE_HEAP_MIB } from '../../src/core/node-heap.ts'

let devnet: Proc
let dir: string
let openai: OpenAI
let state: DevnetState

before(async () => {
  dir = tmpDir('devnet')
  devnet = cocoon(['devnet', '--workers', '2', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 120_000)
  state = JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
  openai = new OpenAI({ baseURL: m[1], apiKey: 'not-needed-locally', maxRetries: 0 })
})

after(async () => {
  if (devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

test('devnet prints the base URL and a ready-to-paste curl line', () => {
  assert.match(devnet.output(), /curl http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions -H 'content-type: application\/json' -d '\{"model":"stories260K"/)
})

test('the devnet starts proxy, client and worker nodes with the V8 heap limit, and the chain without it', () => {
  const cmdline = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  for (const [name, c] of Object.entries(state.children)) {
    const args = cmdline(c.pid!)
    if (name === 'chain') assert.ok(!args.some((a) => a.startsWith('--max-old-space-size')), `chain: ${args.join(' ')}`)
    else assert.ok(args.includes(`--max-old-space-size=${DEFAULT_NODE_HEAP_MIB}`), `${name}: ${args.join(' ')}`)
  }
})

test('the SDK lists the models under their documented ids, with the endpoints each serves', async () => {
  const list = await openai.models.list()
  const endpoints = (m: unknown) => (m as { endpoints: string[] }).endpoints
  assert.deepEqual(
    list.data.map((m) => [m.id, endpoints(m)]),
    [
      ['pocketsphinx-en-us', ['/v1/audio/transcriptions']],
      ['stories260K', ['/v1/chat/completions', '/v1/completions', '/v1/embeddings']],
    ],
  )
})

test('chat completion, not streamed, with exact usage', async () => {
  const r = await openai.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 24, temperature: 0 })
  assert.equal(r.object, 'chat.completion')
  assert.equal(r.choices[0].message.role, 'assistant')
  assert.ok(r.choices[0].message.content!.length > 0)
  assert.ok(r.usage!.prompt_tokens > 0)
  assert.ok(r.usage!.completion_tokens > 0 && r.usage!.completion_tokens <= 24)
  assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens)
})

test('chat completion, streamed, ends with a usage chunk', async () => {
  const stream = await openai.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } })
  let text = ''
  let usage: OpenAI.CompletionUsage | undefined | null
  let chunks = 0
  for await (const c of stream) {
    chunks++
    text += c.choices[0]?.delta?.content ?? ''
    if (c.usage) usage = c.usage
  }
  assert.ok(chunks > 2)
  assert.ok(text.length > 0)
  assert.equal(usage?.completion_tokens, 16)
})

test('text completion, streamed and not, greedy and deterministic', async () => {
  const ask = () => openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20, temperature: 0 })
  const a = await ask()
  const b = await ask()
  assert.match(a.choices[0].text, /^, there was a little girl named Lily/)
  assert.equal(a.choices[0].text, b.choices[0].text)
  assert.equal(a.usage!.completion_tokens, 20)
  assert.equal(a.choices[0].finish_reason, 'length')
  const stream = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stream: true })
  let text = ''
  for await (const c of stream) text += c.choices[0]?.text ?? ''
  assert.equal(text, a.choices[0].text, 'streamed and non-streamed greedy output agree')
})

test('errors reach the SDK as OpenAI errors', async () => {
  await assert.rejects(openai.completions.create({ model: 'no-such-model', prompt: 'x' }), (e: any) => e.status === 404 && e.code === 'model_not_found')
  await assert.rejects(openai.chat.completions.create({ model: 'stories260K', messages: [] }), (e: any) => e.status === 400 && /messages/.test(e.message))
})

test('with one of two workers killed, requests keep succeeding and devnet reports the death', async () => {
  const pid = state.children['worker-0'].pid!
  process.kill(pid, 'SIGKILL')
  for (let i = 0; i < 6; i++) {
    const r = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 })
    assert.match(r.choices[0].text, /^, there was/)
  }
  await devnet.waitForOutput(new RegExp(`worker-0 \\(pid ${pid}\\) died: signal SIGKILL`), 10_000)
})

test('Ctrl-C stops the whole devnet cleanly', async () => {
  const pids = Object.values(JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8')).children as Record<string, { pid: number }>).map((c) => c.pid)
  devnet.proc.kill('SIGINT')
  const { code } = await devnet.exited
  assert.equal(code, 0)
  await waitFor(() => pids.every((p) => !isAlive(p)), 'all children to exit', 10_000)
})
