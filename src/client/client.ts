// The client node: serves the OpenAI API to local apps and forwards requests to attested proxies, with failover.
import crypto from 'node:crypto'
import http from 'node:http'
import http2 from 'node:http2'
import { Counter, Gauge } from 'prom-client'
import { type VerifiedPeer, type IdentitySource, EvidenceRefusedError, identityStats } from '../tee/index.ts'
import type { PartyLedger } from '../payments/party-ledger.ts'
import { OFFCHAIN_PRICE_PARAMS, worstCaseAdjustedTokens, type PriceParams } from '../payments/pricing.ts'
import { DuplicateRequestError } from '../payments/billing.ts'
import { CLIENT_ERRORS_PER_SEC, ErrorBudget } from '../net/error-budget.ts'
import type { Logger } from '../core/log.ts'
import { createRegistry, handleOps, type OpsSource } from '../core/ops.ts'
import { pacer } from '../core/time.ts'
import type { PeerVerifier } from '../net/attested.ts'
import { maintainProxyLink, revalidateLinks, type ProxyLink as BaseLink } from '../net/proxy-link.ts'
import { ProxyScoreboard, type FailureKind } from './proxy-scores.ts'
import { appPrefixKey, prefixKey } from './prefix-key.ts'
import { errorResponse, TooManyRequestsError, InvalidRequestError, NoProxyAvailableError, NoWorkerAvailableError, ReceiptNotFoundError, RequestTimeoutError, RouteNotFoundError, UpstreamError } from '../net/errors.ts'
import { call, json, Reply, sendError, sendJson, sendReply, serveHttp, type HopRequest, type Routes } from '../net/hop.ts'
import { parseJsonObject, parseMultipart, readBody } from '../net/body.ts'
import { askedMaxTokens, isWireModelId } from '../net/validate.ts'
import { answerText, parseCostTrailer, SseText, usageChunk, withBilledUsage, type UsageCost } from '../net/openai.ts'
import { decodeReceiptBoc, newSalt, receiptIdFromSalt, answerHash, verifyReceiptSignature } from '../payments/receipts/receipt.ts'
import { heldReceiptJson, type ReceiptStore, type HeldReceipt } from '../payments/receipts/store.ts'
import { verifyReceiptProofBoc } from '../payments/receipts/proof.ts'
import { H2_OPTIONS, sendBody, tuneSession } from '../net/h2.ts'
import { type ReceiptProofsReply, RECEIPT_PROOFS_MAX, CLIENT_CONTROL_FIELDS, DEFAULT_MAX_COEFFICIENT, DEFAULT_TIMEOUT_SEC, HEADERS, MAX_AUDIO_BODY_BYTES, MAX_BODY_BYTES, MAX_MODEL_ID_CHARS, MAX_REQUEST_ID_CHARS, MAX_TIMEOUT_SEC, PATHS, INFERENCE_PATHS, PROTOCOL_VERSION, DEFAULT_MAX_TOKENS_CAP, requestBounds, type UsageRecord } from '../net/protocol.ts'
import { parseUsageRecord, namesItsAnswer } from '../net/usage.ts'
import type { RequestRecord } from './apps.ts'
import { CandidateCache, pickRecipients } from './e2ee.ts'
import { AppClosedError, ClientExchange, type AttemptEnd, type Outcome } from './exchange.ts'
import { e2eeTrace, traceNow } from '../net/e2ee-trace.ts'
import { AnswerReader, CACHE_SCOPE_BYTES, DEFAULT_E2EE_RECIPIENTS, E2EE_CONTENT_TYPE, E2eeError, encodeRoute, encodeWrappedKeys, sealRequest, sealedMultipartType, type AnswerKeys } from '../net/e2ee.ts'

/** One encrypted attempt: the sealed body, the headers naming its route and recipients, and the keys that read the answer. */
interface E2eeAttempt {
  body: Buffer
  route: string
  keys: string
  answer: AnswerKeys
  stream: boolean
  recipients: string[]
  /** The content type of a whole (not streamed) 200 answer, known from the request: it is not sent in clear. */
  answerType: string
}

export const MODELS_TIMEOUT_MS = 10_000
/** How long the workers' `max_tokens` caps read from a proxy's model list are used before they are read again. */
export const TOKEN_CAP_TTL_MS = 60_000
/** The soonest the caps are read again after a read (that may not have listed the model asked for). */
export const TOKEN_CAP_RETRY_MS = 5_000
/** How long a request waits for the caps of a model not seen before. */
export const TOKEN_CAP_READ_TIMEOUT_MS = 2_000
/** Models whose caps are kept at most (a proxy's list is bounded too; this bounds what a rogue one can make us keep). */
const MAX_MODELS_NOTED = 1000
/** How long /healthz waits for a proxy's model list. */
export const READINESS_TIMEOUT_MS = 5_000

export type Readiness = {
  ok: boolean
  reason?: 'no proxy' | 'no worker' | 'not funded'
  /** The reason in a sentence, for people. */
  detail?: string
  connectedProxies: number
  /** Model ids the connected proxies list. */
  models: string[]
}

export interface ClientOptions {
  /** Where the OpenAI API listens. Default 127.0.0.1:10000. */
  listen: { host: string; port: number }
  /** Proxies' client listeners named in the config; discovered ones come through setDiscovered(). */
  proxies: Array<{ host: string; port: number }>
  /** Sessions kept open at once, to the best-scored proxies. Default 2. */
  maxProxySessions?: number
  /** Default for the app's `max_coefficient`. Default 4000. */
  defaultMaxCoefficient?: number
  /** Default for the app's `timeout`, seconds. Default 120. */
  defaultTimeoutSec?: number
  /** Largest accepted request body. Default 8 MiB. */
  maxBodyBytes?: number
  /**
   * End-to-end encryption of every inference request (chat, completions, embeddings, transcriptions) to verified workers (docs/e2ee.md). `required`
   * (default): never plaintext. `optional`: plaintext through the attested proxy when no verified worker
   * has an HPKE key. `off`: plaintext.
   */
  e2ee?: 'required' | 'optional' | 'off'
  /** Workers each request's key is wrapped for. Default DEFAULT_E2EE_RECIPIENTS (3). */
  e2eeRecipients?: number
}

export interface ClientDeps {
  identity: IdentitySource
  verify: PeerVerifier
  /** Re-reads the root's allow-lists now, so `verify` follows a change the proxy already follows (on chain only). */
  refreshPolicy?: () => Promise<unknown>
  log: Logger
  /** What each proxy told this client it charged; a proxy that goes backwards is dropped. */
  ledger?: PartyLedger
  /** Extra money figures per proxy for /jsonstats (balance, stake, reserved…), from the chain side. */
  funds?: (proxyId: string) => Record<string, unknown> | undefined
  /** Where this node keeps its receipts; without it, receipts are not kept (and /v1/receipts is 404). */
  receipts?: ReceiptStore
  /** The receipt log's root a proxy contract holds on chain, and the payment key it belongs to; absent off-chain. */
  receiptsRoot?: (proxyContract: string) => Promise<{ seqno: number; root: string; count: number; paymentKey: string }>
  /** On chain: whether this client's contract with the proxy holds funds (a proxy settling off-chain needs none). */
  funded?: (proxyId: string) => boolean
  /** On chain: the funding budget (what was put into client contracts automatically, what is left, what was refused), for /jsonstats. */
  funding?: () => Record<string, unknown>
  /** Runs once per new proxy session before it is used (e.g. make sure the client contract is funded). */
  onProxy?: (peer: VerifiedPeer, proxyId: string) => Promise<void>
  /** A proxy refused a request for want of funds (402): the client contract with it may need a top-up now. */
  refusedForFunds?: (proxyId: string, shortfallNano?: bigint) => void
  /** Routes served beside the OpenAI API (the dashboard, its /api and /admin endpoints); returns whether it handled the request. */
  routes?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean
  /** API keys and the request history (src/client/apps.ts): who may ask, and what each answer cost. */
  apps?: AppGate
  /** The prices proxies charge (the root's parameters on chain); without it, the off-chain prices. For an API key's worst case. */
  priceParams?: () => PriceParams | undefined
}

/** Admits app requests by API key and records each answer. */
export interface AppGate {
  /**
   * The key id (null: anonymous), with `worstNano()` (the most the request can cost) held against the key's limit
   * until `release()`, which the client node calls once the request has ended (after `answered`, if it was).
   * `worstNano` is called only for a key with a limit: an anonymous request costs nothing to admit.
   * Throws InvalidApiKeyError (401), ApiKeyQuotaError (429) or ModelNotAllowedError (403).
   */
  admit(authorization: string | undefined, model: string, worstNano: () => bigint): { keyId: string | null; release(): void }
  answered(r: Omit<RequestRecord, 'at'>): void
  /**
   * Which receipts this caller may read (their salts let one check answers): `{ keyId }`, only those of the app with
   * that API key; undefined, all of them (API keys off: the node serves its operator on loopback). Throws
   * InvalidApiKeyError when keys are required and it has none.
   */
  mayRead?(authorization: string | undefined): { keyId: string } | undefined
}

interface ProxyLink extends BaseLink<http2.ClientHttp2Session> {
  active: number
  requests: number
  failovers: number
  host: string
  port: number
  /** Where it came from: the config, or the root's registry (then the payment key it registered). */
  source: 'config' | 'root'
  registeredId?: string
  /** Set while its connect loop runs. */
  abort?: AbortController
  /** No longer configured or offered: stopped and dropped once idle. */
  removed?: boolean
  /** Time to the answer's first byte of the last request, ms. */
  lastTtftMs?: number
  /** The last failure already counted against the proxy's score. */
  countedError?: string
}

