// `cocoon devnet --proxies 2`, through real processes: both proxies register themselves on the devnet root
// (no owner action), the client and the worker discover them there, devnet.json lists every child's PID with its role and ports, the official openai SDK
// gets answers, and with one proxy killed -9 requests keep succeeding through the other.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { Address } from '@ton/core'
import { cocoon, isAlive, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { createChain } from '../../src/ton/chain-client/chain.ts'
import { offeredProxies } from '../../src/ton/contracts/root.ts'

let devnet: Proc
let dir: string
let state: DevnetState
let openai: OpenAI
let model: string

const readState = () => JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8')) as DevnetState
const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>

before(async () => {
  dir = tmpDir('proxies')
  devnet = cocoon(['devnet', '--proxies', '2', '--workers', '1', '--no-speech', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 240_000)
  state = readState()
  model = state.model.id
  openai = new OpenAI({ baseURL: m[1], apiKey: 'unused', maxRetries: 0 })
})

after(async () => {
  if (devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  if (process.env.COCOON_KEEP_TEST_DIRS) console.log(`kept ${dir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
})

const ask = () => openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8 })

test('devnet.json lists every child with its PID, role and ports', () => {
  const names = Object.keys(state.children).sort()
  assert.deepEqual(names, ['chain', 'client', 'proxy', 'proxy-1', 'worker-0'])
  for (const [name, c] of Object.entries(state.children)) {
    assert.ok(c.pid && isAlive(c.pid), `${name} pid ${c.pid}`)
    assert.equal(c.role, name.split('-')[0])
  }
  assert.equal(state.ports.proxies.length, 2)
  assert.deepEqual(state.children['proxy-1'].ports, { stats: state.ports.proxies[1].stats, workers: state.ports.proxies[1].workers, clients: state.ports.proxies[1].clients })
  assert.notEqual(state.ports.proxies[0].clients, state.ports.proxies[1].clients)
})

test('both proxies registered themselves on the root and are offered', async () => {
  const chain = createChain({ endpoint: state.chain!.endpoint })
  const rs = await chain.getRootState(Address.parse(state.chain!.root!))
  const offered = [...offeredProxies(rs).values()]
  assert.equal(offered.length, 2)
  assert.deepEqual(offered.map((p) => p.clientPort).sort(), state.ports.proxies.map((p) => p.clients).sort())
  for (const p of offered) {
    assert.equal(p.stakeNano, rs.params.minProxyStakeNano)
    assert.ok(!p.owner.equals(rs.owner), 'registered from the proxy wallet, not by the root owner')
  }
})

test('answers through the openai SDK, and keeps answering with one proxy killed -9', async () => {
  await waitFor(async () => (await getJson(`http://127.0.0.1:${state.ports.client}/jsonstats`)).proxies.filter((p: any) => p.state === 'connected').length === 2, 'client connected to both proxies', 60_000)
  await waitFor(async () => {
    const all = await Promise.all(state.ports.proxies.map((p) => getJson(`http://127.0.0.1:${p.stats}/jsonstats`).catch(() => null)))
    return all.every((s) => s?.workers?.connected === 1)
  }, 'the worker connected to both proxies', 60_000)
  for (let i = 0; i < 3; i++) assert.ok((await ask()).choices[0].message.content)

  const victim = readState().children.proxy.pid!
  process.kill(victim, 'SIGKILL')
  await waitFor(async () => !isAlive(victim), 'the proxy to die', 10_000)
  for (let i = 0; i < 5; i++) {
    const r = await ask()
    assert.ok(r.choices[0].message.content, `request ${i} after the kill`)
  }
  // The client saw the dead proxy fail and backed it off; /jsonstats and `cocoon client proxies` say so.
  const killed = `127.0.0.1:${state.ports.proxies[0].clients}`
  const survivor = `127.0.0.1:${state.ports.proxies[1].clients}`
  const clientStats = () => getJson(`http://127.0.0.1:${state.ports.client}/jsonstats`)
  // The client counts a dead link against the proxy on its next rebalance (every 2 s).
  await waitFor(async () => (await clientStats()).proxies.find((p: any) => p.target === killed)?.score?.lastFailure != null, 'the killed proxy counted as failed', 15_000)
  const stats = await clientStats()
  assert.equal(stats.proxySessions.max, 2)
  const row = (t: string) => stats.proxies.find((p: any) => p.target === t)
  assert.equal(row(killed).source, 'root')
  assert.ok(row(killed).score.lastFailure, JSON.stringify(row(killed)))
  assert.ok(row(survivor).score.successRate > row(killed).score.successRate)
  // Each proxy's price per token, as it billed the answers it gave, is one term of its score.
  const rs = await createChain({ endpoint: state.chain!.endpoint }).getRootState(Address.parse(state.chain!.root!))
  assert.equal(row(survivor).score.pricePerTokenNano, rs.params.pricePerTokenNano.toString())
  const cli = cocoon(['client', 'proxies', '--config', state.children.client.config, '--json'])
  const { code } = await cli.exited
  assert.equal(code, 0, cli.output())
  const listed = JSON.parse(cli.output().trim().split('\n').pop()!)
  assert.equal(listed.source, 'client')
  assert.equal(listed.proxies[0].target, survivor, 'the healthy proxy ranks first')
  assert.ok(listed.proxies.every((p: any) => typeof p.score === 'number'))
})
