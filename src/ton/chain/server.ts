// HTTP front of the devnet chain: toncenter v2 JSON-RPC for TonClient, the devnet faucet and clock, health and stats.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Address } from '@ton/core'
import type { Blockchain } from '@ton/sandbox'
import { createLogger, type Logger } from '../../core/log.ts'
import type { DevnetClock } from './clock.ts'
import {
  DEFAULT_CHAIN_HOST,
  DEFAULT_CHAIN_PORT,
  FAUCET_PATH,
  HEALTH_PATH,
  JSON_RPC_PATH,
  MAX_REQUEST_BODY_BYTES,
  STATS_PATH,
  TIME_PATH,
} from './constants.ts'
import { DevnetChain, type DevnetChainOptions } from './devnet.ts'
import { InvalidParamsError, MalformedRequestError, PayloadTooLargeError, RouteNotFoundError, chainErrorStatus } from './errors.ts'
import { callToncenterMethod, parseAddress } from './toncenter.ts'

export interface DevnetChainServerOptions extends DevnetChainOptions {
  /** TCP port; 0 picks a free one. Default DEFAULT_CHAIN_PORT (10090). */
  port?: number
  /** Interface to bind. Default 127.0.0.1: the devnet has no authentication (anyone reaching it can mint TON). */
  host?: string
  /** Default: JSON lines on stderr. */
  log?: Logger
}

export interface DevnetChainServer {
  /** Base URL, e.g. http://127.0.0.1:10090. */
  url: string
  /** The toncenter JSON-RPC endpoint to give TonClient: `${url}/api/v2/jsonRPC`. */
  endpoint: string
  port: number
  /** The live sandbox, for tests. Prefer `chain` for anything that should be indexed and persisted. */
  blockchain: Blockchain
  chain: DevnetChain
  /** Chain time; tests freeze or advance it here (setting blockchain.now directly is overwritten on the next request). */
  clock: DevnetClock
  /** Stops serving, then persists state and a compacted transaction index. */
  close(): Promise<void>
}

type Json = Record<string, unknown>

function sendJson(res: http.ServerResponse, status: number, body: unknown, extraHeaders: Record<string, string> = {}): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...extraHeaders })
  res.end(text)
}

/** Reads the request body, failing with PayloadTooLargeError past `limitBytes` without buffering the rest. */
function readBody(req: http.IncomingMessage, limitBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limitBytes) {
    req.resume()
    return Promise.reject(new PayloadTooLargeError(limitBytes))
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (chunk: Buffer) => {
      if (failed) return
      size += chunk.length
      if (size > limitBytes) {
        failed = true
        reject(new PayloadTooLargeError(limitBytes))
        return
      }
      parts.push(chunk)
    })
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(parts, size))
    })
    req.on('error', (err) => {
      if (!failed) reject(err)
      failed = true
    })
  })
}

