// The Chain seam: toncenter errors become one ChainError, transient failures are retried, the
// rate limit spaces requests, and the devnet chain is read through the same code as a real network.
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Address } from '@ton/core'
import {
  chainOptionsFromEnv,
  createChain,
  devnetBaseUrl,
  resolveEndpoint,
} from '../../src/ton/chain-client/chain.ts'
import { TONCENTER_MAINNET_ENDPOINT, TONCENTER_TESTNET_ENDPOINT } from '../../src/ton/chain-client/constants.ts'
import { ChainError, RootMismatchError } from '../../src/ton/chain-client/errors.ts'
import { startDevnet, type Devnet } from './helpers.ts'

type Reply = { status: number; body: unknown; headers?: Record<string, string> }

/** A toncenter stand-in answering from a script, recording the methods it was asked. */
async function fakeToncenter(script: (method: string, n: number) => Reply) {
  const calls: Array<{ method: string; apiKey?: string; at: number }> = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const method = (JSON.parse(body) as { method: string }).method
      calls.push({ method, apiKey: req.headers['x-api-key'] as string | undefined, at: Date.now() })
      const r = script(method, calls.length)
      res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers })
      res.end(JSON.stringify(r.body))
    })
  })
  let connections = 0
  server.on('connection', () => connections++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    endpoint: `http://127.0.0.1:${port}/api/v2/jsonRPC`,
    calls,
    /** TCP connections accepted so far. */
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/** A loopback port nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const s = http.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

const ok = (result: unknown): Reply => ({ status: 200, body: { ok: true, result, id: '1', jsonrpc: '2.0' } })
const fail = (code: number, error: string, headers?: Record<string, string>): Reply => ({ status: code, body: { ok: false, error, code }, headers })

describe('chain endpoint configuration', () => {
  it('resolves network names and bare devnet URLs to JSON-RPC endpoints', () => {
    assert.equal(resolveEndpoint('mainnet'), TONCENTER_MAINNET_ENDPOINT)
    assert.equal(resolveEndpoint('testnet'), TONCENTER_TESTNET_ENDPOINT)
    assert.equal(resolveEndpoint('http://127.0.0.1:10090'), 'http://127.0.0.1:10090/api/v2/jsonRPC')
    assert.equal(devnetBaseUrl('http://127.0.0.1:10090/api/v2/jsonRPC'), 'http://127.0.0.1:10090')
    assert.throws(() => resolveEndpoint('not a url'), ChainError)
    assert.throws(() => resolveEndpoint('http://127.0.0.1:10080'), /port 10080 is on the Fetch standard's list of blocked ports/)
  })

  it('reads the endpoint and API key from the environment, explicit flags first', () => {
    assert.equal(chainOptionsFromEnv({}), undefined)
    assert.deepEqual(chainOptionsFromEnv({ COCOON_CHAIN_ENDPOINT: 'testnet', COCOON_CHAIN_API_KEY: 'k1' }), {
      endpoint: TONCENTER_TESTNET_ENDPOINT,
      apiKey: 'k1',
    })
    assert.equal(chainOptionsFromEnv({ COCOON_CHAIN_ENDPOINT: 'testnet' }, { endpoint: 'mainnet' })?.endpoint, TONCENTER_MAINNET_ENDPOINT)
    assert.throws(() => chainOptionsFromEnv({ COCOON_CHAIN_ENDPOINT: 'testnet', COCOON_CHAIN_API_KEY_FILE: '/nonexistent/key' }), /API key file/)
  })
})

describe('chain transport', () => {
  it('fails with a ChainError naming the endpoint when nothing listens there', async () => {
    const port = await freePort()
    const chain = createChain({ endpoint: `http://127.0.0.1:${port}/api/v2/jsonRPC`, retries: 1 })
    await assert.rejects(chain.now(), (err: ChainError) => {
      assert.equal(err.name, 'ChainError')
      assert.equal(err.transient, true)
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}.*ECONNREFUSED.*2 attempts`))
      return true
    })
    // Calls that go through TonClient fail the same way.
    await assert.rejects(chain.getBalance(new Address(0, Buffer.alloc(32))), { name: 'ChainError' })
  })

  it('times out an attempt that gets no answer, naming the limit, and aborts at once on its signal', async () => {
    const server = http.createServer(() => {}) // takes the request, never answers
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v2/jsonRPC`
      const chain = createChain({ endpoint, retries: 0, timeoutMs: 300 })
      const t0 = Date.now()
      await assert.rejects(chain.now(), (err: ChainError) => err.transient && /no answer within 300 ms/.test(err.message))
      assert.ok(Date.now() - t0 < 5_000)
      const ac = new AbortController()
      const slow = createChain({ endpoint, retries: 0, timeoutMs: 60_000 })
      const call = slow.now({ signal: ac.signal })
      setTimeout(() => ac.abort(new Error('stopped by the caller')), 100)
      await assert.rejects(call, /stopped by the caller/)
    } finally {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })

  it('keeps its connection alive: calls one after another reuse one socket', async () => {
    const fake = await fakeToncenter(() => ok({ sync_utime: 1 }))
    try {
      const chain = createChain({ endpoint: fake.endpoint })
      for (let i = 0; i < 5; i++) await chain.now()
      assert.equal(fake.calls.length, 5)
      assert.equal(fake.connections(), 1)
    } finally {
      await fake.close()
    }
  })

  it('retries 5xx and 429 (honouring Retry-After), then succeeds', async () => {
    const fake = await fakeToncenter((_m, n) =>
      n === 1 ? fail(503, 'busy') : n === 2 ? fail(429, 'Ratelimit exceed', { 'retry-after': '0' }) : ok({ sync_utime: 1_700_000_123 }),
    )
    try {
      const chain = createChain({ endpoint: fake.endpoint })
      assert.equal(await chain.now(), 1_700_000_123)
      assert.equal(fake.calls.length, 3)
    } finally {
      await fake.close()
    }
  })

  it('gives up after the retries with the last error and its code', async () => {
    const fake = await fakeToncenter(() => fail(502, 'bad gateway'))
    try {
      const chain = createChain({ endpoint: fake.endpoint, retries: 2 })
      await assert.rejects(chain.now(), (err: ChainError) => err.code === 502 && err.transient && /bad gateway \(after 3 attempts\)/.test(err.message))
      assert.equal(fake.calls.length, 3)
    } finally {
      await fake.close()
    }
  })

  it('does not retry a rejected external message or a client error', async () => {
    const fake = await fakeToncenter((m) =>
      m === 'sendBoc' ? fail(500, 'LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted') : fail(416, 'Incorrect address'),
    )
    try {
      const chain = createChain({ endpoint: fake.endpoint })
      await assert.rejects(chain.client.sendFile(Buffer.from('x')), (err: ChainError) => err.code === 500 && err.method === 'sendBoc' && !err.transient)
      await assert.rejects(chain.now(), (err: ChainError) => err.code === 416 && /Incorrect address/.test(err.message))
      assert.equal(fake.calls.length, 2)
    } finally {
      await fake.close()
    }
  })

  it('spaces requests to the rate limit and sends the API key as X-API-Key', async () => {
    const fake = await fakeToncenter(() => ok({ sync_utime: 1 }))
    try {
      const chain = createChain({ endpoint: fake.endpoint, apiKey: 'secret-key', rateLimitRps: 10 })
      await Promise.all([chain.now(), chain.now(), chain.now()])
      const gaps = fake.calls.slice(1).map((c, i) => c.at - fake.calls[i].at)
      assert.ok(gaps.every((g) => g >= 90), `gaps ${gaps.join(', ')} ms`)
      assert.ok(fake.calls.every((c) => c.apiKey === 'secret-key'))
    } finally {
      await fake.close()
    }
  })
})

describe('chain over the devnet', () => {
  let net: Devnet
  before(async () => {
    net = await startDevnet()
  })
  after(() => net.close())

  it('reads chain time from the devnet clock', async () => {
    net.server.clock.set(2_000_000_000)
    assert.equal(await net.chain.now(), 2_000_000_000)
    net.server.clock.follow()
  })

  it('reads balances and deployment state', async () => {
    const { wallet } = await net.wallet('reader', '3')
    assert.equal(await net.chain.getBalance(wallet.address), 3_000_000_000n)
    assert.equal(await net.chain.isDeployed(wallet.address), false)
  })

  it('turns the devnet’s non-200 replies into ChainError with toncenter’s code', async () => {
    await assert.rejects(net.chain.client.sendFile(Buffer.from('not a boc')), (err: ChainError) => {
      assert.equal(err.name, 'ChainError')
      assert.equal(err.code, 500)
      assert.equal(err.method, 'sendBoc')
      assert.match(err.message, /failed to parse external message/)
      return true
    })
  })

  it('says when no root is deployed at an address', async () => {
    await assert.rejects(net.chain.getRootState(new Address(0, Buffer.alloc(32, 9))), RootMismatchError)
  })
})