/** How often the client re-ranks its proxies, pings its sessions and opens or closes sessions. */
export const REBALANCE_INTERVAL_MS = 2_000

export function createClient(opts: ClientOptions, deps: ClientDeps): Client {
  return new Client(deps, {
    ...opts,
    defaultMaxCoefficient: opts.defaultMaxCoefficient ?? DEFAULT_MAX_COEFFICIENT,
    defaultTimeoutSec: opts.defaultTimeoutSec ?? DEFAULT_TIMEOUT_SEC,
    maxBodyBytes: opts.maxBodyBytes ?? MAX_BODY_BYTES,
    maxProxySessions: opts.maxProxySessions ?? 2,
    e2ee: opts.e2ee ?? 'required',
    e2eeRecipients: opts.e2eeRecipients ?? DEFAULT_E2EE_RECIPIENTS,
  })
}

export class Client implements OpsSource {
  /** Set by the node's start-up when it runs on a chain (see OpsSource). */
  chainReachability?: OpsSource['chainReachability']
  readonly registry = createRegistry('client')
  private links: ProxyLink[]
  readonly scores = new ProxyScoreboard()
  /** Keys the prompt-prefix hashes sent for cache affinity; never leaves this process. */
  private readonly prefixSecret = crypto.randomBytes(32)
  private rebalanceTimer?: NodeJS.Timeout
  private readonly stopping = new AbortController()
  private server?: http.Server
  private readonly counts: Record<Outcome, number> & { requests: number; failovers: number } = { requests: 0, succeeded: 0, failed: 0, cancelled: 0, timeout: 0, rejected: 0, failovers: 0 }
  /** Answered requests per mode: `on` end-to-end encrypted, `off` plaintext through the proxy; `refused` never sent for want of a verified E2EE worker. */
  private readonly e2eeCounts = { on: 0, off: 0, refused: 0, freshRecipientRetries: 0 }
  private candidates?: CandidateCache
  private readonly m = {
    requests: new Counter({ name: 'cocoon_client_requests_total', help: 'App requests by outcome', labelNames: ['outcome'], registers: [this.registry] }),
    proxies: new Gauge({ name: 'cocoon_client_connected_proxies', help: 'Attested proxy sessions up', registers: [this.registry] }),
  }

  constructor(
    private readonly deps: ClientDeps,
    private readonly o: Required<ClientOptions>,
  ) {
    this.links = o.proxies.map((p) => newLink(p.host, p.port, 'config'))
    this.router = serveHttp(this.routes(), { log: deps.log, sseErrors: false })
  }

  private receiptTimer?: NodeJS.Timeout