function parseJsonObject(buf: Buffer): Json {
  if (buf.length === 0) throw new MalformedRequestError('request body is empty; expected a JSON object')
  let v: unknown
  try {
    v = JSON.parse(buf.toString('utf8'))
  } catch (err) {
    throw new MalformedRequestError(`request body is not valid JSON: ${(err as Error).message}`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new MalformedRequestError('request body must be a JSON object')
  return v as Json
}

/** nanoTON given as a decimal string or a safe integer. */
function nanoParam(body: Json, name: string): bigint {
  const v = body[name]
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v)
  if (typeof v === 'string' && /^[0-9]+$/.test(v)) return BigInt(v)
  throw new InvalidParamsError(`${name} must be nanoTON as a decimal string or an integer`, name)
}

function addressParam(body: Json, name: string): Address {
  const v = body[name]
  if (typeof v !== 'string') throw new InvalidParamsError(`${name} (string) is required`, name)
  return parseAddress(v)
}

function optionalSeconds(body: Json, name: string): number | undefined {
  const v = body[name]
  if (v === undefined) return undefined
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v
  throw new InvalidParamsError(`${name} must be an integer number of seconds`, name)
}

/**
 * The one place errors become responses: toncenter's `{ok: false, error, code}` with the code as
 * HTTP status (plus the JSON-RPC id when there is one). Anything unexpected is logged and becomes a
 * bare 500.
 */
function sendError(res: http.ServerResponse, err: unknown, log: Logger, rpc?: { id: unknown }): void {
  let code = chainErrorStatus(err)
  let message: string
  if (code === undefined) {
    log.error('devnet chain request failed', { err })
    code = 500
    message = 'internal error'
  } else {
    message = (err as Error).message
  }
  const body: Json = { ok: false, error: message, code }
  if (rpc) Object.assign(body, { jsonrpc: '2.0', id: rpc.id })
  if (res.headersSent) {
    res.destroy()
    return
  }
  sendJson(res, code, body, code === 413 ? { connection: 'close' } : {})
}

/** Starts the devnet chain persisted under `opts.dir` and serves it over HTTP on 127.0.0.1. */
export async function startDevnetChain(opts: DevnetChainServerOptions): Promise<DevnetChainServer> {
  const log = opts.log ?? createLogger({ role: 'chain' })
  const host = opts.host ?? DEFAULT_CHAIN_HOST
  const chain = await DevnetChain.open(opts, { log })

  async function jsonRpc(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let request: Json
    try {
      request = parseJsonObject(await readBody(req, MAX_REQUEST_BODY_BYTES))
    } catch (err) {
      return sendError(res, err, log, { id: null })
    }
    const id = request.id ?? null
    try {
      const result = await callToncenterMethod(chain, request.method, request.params)
      sendJson(res, 200, { ok: true, result, jsonrpc: '2.0', id })
    } catch (err) {
      sendError(res, err, log, { id })
    }
  }

  async function faucet(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = parseJsonObject(await readBody(req, MAX_REQUEST_BODY_BYTES))
    const address = addressParam(body, 'address')
    const amount = nanoParam(body, 'amount')
    const out = await chain.faucet(address, amount)
    sendJson(res, 200, {
      ok: true,
      result: {
        address: address.toString(),
        amount: amount.toString(),
        balance: out.balanceNano.toString(),
        transaction_id: { lt: out.transaction.lt.toString(), hash: out.transaction.hash.toString('base64') },
      },
    })
  }

  async function time(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method === 'POST') {
      const body = parseJsonObject(await readBody(req, MAX_REQUEST_BODY_BYTES))
      const set = optionalSeconds(body, 'set')
      const advance = optionalSeconds(body, 'advance')
      const follow = body.follow === true
      if ([set !== undefined, advance !== undefined, follow].filter(Boolean).length !== 1) {
        throw new InvalidParamsError('give exactly one of set (unix seconds), advance (seconds) or follow: true')
      }
      if (set !== undefined) chain.clock.set(set)
      else if (advance !== undefined) chain.clock.advance(advance)
      else chain.clock.follow()
      await chain.persist()
    }
    sendJson(res, 200, { ok: true, result: { now: chain.clock.now(), frozen: chain.clock.frozen } })
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    const path = new URL(req.url ?? '/', 'http://devnet').pathname
    if (method === 'POST' && path === JSON_RPC_PATH) return jsonRpc(req, res)
    if (method === 'POST' && path === FAUCET_PATH) return faucet(req, res)
    if ((method === 'GET' || method === 'POST') && path === TIME_PATH) return time(req, res)
    if (method === 'GET' && path === HEALTH_PATH) {
      const head = chain.head()
      return sendJson(res, 200, { ok: true, seqno: head.seqno, lt: head.lt.toString(), now: head.utime })
    }
    if (method === 'GET' && path === STATS_PATH) return sendJson(res, 200, chain.stats())
    throw new RouteNotFoundError(method, path)
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((err) => sendError(res, err, log))
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(opts.port ?? DEFAULT_CHAIN_PORT, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    await chain.close()
    throw err
  }
  const port = (server.address() as AddressInfo).port
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  log.info('devnet chain listening', { url, dir: opts.dir })

  let closing: Promise<void> | undefined
  return {
    url,
    endpoint: `${url}${JSON_RPC_PATH}`,
    port,
    blockchain: chain.blockchain,
    chain,
    clock: chain.clock,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeAllConnections()
        })
        await chain.close()
      })()
      return closing
    },
  }
}
