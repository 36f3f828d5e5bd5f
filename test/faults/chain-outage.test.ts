// Defect 11: the chain goes away. Real processes (`cocoon devnet`): the devnet chain is frozen with SIGSTOP during
// a run; every node is killed and restarted while it is away; a run started with the chain already away is served;
// /healthz and /jsonstats say the nodes run without the chain; after SIGCONT they settle, to the nanoTON.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { Address } from '@ton/core'
import { cocoon, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { createChain } from '../../src/ton/chain-client/chain.ts'
import { loadWalletKey, nodeWalletContract } from '../../src/ton/chain-client/wallet.ts'
import { contractCodes } from '../../src/ton/contracts/compile.ts'
import { clientContract, type ProxyChannel } from '../../src/payments/channels.ts'

const LONG = !!process.env.COCOON_FAULTS_LONG
let devnet: Proc
let dir: string
let state: DevnetState
let openai: OpenAI
let chainPid = 0
const getJson = async (url: string, init?: RequestInit) => (await fetch(url, init)).json() as Promise<any>
const pidOf = (name: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8')) as DevnetState).children[name].pid!
const urls = () => ({
  client: state.baseUrl.replace(/\/v1$/, ''),
  proxy: `http://127.0.0.1:${state.ports.proxyStats}`,
  worker: `http://127.0.0.1:${state.ports.workers[0]}`,
})

before(async () => {
  dir = tmpDir('chain-outage')
  devnet = cocoon(['devnet', '--workers', '1', '--no-speech', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)/, 180_000)
  state = JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
  openai = new OpenAI({ baseURL: m[1], apiKey: 'unused', maxRetries: 0 })
  chainPid = pidOf('chain')
})

after(async () => {
  if (chainPid) {
    try {
      process.kill(chainPid, 'SIGCONT')
    } catch {}
  }
  if (devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  if (process.env.COCOON_KEEP_TEST_DIRS) console.log(`kept ${dir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
})

/** One completion; a streamed one must end with its usage. Returns its cost in nanoTON. */
async function ask(stream: boolean): Promise<number> {
  if (!stream) return ((await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 6, temperature: 0 })).usage as any).cost
  const s = await openai.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 6, temperature: 0, stream: true })
  let cost: number | undefined
  for await (const c of s) if ((c as any).usage) cost = (c as any).usage.cost
  assert.ok(cost !== undefined && cost > 0, 'a streamed answer ends with its usage')
  return cost
}

async function allWithoutChain(expected: boolean, timeoutMs = 40_000): Promise<void> {
  for (const [name, base] of Object.entries(urls())) {
    await waitFor(
      async () => {
        const [h, s] = await Promise.all([getJson(`${base}/healthz`).catch(() => null), getJson(`${base}/jsonstats`).catch(() => null)])
        return h?.withoutChain === expected && s?.withoutChain === expected && (expected ? h.ok === true && s.chainReachability.reachable === false : true)
      },
      `the ${name} to say withoutChain=${expected} on /healthz and /jsonstats`,
      timeoutMs,
    )
  }
}

async function serving(): Promise<void> {
  await waitFor(async () => (await getJson(`${urls().client}/healthz`).catch(() => null))?.ok === true, 'the client to reach the proxy', 90_000)
  await waitFor(async () => (await getJson(`${urls().proxy}/jsonstats`).catch(() => null))?.workers?.connected === 1, 'the worker on the proxy', 90_000)
}

const clientWallet = () => nodeWalletContract(loadWalletKey(path.join(dir, 'client', 'wallet.key')).publicKey).address

async function clientOnChain() {
  const chain = createChain({ endpoint: state.chain!.endpoint })
  const root = Address.parse(state.chain!.root!)
  const ch: ProxyChannel = {
    root,
    owner: nodeWalletContract(loadWalletKey(path.join(dir, 'proxy', 'wallet.key')).publicKey).address,
    paymentKey: loadWalletKey(path.join(dir, 'proxy', 'payment.key')).publicKey,
    params: (await chain.getRootState(root)).params,
    codes: await contractCodes(),
  }
  return chain.open(clientContract(ch, clientWallet())).getState()
}

/** A settlement round now, with the proxy's admin token from its data folder, as an operator would ask for it. */
async function settle(): Promise<any> {
  const token = fs.readFileSync(path.join(dir, 'proxy', 'admin.token'), 'utf8').trim()
  for (;;) {
    const r = await fetch(`${urls().proxy}/admin/settle`, { method: 'POST', headers: { 'x-cocoon-admin-token': token } })
    if (r.status !== 429) return r.json()
    await new Promise((res) => setTimeout(res, Number(r.headers.get('retry-after') ?? 1) * 1000))
  }
}

test('funded clients are served while the chain is unreachable, across a restart of every node, and everything settles when it returns', async () => {
  const startCharged = BigInt((await getJson(`${urls().proxy}/jsonstats`)).money.chargedNano)
  let spent = 0n
  for (let i = 0; i < 3; i++) spent += BigInt(await ask(i % 2 === 0))
  await allWithoutChain(false)

  // 1. The chain freezes during a run: no request fails.
  let stopped = false
  const run = (async () => {
    let n = 0
    while (!stopped || n < 6) {
      spent += BigInt(await ask(n % 2 === 0))
      n++
      if (n === 3) {
        process.kill(chainPid, 'SIGSTOP')
        stopped = true
      }
    }
    return n
  })()
  const served = await run
  assert.ok(served >= 6)
  await allWithoutChain(true)
  for (let i = 0; i < 3; i++) spent += BigInt(await ask(i % 2 === 1))

  // 2. Every node is killed and comes back while the chain is still away; each serves again without it.
  for (const name of ['proxy', 'worker-0', 'client', ...(LONG ? ['proxy', 'client', 'worker-0'] : [])]) {
    const pid = pidOf(name)
    process.kill(pid, 'SIGKILL')
    await waitFor(() => pidOf(name) !== pid, `the devnet to restart the ${name}`, 30_000)
    await serving()
    // 3. A run that starts with the chain already away.
    for (let i = 0; i < 3; i++) spent += BigInt(await ask(i % 2 === 0))
  }
  await allWithoutChain(true)
  const during = await getJson(`${urls().proxy}/jsonstats`)
  assert.equal(BigInt(during.money.chargedNano) - startCharged, spent, 'every answer during the outage was billed, exactly')

  // 4. The chain returns: the nodes say so, and the proxy settles everything it billed meanwhile.
  process.kill(chainPid, 'SIGCONT')
  await allWithoutChain(false, 90_000)
  await waitFor(async () => (await getJson(`${urls().proxy}/jsonstats`))?.serving?.ok === true, 'the proxy to serve with settlement connected', 60_000)
  const r = await settle()
  assert.ok(!r.error, JSON.stringify(r))
  const after = await getJson(`${urls().proxy}/jsonstats`)
  const row = after.money.clients.find((c: any) => c.account === clientWallet().toRawString())
  assert.equal((await clientOnChain()).tokensCharged, BigInt(row.tokens), 'the client contract is charged exactly what the ledger holds, outage included')
  assert.equal(row.voucheredTokens, row.tokens)
  assert.ok((await ask(true)) > 0, 'and serving goes on')
})