  async start(): Promise<number> {
    if (this.deps.receipts) {
      this.receiptTimer = setInterval(() => {
        for (const l of this.links) {
          if (!l.proxyId || l.state !== 'connected') continue
          const id = l.proxyId
          // One round per proxy at a time: a round that catches up on a backlog can outlast the interval.
          if (this.syncing.has(id)) continue
          this.syncing.add(id)
          void this.syncBacklog(id)
            .then(() => this.auditCharges(id))
            .catch((err) => this.deps.log.debug('receipt sync failed', { error: (err as Error).message }))
            .finally(() => this.syncing.delete(id))
        }
      }, RECEIPT_SYNC_MS).unref()
    }
    this.rebalance()
    this.rebalanceTimer = setInterval(() => this.rebalance(), REBALANCE_INTERVAL_MS)
    this.rebalanceTimer.unref()
    const server = http.createServer((req, res) => this.onRequest(req, res))
    server.keepAliveTimeout = 65_000
    // Requests Node cannot even parse (header floods, garbage) get an OpenAI error too, not a bare status line.
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy()
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
      const message = status === 431 ? 'request headers are too large' : status === 408 ? 'the request was not received in time' : 'malformed HTTP request'
      const body = JSON.stringify({ error: { message, type: 'invalid_request_error', code: status === 431 ? 'headers_too_large' : 'invalid_request', param: null } })
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.o.listen.port, this.o.listen.host, () => resolve())
    })
    const port = (server.address() as { port: number }).port
    this.deps.log.info('OpenAI API listening', { url: `http://${this.o.listen.host}:${port}/v1` })
    return port
  }

  async stop(): Promise<void> {
    clearInterval(this.receiptTimer)
    clearInterval(this.rebalanceTimer)
    this.stopping.abort()
    this.server?.close()
    this.server?.closeAllConnections()
    for (const l of this.links) l.session?.destroy()
  }

  /**
   * The proxies the root offers now (host, client port, payment key). New ones become candidates; ones no
   * longer offered are closed once idle. Configured proxies stay.
   */
  setDiscovered(list: Array<{ id: string; host: string; port: number }>): void {
    const wanted = new Map(list.map((p) => [`${p.host}:${p.port}`, p]))
    for (const l of this.links) {
      const d = wanted.get(l.target)
      if (d) {
        l.registeredId = d.id
        l.removed = false
        wanted.delete(l.target)
      } else if (l.source === 'root') l.removed = true
    }
    for (const d of wanted.values()) this.links.push({ ...newLink(d.host, d.port, 'root'), registeredId: d.id })
    this.rebalance()
  }

  /**
   * Keeps sessions to the best `maxProxySessions` proxies: counts link failures against their scores,
   * closes sessions to removed or backed-off proxies, and opens sessions to the best-ranked others while
   * there is room. A healthy session is never dropped just because an untried proxy might be better.
   */
  private rebalance(): void {
    if (this.stopping.signal.aborted) return
    for (const l of this.links) {
      if (l.state === 'connected') l.countedError = undefined
      if (l.abort && l.lastError && l.lastError !== l.countedError && l.state !== 'connected' && l.state !== 'connecting') {
        l.countedError = l.lastError
        const kind: FailureKind = l.state === 'distrusted' ? 'cheated' : l.state === 'refused' ? 'refused' : 'failed'
        this.scores.observeFailure(l.target, kind, l.lastError)
      }
      if (l.abort && (l.removed || (l.state !== 'connected' && this.scores.isBackedOff(l.target)))) {
        if (!l.removed || l.active === 0) this.stopLink(l)
      }
      if (l.state === 'connected' && l.session && !l.session.destroyed) {
        const target = l.target
        try {
          l.session.ping((err, ms) => (err ? undefined : this.scores.observeRtt(target, ms)))
        } catch {}
      }
    }
    this.links = this.links.filter((l) => !(l.removed && !l.abort))
    let room = this.o.maxProxySessions - this.links.filter((l) => l.abort).length
    if (room <= 0) return
    let idle = this.links.filter((l) => !l.abort && !l.removed)
    // Backed-off proxies wait out their backoff, unless nothing else is open or could be.
    const fresh = idle.filter((l) => !this.scores.isBackedOff(l.target))
    if (fresh.length > 0 || this.links.some((l) => l.abort)) idle = fresh
    const byTarget = new Map(idle.map((l) => [l.target, l]))
    for (const target of this.scores.rank(byTarget.keys())) {
      if (room-- <= 0) break
      this.startLink(byTarget.get(target)!)
    }
  }

  private startLink(link: ProxyLink): void {
    link.abort = new AbortController()
    const signal = AbortSignal.any([this.stopping.signal, link.abort.signal])
    link.state = 'connecting'
    void this.connectLoop(link, signal)
  }

  private stopLink(link: ProxyLink): void {
    link.abort?.abort()
    link.abort = undefined
    link.session?.destroy()
    link.session = undefined
    link.state = 'disconnected'
  }

  private connectLoop(link: ProxyLink, signal: AbortSignal): Promise<void> {
    const setConnected = () => this.m.proxies.set(this.links.filter((l) => l.state === 'connected').length)
    return maintainProxyLink(link, { host: link.host, port: link.port }, {
      identity: this.deps.identity,
      verify: this.deps.verify,
      log: this.deps.log,
      signal,
      distrusted: (id) => this.deps.ledger?.isDistrusted(id),
      open: async (socket, peer, proxyId) => {
        // A proxy found on the root must present the payment key it registered with.
        if (link.registeredId && proxyId !== link.registeredId) {
          socket.destroy()
          throw new EvidenceRefusedError(`the proxy at ${link.target} is not the one registered there (key ${proxyId.slice(0, 16)}…)`)
        }
        if (this.deps.onProxy) await this.deps.onProxy(peer, proxyId)
        const started = Date.now()
        const session = http2.connect(`https://${link.target}`, { ...H2_OPTIONS, createConnection: () => socket })
        tuneSession(session)
        session.once('connect', () => this.scores.observeRtt(link.target, Date.now() - started))
        return session
      },
      onChange: setConnected,
    })
  }


  /** Connected proxies, best score first (see proxy-scores.ts); backed-off ones last. */
  private readyLinks(): ProxyLink[] {
    const ready = this.links.filter((l) => l.state === 'connected' && l.session && !l.session.closed && !l.session.destroyed)
    const order = new Map(this.scores.rank(ready.map((l) => l.target)).map((t, i) => [t, i]))
    // On chain, proxies this client's contract is funded with come first (an unfunded one would only refuse).
    const funded = this.deps.funded
    const unfunded = (l: ProxyLink) => (funded && l.peer?.claims.paymentKey && !funded(l.proxyId!) ? 1 : 0)
    return ready.sort((a, b) => unfunded(a) - unfunded(b) || order.get(a.target)! - order.get(b.target)!)
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (handleOps(req, res, this) || this.deps.routes?.(req, res)) return
    this.router(req, res)
  }

  /**
   * The app-facing OpenAI API, through the hop layer's HTTP/1 router and its one error edge. An error after an
   * answer's headers cuts the connection: relay() writes its own SSE error events where the answer allows one.
   */
  private readonly router: (req: http.IncomingMessage, res: http.ServerResponse) => void

  private routes(): Routes<undefined, http.ServerResponse> {
    const inference = (req: HopRequest, res: http.ServerResponse) => this.forwardInference(req.body as http.IncomingMessage, res, req.path)
    return {
      [`GET ${PATHS.models}`]: (req, res) => this.listModels(res),
      [`GET ${RECEIPTS_PATH}/*`]: (req) => this.serveReceipts(req),
      [`POST ${PATHS.chat}`]: inference,
      [`POST ${PATHS.completions}`]: inference,
      [`POST ${PATHS.embeddings}`]: inference,
      [`POST ${PATHS.transcriptions}`]: inference,
    }
  }

  private async listModels(res: http.ServerResponse): Promise<void> {
    let lastErr: Error | undefined
    const links = this.readyLinks()
    // No proxy yet means no worker yet: an empty list, not an error, so apps polling for a model simply wait.
    if (links.length === 0) return sendJson(res, 200, { object: 'list', data: [] })
    for (const link of links) {
      try {
        const { body } = await this.modelsAt(link, AbortSignal.timeout(MODELS_TIMEOUT_MS))
        sendReply(res, new Reply(200, body, { 'content-type': 'application/json' }))
        return
      } catch (err) {
        lastErr = err as Error
        this.deps.log.warn('could not list models at a proxy', { proxy: link.target, error: lastErr.message })
      }
    }
    if (!lastErr) throw new NoProxyAvailableError()
    if (isTimeout(lastErr)) throw new UpstreamError(`the proxy did not list its models within ${MODELS_TIMEOUT_MS} ms`)
    throw new UpstreamError(`could not list models at any proxy: ${lastErr.message}`)
  }

  private finish(outcome: Outcome): void {
    this.counts[outcome]++
    this.m.requests.inc({ outcome })
  }

  private async forwardInference(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    this.counts.requests++
    const arrivedAt = e2eeTrace && traceNow()
    let out: { payload: Buffer; contentType: string; model: string; stream: boolean; maxTokens?: number; multipart: boolean; answerType?: string; ctl: ReturnType<Client['controlFields']> & { prefixKey?: string } }
    try {
      const len = req.headers['content-length'] ? Number(req.headers['content-length']) : undefined
      out = path === PATHS.transcriptions ? await this.multipartRequest(req, len) : this.jsonRequest(await readBody(req, this.o.maxBodyBytes, len))
    } catch (err) {
      this.finish('rejected')
      // Tell keep-alive clients we are not reading the rest of an oversized body.
      if ((err as Error).name === 'PayloadTooLargeError') res.setHeader('connection', 'close')
      throw err
    }
    const { payload, model } = out
    // The app's own request_id (its history records it); `ctl.requestId` below is the id this request has beyond this node.
    const appRequestId = out.ctl.requestId
    e2eeTrace?.(appRequestId, 'c.arrived', arrivedAt || undefined)
    e2eeTrace?.(appRequestId, 'c.parsed')
    let gate: ReturnType<AppGate['admit']> | undefined
    let wireId: string
    try {
      // A worker generates up to max_tokens or its own cap, whichever is less: the hold needs the largest cap of the model's workers.
      const cap = this.deps.apps ? await this.tokenCapFor(model) : DEFAULT_MAX_TOKENS_CAP
      gate = this.deps.apps?.admit(req.headers.authorization, model, () => this.worstCaseNano(path, payload.length, out.maxTokens, cap, out.ctl.maxCoefficient))
      if (gate?.keyId) this.checkAppErrors(gate.keyId)
      wireId = this.claimRequestId(gate?.keyId ?? null, appRequestId)
    } catch (err) {
      gate?.release()
      this.finish('rejected')
      throw err
    }
    const keyId = gate?.keyId ?? null
    // Prefix affinity per app: the cache a worker keeps for one app is of no use to another (cache scopes, below).
    const appPrefix = keyId !== null && out.ctl.prefixKey ? appPrefixKey(this.prefixSecret, keyId, out.ctl.prefixKey) : out.ctl.prefixKey
    const ctl = wireId === appRequestId && appPrefix === out.ctl.prefixKey ? out.ctl : (out.ctl = { ...out.ctl, requestId: wireId, prefixKey: appPrefix })
    // Workers reuse cached prompt state only within this app's scope (docs/e2ee.md): sealed with an encrypted request,
    // a hop header with a plaintext one.
    const cacheScope = cacheScopeOf(this.prefixSecret, keyId)
    // The routing data travels in hop headers, set here once: no later hop parses the body to find it.
    const send = { ...ctl, contentType: out.contentType, model, stream: out.stream, maxTokens: out.maxTokens, keyId, cacheScope: cacheScope.toString('hex') }
    const log = this.deps.log.child(wireId === appRequestId ? { requestId: wireId } : { requestId: wireId, appRequestId })
    // The app's request closing before its answer is complete is one of the exchange's exits.
    const app = new AbortController()
    const onAppClose = () => {
      if (!res.writableFinished) app.abort(new AppClosedError())
    }
    res.once('close', onAppClose)
    const started = Date.now()
    const ex = new ClientExchange<ProxyLink, E2eeAttempt, AnswerUsage>(
      {
        log,
        links: () => this.readyLinks(),
        seal: (link, exclude) => this.sealFor(link, path, out, exclude, cacheScope),
        relay: (link, e2ee, x, allowFresh) => this.relay(link, res, path, e2ee?.body ?? payload, send, x, log, e2ee, allowFresh),
        failedOver: (link) => {
          this.counts.failovers++
          link.failovers++
        },
        proxyFailed: (link, err) => this.scores.observeFailure(link.target, 'failed', err.message),
        freshRecipients: (link) => {
          this.candidates?.invalidate(link.target, model)
          this.e2eeCounts.freshRecipientRetries++
        },
        settled: (outcome, answered, e2eeRefused) => {
          res.off('close', onAppClose)
          if (e2eeRefused) this.e2eeCounts.refused++
          if (answered) {
            const { link, sealed, end: r } = answered
            this.e2eeCounts[sealed ? 'on' : 'off']++
            this.deps.apps?.answered({
              id: appRequestId, model, keyId, status: res.statusCode, outcome: r.outcome, stream: out.stream,
              promptTokens: r.usage?.promptTokens ?? 0, completionTokens: r.usage?.completionTokens ?? 0, costNano: r.usage?.costNano ?? '0', receiptId: r.usage?.receiptId ?? null, latencyMs: Date.now() - started,
            })
            // An answer whose receipt was missing or invalid is not a success: the proxy was backed off as a cheat.
            if (r.outcome === 'succeeded' && !r.cheated) this.scores.observeSuccess(link.target, link.lastTtftMs ?? 0)
            else if (r.outcome === 'failed' && !app.signal.aborted) this.scores.observeFailure(link.target, 'failed', 'the answer failed')
          }
          // After the answer's cost is recorded, so the key's spend never drops out of view in between.
          gate?.release()
          this.finish(outcome)
        },
      },
      Math.round(ctl.timeoutSec * 1000),
      app.signal,
    )
    let status = 0
    try {
      await ex.run()
      status = res.statusCode
    } catch (err) {
      status = errorResponse(err).status
      throw err
    } finally {
      gate?.release()
      this.appRequestIds.delete(appRequestKey(keyId, appRequestId))
      this.wireRequestIds.delete(wireId)
      // An error answer (4xx but 429) after the request went to a proxy spent this node's error budget there (the
      // proxy counts its own and its /v1/workers answers alike), and spends the app's own here.
      if (status >= 400 && status < 500 && status !== 429) {
        this.nodeErrors.spend(NODE_ERROR_BUCKET)
        if (keyId !== null) this.appErrors.spend(keyId)
      }
    }
  }

  /** Error answers each app (API key) may get from proxies before this node refuses its requests itself. */
  private readonly appErrors = new ErrorBudget({ burst: APP_ERROR_BURST, perSec: APP_ERRORS_PER_SEC })
  /** This node's error budget at a proxy, as the proxy keeps it (its defaults), spent by every error answer. */
  private readonly nodeErrors = new ErrorBudget()

  /**
   * A proxy slows a client node whose requests keep failing (4xx; CLIENT_ERROR_BURST, then CLIENT_ERRORS_PER_SEC) with
   * 429s for all of them, and every app of the node is that one client: an app sending bad requests on purpose would
   * have the others refused. So an app (API key) that keeps getting error answers is slowed here first, with 429 and
   * Retry-After, before its errors reach the proxy: after APP_ERROR_BURST errors, APP_ERRORS_PER_SEC (a quarter of the
   * proxy's allowance). And when this node's budget at the proxy runs low (NODE_ERROR_RESERVE, as kept here), only
   * apps with no recent errors are sent on. Requests without a key (API keys off: the node's own operator) are not
   * limited here; the proxy's budget applies to them as before.
   */
  private checkAppErrors(keyId: string): void {
    const own = this.appErrors.check(keyId)
    if (own.waitSec > 0) throw new TooManyRequestsError(`this app's requests keep failing; retry after ${own.waitSec} s`, own.waitSec)
    if (this.nodeErrors.tokens(NODE_ERROR_BUCKET) < NODE_ERROR_RESERVE && this.appErrors.tokens(keyId) < APP_ERROR_BURST) {
      const waitSec = Math.max(1, Math.ceil((NODE_ERROR_RESERVE - this.nodeErrors.tokens(NODE_ERROR_BUCKET)) / CLIENT_ERRORS_PER_SEC))
      throw new TooManyRequestsError(`this node's requests keep failing at the proxy, this app's among them; retry after ${waitSec} s`, waitSec)
    }
  }

  /** The request_ids in flight at this node, per app (its API key id, or none): an app's own duplicate is refused. */
  private readonly appRequestIds = new Set<string>()
  /** The ids this node's requests in flight have beyond it (at the proxies and workers): never two alike. */
  private readonly wireRequestIds = new Set<string>()

  /**
   * Claims an app's request_id for a request in flight, and returns the id it has beyond this node. A proxy refuses a
   * request_id already in flight from the same client node (409), and every app of this node is that client: one
   * app's ids must not collide with another's (by chance, or to have another app's predictable ids refused). So the
   * same id from the same app is refused here (409 duplicate_request_id), and the same id from another app gets a
   * suffix of its own beyond this node (`<request_id>.<12 hex digits>`): both are served. Otherwise the id goes on as
   * the app sent it.
   */
  private claimRequestId(keyId: string | null, requestId: string): string {
    const appKey = appRequestKey(keyId, requestId)
    if (this.appRequestIds.has(appKey)) throw new DuplicateRequestError(requestId)
    let wire = requestId
    while (this.wireRequestIds.has(wire)) wire = `${requestId.slice(0, MAX_REQUEST_ID_CHARS - 13)}.${crypto.randomBytes(6).toString('hex')}`
    this.appRequestIds.add(appKey)
    this.wireRequestIds.add(wire)
    return wire
  }

  /**
   * The most a request can cost at the proxies' prices, as a proxy reserves it: a prompt as long as the body and
   * all of the max_tokens asked, up to `maxTokensCap` (the largest cap of the model's workers), at the dearest
   * multipliers and the app's max_coefficient. Held against the app's API key while the request is in flight.
   */
  private worstCaseNano(path: string, bodyBytes: number, maxTokensAsked: number | undefined, maxTokensCap: number, maxCoefficient: number): bigint {
    const params = this.deps.priceParams?.() ?? OFFCHAIN_PRICE_PARAMS
    const b = requestBounds(path, bodyBytes, maxTokensAsked, maxTokensCap)
    return worstCaseAdjustedTokens(b.maxPromptTokens, b.maxCompletionTokens, maxCoefficient, params, b.maxAudioSeconds) * params.pricePerTokenNano
  }

  /** The largest `max_tokens` cap each model's workers have, as the proxies list them (`/v1/models`), and when read. */
  private readonly tokenCaps = new Map<string, { cap: number; at: number }>()
  /** The read of the caps under way (one at a time), and when the last one ended. */
  private tokenCapRead?: Promise<void>
  private tokenCapReadAt = 0

  /**
   * A proxy's model list (`/v1/models`): its body, and the models it lists, whose workers' caps are noted on the way.
   * Throws when the proxy does not answer 200.
   */
  private async modelsAt(link: ProxyLink, signal: AbortSignal): Promise<{ body: Buffer; listed: Set<string> }> {
    const r = await call(link.session!, PATHS.models, { signal })
    const body = await r.read(MAX_BODY_BYTES)
    if (r.status !== 200) throw new Error(`the proxy answered ${r.status}`)
    return { body, listed: this.noteTokenCaps(body) }
  }

  /** Notes the workers' caps from a proxy's `/v1/models` answer (the largest per model across proxies, while fresh); returns the models listed. */
  private noteTokenCaps(body: Buffer): Set<string> {
    const listed = new Set<string>()
    let data: unknown
    try {
      data = (JSON.parse(body.toString()) as { data?: unknown }).data
    } catch {
      return listed
    }
    if (!Array.isArray(data)) return listed
    const now = Date.now()
    for (const m of data as Array<{ id?: unknown; workers?: unknown }>) {
      if (typeof m?.id !== 'string') continue
      let cap = 0
      for (const w of Array.isArray(m.workers) ? (m.workers as Array<{ max_tokens?: unknown }>) : []) if (Number.isSafeInteger(w?.max_tokens) && (w.max_tokens as number) > cap) cap = w.max_tokens as number
      // A worker of a version that does not say has the default cap.
      if (cap === 0) cap = DEFAULT_MAX_TOKENS_CAP
      const had = this.tokenCaps.get(m.id)
      this.tokenCaps.delete(m.id)
      this.tokenCaps.set(m.id, { cap: had && now - had.at < TOKEN_CAP_TTL_MS ? Math.max(had.cap, cap) : cap, at: now })
      listed.add(m.id)
    }
    while (this.tokenCaps.size > MAX_MODELS_NOTED) this.tokenCaps.delete(this.tokenCaps.keys().next().value!)
    return listed
  }

  /**
   * The largest `max_tokens` cap among `model`'s workers. Read from the proxies for a model's first request (which
   * waits for it, TOKEN_CAP_READ_TIMEOUT_MS at most), then kept, and read again in the background once older than
   * TOKEN_CAP_TTL_MS. One read at a time, and none sooner than TOKEN_CAP_RETRY_MS after the last: a model no proxy
   * lists (an app's typo, or a flood of made-up names) does not cost a read per request. Until a read lists the
   * model, the workers' default cap (such a request finds no worker anyway).
   */
  private async tokenCapFor(model: string): Promise<number> {
    const known = this.tokenCaps.get(model)
    if (known && Date.now() - known.at < TOKEN_CAP_TTL_MS) return known.cap
    if (!this.tokenCapRead && Date.now() - this.tokenCapReadAt >= TOKEN_CAP_RETRY_MS) {
      this.tokenCapRead = this.readTokenCaps().finally(() => {
        this.tokenCapRead = undefined
        this.tokenCapReadAt = Date.now()
      })
    }
    // Stale: the request goes on with what is known; the read refreshes it for later ones.
    if (known) return known.cap
    await this.tokenCapRead
    return this.tokenCaps.get(model)?.cap ?? DEFAULT_MAX_TOKENS_CAP
  }

  /**
   * Lists the models at every ready proxy at once: a read notes the caps of every model any of them lists, so a
   * request for another model that waited on this read (one read at a time) finds its cap too.
   */
  private async readTokenCaps(): Promise<void> {
    const signal = AbortSignal.timeout(TOKEN_CAP_READ_TIMEOUT_MS)
    await Promise.all(
      this.readyLinks().map((link) =>
        this.modelsAt(link, signal).catch((err) => this.deps.log.warn('could not list models at a proxy', { proxy: link.target, error: (err as Error).message })),
      ),
    )
  }

  /**
   * A JSON request: the control fields are taken out, the rest is forwarded as the app wrote it; the
   * routing data (model, stream, the max_tokens asked) is read out for the hop headers.
   */
  private jsonRequest(buf: Buffer): { payload: Buffer; contentType: string; model: string; stream: boolean; maxTokens?: number; multipart: false; ctl: ReturnType<Client['controlFields']> & { prefixKey?: string } } {
    const body = parseJsonObject(buf)
    const ctl = { ...this.controlFields(body), prefixKey: prefixKey(this.prefixSecret, body) }
    for (const f of CLIENT_CONTROL_FIELDS) delete body[f]
    const model = wireModel(body.model, "'model' is required and must be a string")
    return { payload: Buffer.from(JSON.stringify(body)), contentType: 'application/json', model, stream: body.stream === true, maxTokens: askedMaxTokens(body), multipart: false, ctl }
  }

  /**
   * Seals an inference request (chat, completions, embeddings, a transcription's whole multipart form) to up to k
   * workers of this proxy that this client verified itself; undefined when the request goes in plaintext (E2EE
   * off, or `optional` with no verified E2EE worker). Throws NoWorkerAvailableError when E2EE is required and impossible.
   */
  private async sealFor(link: ProxyLink, path: string, out: { payload: Buffer; model: string; stream: boolean; multipart: boolean; maxTokens?: number; answerType?: string; ctl: { maxCoefficient: number; requestId: string } }, exclude: ReadonlySet<string>, cacheScope: Buffer): Promise<E2eeAttempt | undefined> {
    if (this.o.e2ee === 'off' || !INFERENCE_PATHS.has(path)) return undefined
    // The worker reads a sealed form's boundary from its first line (docs/e2ee.md); the form encoded here always has one.
    if (out.multipart) sealedMultipartType(out.payload)
    this.candidates ??= new CandidateCache(this.deps.verify, this.deps.log, undefined, this.deps.refreshPolicy)
    let recipients: string[]
    try {
      const list = await this.candidates.get(link.session!, link.target, out.model)
      recipients = pickRecipients(list, this.o.e2eeRecipients, out.ctl.maxCoefficient, out.model, exclude)
      e2eeTrace?.(out.ctl.requestId, 'c.candidates')
    } catch (err) {
      if ((err as Error).name === 'UnfundedClientError' && link.proxyId) this.deps.refusedForFunds?.(link.proxyId)
      if (this.o.e2ee === 'optional') return undefined
      if (['NoWorkerAvailableError', 'ModelNotFoundError', 'TooManyRequestsError', 'UnfundedClientError'].includes((err as Error).name)) throw err
      throw new NoWorkerAvailableError(`could not get this proxy's workers to encrypt to: ${(err as Error).message}`)
    }
    const route = encodeRoute({ v: 1, path, model: out.model, ...(out.maxTokens !== undefined ? { maxTokens: out.maxTokens } : {}), stream: out.stream, requestId: out.ctl.requestId, maxCoefficient: out.ctl.maxCoefficient })
    const sealed = await sealRequest(out.payload, route, recipients, cacheScope)
    e2eeTrace?.(out.ctl.requestId, 'c.sealed')
    return { body: sealed.body, route, keys: encodeWrappedKeys(sealed.keys), answer: sealed.answer, stream: out.stream, recipients, answerType: out.answerType ?? 'application/json' }
  }

  /**
   * A multipart upload (transcriptions), up to MAX_AUDIO_BODY_BYTES: parsed here once, so the
   * model travels as a header and no later hop parses the body; control fields are form fields.
   */
  private async multipartRequest(req: http.IncomingMessage, len: number | undefined): Promise<{ payload: Buffer; contentType: string; model: string; stream: boolean; multipart: true; answerType: string; ctl: ReturnType<Client['controlFields']> }> {
    const form = await parseMultipart(await readBody(req, MAX_AUDIO_BODY_BYTES, len), req.headers['content-type'])
    const num = (k: string) => {
      const v = form.get(k)
      if (v === null) return undefined
      return typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v
    }
    const ctl = this.controlFields({ max_coefficient: num('max_coefficient'), timeout: num('timeout'), request_id: form.get('request_id') ?? undefined })
    for (const f of CLIENT_CONTROL_FIELDS) form.delete(f)
    const model = wireModel(form.get('model'), "'model' is required")
    const file = form.get('file')
    if (file === null || typeof file === 'string') throw new InvalidRequestError("'file' is required and must be an uploaded file", 'file')
    const encoded = new Response(form)
    // A sealed answer carries no content type: the worker answers `text` as plain text, every other format as JSON.
    const answerType = form.get('response_format') === 'text' ? 'text/plain; charset=utf-8' : 'application/json'
    return { payload: Buffer.from(await encoded.arrayBuffer()), contentType: encoded.headers.get('content-type')!, model, stream: false, multipart: true, answerType, ctl }
  }

  private controlFields(body: Record<string, unknown>): { maxCoefficient: number; timeoutSec: number; requestId: string } {
    const mc = body.max_coefficient ?? this.o.defaultMaxCoefficient
    if (typeof mc !== 'number' || !Number.isSafeInteger(mc) || mc < 0) throw new InvalidRequestError("'max_coefficient' must be a non-negative integer (1000 = 1.0x)", 'max_coefficient')
    const t = body.timeout ?? this.o.defaultTimeoutSec
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > MAX_TIMEOUT_SEC) throw new InvalidRequestError(`'timeout' must be a number of seconds in (0, ${MAX_TIMEOUT_SEC}]`, 'timeout')
    const rid = body.request_id ?? crypto.randomUUID()
    if (typeof rid !== 'string' || rid.length === 0 || rid.length > MAX_REQUEST_ID_CHARS || !/^[\w.:-]+$/.test(rid)) {
      throw new InvalidRequestError(`'request_id' must be 1-${MAX_REQUEST_ID_CHARS} characters of [A-Za-z0-9_.:-]`, 'request_id')
    }
    return { maxCoefficient: mc, timeoutSec: t, requestId: rid }
  }

  /** Forwards to one proxy. `retry` means nothing reached the app yet, so another proxy may be tried. */
  private relay(
    link: ProxyLink,
    res: http.ServerResponse,
    path: string,
    payload: Buffer,
    ctl: { maxCoefficient: number; requestId: string; contentType: string; model: string; stream: boolean; maxTokens?: number; prefixKey?: string; keyId: string | null; cacheScope: string },
    ex: ClientExchange<ProxyLink, E2eeAttempt, AnswerUsage>,
    log: Logger,
    e2ee?: E2eeAttempt,
    allowFresh = false,
  ): Promise<AttemptEnd<AnswerUsage>> {
    return new Promise((resolve) => {
      // The app went away or the deadline passed between attempts: nothing is sent.
      if (ex.signal.aborted) return resolve({ kind: 'retry', error: ex.signal.reason as Error })
      const remainingMs = ex.remainingMs()
      // A fresh salt per attempt keys this answer's receipt; its id is known before the first byte.
      const salt = newSalt()
      const receiptId = receiptIdFromSalt(salt)
      const seen = new SseText()
      let receiptTrailers: http2.IncomingHttpHeaders | undefined
      let kept = false
      let cheated = false
      const keep = () => {
        if (kept) return
        kept = true
        if (receiptTrailers) {
          if (!this.keepReceipt(link, ctl.requestId, ctl.keyId, salt, receiptId, receiptTrailers, sse ? seen.text : answerText(Buffer.concat(held).toString('utf8')), log)) cheated = true
        }
        // Every billed answer has its receipt, logged in the same transaction that billed it: a bill without one is a cheat.
        else if (charged) {
          this.receiptCheat(link, 'it billed an answer without its receipt', log)
          cheated = true
        }
      }
      let ps: http2.ClientHttp2Stream
      try {
        ps = link.session!.request({
          ':method': 'POST',
          ':path': path,
          'content-type': e2ee ? E2EE_CONTENT_TYPE : ctl.contentType,
          [HEADERS.model]: ctl.model,
          [HEADERS.stream]: ctl.stream ? '1' : '0',
          ...(ctl.maxTokens !== undefined ? { [HEADERS.maxTokens]: String(ctl.maxTokens) } : {}),
          // The cache scope goes sealed inside an encrypted request, where the proxy cannot see it.
          ...(e2ee ? { [HEADERS.e2eeRoute]: e2ee.route, [HEADERS.e2eeKeys]: e2ee.keys } : { [HEADERS.cacheScope]: ctl.cacheScope }),
          [HEADERS.protocol]: String(PROTOCOL_VERSION),
          [HEADERS.requestId]: ctl.requestId,
          [HEADERS.maxCoefficient]: String(ctl.maxCoefficient),
          ...(ctl.prefixKey ? { [HEADERS.prefixKey]: ctl.prefixKey } : {}),
          [HEADERS.timeoutMs]: String(remainingMs),
          [HEADERS.salt]: salt.toString('hex'),
        })
      } catch (err) {
        return resolve({ kind: 'retry', error: err as Error })
      }
      link.active++
      link.requests++
      const sentAt = Date.now()
      let settled = false
      let sse = false
      // The billed usage and its cost, from the proxy's trailers: written into the answer here, for the app.
      let billed: { usage: UsageRecord; cost: UsageCost } | undefined
      const settle = (r: AttemptEnd<AnswerUsage>) => {
        if (settled) return
        settled = true
        e2eeTrace?.(ctl.requestId, 'c.settled')
        if (r.kind === 'done') r.cheated = cheated
        if (r.kind === 'done' && billed) {
          const u = billed.usage
          r.usage = { promptTokens: u.promptTokens, completionTokens: u.completionTokens, costNano: billed.cost.nano.toString(), receiptId }
        }
        link.active--
        ex.signal.removeEventListener('abort', onAbort)
        resolve(r)
      }
      const endWithError = (err: Error) => {
        if (res.writableEnded || res.destroyed) return
        if (!res.headersSent) return sendError(res, err)
        if (sse) res.end(`data: ${JSON.stringify(errorResponse(err).body)}\n\n`)
        else res.destroy()
      }
      // The exchange's one signal: the deadline ends the answer with an error; the app going away just stops it.
      const onAbort = () => {
        ps.close(http2.constants.NGHTTP2_CANCEL)
        if (ex.abortKind() === 'timeout') {
          endWithError(new RequestTimeoutError(remainingMs))
          return settle({ kind: 'done', outcome: 'timeout' })
        }
        log.info('app went away; request cancelled')
        settle({ kind: 'done', outcome: 'cancelled' })
      }
      ex.signal.addEventListener('abort', onAbort, { once: true })
      let responded = false
      let status = 0
      let charged = false
      // Non-streamed answers are held until they are known complete; SSE is relayed as it comes.
      const held: Buffer[] = []
      let lastChunk: Buffer | undefined
      let retryAfter: string | undefined
      let contentType = 'application/json'
      const mode = e2ee ? 'on' : 'off'
      /** Reads an encrypted answer's records; set when the proxy relays one. */
      let reader: AnswerReader | undefined
      const broken = (err: Error) => {
        log.warn('encrypted answer refused', { proxy: link.target, reason: err.message })
        ps.close(http2.constants.NGHTTP2_CANCEL)
        endWithError(new UpstreamError(`the answer failed its end-to-end integrity check: ${(err as E2eeError).reason ?? err.message}`))
        settle({ kind: 'done', outcome: 'failed' })
      }
      ps.on('error', () => {})
      ps.once('response', (h) => {
        e2eeTrace?.(ctl.requestId, 'c.response')
        responded = true
        link.lastTtftMs = Date.now() - sentAt
        status = Number(h[':status'])
        if (typeof h['retry-after'] === 'string') retryAfter = h['retry-after']
        const ct = String(h['content-type'] ?? 'application/json')
        contentType = ct
        if (e2ee && ct === E2EE_CONTENT_TYPE) {
          reader = new AnswerReader(e2ee.answer)
          contentType = status !== 200 ? 'application/json' : e2ee.stream ? 'text/event-stream' : e2ee.answerType
        } else if (e2ee && (status === 502 || status === 503)) {
          // The proxy found no recipient that could answer (before any byte of an answer): a fresh set may.
          ps.on('data', (chunk: Buffer) => held.push(chunk))
          return
        }
        ex.relaying()
        sse = reader ? contentType === 'text/event-stream' : ct.startsWith('text/event-stream')
        if (res.destroyed) return
        if (!sse) {
          ps.on('data', (chunk: Buffer) => held.push(chunk))
          return
        }
        res.writeHead(status, { 'content-type': contentType, 'x-request-id': ctl.requestId, [HEADERS.receiptId]: receiptId, [HEADERS.e2ee]: mode, 'cache-control': 'no-cache', connection: 'keep-alive' })
        res.flushHeaders()
        if (reader) {
          const r = reader
          ps.on('data', (cipher: Buffer) => {
            if (settled) return
            e2eeTrace?.(ctl.requestId, 'c.data')
            let events: Buffer[]
            try {
              events = r.push(cipher)
            } catch (err) {
              return broken(err as Error)
            }
            if (events.length === 0) return
            // The events of one read go to the app in one write, as on the plaintext path.
            const chunk = events.length === 1 ? events[0] : Buffer.concat(events)
            lastChunk = chunk
            seen.push(chunk)
            if (!res.write(chunk)) {
              ps.pause()
              res.once('drain', () => ps.resume())
            }
          })
          return
        }
        ps.on('data', (chunk: Buffer) => {
          e2eeTrace?.(ctl.requestId, 'c.data')
          lastChunk = chunk
          seen.push(chunk)
          if (!res.write(chunk)) {
            ps.pause()
            res.once('drain', () => ps.resume())
          }
        })
      })
      ps.once('trailers', (t) => {
        e2eeTrace?.(ctl.requestId, 'c.trailers')
        if (typeof t[HEADERS.receipt] === 'string') receiptTrailers = t
        const c = t[HEADERS.charged]
        if (typeof c !== 'string') return
        charged = true
        if (!this.recordCharge(link, c, log)) cheated = true
        billed = billedUsage(t, ctl.requestId)
        if (!billed) log.warn('the proxy billed an answer without passing on its usage and cost', { proxy: link.target })
        // The price this proxy charges per token, as it bills it: one of the terms its score is ranked by (proxy-scores.ts).
        else this.scores.setPrice(link.target, billed.cost.pricePerTokenNano)
      })
      ps.once('end', () => {
        e2eeTrace?.(ctl.requestId, 'c.end')
        if (settled) return
        if (!responded) return settle({ kind: 'retry', error: new Error('proxy closed the stream without answering') })
        // Only a failure of the named recipients calls for a fresh set; the proxy's own refusals (e.g. proxy_not_serving) reach the app as they are.
        if (status === 402 && link.proxyId && !sse) this.deps.refusedForFunds?.(link.proxyId, fundsShortfall(held))
        if (e2ee && !reader && (status === 502 || status === 503) && allowFresh && RECIPIENT_FAILURE_CODES.has(errorCode(held))) {
          return settle({ kind: 'retry', fresh: true, error: new Error(`proxy answered ${status}: ${Buffer.concat(held).toString('utf8').slice(0, 300)}`) })
        }
        let plainHeld: Buffer | undefined
        if (reader) {
          // The answer is complete only with its final record; a record changed, replayed, reordered or dropped fails it.
          try {
            const rest = held.length ? reader.push(Buffer.concat(held)) : []
            reader.end()
            plainHeld = Buffer.concat(rest)
          } catch (err) {
            // Ended without its final record and without a charge: the worker failed mid-answer (the proxy passes on its receipt).
            if (!charged && !reader.complete) {
              keep()
              log.warn('encrypted answer cut off', { proxy: link.target, reason: (err as Error).message })
              endWithError(new UpstreamError('the answer was cut off: the worker failed mid-answer'))
              return settle({ kind: 'done', outcome: 'failed' })
            }
            return broken(err as Error)
          }
          // From here on the decrypted answer is handled as a plaintext one: the usage with its cost is added below.
          held.length = 0
          if (plainHeld.length) held.push(plainHeld)
        }
        // The receipt is checked and kept right after the app's answer is written (below), in the same turn:
        // the app has its answer a little sooner, and a request it sends next finds the receipt kept.
        // An answer is complete only once its usage was billed: the proxy then sends the charge as a
        // trailer. A 200 that ends without it was cut off (the proxy died, or the link broke).
        if (status === 200 && (!charged || !billed)) {
          log.warn('proxy stream ended before the answer was billed', { proxy: link.target })
          // The proxy may have ended the stream with its own error event; do not add a second.
          if (!(sse && lastChunk?.includes('data: {"error"'))) endWithError(new UpstreamError('the answer was cut off: the proxy stream ended before the final usage'))
          else res.end()
          keep()
          return settle({ kind: 'done', outcome: 'failed' })
        }
        if (sse) {
          // The final usage chunk (with the cost), as OpenAI's include_usage, then [DONE] unless the answer ended in an error.
          const u = billed?.usage
          res.end(u ? `data: ${usageChunk(u.answer, u, { ...billed!.cost, receiptId })}\n\n${u.finishReason === 'error' ? '' : 'data: [DONE]\n\n'}` : undefined)
        } else if (!res.destroyed && !res.headersSent) {
          const body = billed ? withBilledUsage(Buffer.concat(held), billed.usage, { ...billed.cost, receiptId }, billed.usage.answer.object) : Buffer.concat(held)
          // JSON, or plain text (a transcription with response_format text).
          res.writeHead(status, { 'content-type': contentType, 'content-length': body.length, 'x-request-id': ctl.requestId, [HEADERS.receiptId]: receiptId, [HEADERS.e2ee]: mode, ...(retryAfter ? { 'retry-after': retryAfter } : {}) })
          res.end(body)
        }
        e2eeTrace?.(ctl.requestId, 'c.answered')
        keep()
        settle({ kind: 'done', outcome: status < 400 ? 'succeeded' : 'failed' })
      })
      ps.once('close', () => {
        keep()
        if (settled) return
        if (!responded) return settle({ kind: 'retry', error: new Error(`proxy stream closed before answering (code ${ps.rstCode})`) })
        log.warn('proxy stream broke mid-answer', { proxy: link.target, rstCode: ps.rstCode })
        endWithError(new UpstreamError('the answer was cut off: the network failed mid-stream'))
        settle({ kind: 'done', outcome: 'failed' })
      })
      sendBody(ps, payload)
      e2eeTrace?.(ctl.requestId, 'c.sent')
    })
  }

  /**
   * Checks and keeps the receipt a proxy handed over with an answer, noting whether the text the app got matches its
   * answer hash. Returns false when the receipt is invalid (the proxy is then backed off as a cheat).
   */
  private keepReceipt(link: ProxyLink, requestId: string, keyId: string | null, salt: Buffer, id: string, t: http2.IncomingHttpHeaders, text: string, log: Logger): boolean {
    let r: ReturnType<typeof decodeReceiptBoc>
    try {
      r = decodeReceiptBoc(String(t[HEADERS.receipt]))
      if (r.fields.requestId !== requestId) throw new Error(`the receipt is for request ${r.fields.requestId.slice(0, 64)}`)
      // It names this proxy (its payment key, else its identity key) and is signed by the worker it names, or by this proxy.
      const peer = link.peer
      if (peer) {
        const proxyKey = peer.claims.paymentKey ? Buffer.from(peer.claims.paymentKey, 'hex') : Buffer.from(peer.publicKey)
        if (!r.fields.proxyKey.equals(proxyKey)) throw new Error('the receipt names another proxy')
        if (!verifyReceiptSignature(r, r.fields.signer === 'worker' ? r.fields.workerKey : peer.publicKey)) throw new Error(`the receipt's ${r.fields.signer} signature does not verify`)
      }
    } catch (err) {
      this.receiptCheat(link, `it handed over an invalid receipt: ${(err as Error).message}`, log)
      return false
    }
    const store = this.deps.receipts
    if (!store || !link.proxyId) return true
    // A receipt the proxy states itself (its worker died, or its receipt was refused) hashes the empty text: the proxy never reads an answer.
    const matches = answerHash(salt, r.fields.signer === 'proxy' ? '' : text).equals(r.fields.answerHash)
    if (!matches) log.warn('the answer the app received does not match its receipt', { receipt: id })
    const idx = Number(t[HEADERS.receiptIndex])
    const cert = typeof t[HEADERS.receiptCert] === 'string' ? Buffer.from(t[HEADERS.receiptCert] as string, 'base64') : null
    store.add({ id, proxyId: link.proxyId, requestId, keyId, salt, boc: r.boc, index: Number.isSafeInteger(idx) && idx >= 0 ? idx : null, cert, answerMatches: matches })
    return true
  }

  private invalidReceipts = 0

  /**
   * A missing or invalid receipt with a billed answer: the answer already reached the app, so the proxy is
   * counted as cheating (backed off at once, CHEAT_WEIGHT failures; see proxy-scores.ts) and shown on /jsonstats.
   */
  private receiptCheat(link: ProxyLink, reason: string, log: Logger): void {
    this.invalidReceipts++
    log.error('proxy cheated on a receipt; backing it off', { proxy: link.target, reason })
    this.scores.observeFailure(link.target, 'cheated', reason)
  }

  /** GET /v1/receipts/{id} (one receipt, with its proof once committed) and GET /v1/receipts?since=… (a list). */
  private async serveReceipts(req: HopRequest): Promise<Reply> {
    const store = this.deps.receipts
    if (!store) throw new RouteNotFoundError('GET', req.path)
    const reader = this.deps.apps?.mayRead?.(req.headers.authorization)
    if (req.path === RECEIPTS_PATH) {
      const since = parseSince(req.query.get('since'))
      const list = store.since(since, RECEIPT_LIST_MAX, reader?.keyId).map((h) => heldReceiptJson(h))
      return json({ object: 'list', data: list, has_more: list.length === RECEIPT_LIST_MAX })
    }
    const id = decodeURIComponent(req.path.slice(RECEIPTS_PATH.length + 1))
    let h = store.get(id)
    // Another app's receipt is not found, as one that does not exist: its salt would let this app check that app's answers.
    if (!h || (reader && h.keyId !== reader.keyId)) throw new ReceiptNotFoundError(id)
    if (!h.verified) {
      await this.syncReceipts(h.proxyId, [h]).catch((err) => this.deps.log.debug('receipt proof not fetched', { error: (err as Error).message }))
      h = store.get(id)!
    }
    return json(heldReceiptJson(h))
  }

  /** Proxies whose receipt sync round is running. */
  private readonly syncing = new Set<string>()

  /**
   * One sync round: batch after batch of receipts waiting for their proof, while whole batches verify (up to
   * RECEIPT_SYNC_BATCHES), so a node answering more than a batch per interval does not fall behind for good.
   */
  private async syncBacklog(proxyId: string): Promise<void> {
    for (let b = 0; b < RECEIPT_SYNC_BATCHES; b++) {
      if ((await this.syncReceipts(proxyId)) < RECEIPT_PROOFS_MAX) return
    }
  }

  /**
   * Asks a proxy for the proofs of receipts this node holds, checks each against the root its
   * proxy contract holds on chain, and drops the proxy when its log omits one, or a proof or its
   * commit does not hold.
   */
  async syncReceipts(proxyId: string, receipts?: HeldReceipt[]): Promise<number> {
    const store = this.deps.receipts
    const link = this.links.find((l) => l.proxyId === proxyId && l.state === 'connected' && l.session && !l.session.closed)
    if (!store || !link) return 0
    const pending = receipts ?? store.unverified(proxyId, RECEIPT_PROOFS_MAX)
    if (pending.length === 0) return 0
    const drop = (reason: string) => this.dropForReceipts(link, reason)
    const ask = async (indices: number[]): Promise<ReceiptProofsReply> => {
      const r = await call(link.session!, PATHS.receiptProofs, { headers: JSON_BODY, body: Buffer.from(JSON.stringify({ indices })), signal: AbortSignal.timeout(MODELS_TIMEOUT_MS) })
      const body = await r.read(MAX_BODY_BYTES)
      if (r.status !== 200) throw new Error(`proxy answered ${r.status} for receipt proofs`)
      return JSON.parse(body.toString()) as ReceiptProofsReply
    }
    const indices = pending.map((p) => p.index!)
    // The proxy answers with its last confirmed commit; a commit landing meanwhile makes the chain newer: ask again.
    // First only which commit it stands on (no proofs), checked on chain; then the proofs, against that same commit.
    // Proofs are the costly part of the proxy's answer, so none are built against a commit the chain has moved past.
    let reply: ReceiptProofsReply | undefined
    let onChain: { seqno: number; root: string; count: number; paymentKey: string } | undefined
    for (let attempt = 0; attempt < 3; attempt++) {
      const head = this.deps.receiptsRoot ? (await ask([])).commit : null
      if (!head) {
        reply = await ask(indices)
        if (!reply.commit || !this.deps.receiptsRoot) break
        continue // a first commit landed in between: check it on chain first
      }
      onChain = await this.deps.receiptsRoot!(head.proxy)
      if (link.peer?.claims.paymentKey && onChain.paymentKey !== link.peer.claims.paymentKey) return drop(`the proxy contract ${head.proxy} is not this proxy's`), 0
      if (onChain.seqno !== head.seqno) {
        onChain = undefined
        continue
      }
      if (onChain.root !== head.root || onChain.count !== head.count) return drop(`commit ${head.seqno}: the chain holds another receipt root or count`), 0
      reply = await ask(indices)
      const c = reply.commit
      if (c && c.seqno === head.seqno) {
        // The same commit as checked; it must say the same of itself.
        if (c.root !== head.root || c.count !== head.count || c.proxy !== head.proxy) return drop(`commit ${c.seqno}: the proxy gave two different roots for it`), 0
        break
      }
      reply = undefined
      onChain = undefined
    }
    if (!reply) return 0
    if (reply.commit && this.deps.receiptsRoot && !onChain) return 0 // commits keep landing: try again later
    const byIndex = new Map(reply.proofs.map((p) => [p.index, p]))
    const c = reply.commit
    // Receipts checked here are marked in one transaction, also when a later one makes this node drop the proxy.
    const checked: Array<{ id: string; proof: Buffer }> = []
    const mark = () => {
      if (c && checked.length) store.markVerifiedMany(checked, { seqno: c.seqno, root: c.root, proxy: c.proxy, tx: c.tx })
      return checked.length
    }
    // Up to 500 proofs to check (a BoC parse and a Merkle path each): the apps' requests go on in between.
    const pace = pacer()
    for (const h of pending) {
      await pace()
      const p = byIndex.get(h.index!)
      if (!p || p.missing) return drop(`receipt ${h.index} is missing from the log`), mark()
      if (!c || !p.proof) {
        if (c && h.index! < c.count) return drop(`receipt ${h.index} is below the committed count ${c.count} but has no proof`), mark()
        continue
      }
      try {
        const proof = Buffer.from(p.proof, 'base64')
        verifyReceiptProofBoc(proof, Buffer.from(c.root, 'hex'), h.index!, h.hash)
        if (!onChain) continue // nothing to anchor it to: not verified
        checked.push({ id: h.id, proof })
      } catch (err) {
        return drop(`receipt ${h.index}: ${(err as Error).message}`), mark()
      }
    }
    return mark()
  }

  private receiptFailures = 0

  private dropForReceipts(link: ProxyLink, reason: string): void {
    this.deps.log.error('proxy receipt log disagrees with what this node holds; dropping it', { proxy: link.target, reason })
    this.receiptFailures++
    if (link.proxyId) this.deps.ledger?.distrust(link.proxyId, reason)
    // Backed off at once as a cheat; countedError keeps the next rebalance from counting it again.
    this.scores.observeFailure(link.target, 'cheated', reason)
    link.countedError = reason
    link.state = 'distrusted'
    link.lastError = reason
    link.session?.close()
  }

  /** Per proxy: how far this node has read its own receipts in the proxy's log, and their total adjusted tokens. */
  private readonly scanned = new Map<string, { next: number; adjusted: bigint; count: number }>()

  /**
   * Money meets receipts: reads this client's receipts from the proxy's log (new ones only) and
   * checks that neither what the proxy says it charged nor what was charged on chain exceeds the
   * sum of their adjusted tokens. Every billed answer has exactly one receipt, logged in the same
   * transaction, so more charged than receipted is a proxy charging for nothing: it is dropped.
   */
  async auditCharges(proxyId: string): Promise<void> {
    const link = this.links.find((l) => l.proxyId === proxyId && l.state === 'connected' && l.session && !l.session.closed)
    const rec = this.deps.ledger?.get(proxyId)
    if (!link || !rec) return
    const scan = this.scanned.get(proxyId) ?? { next: 0, adjusted: 0n, count: 0 }
    for (let page = 0; page < RECEIPT_SCAN_PAGES; page++) {
      const r = await call(link.session!, PATHS.receiptProofs, { headers: JSON_BODY, body: Buffer.from(JSON.stringify({ indices: [], from: scan.next })), signal: AbortSignal.timeout(MODELS_TIMEOUT_MS) })
      const body = await r.read(MAX_BODY_BYTES)
      if (r.status !== 200) throw new Error(`proxy answered ${r.status} for its receipt list`)
      const mine = (JSON.parse(body.toString()) as ReceiptProofsReply).mine ?? []
      const pace = pacer()
      for (const m of mine) {
        await pace()
        if (m.index < scan.next) return this.dropForReceipts(link, `its receipt list went back to ${m.index}`)
        scan.adjusted += decodeReceiptBoc(m.receipt).fields.adjustedTokens
        scan.count++
        scan.next = m.index + 1
      }
      if (mine.length === 0) break
    }
    this.scanned.set(proxyId, scan)
    if (rec.told.tokens > scan.adjusted) return this.dropForReceipts(link, `it says it charged ${rec.told.tokens} adjusted tokens, but its log holds receipts for ${scan.adjusted}`)
    if (rec.onChainTokens > scan.adjusted) return this.dropForReceipts(link, `${rec.onChainTokens} adjusted tokens were charged on chain, but its log holds receipts for ${scan.adjusted}`)
  }

  /** Checks the proxy's cumulative charge against what it said before; a regression drops the proxy (returns false). */
  private recordCharge(link: ProxyLink, json: string, log: Logger): boolean {
    if (!this.deps.ledger || !link.proxyId) return true
    try {
      const c = JSON.parse(json) as { tokens: string; nano: string }
      this.deps.ledger.recordStatement(link.proxyId, { tokens: BigInt(c.tokens), nano: BigInt(c.nano) })
      return true
    } catch (err) {
      const e = err as Error
      if (e.name !== 'ProxyRegressionError') return log.warn('unreadable charge statement from proxy', { error: e.message }), true
      log.error('proxy reported less than it had already charged; dropping it', { proxy: link.target, reason: e.message })
      this.scores.observeFailure(link.target, 'cheated', e.message)
      link.countedError = e.message
      link.state = 'distrusted'
      link.lastError = e.message
      link.session?.close()
      return false
    }
  }

  /** Money per proxy: what it said it charged (local) and what was charged on chain, in adjusted tokens and nanoTON. */
  private moneyStats(proxyId: string | undefined): Record<string, unknown> {
    const rec = proxyId && this.deps.ledger ? this.deps.ledger.get(proxyId) : undefined
    const extra = proxyId ? this.deps.funds?.(proxyId) : undefined
    return {
      charged: { tokens: (rec?.told.tokens ?? 0n).toString(), nano: (rec?.told.nano ?? 0n).toString() },
      chargedOnChain: { tokens: (rec?.onChainTokens ?? 0n).toString() },
      ...(extra ?? {}),
    }
  }

  /** Leaves proxies the current policy no longer allows (e.g. their image was revoked on the root). */
  revalidate(refusal: (peer: VerifiedPeer) => string | undefined): number {
    return revalidateLinks(this.links, refusal, this.deps.log)
  }


  stats(): Record<string, unknown> {
    return {
      role: 'client',
      receipts: this.deps.receipts ? { ...this.deps.receipts.counts(), proxiesDropped: this.receiptFailures, invalid: this.invalidReceipts } : null,
      protocol: PROTOCOL_VERSION,
      identity: identityStats(this.deps.identity.current()),
      requests: { ...this.counts },
      e2ee: { mode: this.o.e2ee, recipients: this.o.e2eeRecipients, requests: { ...this.e2eeCounts } },
      proxySessions: { max: this.o.maxProxySessions, open: this.links.filter((l) => l.abort).length },
      funding: this.deps.funding?.() ?? null,
      proxies: this.links.map((l) => ({
        target: l.target,
        state: l.abort ? l.state : 'standby',
        source: l.source,
        registeredId: l.registeredId ?? null,
        score: this.scores.snapshot([l.target])[0],
        proxyId: l.proxyId ?? null,
        ...this.moneyStats(l.proxyId),
        imageHash: l.peer?.imageHash ?? null,
        kind: l.peer?.kind ?? null,
        lastError: l.lastError ?? null,
        connectedAt: l.connectedAt ?? null,
        activeRequests: l.active,
        requests: l.requests,
        failovers: l.failovers,
      })),
    }
  }

  health(): { ok: boolean; connectedProxies: number } {
    const connectedProxies = this.readyLinks().length
    return { ok: connectedProxies > 0, connectedProxies }
  }

  /**
   * What /healthz answers: ready only when a request could be served now, that is a proxy is
   * connected, it lists at least one model (a worker is behind it) and, on chain, this client's
   * contract with that proxy is funded. Otherwise `reason` is 'no proxy', 'no worker' or 'not funded'.
   */
  async readiness(): Promise<Readiness> {
    const links = this.readyLinks()
    if (links.length === 0) return { ok: false, reason: 'no proxy', detail: 'no attested proxy is connected yet', connectedProxies: 0, models: [] }
    const models = new Set<string>()
    for (const link of links) {
      try {
        for (const id of (await this.modelsAt(link, AbortSignal.timeout(READINESS_TIMEOUT_MS))).listed) models.add(id)
      } catch {}
    }
    const base = { connectedProxies: links.length, models: [...models].sort() }
    if (models.size === 0) return { ok: false, reason: 'no worker', detail: 'the connected proxies list no model: no worker is connected to them yet', ...base }
    const funded = this.deps.funded
    if (funded && !links.some((l) => !l.peer?.claims.paymentKey || funded(l.proxyId!))) {
      const exhausted = this.deps.funding?.().exhausted === true
      const detail = exhausted ? "this client's contract with the connected proxies holds no funds, and the funding budget (chain.fundingBudgetNano) is exhausted" : "this client's contract with the connected proxies holds no funds yet"
      return { ok: false, reason: 'not funded', detail, ...base }
    }
    return { ok: true, ...base }
  }
}

