// API keys on the client node's OpenAI API, through the official openai SDK: 401 without a valid key when keys
// are on, 429 insufficient_quota naming the limit, 403 for a model the key may not use, revocation, and the
// per-request history with usage and cost. Real client, proxy and worker on loopback; FAKE inference backend.
import { test, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import OpenAI from 'openai'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import { tmpDir } from '../helpers/procs.ts'
import Database from 'better-sqlite3'
import { AppAccounts, ApiKeyQuotaError, REQUEST_HISTORY_MAX, REQUEST_TRIM_EVERY } from '../../src/client/apps.ts'
import { ReceiptStore } from '../../src/payments/receipts/store.ts'
import { APP_ERROR_BURST } from '../../src/client/client.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

async function network(required: boolean, backend = new FakeBackend({ chunks: 10 }), worker: { maxTokensCap?: number } = {}) {
  const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
  stops.push(() => apps.close())
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort], { options: worker })
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort], {
    deps: { apps: { admit: (auth, model, worstNano) => apps.admit(auth, model, required, worstNano), answered: (r) => apps.record(r) } },
  })
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  const sdk = (apiKey: string) => new OpenAI({ baseURL: `${c.url}/v1`, apiKey, maxRetries: 0 })
  return { apps, url: c.url, sdk, proxy: p.proxy }
}

const ask = (o: OpenAI, model = 'fake-model') => o.chat.completions.create({ model, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 10 })

