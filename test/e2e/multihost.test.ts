// A real multi-host network (issue 14): every node in its own Linux network namespace, as a separate host on a
// /24 behind a bridge: the devnet chain, 2 proxies that register themselves on the root (`cocoon proxy register`,
// from their own wallets, no owner action), 3 workers and a client that discover the proxies on the root. The
// official openai SDK talks to the client node over the bridge (with an API key, as a remote app does); the proxy
// serving it is killed -9, and requests keep succeeding through the other. Skips itself where namespaces cannot be
// created (not root, no iproute2, EPERM). Every command here is the one docs/operations.md ("Several hosts") gives.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { cocoon, isAlive, MODELS_DIR, tmpDir, type Proc } from '../helpers/procs.ts'
import { createHosts, NetnsUnavailableError, type Hosts } from '../helpers/netns.ts'
import { waitFor } from '../helpers/network.ts'
import { resolveModel } from '../../src/inference/index.ts'
import { simulatedImageHash } from '../../src/tee/index.ts'

const HOSTS = ['chain', 'proxy-1', 'proxy-2', 'worker-1', 'worker-2', 'worker-3', 'client']
const PROXIES = ['proxy-1', 'proxy-2']
const WORKERS = ['worker-1', 'worker-2', 'worker-3']
// Each host has its own network stack, so every node uses the default ports without colliding with anything.
const CHAIN_PORT = 10090
const CLIENT_PORT = 10000
const PROXY_PORTS = { stats: 11000, workers: 11001, clients: 11002 }

let skip: string | undefined
let hosts: Hosts | undefined
let dir: string
let model: string
let openai: OpenAI
const nodes = new Map<string, Proc>()
const env = { COCOON_LOG_LEVEL: 'warn' }

const getJson = async (url: string) => (await fetch(url, { signal: AbortSignal.timeout(10_000) })).json() as Promise<any>
const proxyStats = (p: string) => getJson(`http://${hosts!.addr(p)}:${PROXY_PORTS.stats}/jsonstats`)
const clientStats = () => getJson(`http://${hosts!.addr('client')}:${CLIENT_PORT}/jsonstats`)

/** Runs a one-shot `cocoon` command on a host and returns its last stdout line; fails the test on a non-zero exit. */
async function run(host: string, args: string[]): Promise<string> {
  const p = cocoon(args, env, { netns: hosts!.ns(host) })
  const { code } = await p.exited
  assert.equal(code, 0, `cocoon ${args.join(' ')} on ${host}:\n${p.output()}`)
  return p.output().trim().split('\n').pop()!
}

function start(host: string, args: string[]): Proc {
  const p = cocoon(args, env, { netns: hosts!.ns(host) })
  nodes.set(host, p)
  return p
}

function writeConfig(host: string, cfg: Record<string, unknown>): string {
  const file = path.join(dir, host, `${host.split('-')[0]}.json`)
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2))
  return file
}