export const RECEIPTS_PATH = '/v1/receipts'
/** How often held receipts are checked against the proxies' committed roots. */
export const RECEIPT_SYNC_MS = 5_000
/** Batches of RECEIPT_PROOFS_MAX receipts one sync round may verify: up to 1,000 receipts a second per proxy. */
export const RECEIPT_SYNC_BATCHES = 10
/** Pages of the client's own receipts read from a proxy's log per sync. */
const RECEIPT_SCAN_PAGES = 20
const RECEIPT_LIST_MAX = 1000

/** `since` as unix seconds, unix ms or an ISO date; 0 when absent. */
function parseSince(v: string | null): number {
  if (!v) return 0
  if (/^\d+$/.test(v)) {
    const n = Number(v)
    return n < 1e12 ? n * 1000 : n
  }
  const t = Date.parse(v)
  if (Number.isNaN(t)) throw new InvalidRequestError("'since' must be a unix time (seconds or ms) or an ISO 8601 date", 'since')
  return t
}

/** Error codes of a proxy answer that mean the request's named recipients could not answer (so a fresh set may). */
const RECIPIENT_FAILURE_CODES: ReadonlySet<string> = new Set(['no_worker_available', 'upstream_error', 'e2ee_failed'])

/**
 * How many nanoTON a proxy's refusal for funds says the request lacked (InsufficientQuotaError's message: "may cost up
 * to N nanoTON, but only A nanoTON are available"); undefined when it does not say (no funds at all, another proxy).
 */