describe('API keys switched on', () => {
  test('a request without a key, or with an unknown one, gets 401 in OpenAI’s error shape', async () => {
    const n = await network(true)
    const r = await fetch(`${n.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] }) })
    assert.equal(r.status, 401)
    const body = await r.json()
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'])
    assert.equal(body.error.code, 'invalid_api_key')
    await assert.rejects(ask(n.sdk('sk-cocoon-not-a-real-key')), (e: any) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key')
    assert.equal(n.apps.recent().length, 0, 'refused requests reach no proxy and cost nothing')
  })

  test('the SDK’s apiKey works until the key’s limit, then 429 insufficient_quota naming the limit; revoked, 401', async () => {
    const n = await network(true)
    const one = n.apps.createKey({ name: 'probe', limitNano: null })
    const first = await ask(n.sdk(one.key))
    const cost = BigInt((first.usage as any).cost)
    assert.ok(cost > 0n, 'off-chain prices still put a cost on each answer')
    // A limit of 2.5 answers: the third request is still admitted (spent < limit), the fourth is refused.
    const { key, info } = n.apps.createKey({ name: 'bot', limitNano: (cost * 5n) / 2n, period: 'day' })
    const sdk = n.sdk(key)
    let ok = 0
    let refused: any
    for (let i = 0; i < 10 && !refused; i++) {
      try {
        await ask(sdk)
        ok++
      } catch (e) {
        refused = e
      }
    }
    assert.equal(ok, 3)
    assert.ok(refused instanceof OpenAI.RateLimitError, String(refused))
    assert.equal(refused.status, 429)
    assert.equal(refused.code, 'insufficient_quota')
    assert.match(refused.message, /'bot' reached its spend limit of 0\.\d+ TON per day/)
    const listed = n.apps.listKeys().find((k) => k.id === info.id)!
    assert.equal(BigInt(listed.spentNano), cost * 3n)
    assert.equal(listed.requests, 3)
    const history = n.apps.recent(10, info.id)
    assert.equal(history.length, 3)
    assert.ok(history.every((h) => h.outcome === 'succeeded' && h.completionTokens === 10 && BigInt(h.costNano) === cost))

    n.apps.revokeKey('bot')
    await assert.rejects(ask(sdk), (e: any) => e.status === 401 && /revoked/.test(e.message))
  })

  test('requests in flight count against the limit: a key cannot open many at once and pay past it', async () => {
    // Answers that take a while, so the requests below are all in flight together.
    const n = await network(true, new FakeBackend({ chunks: 10, firstDelayMs: 400 }))
    const probe = n.apps.createKey({ name: 'probe', limitNano: null })
    const cost = BigInt(((await ask(n.sdk(probe.key))).usage as any).cost)
    // Room for two answers' actual cost, but less than two requests' worst case (a prompt as long as the body plus
    // 512 tokens, all 10 max_tokens): the first is admitted, and while it is in flight the others are refused.
    const { key } = n.apps.createKey({ name: 'greedy', limitNano: cost * 2n })
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => ask(n.sdk(key))))
    const ok = results.filter((r) => r.status === 'fulfilled').length
    const refused = results.filter((r) => r.status === 'rejected' && (r.reason as any).status === 429 && (r.reason as any).code === 'insufficient_quota')
    assert.equal(ok, 1, 'one request in flight holds its worst case, which fills the limit')
    assert.equal(refused.length, 5)
    assert.match((refused[0] as PromiseRejectedResult).reason.message, /in flight/)
    // Once answered, its hold is gone and only what it cost counts: the next request is admitted.
    await ask(n.sdk(key))
    const spent = BigInt(n.apps.listKeys().find((k) => k.name === 'greedy')!.spentNano)
    assert.equal(spent, cost * 2n)
    await assert.rejects(ask(n.sdk(key)), (e: any) => e.status === 429 && !/in flight/.test(e.message))
  })

  test('without max_tokens a request holds all of the largest cap among the model’s workers, as the proxy lists it', async () => {
    // The worker's operator raised its cap far past the default (1,024): a request without max_tokens may get that many.
    const n = await network(true, new FakeBackend({ chunks: 10, firstDelayMs: 400 }), { maxTokensCap: 200_000 })
    const probe = n.apps.createKey({ name: 'probe', limitNano: null })
    // No model list asked for first: the client node reads the caps from a proxy for the first request itself.
    const noMax = (o: OpenAI) => o.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hello there' }] })
    const cost = BigInt(((await noMax(n.sdk(probe.key))).usage as any).cost)
    // Room for 1,000 answers as they come out here, and for several requests' worst case at the default cap (about
    // 80 answers' worth each), but not for one at 200,000 tokens: one is admitted, and the others wait for it.
    const { key } = n.apps.createKey({ name: 'uncapped', limitNano: cost * 1000n })
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => noMax(n.sdk(key))))
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one request holds a worst case at the worker’s cap, which fills the limit')
    for (const r of results.filter((r) => r.status === 'rejected')) assert.ok((r as PromiseRejectedResult).reason.status === 429 && /in flight/.test((r as PromiseRejectedResult).reason.message))
    // A request that asks for few tokens holds only those.
    const few = await Promise.allSettled(Array.from({ length: 4 }, () => ask(n.sdk(key))))
    assert.equal(few.filter((r) => r.status === 'fulfilled').length, 4, 'max_tokens 10: four fit at once')
    // And one that asks for more than any worker makes holds only the cap: on the default worker, 10,000,000 is 1,024.
    const m = await network(true, new FakeBackend({ chunks: 10, firstDelayMs: 400 }))
    const { key: k2 } = m.apps.createKey({ name: 'asks-much', limitNano: cost * 1000n })
    const huge = (o: OpenAI) => o.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 10_000_000 })
    const both = await Promise.allSettled([huge(m.sdk(k2)), huge(m.sdk(k2))])
    assert.equal(both.filter((r) => r.status === 'fulfilled').length, 2, 'two fit at once at the default cap')
    const models = (await n.sdk(probe.key).models.list()).data as any[]
    assert.deepEqual(models.find((m) => m.id === 'fake-model').workers.map((w: any) => w.max_tokens), [200_000], 'the proxy lists each worker’s cap')
  })

  test('a model no proxy lists costs one read of the workers’ caps, not one per request', async () => {
    const n = await network(true)
    let reads = 0
    const models = n.proxy.models.bind(n.proxy)
    // A spy on the proxy's model list (the seam the client node reads the caps from).
    n.proxy.models = () => (reads++, models())
    const { key } = n.apps.createKey({ name: 'typo', limitNano: 10n ** 12n })
    // 404 or 503 from the proxy; after a few, 429 from the client node, which slows an app that keeps erring.
    for (let i = 0; i < 10; i++) await assert.rejects(ask(n.sdk(key), 'no-such-model'), (e: any) => e.status === 404 || e.status === 503 || e.status === 429)
    assert.equal(reads, 1, 'one read, then none for 5 s')
    // Another app (the one with the typo is slowed at the node by now).
    await ask(n.sdk(n.apps.createKey({ name: 'other' }).key))
    assert.equal(reads, 1, 'the read listed fake-model too: its cap is known')
  })

  test('one read of the workers’ caps covers every proxy: a model only a second proxy serves gets its cap too', async () => {
    const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
    stops.push(() => apps.close())
    const p1 = await startProxy()
    const p2 = await startProxy()
    stops.push(() => p1.proxy.stop(), () => p2.proxy.stop())
    const w1 = await startWorker(new FakeBackend({ chunks: 10 }), [p1.workerPort])
    // Only the second proxy has the model whose worker's cap is raised.
    const w2 = await startWorker(new FakeBackend({ modelId: 'big-model', chunks: 10, firstDelayMs: 400 }), [p2.workerPort], { options: { maxTokensCap: 200_000 } })
    stops.push(() => w1.stop(), () => w2.stop())
    await waitFor(() => (p1.proxy.stats() as any).workers.connected === 1 && (p2.proxy.stats() as any).workers.connected === 1, 'workers')
    const c = await startClient([p1.clientPort, p2.clientPort], {
      deps: { apps: { admit: (auth, model, worstNano) => apps.admit(auth, model, true, worstNano), answered: (r) => apps.record(r) } },
    })
    stops.push(() => c.client.stop())
    await waitFor(() => c.client.health().ok && (c.client.stats() as any).proxies.filter((p: any) => p.state === 'connected').length === 2, 'client')
    const sdk = (apiKey: string) => new OpenAI({ baseURL: `${c.url}/v1`, apiKey, maxRetries: 0 })
    // The second proxy ranks last (a slow round trip), so a read that stopped at the first proxy listing fake-model
    // would never ask it.
    for (let i = 0; i < 5; i++) c.client.scores.observeRtt(`127.0.0.1:${p2.clientPort}`, 500)
    const probe = apps.createKey({ name: 'probe', limitNano: null })
    // The first request reads the caps (for fake-model, which the first proxy lists); the requests for big-model
    // below come within TOKEN_CAP_RETRY_MS of it, so they get no read of their own: that one read must have listed
    // big-model at the second proxy.
    const cost = BigInt(((await ask(sdk(probe.key))).usage as any).cost)
    const noMax = (o: OpenAI) => o.chat.completions.create({ model: 'big-model', messages: [{ role: 'user', content: 'hello there' }] })
    const { key } = apps.createKey({ name: 'uncapped', limitNano: cost * 1000n })
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => noMax(sdk(key))))
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one request holds a worst case at big-model’s cap of 200,000, which fills the limit')
    for (const r of results.filter((r) => r.status === 'rejected')) assert.ok((r as PromiseRejectedResult).reason.status === 429 && /in flight/.test((r as PromiseRejectedResult).reason.message), String((r as PromiseRejectedResult).reason))
  })

  test('one app’s request_id never collides with another app’s at the same client node; an app’s own duplicate gets 409', async () => {
    // Answers that take a while, so the requests below are in flight together.
    const n = await network(true, new FakeBackend({ chunks: 10, firstDelayMs: 400 }))
    const a = n.apps.createKey({ name: 'app-a' })
    const b = n.apps.createKey({ name: 'app-b' })
    const withId = (o: OpenAI, id: string) => o.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 10, request_id: id } as any)
    // App b sends the id app a is using (guessed, or by chance) while a's request is in flight: both are served.
    const [ra, rb] = await Promise.allSettled([withId(n.sdk(a.key), 'order-1'), withId(n.sdk(b.key), 'order-1')])
    assert.equal(ra.status, 'fulfilled', String((ra as PromiseRejectedResult).reason))
    assert.equal(rb.status, 'fulfilled', String((rb as PromiseRejectedResult).reason))
    const ids = [(ra as PromiseFulfilledResult<any>).value.id, (rb as PromiseFulfilledResult<any>).value.id].sort()
    // The first keeps its id beyond the node; the other has a suffix of its own there.
    assert.equal(ids[0], 'chatcmpl-order-1')
    assert.match(ids[1], /^chatcmpl-order-1\.[0-9a-f]{12}$/)
    // Each app's history has its own id.
    assert.deepEqual(n.apps.recent(10, a.info.id).map((r) => r.id), ['order-1'])
    assert.deepEqual(n.apps.recent(10, b.info.id).map((r) => r.id), ['order-1'])
    // The same app sending its own id twice at once: the second is refused, as a proxy would refuse it.
    const own = await Promise.allSettled([withId(n.sdk(a.key), 'order-2'), withId(n.sdk(a.key), 'order-2')])
    assert.equal(own.filter((r) => r.status === 'fulfilled').length, 1)
    const refused = own.find((r) => r.status === 'rejected') as PromiseRejectedResult
    assert.equal(refused.reason.status, 409)
    assert.equal(refused.reason.code, 'duplicate_request_id')
    // Once it ended, the id is free again.
    await withId(n.sdk(a.key), 'order-2')
  })

  test('each app reads its own receipts only: another app’s receipt, with the salt that checks its answer, is not found', async () => {
    const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
    const receipts = new ReceiptStore(path.join(tmpDir('keys'), 'receipts.sqlite'))
    stops.push(() => apps.close(), () => receipts.close())
    const p = await startProxy()
    stops.push(() => p.proxy.stop())
    const w = await startWorker(new FakeBackend({ chunks: 3 }), [p.workerPort])
    stops.push(() => w.stop())
    await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
    // As the client node wires it with apiKeys on (src/node/run-client.ts).
    const c = await startClient([p.clientPort], {
      deps: {
        receipts,
        apps: { admit: (auth, model, worstNano) => apps.admit(auth, model, true, worstNano), answered: (r) => apps.record(r), mayRead: (auth) => ({ keyId: apps.keyOf(auth) }) },
      },
    })
    stops.push(() => c.client.stop())
    await waitFor(() => c.client.health().ok, 'client')
    const a = apps.createKey({ name: 'app-a' })
    const b = apps.createKey({ name: 'app-b', limitNano: 1n })
    const get = (p: string, key?: string) => fetch(`${c.url}${p}`, { headers: key ? { authorization: `Bearer ${key}` } : {} })
    const receiptOf = async (key: string) => {
      const r = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }) })
      assert.equal(r.status, 200)
      return ((await r.json()) as any).usage.receipt_id as string
    }
    const ra = await receiptOf(a.key)
    const rb = await receiptOf(b.key)
    // Each app sees its own receipt, with its salt.
    const own = await get(`/v1/receipts/${ra}`, a.key)
    assert.equal(own.status, 200)
    assert.equal(((await own.json()) as any).salt.length, 64)
    const listA = (await (await get('/v1/receipts?since=0', a.key)).json()) as any
    assert.deepEqual(listA.data.map((r: any) => r.id), [ra])
    // Not the other's: not found, as one that does not exist (b's limit is spent: it still reads its own).
    const other = await get(`/v1/receipts/${rb}`, a.key)
    assert.equal(other.status, 404)
    assert.equal(((await other.json()) as any).error.code, 'not_found')
    assert.equal((await get(`/v1/receipts/${ra}`, b.key)).status, 404)
    const listB = (await (await get('/v1/receipts?since=0', b.key)).json()) as any
    assert.deepEqual(listB.data.map((r: any) => r.id), [rb])
    // `cocoon receipt verify <id>` asks with the app's key from COCOON_API_KEY (never argv), and says so without it.
    const { runReceipt } = await import('../../src/cli/receipts.ts')
    const before = process.env.COCOON_API_KEY
    const quiet = { out: () => true, err: () => true }
    try {
      delete process.env.COCOON_API_KEY
      await assert.rejects(runReceipt(['verify', ra, '--client', c.url], quiet), /needs the API key of the app whose receipt this is: set COCOON_API_KEY/)
      process.env.COCOON_API_KEY = a.key
      let out = ''
      // No chain here: the checks on chain fail, but the receipt was read, with the salt its id derives from.
      await runReceipt(['verify', ra, '--client', c.url, '--chain', 'http://127.0.0.1:59999', '--json'], { out: (t) => ((out += t), true), err: () => true })
      const report = JSON.parse(out)
      assert.equal(report.id, ra)
      assert.ok(report.checks.find((x: any) => x.name === 'salt')?.ok, out)
      process.env.COCOON_API_KEY = b.key
      await assert.rejects(runReceipt(['verify', ra, '--client', c.url], quiet), /has no receipt/)
    } finally {
      if (before === undefined) delete process.env.COCOON_API_KEY
      else process.env.COCOON_API_KEY = before
    }
    // Without a key, or with a revoked one: 401.
    assert.equal((await get(`/v1/receipts/${ra}`)).status, 401)
    apps.revokeKey('app-a')
    assert.equal((await get(`/v1/receipts/${ra}`, a.key)).status, 401)
  })

  test('each app’s requests reach the worker in a cache scope of their own, sealed with E2EE and in a hop header without', async () => {
    for (const e2ee of ['required', 'off'] as const) {
      const backend = new FakeBackend({ chunks: 2 })
      const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
      stops.push(() => apps.close())
      const p = await startProxy()
      stops.push(() => p.proxy.stop())
      const w = await startWorker(backend, [p.workerPort])
      stops.push(() => w.stop())
      await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
      const c = await startClient([p.clientPort], { options: { e2ee }, deps: { apps: { admit: (auth, model, worstNano) => apps.admit(auth, model, true, worstNano), answered: (r) => apps.record(r) } } })
      stops.push(() => c.client.stop())
      await waitFor(() => c.client.health().ok, 'client')
      const a = apps.createKey({ name: 'app-a' })
      const b = apps.createKey({ name: 'app-b' })
      for (const k of [a.key, b.key, a.key]) {
        const r = await fetch(`${c.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }) })
        assert.equal(r.status, 200)
        assert.equal(r.headers.get('x-cocoon-e2ee'), e2ee === 'off' ? 'off' : 'on')
        await r.arrayBuffer()
      }
      const scopes = backend.seen.map((r) => r.cacheScope)
      assert.equal(scopes.length, 3)
      for (const s of scopes) assert.match(String(s), /^[0-9a-f]{32}$/, `e2ee ${e2ee}`)
      assert.equal(scopes[0], scopes[2], 'one app, one scope')
      assert.notEqual(scopes[0], scopes[1], 'two apps, two scopes')
    }
  })

  test('an app that keeps sending bad requests is slowed at its client node, and cannot have the proxy slow the other apps', async () => {
    const n = await network(true)
    const bad = n.apps.createKey({ name: 'bad-app' })
    const good = n.apps.createKey({ name: 'good-app' })
    const statuses: number[] = []
    let retryAfter: string | null = null
    for (let i = 0; i < 40; i++) {
      const r = await fetch(`${n.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${bad.key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }) })
      statuses.push(r.status)
      if (r.status === 429) retryAfter = r.headers.get('retry-after')
      await r.arrayBuffer()
    }
    assert.ok(statuses.filter((s) => s === 404).length <= APP_ERROR_BURST + 1, `only a few errors reached the proxy: ${statuses.join(',')}`)
    assert.ok(statuses.filter((s) => s === 429).length >= 30, `then the bad app is slowed at its node: ${statuses.join(',')}`)
    assert.ok(Number(retryAfter) >= 1, 'with Retry-After')
    // The other app is served throughout: the proxy never had to slow the node.
    for (let i = 0; i < 3; i++) assert.equal((await ask(n.sdk(good.key))).choices.length, 1)
    assert.equal((n.proxy.stats() as any).clients.rateLimited, 0, 'the proxy slowed nobody')
  })

  test('several apps sending bad requests together still leave the node served: once its budget at the proxy runs low, only apps without recent errors go on', async () => {
    const n = await network(true)
    const bad = Array.from({ length: 5 }, (_, i) => n.apps.createKey({ name: `bad-${i}` }))
    const good = n.apps.createKey({ name: 'good-app' })
    const statuses: number[] = []
    // Round after round, each bad app once: 5 x 5 errors would pass the proxy's burst of 20 for the node.
    for (let round = 0; round < 8; round++) {
      for (const k of bad) {
        const r = await fetch(`${n.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }) })
        statuses.push(r.status)
        await r.arrayBuffer()
      }
    }
    assert.ok(statuses.filter((s) => s === 404).length < 20, `fewer errors than the proxy's burst reached it: ${statuses.join(',')}`)
    assert.equal((await ask(n.sdk(good.key))).choices.length, 1, 'the app without errors is served')
    assert.equal((n.proxy.stats() as any).clients.rateLimited, 0, 'the proxy slowed nobody')
  })

  test('prefix affinity is per app: the same long prefix from two apps gives the proxy two unrelated prefix keys', async () => {
    const n = await network(true)
    // A spy on the proxy's admission (the seam that routes by the prefix key): which key each request came with.
    const admission = (n.proxy as any).admission
    const claim = admission.claim.bind(admission)
    const keys: Array<string | undefined> = []
    admission.claim = (o: any, signal: AbortSignal) => (keys.push(o.affinity?.prefixKey), claim(o, signal))
    const a = n.apps.createKey({ name: 'app-a' })
    const b = n.apps.createKey({ name: 'app-b' })
    const system = 'You are a careful assistant who answers briefly. '.repeat(8)
    const withPrefix = (k: string, q: string) => n.sdk(k).chat.completions.create({ model: 'fake-model', messages: [{ role: 'system', content: system }, { role: 'user', content: q }], max_tokens: 2 })
    await withPrefix(a.key, 'one')
    await withPrefix(a.key, 'two')
    await withPrefix(b.key, 'one')
    assert.equal(keys.length, 3)
    for (const k of keys) assert.match(String(k), /^[0-9a-f]{32}$/)
    assert.equal(keys[0], keys[1], 'one app, one key for its prefix')
    assert.notEqual(keys[0], keys[2], 'two apps, two keys for the same prefix')
  })

  test('a key limited to some models gets 403 for another', async () => {
    const n = await network(true)
    const { key } = n.apps.createKey({ name: 'only-other', models: ['some-other-model'] })
    await assert.rejects(ask(n.sdk(key)), (e: any) => e.status === 403 && e.code === 'model_not_allowed')
  })
})

