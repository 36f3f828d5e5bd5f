// Faults on real processes: the proxy killed -9 mid-answer. The client node must never present a cut-off answer as
// complete. Each role is its own process; the worker's openai backend talks to a FAKE upstream server.
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
let proxyCfg: string
let workerCfg: string
let clientCfg: string
let proxy: Proc
let worker: Proc
let client: Proc
const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>
const clientStats = () => getJson(`http://127.0.0.1:${base + 10000}/jsonstats`)

async function startProxy(): Promise<void> {
  proxy = cocoon(['proxy', '--config', proxyCfg])
  procs.push(proxy)
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`).catch(() => null))?.workers.connected === 1, 'the worker on the proxy', 60_000)
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 10000}/healthz`).catch(() => null))?.ok === true, 'the client on the proxy', 60_000)
}

before(async () => {
  dir = tmpDir('hardening')
  base = randomPortOffset()
  upstream = await startFakeUpstream({ chunks: 400, delayMs: 10 })
  const image = await simulatedImageHash('')
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: { proxy: [image], worker: [image], client: '*' } }
  const write = (name: string, cfg: object) => {
    const f = path.join(dir, `${name}.json`)
    fs.writeFileSync(f, JSON.stringify(cfg))
    return f
  }
  proxyCfg = write('proxy', { role: 'proxy', dataDir: path.join(dir, 'proxy'), tee: { kind: 'simulated' }, policy, stats: `127.0.0.1:${base + 11000}`, workerListen: `127.0.0.1:${base + 11001}`, clientListen: `127.0.0.1:${base + 11002}` })
  workerCfg = write('worker', {
    role: 'worker',
    dataDir: path.join(dir, 'worker'),
    tee: { kind: 'simulated' },
    policy,
    stats: `127.0.0.1:${base + 12000}`,
    proxies: [`127.0.0.1:${base + 11001}`],
    backend: { kind: 'openai', model: 'upstream-model', baseUrl: upstream.url },
  })
  worker = cocoon(['worker', '--config', workerCfg])
  procs.push(worker)
  clientCfg = write('client', { role: 'client', dataDir: path.join(dir, 'client'), policy, listen: `127.0.0.1:${base + 10000}`, proxies: [`127.0.0.1:${base + 11002}`] })
  client = cocoon(['client', '--config', clientCfg])
  procs.push(client)
  await startProxy()
  openai = new OpenAI({ baseURL: `http://127.0.0.1:${base + 10000}/v1`, apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGTERM')
  await Promise.all(procs.map((p) => p.exited))
  await upstream.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

test('the proxy killed -9 mid-stream: the app gets an error event, never a normal end, and the client counts it failed', async () => {
  const before = (await clientStats()).requests
  const stream = await openai.chat.completions.create({ model: 'upstream-model', messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 400 })
  let n = 0
  let sawUsage = false
  let sawFinish = false
  await assert.rejects(
    (async () => {
      for await (const c of stream) {
        if (c.usage) sawUsage = true
        if (c.choices[0]?.finish_reason) sawFinish = true
        if (++n === 5) proxy.proc.kill('SIGKILL')
      }
    })(),
    (e: any) => /cut off/i.test(e.message),
  )
  assert.ok(n >= 5 && n < 400, `${n} chunks`)
  assert.equal(sawUsage, false)
  assert.equal(sawFinish, false)
  await waitFor(async () => (await clientStats()).requests.failed === before.failed + 1, 'the client to count the request failed')
  const after = (await clientStats()).requests
  assert.equal(after.succeeded, before.succeeded, 'not counted as a success')
  await proxy.exited
  await startProxy()
})

test('the proxy killed -9 during a non-streamed request: the app gets a 502', async () => {
  const before = (await clientStats()).requests
  const t0 = Date.now()
  const pending = openai.chat.completions.create({ model: 'upstream-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 400 })
  // 400 chunks at 10 ms: the answer is still being generated when the proxy dies.
  await waitFor(() => upstream.started > 0 && Date.now() - t0 > 800, 'generation to be under way')
  proxy.proc.kill('SIGKILL')
  await assert.rejects(pending, (e: any) => e.status === 502 && typeof e.error?.message === 'string')
  await waitFor(async () => (await clientStats()).requests.failed === before.failed + 1, 'the client to count the request failed')
  assert.equal((await clientStats()).requests.succeeded, before.succeeded)
  await proxy.exited
  await startProxy()
  // And the network serves again.
  const ok = await openai.chat.completions.create({ model: 'upstream-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 })
  assert.equal(ok.usage?.completion_tokens, 3)
})

/** Reads one streamed answer as the app sees it: `complete` only if it ended without an error event or a broken connection. */
async function appStream(i: number, maxTokens: number): Promise<{ ended: 'complete' | 'error'; usage: boolean; done: boolean }> {
  try {
    const res = await fetch(`http://127.0.0.1:${base + 10000}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'upstream-model', messages: [{ role: 'user', content: `story ${i}` }], stream: true, max_tokens: maxTokens }),
    })
    if (res.status !== 200) {
      if (process.env.CRASH_PROBE) console.log('status', res.status, (await res.text()).slice(0, 200))
      else await res.text()
      return { ended: 'error', usage: false, done: false }
    }
    const events = (await res.text()).split('\n\n').map((e) => e.trim()).filter((e) => e.startsWith('data: ')).map((e) => e.slice(6))
    const error = events.some((e) => e.startsWith('{"error"'))
    if (process.env.CRASH_PROBE && error) console.log('error event', events.find((e) => e.startsWith('{"error"'))!.slice(0, 200))
    const usage = events.some((e) => e !== '[DONE]' && !e.startsWith('{"error"') && JSON.parse(e).usage != null)
    return { ended: error ? 'error' : 'complete', usage, done: events.at(-1) === '[DONE]' }
  } catch (e) {
    if (process.env.CRASH_PROBE) console.log('threw', (e as Error).message)
    return { ended: 'error', usage: false, done: false }
  }
}

async function restart(role: 'proxy' | 'worker' | 'client'): Promise<void> {
  if (role === 'proxy') return startProxy()
  if (role === 'worker') {
    worker = cocoon(['worker', '--config', workerCfg])
    procs.push(worker)
  } else {
    client = cocoon(['client', '--config', clientCfg])
    procs.push(client)
  }
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 11000}/jsonstats`).catch(() => null))?.workers.connected === 1, 'the worker on the proxy', 60_000)
  await waitFor(async () => (await getJson(`http://127.0.0.1:${base + 10000}/healthz`).catch(() => null))?.ok === true, 'the client on the proxy', 60_000).catch(async (err) => {
    const health = await getJson(`http://127.0.0.1:${base + 10000}/healthz`).catch((e) => e.message)
    const logs = client.output().split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).slice(-6).join('\n')
    throw new Error(`${err.message} after restarting the ${role}: ${JSON.stringify(health)}\n${logs}`)
  })
}

test('kill -9 at random points of the proxy, the worker and the client during streaming: no app stream ever ends as complete without its final usage', async () => {
  // Quick: one round, the proxy killed. Long: 18 rounds over all three roles, each restarted. (Known failure on
  // the long run today: after a crash a client refuses the restarted proxy, "receipt N is missing from the
  // log", because the receipt log does not yet survive a kill -9; reported to the receipts work.)
  const rounds = process.env.COCOON_FAULTS_LONG ? 18 : 1
  const seen = { complete: 0, error: 0 }
  for (let round = 0; round < rounds; round++) {
    const role = (['proxy', 'worker', 'client'] as const)[round % 3]
    // Some streams start before the kill and finish before it, some are cut, some start as it happens.
    const streams = Array.from({ length: 6 }, (_, i) => new Promise((r) => setTimeout(r, i * 150)).then(() => appStream(round * 10 + i, i % 2 ? 30 : 400)))
    // Late enough for the short streams (about 0.5 s each) to finish, early enough to cut the long ones (4 s).
    await new Promise((r) => setTimeout(r, 1_500 + Math.floor(Math.random() * 1_500)))
    const victim = role === 'proxy' ? proxy : role === 'worker' ? worker : client
    victim.proc.kill('SIGKILL')
    await victim.exited
    const results = await Promise.all(streams)
    for (const [i, r] of results.entries()) {
      seen[r.ended]++
      if (r.ended === 'complete') {
        assert.ok(r.usage, `round ${round} (${role} killed), stream ${i}: ended as complete without its final usage`)
        assert.ok(r.done, `round ${round} (${role} killed), stream ${i}: ended as complete without [DONE]`)
      }
    }
    if (round < rounds - 1) await restart(role)
  }
  assert.ok(seen.error > 0, `the kills cut some streams: ${JSON.stringify(seen)}`)
  assert.ok(seen.complete > 0, `short streams finish between kills: ${JSON.stringify(seen)}`)
})