export function fundsShortfall(held: Buffer[]): bigint | undefined {
  try {
    const message = String((JSON.parse(Buffer.concat(held).toString('utf8')) as { error?: { message?: unknown } }).error?.message ?? '')
    const m = /may cost up to (\d{1,40}) nanoTON, but only (\d{1,40}) nanoTON are available/.exec(message)
    return m ? BigInt(m[1]) - BigInt(m[2]) : undefined
  } catch {
    return undefined
  }
}

/** The OpenAI error code of an error answer's body, or '' when it is not one. */
function errorCode(held: Buffer[]): string {
  try {
    const code = (JSON.parse(Buffer.concat(held).toString('utf8')) as { error?: { code?: unknown } }).error?.code
    return typeof code === 'string' ? code : ''
  } catch {
    return ''
  }
}

/** What the app's request history records of an answer: its tokens, what it cost, its receipt. */
export interface AnswerUsage {
  promptTokens: number
  completionTokens: number
  /** nanoTON. */
  costNano: string
  receiptId: string | null
}

/**
 * The billed usage and cost the proxy passes on as trailers (outside input: checked, and it must be this
 * request's record and name its answer), or undefined.
 */
function billedUsage(t: http2.IncomingHttpHeaders, requestId: string): { usage: UsageRecord; cost: UsageCost } | undefined {
  const json = t[HEADERS.usage]
  const cost = parseCostTrailer(t[HEADERS.cost])
  if (typeof json !== 'string' || !cost) return undefined
  const r = parseUsageRecord(json)
  if (!r.ok || r.usage.requestId !== requestId || !namesItsAnswer(r.usage)) return undefined
  return { usage: r.usage, cost }
}