describe('API keys off (a loopback client)', () => {
  test('any placeholder key works; a known key is still counted, streamed answers included', async () => {
    const n = await network(false)
    await ask(n.sdk('unused'))
    const { key, info } = n.apps.createKey({ name: 'counted' })
    const stream = await n.sdk(key).chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true })
    let usage: any
    for await (const c of stream) if (c.usage) usage = c.usage
    const mine = n.apps.recent(10, info.id)
    assert.equal(mine.length, 1)
    assert.equal(mine[0].stream, true)
    assert.equal(mine[0].costNano, String(usage.cost))
    assert.equal(mine[0].completionTokens, usage.completion_tokens)
    assert.equal(n.apps.recent(10).length, 2)
  })
})

describe('a key’s totals (AppAccounts alone, no network)', () => {
  const answered = (keyId: string | null, costNano: string, at?: number) => ({ id: 'r', model: 'm', keyId, status: 200, outcome: 'succeeded', promptTokens: 1, completionTokens: 1, costNano, latencyMs: 1, stream: false, ...(at !== undefined ? { at } : {}) })

  test('the spend limit holds past the history’s trim: the spend is not read back from the trimmed history', () => {
    const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
    stops.push(() => apps.close())
    const n = REQUEST_HISTORY_MAX + REQUEST_TRIM_EVERY + 100
    const { key, info } = apps.createKey({ name: 'busy', limitNano: BigInt(REQUEST_HISTORY_MAX + REQUEST_TRIM_EVERY), period: 'month' })
    for (let i = 0; i < n; i++) apps.record(answered(i % 2 === 0 ? info.id : null, '2'))
    // Half the requests were the key's, at 2 nanoTON each: n in all, over the limit. Before key_totals the spend was
    // summed from the history, which holds the last REQUEST_HISTORY_MAX requests only, so it read under the limit.
    const after = apps.listKeys()[0]
    assert.equal(after.spentNano, String(n))
    assert.equal(after.requests, n / 2)
    assert.ok(apps.recent(n).length <= REQUEST_HISTORY_MAX + REQUEST_TRIM_EVERY, 'the history is still trimmed')
    assert.ok(apps.recent(n).length >= REQUEST_HISTORY_MAX)
    assert.throws(() => apps.authorize(`Bearer ${key}`, 'm', true), (e: unknown) => e instanceof ApiKeyQuotaError)
  })

  test('a new period starts from zero; a request stamped in a past period counts only as a request', () => {
    let now = Date.UTC(2026, 11, 4, 23, 0)
    const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'), () => now)
    stops.push(() => apps.close())
    const { info } = apps.createKey({ name: 'daily', limitNano: 100n, period: 'day' })
    apps.record(answered(info.id, '40'))
    apps.record(answered(info.id, '30'))
    assert.equal(apps.listKeys()[0].spentNano, '70')
    now = Date.UTC(2026, 11, 5, 1, 0)
    assert.equal(apps.listKeys()[0].spentNano, '0', 'the next day')
    apps.record(answered(info.id, '5'))
    apps.record(answered(info.id, '7', Date.UTC(2026, 11, 4, 23, 30)))
    const k = apps.listKeys()[0]
    assert.equal(k.spentNano, '5')
    assert.equal(k.requests, 4)
  })

  test('admit() holds each request’s worst case until it is released, once', () => {
    const apps = new AppAccounts(path.join(tmpDir('keys'), 'apps.sqlite'))
    stops.push(() => apps.close())
    const { key, info } = apps.createKey({ name: 'held', limitNano: 250n })
    const auth = `Bearer ${key}`
    const a = apps.admit(auth, 'm', true, () => 100n)
    const b = apps.admit(auth, 'm', true, () => 100n)
    const c = apps.admit(auth, 'm', true, () => 100n)
    assert.equal(a.keyId, info.id)
    // 300 held against 250: refused, and the error says why.
    assert.throws(() => apps.admit(auth, 'm', true, () => 100n), (e: unknown) => e instanceof ApiKeyQuotaError && e.inFlightNano === 300n && /in flight/.test(e.message))
    b.release()
    b.release()
    // Released twice, freed once: 200 held, so one more is admitted (200 < 250) and the next refused (300).
    const d = apps.admit(auth, 'm', true, () => 100n)
    assert.throws(() => apps.admit(auth, 'm', true, () => 100n), ApiKeyQuotaError)
    // What an answer cost counts once it is recorded; its hold goes when released.
    apps.record(answered(info.id, '60'))
    a.release()
    c.release()
    d.release()
    assert.doesNotThrow(() => apps.admit(auth, 'm', true, () => 1000n).release())
    assert.equal(apps.admit(undefined, 'm', false, () => 100n).keyId, null, 'anonymous: nothing to hold')
    const free = apps.createKey({ name: 'unlimited', limitNano: null })
    for (let i = 0; i < 5; i++) apps.admit(`Bearer ${free.key}`, 'm', true, () => 10n ** 18n)
    assert.doesNotThrow(() => apps.admit(`Bearer ${free.key}`, 'm', true, () => 1n), 'a key without a limit holds nothing')
  })

  test('a file from before key_totals gets its totals counted once from its history', () => {
    const file = path.join(tmpDir('keys'), 'apps.sqlite')
    const first = new AppAccounts(file)
    const { info } = first.createKey({ name: 'old', limitNano: 1000n })
    for (let i = 0; i < 3; i++) first.record(answered(info.id, '11'))
    first.close()
    const raw = new Database(file)
    raw.exec('DROP TABLE key_totals')
    raw.close()
    const again = new AppAccounts(file)
    stops.push(() => again.close())
    const k = again.listKeys()[0]
    assert.equal(k.spentNano, '33')
    assert.equal(k.requests, 3)
    again.record(answered(info.id, '1'))
    assert.equal(again.listKeys()[0].spentNano, '34')
  })
})
