// Each role as its own real process from a config file; a worker killed mid-stream and a cancelled request.
// The workers use the `openai` backend against a FAKE upstream server (this test is about the protocol, not the model).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { cocoon, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts'
import { waitFor } from '../helpers/network.ts'
import { simulatedImageHash } from '../../src/tee/simulated.ts'

const procs: Proc[] = []
let dir: string
let upstream: FakeUpstream
let openai: OpenAI
let base: number
const workerStats = (i: number) => `http://127.0.0.1:${base + 12000 + 10 * i}/jsonstats`
const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>

before(async () => {
  dir = tmpDir('roles')
  base = randomPortOffset()
  upstream = await startFakeUpstream({ chunks: 400, delayMs: 10 })
  const image = await simulatedImageHash('')
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: { proxy: [image], worker: [image], client: '*' } }
  const write = (name: string, cfg: object) => {
    const f = path.join(dir, `${name}.json`)
    fs.writeFileSync(f, JSON.stringify(cfg))
    return f
  }
  const proxyCfg = write('proxy', { role: 'proxy', dataDir: path.join(dir, 'proxy'), tee: { kind: 'simulated' }, policy, stats: `127.0.0.1:${base + 11000}`, workerListen: `127.0.0.1:${base + 11001}`, clientListen: `127.0.0.1:${base + 11002}` })
  procs.push(cocoon(['proxy', '--config', proxyCfg]))
  for (const i of [0, 1]) {
    const cfg = write(`worker-${i}`, {
      role: 'worker',
      dataDir: path.join(dir, `worker-${i}`),
      tee: { kind: 'simulated' },
      policy,
      stats: `127.0.0.1:${base + 12000 + 10 * i}`,
      proxies: [`127.0.0.1:${base + 11001}`],
      backend: { kind: 'openai', model: 'upstream-model', baseUrl: upstream.url },
    })
    procs.push(cocoon(['worker', '--config', cfg]))
  }
  const clientCfg = write('client', { role: 'client', dataDir: path.join(dir, 'client'), policy, listen: `127.0.0.1:${base + 10000}`, proxies: [`127.0.0.1:${base + 11002}`] })
  procs.push(cocoon(['client', '--config', clientCfg]))
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`).catch(() => null))?.workers.connected === 2, 'both workers on the proxy', 60_000)
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 10000}/healthz`).catch(() => null))?.ok === true, 'the client', 60_000)
  openai = new OpenAI({ baseURL: `http://127.0.0.1:${base + 10000}/v1`, apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGTERM')
  await Promise.all(procs.map((p) => p.exited))
  await upstream.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

test('a role refuses a bad config with a message naming the field', async () => {
  const f = path.join(dir, 'bad.json')
  fs.writeFileSync(f, JSON.stringify({ role: 'worker', policy: { acceptKinds: ['simulated'], imageHashes: {} }, proxies: ['nowhere'], backend: { kind: 'llama', model: 'x' } }))
  const p = cocoon(['worker', '--config', f])
  const { code } = await p.exited
  assert.equal(code, 1)
  assert.match(p.output(), /proxies\[0\].*host:port/)
})

test('cancelling a streamed request stops the generation on the worker', async () => {
  const before = await Promise.all([0, 1].map((i) => getJson(workerStats(i))))
  const stream = await openai.chat.completions.create({ model: 'upstream-model', messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 400 })
  let n = 0
  // Leaving the loop early makes the SDK abort the HTTP request: the app went away.
  for await (const _ of stream) if (++n === 3) break
  assert.equal(n, 3)
  await waitFor(async () => {
    const now = await Promise.all([0, 1].map((i) => getJson(workerStats(i))))
    return now.reduce((s, w) => s + w.requests.cancelled, 0) === before.reduce((s, w) => s + w.requests.cancelled, 0) + 1
  }, 'a worker to count the cancellation', 10_000)
  await waitFor(() => upstream.cancelled === 1, 'the upstream generation to be stopped', 10_000)
})

test('a worker killed mid-stream gives the app an error, not a hang', async () => {
  const stream = await openai.completions.create({ model: 'upstream-model', prompt: 'x', stream: true, max_tokens: 400 })
  let n = 0
  const t0 = Date.now()
  await assert.rejects(
    (async () => {
      for await (const _ of stream) {
        if (++n === 3) {
          const stats = await Promise.all([0, 1].map((i) => getJson(workerStats(i))))
          const busy = stats.findIndex((s) => s.activeRequests > 0)
          assert.ok(busy >= 0, 'one worker is serving the stream')
          procs[1 + busy].proc.kill('SIGKILL')
        }
      }
    })(),
    (e: any) => /cut off|mid-answer|without signed usage/i.test(e.message),
  )
  assert.ok(n >= 3 && n < 400)
  assert.ok(Date.now() - t0 < 10_000)
  // The surviving worker still serves.
  const r = await openai.completions.create({ model: 'upstream-model', prompt: 'x', max_tokens: 5 })
  assert.equal(r.choices[0].text, 'w0 w1 w2 w3 w4 ')
  assert.equal(r.usage?.completion_tokens, 5)
})