/** The app's model, checked to be one the hop headers can carry. */
function wireModel(model: unknown, missing: string): string {
  if (typeof model !== 'string' || !model) throw new InvalidRequestError(missing, 'model')
  if (isWireModelId(model)) return model
  // Longer than any model id can be (attested claims cap them at MAX_MODEL_ID_CHARS), so no worker serves it. It goes on
  // as a bounded stand-in, so the proxy still answers as for any unknown model: 402 to a client without funds (only
  // metadata is free), 404 to one with funds. The body keeps the app's model, which no worker accepts against this header.
  if (/^[\x21-\x7e]+$/.test(model)) return `${model.slice(0, 64)}...`
  throw new InvalidRequestError(`'model' must be 1-${MAX_MODEL_ID_CHARS} printable characters without spaces`, 'model')
}

const JSON_BODY = { 'content-type': 'application/json' } as const

/** Whether a call failed because its time ran out (an AbortSignal.timeout). */
function isTimeout(err: Error): boolean {
  return err.name === 'TimeoutError' || (err.name === 'AbortError' && (err.cause as Error | undefined)?.name === 'TimeoutError')
}

function newLink(host: string, port: number, source: 'config' | 'root'): ProxyLink {
  return { target: `${host}:${port}`, host, port, source, state: 'disconnected', active: 0, requests: 0, failovers: 0 }
}

/** Error answers from proxies an app (API key) may get in a burst before this node slows it (the proxy allows a node 20). */
export const APP_ERROR_BURST = 5
/** Error answers per second an app earns back (the proxy: 2 per node). */
export const APP_ERRORS_PER_SEC = 0.5
/** Below this many errors left in this node's budget at the proxy, only apps without recent errors are sent on. */
export const NODE_ERROR_RESERVE = 5
const NODE_ERROR_BUCKET = 'node'

/** An app's request_id as this node tracks it in flight: per API key (none for requests without one). */
function appRequestKey(keyId: string | null, requestId: string): string {
  return `${keyId ?? ''}\n${requestId}`
}

/**
 * A request's cache scope (CACHE_SCOPE_BYTES): one per app (API key, or none) of this node, keyed with the node's own
 * secret, so it names no key and differs between client nodes. Workers reuse cached prompt state only within it.
 */
function cacheScopeOf(secret: Buffer, keyId: string | null): Buffer {
  return crypto.createHmac('sha256', secret).update('cocoon-cache-scope\n').update(keyId ?? '').digest().subarray(0, CACHE_SCOPE_BYTES)
}