before(async () => {
  try {
    hosts = createHosts(HOSTS)
  } catch (err) {
    if (!(err instanceof NetnsUnavailableError)) throw err
    skip = `${err.message}; the multi-host test needs root and iproute2 (ip netns)`
    return
  }
  dir = tmpDir('multihost')
  for (const h of HOSTS) fs.mkdirSync(path.join(dir, h), { recursive: true, mode: 0o700 })
  const modelFile = path.join(MODELS_DIR, 'stories260K.gguf')
  const resolved = await resolveModel(modelFile)
  model = resolved.id
  // What the guide tells the root's owner to allow: the image hash `cocoon attest image` prints, and the model file's SHA-256.
  const image = await run('chain', ['attest', 'image'])
  assert.equal(image, await simulatedImageHash(''))
  assert.equal(resolved.sha256, crypto.createHash('sha256').update(fs.readFileSync(modelFile)).digest('hex'))

  // The chain host: the devnet chain, reachable from every host.
  start('chain', ['chain', '--host', '0.0.0.0', '--port', String(CHAIN_PORT), '--dir', path.join(dir, 'chain', 'state')])
  const endpoint = `http://${hosts.addr('chain')}:${CHAIN_PORT}/api/v2/jsonRPC`
  await waitFor(async () => (await getJson(`http://${hosts!.addr('chain')}:${CHAIN_PORT}/healthz`).catch(() => null))?.ok === true, 'the chain', 60_000)

  // Every host funds its own wallet from the devnet faucet; the owner (on the chain host) deploys the root and
  // allows this build's image for proxies and workers, and the model.
  const ownerKey = path.join(dir, 'chain', 'owner.key')
  const walletOf = (h: string) => (h === 'chain' ? ownerKey : path.join(dir, h, 'wallet.key'))
  const amount = (h: string) => (h === 'chain' ? '100' : h.startsWith('proxy') ? '20' : h === 'client' ? '20' : '5')
  await Promise.all(HOSTS.map((h) => run(h, ['wallet', 'faucet', '--key', walletOf(h), '--endpoint', endpoint, '--amount', amount(h)])))
  const deployed = JSON.parse(await run('chain', ['root', 'deploy', '--wallet-key', ownerKey, '--endpoint', endpoint, '--json']))
  const root: string = deployed.address
  assert.ok(root, JSON.stringify(deployed))
  const owner = ['--wallet-key', ownerKey, '--endpoint', endpoint, '--root', root]
  await run('chain', ['root', 'allow-image', '--role', 'proxy', image, ...owner])
  await run('chain', ['root', 'allow-image', '--role', 'worker', image, ...owner])
  await run('chain', ['root', 'allow-model', resolved.sha256, ...owner])

  // The wallet is <dataDir>/wallet.key, where each host's faucet call above created it.
  const chainFor = (extra: Record<string, unknown>) => ({ endpoint, root, policyRefreshSec: 2, ...extra })
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: {} }

  // Proxy hosts: listen on every address, register themselves with the address others reach them at.
  const proxyConfigs = PROXIES.map((p) =>
    writeConfig(p, {
      role: 'proxy',
      dataDir: path.join(dir, p),
      tee: { kind: 'simulated' },
      policy,
      chain: chainFor({ settleIntervalSec: 5, chargeThresholdNano: '10000000' }),
      stats: `${hosts!.addr(p)}:${PROXY_PORTS.stats}`,
      workerListen: `0.0.0.0:${PROXY_PORTS.workers}`,
      clientListen: `0.0.0.0:${PROXY_PORTS.clients}`,
    }),
  )
  await Promise.all(PROXIES.map((p, i) => run(p, ['proxy', 'register', '--config', proxyConfigs[i], '--host', hosts!.addr(p)])))
  const shown = JSON.parse(await run('chain', ['root', 'show', '--json', '--endpoint', endpoint, '--root', root]))
  assert.equal(shown.proxies.filter((p: any) => p.offered).length, 2, JSON.stringify(shown.proxies))
  PROXIES.forEach((p, i) => start(p, ['proxy', '--config', proxyConfigs[i]]))

  // Worker hosts: no proxies named; they serve every proxy the root offers.
  for (const w of WORKERS) {
    const cfg = writeConfig(w, {
      role: 'worker',
      dataDir: path.join(dir, w),
      tee: { kind: 'simulated' },
      policy,
      chain: chainFor({ payoutThresholdNano: '10000000' }),
      backend: { kind: 'llama', model: resolved.path, modelId: model, threads: 1, parallel: 1 },
    })
    start(w, ['worker', '--config', cfg])
  }

  // The client host: no proxies named; it keeps sessions to the best two the root offers. It listens on its
  // host address, so API keys are on: the app gets one.
  const clientConfig = writeConfig('client', {
    role: 'client',
    dataDir: path.join(dir, 'client'),
    tee: { kind: 'none' },
    policy,
    // One client contract per proxy it uses, within a budget: exactly the two deposits.
    chain: chainFor({ depositNano: '2000000000', topUpBelowNano: '500000000', topUpNano: '1000000000', fundingBudgetNano: '4000000000' }),
    listen: `${hosts.addr('client')}:${CLIENT_PORT}`,
  })
  const key = JSON.parse(await run('client', ['client', 'keys', 'create', '--config', clientConfig, '--name', 'sdk', '--json'])).key
  start('client', ['client', '--config', clientConfig])
  openai = new OpenAI({ baseURL: `http://${hosts.addr('client')}:${CLIENT_PORT}/v1`, apiKey: key, maxRetries: 0, timeout: 60_000 })

  for (const p of PROXIES) await waitFor(async () => (await proxyStats(p).catch(() => null))?.workers?.connected === WORKERS.length, `the 3 workers on ${p}`, 120_000)
  await waitFor(async () => (await getJson(`http://${hosts!.addr('client')}:${CLIENT_PORT}/healthz`).catch(() => null))?.ok === true, 'the client ready (proxy, worker, funded)', 120_000)
  await waitFor(async () => (await clientStats()).proxies.filter((p: any) => p.state === 'connected').length === 2, 'the client connected to both proxies', 60_000)
})

after(async () => {
  for (const p of nodes.values()) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGTERM')
  const killer = setTimeout(() => nodes.forEach((p) => p.proc.exitCode === null && p.proc.signalCode === null && p.proc.kill('SIGKILL')), 10_000)
  await Promise.all([...nodes.values()].map((p) => p.exited))
  clearTimeout(killer)
  hosts?.destroy()
  if (dir) {
    if (process.env.COCOON_KEEP_TEST_DIRS) console.log(`kept ${dir}`)
    else fs.rmSync(dir, { recursive: true, force: true })
  }
})

const ask = () => openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8 })

test('the network spans hosts: each proxy registered itself, and the workers and the client found both on the root', async (t) => {
  if (skip) return t.skip(skip)
  const stats = await clientStats()
  const targets = stats.proxies.map((p: any) => p.target).sort()
  assert.deepEqual(targets, PROXIES.map((p) => `${hosts!.addr(p)}:${PROXY_PORTS.clients}`).sort())
  assert.ok(stats.proxies.every((p: any) => p.source === 'root'), 'the client names no proxy in its config')
  // It funded a client contract with each proxy, within its budget.
  await waitFor(async () => (await clientStats()).proxies.every((p: any) => p.balanceNano === '2000000000'), 'a funded client contract per proxy', 30_000)
  const funding = (await clientStats()).funding
  assert.equal(funding.spentNano, '4000000000')
  assert.equal(funding.remainingNano, '0')
  assert.equal(funding.exhausted, false)
  assert.equal(Object.keys(funding.byProxy).length, 2)
  for (const p of PROXIES) {
    const s = await proxyStats(p)
    // The workers dialled in from their own hosts.
    const from = s.workers.list.map((w: any) => String(w.remote).replace(/:\d+$/, '')).sort()
    assert.deepEqual(from, WORKERS.map((w) => hosts!.addr(w)).sort())
  }
})

test('the openai SDK gets answers across hosts, and keeps getting them with the serving proxy killed -9', async (t) => {
  if (skip) return t.skip(skip)
  for (let i = 0; i < 3; i++) assert.ok((await ask()).choices[0].message.content, `request ${i}`)
  const before = await clientStats()
  const serving = before.proxies.filter((p: any) => p.requests > 0).sort((a: any, b: any) => b.requests - a.requests)[0]
  assert.ok(serving, JSON.stringify(before.proxies))
  const victimHost = PROXIES.find((p) => serving.target === `${hosts!.addr(p)}:${PROXY_PORTS.clients}`)!
  const survivorHost = PROXIES.find((p) => p !== victimHost)!
  const survivor = `${hosts!.addr(survivorHost)}:${PROXY_PORTS.clients}`
  const survivorBefore = before.proxies.find((p: any) => p.target === survivor).requests

  const victim = nodes.get(victimHost)!
  victim.proc.kill('SIGKILL')
  await victim.exited
  assert.ok(!isAlive(victim.proc.pid!))
  for (let i = 0; i < 5; i++) {
    const r = await ask()
    assert.ok(r.choices[0].message.content, `request ${i} after the kill`)
  }
  const after = await clientStats()
  assert.ok(after.proxies.find((p: any) => p.target === survivor).requests >= survivorBefore + 5, 'the survivor served the requests after the kill')
  // Every answer came with a valid receipt (worker-signed, naming its proxy): no proxy was taken for a cheat.
  assert.equal(after.receipts.invalid, 0)
  assert.equal(after.proxies.find((p: any) => p.target === survivor).score.lastFailure, null)
  // The client counts the dead link against the killed proxy on its next rebalance.
  await waitFor(async () => (await clientStats()).proxies.find((p: any) => p.target === serving.target)?.score?.lastFailure != null, 'the killed proxy counted as failed', 15_000)
})
