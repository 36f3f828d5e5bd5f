// The proxy node: accepts attested workers and clients, routes each request to a worker, relays the answer, meters usage.
import http2 from 'node:http2'
import type tls from 'node:tls'
import { Counter, Gauge } from 'prom-client'
import { type IdentitySource, type VerifiedPeer, identityStats } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'
import { createRegistry, type OpsSource } from '../core/ops.ts'
import { listenAttested, type AttestedSocket, type PeerVerifier } from '../net/attested.ts'
import { ConflictError, errorResponse, InvalidRequestError, TooManyRequestsError, UnfundedClientError, ModelNotFoundError, NoWorkerAvailableError, RequestTimeoutError, UpstreamError } from '../net/errors.ts'
import { call, errorReply, json, Reply, respond, respondError, serve, type HopRequest, type Routes } from '../net/hop.ts'
import { discardBody, readBody } from '../net/body.ts'
import { intHeader, parseHopRouting, type HopRouting } from '../net/validate.ts'
import { H2_OPTIONS, sendBody, tuneSession } from '../net/h2.ts'
import { CANCEL_GRACE_MS, DEFAULT_MAX_COEFFICIENT, DEFAULT_TIMEOUT_SEC, HEADERS, HOP_TIMEOUT_FACTOR, MAX_AUDIO_BODY_BYTES, MAX_AUDIO_SECONDS, MAX_BODY_BYTES, MIN_AUDIO_BYTES_PER_SECOND, MAX_REQUEST_ID_CHARS, MAX_TIMEOUT_SEC, PATHS, PROMPT_OVERHEAD_TOKENS, PROTOCOL_VERSION, type UsageRecord, type WorkerInfo, type WorkerStatementReply, type WorkerReceiptEntry, STATEMENT_RECEIPTS_MAX, CONTROL_BODY_BYTES, RECEIPT_PROOFS_BODY_BYTES, type ReceiptProofsRequest, type ReceiptProofsReply, type ReceiptCommitInfo, RECEIPT_LIST_LIMIT, RECEIPT_PROOFS_MAX, type WorkerStatement, type FinalCharge, type WorkerCandidates } from '../net/protocol.ts'
import { costTrailer } from '../net/openai.ts'
import { peerCertDer } from '../tee/index.ts'
import { decodeReceiptBoc, newSalt, parseSalt, priceHeader, receiptFields, receiptMismatch, signReceipt, verifyReceiptSignature, type Receipt } from '../payments/receipts/receipt.ts'
import { DuplicateRequestError, ProxyNotServingError, type ProxyBilling, type Reservation } from '../payments/billing.ts'
import { worstCaseAdjustedTokens } from '../payments/pricing.ts'
import { checkUsage, ed25519PublicKey } from '../net/usage.ts'
import { addUsage, tokenStats, zeroUsage, type SignedUsage, type Usage } from '../core/usage.ts'
import { ErrorBudget } from './error-budget.ts'
import { DEFAULT_REQUEST_MS, qualityOf, qualityStats, recordOutcome, setReliability, workerEndpoints, WorkerPool, type WorkerConn } from './routing.ts'
import { AdmissionQueue, DEFAULT_QUEUE_DEPTH, DEFAULT_QUEUE_MAX_WAIT_MS } from './admission.ts'
import type { ReliabilityPublisher } from './reliability.ts'
import { tapStream } from '../net/tap.ts'
import { e2eeTrace } from '../net/e2ee-trace.ts'
import { E2EE_CONTENT_TYPE, type E2eeError, encodeWrappedKeys, parseRoute, parseWrappedKeys, type E2eeRoute, type WrappedKey } from '../net/e2ee.ts'

/** Room for the encrypted envelope (version byte and tag) on top of the plaintext body limit. */
const E2EE_OVERHEAD_BYTES = 64

/** An encrypted request as the proxy sees it: the route it may read, and the wrapped keys it may only pass on. */
interface E2eeRequest {
  route: E2eeRoute
  routeHeader: string
  keys: WrappedKey[]
}

export const MAX_ATTEMPTS = 3
export const WORKER_INFO_TIMEOUT_MS = 5_000
export const PING_INTERVAL_MS = 15_000
/** How often workers are told what they earned. */
export const STATEMENT_INTERVAL_MS = 2_000
/** A worker's current certificate is re-read from it this often, for clients that encrypt to it (certificates renew hourly). */
export const WORKER_CERT_REFRESH_MS = 5 * 60_000
/** Refused peers kept with their reasons for /jsonstats. */
export const MAX_REFUSALS_SHOWN = 50

export interface ProxyOptions {
  workerListen: { host: string; port: number }
  clientListen: { host: string; port: number }
  /** Workers tried per request when they fail before the first byte. Default 3. */
  maxAttempts?: number
  /** Requests that may wait for a worker slot, across clients; 0: none wait. Default 256. */
  queueDepth?: number
  /** Longest wait for a worker slot, ms, before 429 with Retry-After. Default 30 000. */
  queueMaxWaitMs?: number
  /** Time each routing decision and show the figures under `routing` in /jsonstats (COCOON_TIME_ROUTING=1). Default off. */
  timeRouting?: boolean
}

export interface ProxyDeps {
  identity: IdentitySource
  verify: PeerVerifier
  log: Logger
  billing: ProxyBilling
  /** Signs a closing client's final charge (on chain only). */
  finalCharge?: (client: string, inFlightNano: bigint) => { tokens: bigint; voucher: string }
  /** On-chain figures for /jsonstats (contract, stake, last commit). */
  chainStats?: () => Record<string, unknown>
  /** The proxy contract's address, where the receipt log's root is committed (on chain only). */
  proxyContract?: () => string
  /** The newest signed payout voucher for a worker account (base64), when the proxy settles on chain. */
  payoutVoucher?: (workerAccount: string) => string | undefined
  /** The account a client is billed under (its wallet address on chain). Default: its key, hex. */
  clientAccount?: (peer: VerifiedPeer) => string
  /** The reliability record (on chain only): told when workers come and go (uptime), asked for their routing scores. */
  reliability?: ReliabilityPublisher
}

type Outcome = 'succeeded' | 'failed' | 'cancelled' | 'timeout' | 'rejected'

export function createProxy(opts: ProxyOptions, deps: ProxyDeps): Proxy {
  return new Proxy(deps, { ...opts, maxAttempts: opts.maxAttempts ?? MAX_ATTEMPTS, queueDepth: opts.queueDepth ?? DEFAULT_QUEUE_DEPTH, queueMaxWaitMs: opts.queueMaxWaitMs ?? DEFAULT_QUEUE_MAX_WAIT_MS, timeRouting: opts.timeRouting ?? false })
}

export class Proxy implements OpsSource {
  /** Set by the node's start-up when it runs on a chain (see OpsSource). */
  chainReachability?: OpsSource['chainReachability']
  readonly registry = createRegistry('proxy')
  /** Connected workers by id, indexed for routing (a decision visits only the workers that could win it). */
  private readonly workers = new WorkerPool()
  private readonly clientH2 = http2.createServer(H2_OPTIONS)
  private servers: tls.Server[] = []
  private nextId = 1
  private statementTimer?: NodeJS.Timeout
  /** Last statement sent per worker connection, to send only changes. */
  private readonly told = new WeakMap<WorkerConn, string>()
  private readonly clientSessions = new Set<http2.ServerHttp2Session>()
  private readonly clientAccounts = new WeakMap<http2.Http2Session, string>()
  private readonly clientSockets = new Set<tls.TLSSocket>()
  /** `client \n request_id` of every request in flight, so one client cannot run two with the same id. */
  private readonly inflight = new Set<string>()
  /** Worker slots: claimed with the choice of worker, waited for in a bounded queue fair across clients. */
  private readonly admission: AdmissionQueue
  private refused = { workers: 0, clients: 0 }
  /** The latest refused peers with their reasons, newest last, for /jsonstats (and the dashboard). */
  private readonly refusals: Array<{ at: number; role: 'worker' | 'client'; reason: string; peer: string }> = []
  /** Error answers per client: a client that keeps sending bad requests is slowed down before anything is read or logged. */
  private readonly errorBudget = new ErrorBudget()
  private rateLimited = 0
  /** Chat and completions requests by mode: `on` end-to-end encrypted (the proxy saw ciphertext), `off` plaintext. */
  private readonly e2eeCounts = { on: 0, off: 0 }
  /** Worker keys caught misbehaving (e.g. answering as a model they did not attest), with the reason. */
  private readonly banned = new Map<string, string>()
  private readonly counts: Record<Outcome, number> & { requests: number; retries: number } = { requests: 0, succeeded: 0, failed: 0, cancelled: 0, timeout: 0, rejected: 0, retries: 0 }
  private readonly tokens = zeroUsage()
  private readonly m = {
    requests: new Counter({ name: 'cocoon_proxy_requests_total', help: 'Client requests by outcome', labelNames: ['outcome'], registers: [this.registry] }),
    retries: new Counter({ name: 'cocoon_proxy_retries_total', help: 'Requests retried on another worker before the first byte', registers: [this.registry] }),
    tokens: new Counter({ name: 'cocoon_proxy_tokens_total', help: 'Metered tokens by kind', labelNames: ['kind'], registers: [this.registry] }),
    workers: new Gauge({ name: 'cocoon_proxy_workers', help: 'Connected attested workers', registers: [this.registry] }),
    refused: new Counter({ name: 'cocoon_proxy_peers_refused_total', help: 'Peers whose evidence was refused', labelNames: ['role'], registers: [this.registry] }),
  }

  constructor(
    private readonly deps: ProxyDeps,
    private readonly o: Required<ProxyOptions>,
  ) {
    this.admission = new AdmissionQueue(() => this.workers, { depth: o.queueDepth, maxWaitMs: o.queueMaxWaitMs, timeRouting: o.timeRouting })
    const queue = this.admission
    const registers = [this.registry]
    new Gauge({ name: 'cocoon_proxy_queue_waiting', help: 'Requests waiting for a worker slot', registers, collect(this: Gauge) { this.set(queue.stats().queued) } })
    new Gauge({ name: 'cocoon_proxy_queue_depth', help: 'Requests that may wait for a worker slot', registers, collect(this: Gauge) { this.set(o.queueDepth) } })
    new Gauge({ name: 'cocoon_proxy_queue_admitted_after_wait_total', help: 'Requests that got a worker slot after waiting', registers, collect(this: Gauge) { this.set(queue.stats().admittedAfterWait) } })
    new Gauge({
      name: 'cocoon_proxy_queue_rejected_total',
      help: 'Requests answered 429 because the queue was full (full) or the wait too long (wait)',
      labelNames: ['why'],
      registers,
      collect(this: Gauge) {
        const q = queue.stats()
        this.set({ why: 'full' }, q.rejectedFull)
        this.set({ why: 'wait' }, q.timedOut)
      },
    })
    // Each committed reliability record re-scores the connected workers for routing.
    deps.reliability?.onRecord(() => {
      for (const c of this.workers.values()) setReliability(c, deps.reliability!.scoreOf(Buffer.from(c.peer.publicKey).toString('hex'), c.info.model.id))
    })
    this.clientH2.on('stream', serve(this.clientRoutes(), { log: this.deps.log, peer: (stream) => this.clientAccounts.get(stream.session!), before: this.beforeClient }))
    this.clientH2.on('session', (s) => {
      this.clientSessions.add(s)
      tuneSession(s)
      s.once('close', () => this.clientSessions.delete(s))
      s.on('error', () => {})
    })
  }

  async start(): Promise<{ workerPort: number; clientPort: number }> {
    const log = this.deps.log
    const ws = await listenAttested({
      ...this.o.workerListen,
      identity: this.deps.identity,
      verify: this.deps.verify,
      expectedRole: 'worker',
      log,
      onPeer: (a) => void this.addWorker(a),
      onRefused: (reason, remote) => {
        this.refused.workers++
        this.m.refused.inc({ role: 'worker' })
        this.noteRefusal('worker', reason, remote)
      },
    })
    const cs = await listenAttested({
      ...this.o.clientListen,
      identity: this.deps.identity,
      verify: this.deps.verify,
      expectedRole: 'client',
      log,
      onPeer: ({ socket, peer }) => {
        this.clientSockets.add(socket)
        socket.once('close', () => this.clientSockets.delete(socket))
        const account = this.deps.clientAccount?.(peer) ?? Buffer.from(peer.publicKey).toString('hex')
        this.clientH2.once('session', (s) => this.clientAccounts.set(s, account))
        this.clientH2.emit('connection', socket)
      },
      onRefused: (reason, remote) => {
        this.refused.clients++
        this.m.refused.inc({ role: 'client' })
        this.noteRefusal('client', reason, remote)
      },
    })
    this.servers = [ws, cs]
    this.statementTimer = setInterval(() => void this.pushStatements(), STATEMENT_INTERVAL_MS)
    this.statementTimer.unref()
    const port = (s: tls.Server) => (s.address() as { port: number }).port
    log.info('proxy listening', { workers: `${this.o.workerListen.host}:${port(ws)}`, clients: `${this.o.clientListen.host}:${port(cs)}` })
    return { workerPort: port(ws), clientPort: port(cs) }
  }

  async stop(): Promise<void> {
    clearInterval(this.statementTimer)
    for (const s of this.servers) s.close()
    for (const w of this.workers.values()) w.session.destroy()
    for (const s of this.clientSessions) s.destroy()
    for (const s of this.clientSockets) s.destroy()
    this.clientH2.close()
  }

  private async addWorker({ socket, peer }: AttestedSocket): Promise<void> {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    const log = this.deps.log.child({ worker: remote })
    const banned = this.banned.get(Buffer.from(peer.publicKey).toString('hex'))
    if (banned) {
      log.warn('refusing a worker caught misbehaving before', { reason: banned })
      this.refused.workers++
      this.m.refused.inc({ role: 'worker' })
      socket.destroy()
      return
    }
    // The worker dialled us, but we are the HTTP/2 client on its socket.
    const session = http2.connect('https://worker.cocoon', { ...H2_OPTIONS, createConnection: () => socket })
    tuneSession(session)
    session.on('error', (err) => log.debug('worker session error', { error: err.message }))
    try {
      const info = await this.fetchInfo(session)
      if (info.protocol !== PROTOCOL_VERSION) throw new Error(`protocol ${info.protocol} is not ${PROTOCOL_VERSION}`)
      if (info.model.id !== peer.claims.modelId || info.model.hash !== (peer.claims.modelHash ?? '')) {
        throw new Error(`worker serves ${info.model.id} (${info.model.hash}) but attested ${peer.claims.modelId} (${peer.claims.modelHash})`)
      }
      const conn: WorkerConn = {
        id: `w${this.nextId++}-${Buffer.from(peer.publicKey).toString('hex').slice(0, 8)}`,
        session,
        peer,
        key: ed25519PublicKey(peer.publicKey),
        account: info.payoutAddress ?? Buffer.from(peer.publicKey).toString('hex'),
        info,
        remote,
        connectedAt: Date.now(),
        active: 0,
        avgMs: DEFAULT_REQUEST_MS,
        failRate: 0,
        served: 0,
        failed: 0,
        tokens: zeroUsage(),
        certDer: peerCertDer(socket),
      }
      conn.hpkeKeys = new Set(peer.claims.hpkeKey ? [peer.claims.hpkeKey] : [])
      conn.currentCert = conn.certDer ? { der: conn.certDer, fetchedAtMs: Date.now() } : undefined
      await this.adoptCertificate(conn, info)
      this.workers.set(conn.id, conn)
      this.m.workers.set(this.workers.size)
      const workerKey = Buffer.from(peer.publicKey).toString('hex')
      setReliability(conn, this.deps.reliability?.scoreOf(workerKey, info.model.id))
      this.deps.reliability?.uptime.connected(workerKey, info.model.id)
      this.admission.pump()
      const ping = setInterval(() => {
        // A destroyed session emits 'close' (which stops this timer) only once its socket is gone; until then ping throws.
        if (session.closed || session.destroyed) return
        try {
          session.ping((err) => err && session.destroy())
        } catch {
          session.destroy()
        }
      }, PING_INTERVAL_MS).unref()
      session.once('close', () => {
        clearInterval(ping)
        this.deps.reliability?.uptime.disconnected(workerKey, info.model.id)
        this.workers.delete(conn.id)
        this.m.workers.set(this.workers.size)
        this.admission.pump()
        log.info('worker disconnected', { id: conn.id })
      })
      log.info('worker connected', { id: conn.id, model: info.model.id, coefficient: info.coefficient, image: peer.imageHash, kind: peer.kind })
    } catch (err) {
      log.warn('worker rejected after handshake', { error: (err as Error).message })
      session.destroy()
    }
  }

  /**
   * Takes the worker's current certificate from its info, if it verifies under the same policy and
   * is the same worker (identity key, model): clients verify it again themselves before encrypting to it.
   */
  private async adoptCertificate(conn: WorkerConn, info: WorkerInfo): Promise<void> {
    if (!info.certificate) return
    const der = Buffer.from(info.certificate, 'base64')
    try {
      const p = await this.deps.verify(der, 'worker')
      if (!Buffer.from(p.publicKey).equals(Buffer.from(conn.peer.publicKey))) throw new Error('a certificate of another worker')
      if (p.claims.modelId !== conn.peer.claims.modelId || p.claims.modelHash !== conn.peer.claims.modelHash) throw new Error('a certificate for another model')
      conn.currentCert = { der, fetchedAtMs: Date.now() }
      if (p.claims.hpkeKey) this.workers.addHpkeKey(conn, p.claims.hpkeKey)
    } catch (err) {
      this.deps.log.warn('worker current certificate refused', { worker: conn.id, reason: (err as Error).message.slice(0, 300) })
    }
  }

  /** Re-reads a worker's certificate when the one held is older than WORKER_CERT_REFRESH_MS (one fetch at a time). */
  private readonly certRefreshes = new WeakMap<WorkerConn, Promise<void>>()
  private refreshCertificate(conn: WorkerConn): Promise<void> {
    if (conn.currentCert && Date.now() - conn.currentCert.fetchedAtMs < WORKER_CERT_REFRESH_MS) return Promise.resolve()
    let p = this.certRefreshes.get(conn)
    if (!p) {
      p = this.fetchInfo(conn.session)
        .then((info) => this.adoptCertificate(conn, info))
        .catch(() => {})
        .finally(() => this.certRefreshes.delete(conn))
      this.certRefreshes.set(conn, p)
    }
    return p
  }

  /** Whether every untried worker an encrypted request names has its breaker open (none of them would be tried soon). */
  private recipientsAllFailing(e2ee: E2eeRequest, tried: ReadonlySet<string>): boolean {
    const now = Date.now()
    const named = [...this.workers.recipients(e2ee.keys.map((k) => k.recipient))].filter((id) => !tried.has(id)).map((id) => this.workers.get(id)!)
    return named.length > 0 && named.every((w) => qualityOf(w).breaker.state === 'open' && now < qualityOf(w).breaker.until)
  }

  /** The workers serving `model`, with their current certificates, for clients that encrypt to them (PATHS.workers). */
  async candidates(model: string): Promise<WorkerCandidates> {
    const ws = [...this.workers.values()].filter((w) => w.info.model.id === model)
    // As an inference request for it would be: a 404 (which also counts against the client's error budget).
    if (ws.length === 0) throw new ModelNotFoundError(model)
    await Promise.all(ws.map((w) => this.refreshCertificate(w)))
    return {
      model,
      workers: ws.filter((w) => w.currentCert).map((w) => ({ certificate: Buffer.from(w.currentCert!.der).toString('base64'), coefficient: w.info.coefficient })),
    }
  }

  private async fetchInfo(session: http2.ClientHttp2Session): Promise<WorkerInfo> {
    const r = await call(session, PATHS.workerInfo, { signal: AbortSignal.timeout(WORKER_INFO_TIMEOUT_MS) })
    const body = await r.read(CONTROL_BODY_BYTES)
    if (r.status !== 200) throw new Error(`worker info answered ${r.status}`)
    return JSON.parse(body.toString()) as WorkerInfo
  }

  models(): Record<string, unknown> {
    const byModel = new Map<string, WorkerConn[]>()
    for (const w of this.workers.values()) {
      const list = byModel.get(w.info.model.id) ?? []
      list.push(w)
      byModel.set(w.info.model.id, list)
    }
    const data = [...byModel.entries()]
      .sort((a, b) => a[0].localeCompare(b[0]))
      .map(([id, ws]) => ({
        id,
        object: 'model',
        created: Math.floor(Math.min(...ws.map((w) => w.connectedAt)) / 1000),
        owned_by: 'cocoon',
        hashes: [...new Set(ws.map((w) => w.info.model.hash))],
        endpoints: [...new Set(ws.flatMap((w) => workerEndpoints(w.info)))].sort(),
        workers: ws
          .map((w) => ({ coefficient: w.info.coefficient, running_requests: w.active, max_running_requests: w.info.maxActiveRequests }))
          .sort((a, b) => a.coefficient - b.coefficient),
      }))
    return { object: 'list', data }
  }

  /** Every client request first: the test tap, then the error budget (a client that keeps erring is slowed down; 429 is the network being busy, not the client erring). */
  private readonly beforeClient = (req: HopRequest<string | undefined>, stream: http2.ServerHttp2Stream): void => {
    tapStream(stream, req.headers)
    const account = req.peer ?? 'unknown'
    const limit = this.errorBudget.check(account)
    if (limit.waitSec > 0) {
      this.rateLimited++
      if (limit.first) this.deps.log.warn('client keeps getting errors; slowing it down', { client: account, retryAfterSec: limit.waitSec })
      throw new TooManyRequestsError(`too many failed requests from this client; retry after ${limit.waitSec} s`, limit.waitSec)
    }
    stream.once('close', () => {
      const status = Number(stream.sentHeaders?.[':status'] ?? 0)
      if (status >= 400 && status < 500 && status !== 429) this.errorBudget.spend(account)
    })
  }

  /** What the proxy serves to client nodes. `req.peer` is the client's account. */
  private clientRoutes(): Routes<string | undefined, http2.ServerHttp2Stream> {
    const inference = (req: HopRequest<string | undefined>, stream: http2.ServerHttp2Stream) => this.handleInference(stream, req.headers, req.path)
    return {
      [`GET ${PATHS.models}`]: () => json(this.models()),
      [`GET ${PATHS.workers}`]: async (req) => {
        const model = req.query.get('model')
        if (!model) throw new InvalidRequestError("'model' is required", 'model')
        // The candidates serve only to encrypt an inference request, so they are gated like one: a proxy that is not
        // serving says so, and a client without funds gets 402 here too (metadata, /v1/models, stays free).
        const serving = this.deps.billing.serving
        if (!serving.ok) throw new ProxyNotServingError(serving.reason!)
        if (!(await this.deps.billing.isFunded(req.peer ?? 'unknown'))) throw new UnfundedClientError()
        return json(await this.candidates(model))
      },
      [`POST ${PATHS.receiptProofs}`]: async (req) => {
        const b = await req.read(RECEIPT_PROOFS_BODY_BYTES)
        let reply: ReceiptProofsReply
        try {
          reply = this.receiptProofs(req.peer ?? '', JSON.parse(b.toString()) as ReceiptProofsRequest)
        } catch (err) {
          throw new InvalidRequestError(`bad receipt proofs request: ${(err as Error).message}`)
        }
        return json(reply)
      },
      [`POST ${PATHS.close}`]: (req) => {
        if (!this.deps.finalCharge || !req.peer) throw new ConflictError('this proxy settles off-chain: there is no channel to close', 'no_channel')
        const serving = this.deps.billing.serving
        if (!serving.ok) throw new ProxyNotServingError(serving.reason!)
        // Refused with RequestsInFlightError (409) while the client has requests in flight.
        const r = this.deps.finalCharge(req.peer, this.deps.billing.reservedNano(req.peer))
        return json({ tokens: r.tokens.toString(), voucher: r.voucher } satisfies FinalCharge)
      },
      [`POST ${PATHS.chat}`]: inference,
      [`POST ${PATHS.completions}`]: inference,
      [`POST ${PATHS.embeddings}`]: inference,
      [`POST ${PATHS.transcriptions}`]: inference,
    }
  }

  private finish(outcome: Outcome): void {
    this.counts[outcome]++
    this.m.requests.inc({ outcome })
  }

  private async handleInference(cs: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, path: string): Promise<void> {
    this.counts.requests++
    const rid = headers[HEADERS.requestId]
    const requestId = rid === undefined ? crypto.randomUUID() : String(rid)
    const client = this.clientAccounts.get(cs.session!) ?? 'unknown'
    if (requestId.length === 0 || requestId.length > MAX_REQUEST_ID_CHARS || !/^[\w.:-]+$/.test(requestId)) {
      cs.resume()
      this.finish('rejected')
      return respondError(cs, new InvalidRequestError(`'request_id' (header ${HEADERS.requestId}) must be 1-${MAX_REQUEST_ID_CHARS} characters of [A-Za-z0-9_.:-]`, 'request_id'))
    }
    const key = `${client}\n${requestId}`
    if (this.inflight.has(key)) {
      cs.resume()
      this.finish('rejected')
      return respondError(cs, new DuplicateRequestError(requestId))
    }
    this.inflight.add(key)
    const held: { reservation?: Reservation } = {}
    try {
      await this.serveInference(cs, headers, path, requestId, client, held)
    } finally {
      this.inflight.delete(key)
      this.deps.billing.release(held.reservation)
    }
  }

  private async serveInference(cs: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, path: string, requestId: string, client: string, held: { reservation?: Reservation }): Promise<void> {
    e2eeTrace?.(requestId, 'p.start')
    const log = this.deps.log.child({ requestId })
    const started = Date.now()
    // Keys the receipt's hashes; only the client node (and so the app) should know it. Without one, nobody can check them.
    const salt = parseSalt(headers[HEADERS.salt]) ?? newSalt()
    let body: Buffer
    let routing: HopRouting
    let maxCoefficient: number
    let prefix: string | undefined
    let timeoutMs: number
    let e2ee: E2eeRequest | undefined
    try {
      const serving = this.deps.billing.serving
      if (!serving.ok) throw new ProxyNotServingError(serving.reason!)
      // Before reading a byte of the body: a client with no funds gets metadata calls only.
      if (!(await this.deps.billing.isFunded(client))) {
        await discardBody(cs, path === PATHS.transcriptions ? MAX_AUDIO_BODY_BYTES : MAX_BODY_BYTES)
        throw new UnfundedClientError()
      }
      // Everything routed, reserved and billed by comes from the hop headers the client node set, checked
      // here like any outside input; the body is only counted (its bytes bound the prompt), never parsed.
      const proto = headers[HEADERS.protocol]
      if (proto !== undefined && proto !== String(PROTOCOL_VERSION)) throw new InvalidRequestError(`this proxy speaks protocol ${PROTOCOL_VERSION}; the request is protocol '${String(proto).slice(0, 16)}' (header ${HEADERS.protocol})`, 'protocol')
      if (headers[HEADERS.salt] !== undefined && !parseSalt(headers[HEADERS.salt])) throw new InvalidRequestError(`'salt' (header ${HEADERS.salt}) must be 64 hex characters`, 'salt')
      routing = parseHopRouting(headers)
      maxCoefficient = intHeader(headers[HEADERS.maxCoefficient], DEFAULT_MAX_COEFFICIENT, 'max_coefficient')!
      const pk = headers[HEADERS.prefixKey]
      if (pk !== undefined && (typeof pk !== 'string' || !/^[0-9a-f]{1,64}$/.test(pk))) throw new InvalidRequestError(`'prefix_key' (header ${HEADERS.prefixKey}) must be 1-64 lower-case hex characters`, 'prefix_key')
      prefix = pk
      timeoutMs = intHeader(headers[HEADERS.timeoutMs], DEFAULT_TIMEOUT_SEC * 1000, 'timeout', { min: 1, max: MAX_TIMEOUT_SEC * 1000 })!
      if (headers[HEADERS.e2eeRoute] !== undefined) {
        // End-to-end encrypted: the route header is the AAD of the body and keys, so the hop headers must say the same; the body is never opened here.
        try {
          const routeHeader = String(headers[HEADERS.e2eeRoute])
          e2ee = { route: parseRoute(routeHeader), routeHeader, keys: parseWrappedKeys(headers[HEADERS.e2eeKeys]) }
        } catch (err) {
          throw new InvalidRequestError(`bad end-to-end encryption headers: ${(err as E2eeError).reason ?? (err as Error).message}`)
        }
        const r = e2ee.route
        if (path !== PATHS.chat && path !== PATHS.completions) throw new InvalidRequestError('only chat and completions are end-to-end encrypted')
        if (r.path !== path) throw new InvalidRequestError('the encrypted request is bound to another endpoint')
        if (r.requestId !== requestId) throw new InvalidRequestError('the encrypted request is bound to another request id', 'request_id')
        if (r.model !== routing.model || r.stream !== routing.stream || r.maxTokens !== routing.maxTokens || r.maxCoefficient !== maxCoefficient) {
          throw new InvalidRequestError('the hop headers disagree with the encrypted request\'s route')
        }
      }
      body = await readBody(cs, e2ee ? MAX_BODY_BYTES + E2EE_OVERHEAD_BYTES : path === PATHS.transcriptions ? MAX_AUDIO_BODY_BYTES : MAX_BODY_BYTES)
      e2eeTrace?.(requestId, 'p.body')
    } catch (err) {
      if (!cs.readableEnded) cs.resume()
      this.finish('rejected')
      return respondError(cs, err)
    }
    const model = routing.model
    if (e2ee) this.e2eeCounts.on++
    else if (path === PATHS.chat || path === PATHS.completions) this.e2eeCounts.off++
    const ownTimeoutMs = Math.floor(timeoutMs * HOP_TIMEOUT_FACTOR)
    let clientGone = false
    const deadline = started + ownTimeoutMs
    // Waiting for a slot ends when the client goes away or the request's deadline passes.
    const gone = new AbortController()
    cs.once('close', () => {
      clientGone = true
      gone.abort(new Error('client went away'))
    })
    const waitSignal = AbortSignal.any([gone.signal, AbortSignal.timeout(Math.max(1, ownTimeoutMs))])
    const tried = new Set<string>()
    let lastError: Error | undefined
    for (let attempt = 0; attempt < this.o.maxAttempts; attempt++) {
      let conn: WorkerConn
      if (e2ee && this.recipientsAllFailing(e2ee, tried)) {
        // Waiting would not help: every worker the request names is failing (breaker open). The client node draws a fresh set.
        if (attempt > 0 && lastError) break
        this.finish('rejected')
        return respondError(cs, new NoWorkerAvailableError('every worker this encrypted request names is failing; the client node may name others'))
      }
      try {
        // An encrypted request goes only to a worker it names as a recipient.
        const only = e2ee ? this.workers.recipients(e2ee.keys.map((k) => k.recipient)) : undefined
        conn = await this.admission.claim({ client, model, maxCoefficient, exclude: tried, only, path, affinity: prefix ? { prefixKey: prefix, client } : undefined }, waitSignal)
      } catch (err) {
        const e = err as Error
        if (attempt > 0 && lastError && (e.name === 'WorkersExhaustedError' || e.name === 'ModelNotFoundError')) break
        if (clientGone) return this.finish('cancelled')
        if (Date.now() >= deadline) break
        this.finish('rejected')
        log.info('request not routed', { model, reason: e.message, workers: this.workers.size })
        return respondError(cs, e.name === 'WorkersExhaustedError' ? new NoWorkerAvailableError(`no worker for '${model}' is left to try`) : e)
      }
      tried.add(conn.id)
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        this.admission.release(conn, client)
        break
      }
      // Reserve the worst case before any work: all of max_tokens and a prompt as long as the body, at the
      // dearest multipliers and the app's max_coefficient. The worker never exceeds max_tokens.
      // Embeddings generate nothing; a transcription is billed by its audio seconds, bounded by the upload's size.
      const generates = path === PATHS.chat || path === PATHS.completions
      const maxTokens = generates ? Math.min(routing.maxTokens ?? conn.info.maxTokensCap, conn.info.maxTokensCap) : 0
      const maxAudioSeconds = path === PATHS.transcriptions ? Math.min(MAX_AUDIO_SECONDS, Math.ceil(body.length / MIN_AUDIO_BYTES_PER_SECOND)) : 0
      const worst =
        path === PATHS.transcriptions
          ? worstCaseAdjustedTokens(0, 0, maxCoefficient, this.deps.billing.params(), maxAudioSeconds)
          : worstCaseAdjustedTokens(body.length + PROMPT_OVERHEAD_TOKENS, maxTokens, maxCoefficient, this.deps.billing.params())
      try {
        held.reservation = await this.deps.billing.reserve({ client, requestId, worstTokens: worst, deadlineMs: deadline })
      } catch (err) {
        this.admission.release(conn, client)
        this.finish('rejected')
        log.info('request refused at admission', { reason: (err as Error).message })
        return respondError(cs, err)
      }
      if (attempt > 0) {
        this.counts.retries++
        this.m.retries.inc()
      }
      const contentType = path === PATHS.transcriptions ? String(headers['content-type'] ?? '') : 'application/json'
      const key = e2ee ? recipientKey(conn, e2ee.keys) : undefined
      const e2eeCtx = e2ee && key ? { routeHeader: e2ee.routeHeader, key } : undefined
      const result = await this.forward(cs, conn, path, body, { requestId, client, model, stream: routing.stream, maxTokens, maxAudioSeconds, contentType: e2ee ? E2EE_CONTENT_TYPE : contentType, reservation: held.reservation, salt, e2ee: e2eeCtx }, remaining, log, () => clientGone)
      if (result.kind === 'done') {
        this.finish(result.outcome)
        return
      }
      this.deps.billing.release(held.reservation)
      held.reservation = undefined
      lastError = result.error
      if (result.kind === 'timeout') break
      if (clientGone) {
        this.finish('cancelled')
        return
      }
      log.warn('worker failed before the first byte; trying another', { worker: conn.id, error: result.error.message })
    }
    if (Date.now() >= deadline || lastError?.name === 'RequestTimeoutError') {
      this.finish('timeout')
      return respondError(cs, new RequestTimeoutError(timeoutMs))
    }
    this.finish('failed')
    respondError(cs, new UpstreamError(`no worker could serve the request: ${lastError?.message ?? 'unknown error'}`))
  }

  /** Asks the worker to stop a request; it then ends the answer normally, with usage for what it produced. */
  private cancelOnWorker(conn: WorkerConn, exchangeId: string): void {
    if (conn.session.closed || conn.session.destroyed) return
    // If the session is going away, the worker aborts when its stream is reset.
    call(conn.session, PATHS.cancel, { method: 'POST', headers: { [HEADERS.exchange]: exchangeId } }).then((r) => void r.body.resume(), noop)
  }

  /**
   * Sends the request to one worker and relays its answer. Resolves `retry` when the worker
   * failed before sending any body byte (so another worker may be tried), else `done`. An
   * answer is complete for the client only after its usage is priced and durably recorded.
   */
  private forward(
    cs: http2.ServerHttp2Stream,
    conn: WorkerConn,
    path: string,
    body: Buffer,
    ctx: { requestId: string; client: string; model: string; stream: boolean; maxTokens: number; maxAudioSeconds: number; contentType: string; reservation?: Reservation; salt: Buffer; e2ee?: { routeHeader: string; key: WrappedKey } },
    remainingMs: number,
    log: Logger,
    clientGone: () => boolean,
  ): Promise<{ kind: 'done'; outcome: Outcome } | { kind: 'retry' | 'timeout'; error: Error }> {
    return new Promise((resolve) => {
      if (clientGone()) {
        this.admission.release(conn, ctx.client)
        return resolve({ kind: 'retry', error: new Error('client went away') })
      }
      const t0 = Date.now()
      let firstByteAt: number | undefined
      let ws: http2.ClientHttp2Stream
      // This forward's own id at the worker (request ids come from apps and may repeat across clients).
      const exchangeId = crypto.randomUUID()
      try {
        ws = conn.session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': ctx.contentType,
          [HEADERS.requestId]: ctx.requestId,
          [HEADERS.exchange]: exchangeId,
          [HEADERS.model]: ctx.model,
          [HEADERS.stream]: ctx.stream ? '1' : '0',
          [HEADERS.coefficient]: String(conn.info.coefficient),
          [HEADERS.maxTokens]: String(ctx.maxTokens),
          ...(ctx.maxAudioSeconds > 0 ? { [HEADERS.maxAudioSeconds]: String(ctx.maxAudioSeconds) } : {}),
          [HEADERS.timeoutMs]: String(Math.floor(remainingMs * HOP_TIMEOUT_FACTOR)),
          [HEADERS.salt]: ctx.salt.toString('hex'),
          [HEADERS.price]: priceHeader(this.deps.billing.params()),
          // Only the chosen worker's wrapped key goes on: the others' are none of its business.
          ...(ctx.e2ee ? { [HEADERS.e2eeRoute]: ctx.e2ee.routeHeader, [HEADERS.e2eeKeys]: encodeWrappedKeys([ctx.e2ee.key]) } : {}),
        })
      } catch (err) {
        this.admission.release(conn, ctx.client)
        recordOutcome(conn, false)
        return resolve({ kind: 'retry', error: err as Error })
      }
      tapStream(ws, ws.sentHeaders)
      e2eeTrace?.(ctx.requestId, 'p.forward')
      let settled = false
      let relaying = false
      let sse = false
      let status = 0
      let ct = 'application/json'
      let usage: UsageRecord | undefined
      let stopped: 'cancelled' | 'timeout' | undefined
      const buffered: Buffer[] = []
      let workerReceipt: unknown
      // The worker's usage as signed, kept with its receipt in the ledger (set only once checked).
      let signedUsage: SignedUsage | undefined
      let graceTimer: NodeJS.Timeout | undefined
      const settle = (r: { kind: 'done'; outcome: Outcome } | { kind: 'retry' | 'timeout'; error: Error }) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        clearTimeout(graceTimer)
        cs.off('close', onClientClose)
        this.admission.release(conn, ctx.client)
        resolve(r)
      }
      const clientOpen = () => !cs.closed && !cs.destroyed
      const endWithError = (err: Error, trailers?: http2.OutgoingHttpHeaders) => {
        if (!clientOpen()) return
        if (!cs.headersSent) {
          const r = errorReply(err)
          return respond(cs, trailers ? new Reply(r.status, r.body, r.headers, trailers) : r)
        }
        if (sse) {
          cs.once('wantTrailers', () => cs.sendTrailers(trailers ?? {}))
          // Nothing in clear may follow encrypted records: the answer simply ends without its final record, and the client node reports it cut off.
          cs.end(ctx.e2ee ? undefined : `data: ${JSON.stringify(errorResponse(err).body)}\n\n`)
        } else cs.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
      }
      // The proxy never sees an encrypted answer's text: receipts it states itself hash the empty text.
      // The proxy never reads an answer: a receipt it states itself hashes the empty answer text (docs/receipts.md).
      const answerTextOf = () => ''
      // Stop the worker but let it finish the answer, so what it produced is billed; reset it if it does not.
      const stop = (why: 'cancelled' | 'timeout') => {
        if (stopped) return
        stopped = why
        this.cancelOnWorker(conn, exchangeId)
        graceTimer = setTimeout(() => {
          ws.close(http2.constants.NGHTTP2_CANCEL)
          settle({ kind: 'done', outcome: why })
        }, CANCEL_GRACE_MS)
      }
      const timer = setTimeout(() => {
        if (!relaying) {
          ws.close(http2.constants.NGHTTP2_CANCEL)
          return settle({ kind: 'timeout', error: new RequestTimeoutError(remainingMs) })
        }
        endWithError(new RequestTimeoutError(remainingMs))
        stop('timeout')
      }, remainingMs)
      const onClientClose = () => {
        log.info('client went away; cancelling on the worker', { worker: conn.id })
        stop('cancelled')
      }
      cs.once('close', onClientClose)
      ws.on('error', () => {})
      ws.once('response', (h) => {
        status = Number(h[':status'])
        if (status >= 500 && status !== 504) {
          // Before the first byte: another worker may do better.
          ws.close(http2.constants.NGHTTP2_CANCEL)
          recordOutcome(conn, false)
          return settle({ kind: 'retry', error: new Error(`worker answered ${status}`) })
        }
        relaying = true
        ct = String(h['content-type'] ?? 'application/json')
        // An encrypted answer is relayed record by record as it comes, streamed or not: the proxy cannot add the cost into it.
        sse = (ct.startsWith('text/event-stream') || (ctx.e2ee !== undefined && ct === E2EE_CONTENT_TYPE)) && status === 200
        if (sse && clientOpen()) cs.respond({ ':status': 200, 'content-type': ct, 'cache-control': 'no-cache', [HEADERS.worker]: conn.id, [HEADERS.e2ee]: ctx.e2ee ? 'on' : 'off' }, { waitForTrailers: true })
        ws.on('data', (chunk: Buffer) => {
          firstByteAt ??= Date.now()
          if (!sse) {
            // A whole answer: held back, unread, until its usage is billed.
            buffered.push(chunk)
            return
          }
          if (!clientOpen()) return
          if (!cs.write(chunk)) {
            ws.pause()
            cs.once('drain', () => ws.resume())
          }
        })
      })
      let usageChecked: Promise<UsageRecord | undefined> = Promise.resolve(undefined)
      /** Set when the worker signed something it could not honestly sign: it is dropped once the answer ends. */
      let lied: string | undefined
      ws.once('trailers', (t) => {
        workerReceipt = t[HEADERS.receipt]
        usageChecked = checkUsage(t[HEADERS.usage], t[HEADERS.usageSig], conn.key, ctx.requestId).then((c) => {
          if (c.ok && c.usage.answer?.model !== conn.peer.claims.modelId) {
            // It answered as a model it did not attest: nothing it says can be trusted; bill nothing, drop it.
            const reason = `worker answered as model '${String(c.usage.answer?.model)}' but attested '${conn.peer.claims.modelId}'`
            log.warn('refused the usage a worker signed', { worker: conn.id, reason })
            lied = reason
            return undefined
          }
          if (c.ok) {
            signedUsage = { usage: c.usage, json: t[HEADERS.usage] as string, signature: t[HEADERS.usageSig] as string, signer: Buffer.from(conn.peer.publicKey).toString('hex') }
            return c.usage
          }
          // Refused usage bills nothing; the answer is withheld as failed (below) and the worker marked down.
          if (t[HEADERS.usage] !== undefined) log.warn('refused the usage a worker signed', { worker: conn.id, reason: c.reason })
          return undefined
        })
      })
      // The worker's part ends at its last byte: billing after it is the proxy's time, not the worker's speed.
      let lastByteAt: number | undefined
      ws.once('end', () => {
        lastByteAt = Date.now()
        void usageChecked.then((u) => onEnd(u))
      })
      const onEnd = (checked: UsageRecord | undefined) => {
        usage = checked
        if (!relaying) {
          recordOutcome(conn, false)
          return settle({ kind: 'retry', error: new Error('worker closed the stream without answering') })
        }
        if (!usage) {
          this.deps.billing.release(ctx.reservation)
          if (status === 200) {
            // A finished answer always carries signed usage; without it the worker died or lied.
            recordOutcome(conn, false)
            log.warn('worker answer ended without signed usage', { worker: conn.id })
            this.unbilledReceipt(conn, ctx, body, answerTextOf(), Date.now() - t0, log).then((rt) => {
              endWithError(new UpstreamError(`worker ${conn.id} ended the answer without signed usage`), rt)
              if (lied) this.dropWorker(conn, lied, true)
              settle({ kind: 'done', outcome: 'failed' })
            })
            return
          }
          // An error answer (e.g. a 400 from validation): pass it through.
          if (clientOpen()) respond(cs, new Reply(status, Buffer.concat(buffered), { 'content-type': ct }))
          recordOutcome(conn, status < 500)
          return settle({ kind: 'done', outcome: stopped ?? (status < 400 ? 'succeeded' : 'failed') })
        }
        const u = usage
        this.meter(conn, u)
        // The worker's receipt is logged if it is signed by the worker and agrees with its signed usage
        // and the proxy's prices; otherwise the proxy states one itself, so no answer goes unlogged.
        let receiptP: Promise<{ receipt: Receipt; cert?: Uint8Array }>
        const prices = this.deps.billing.params()
        try {
          const r = decodeReceiptBoc(String(workerReceipt ?? ''))
          if (!verifyReceiptSignature(r, conn.peer.publicKey)) throw new Error('receipt not signed by this worker')
          const bad = receiptMismatch(r.fields, u, { coefficient: conn.info.coefficient, prices, workerKey: conn.peer.publicKey, proxyKey: this.proxyKey() })
          if (bad) throw new Error(`receipt disagrees with the signed usage or prices: ${bad}`)
          receiptP = Promise.resolve({ receipt: r, cert: conn.certDer })
        } catch (err) {
          if (workerReceipt !== undefined) log.warn('worker receipt refused; the proxy states its own', { worker: conn.id, reason: (err as Error).message })
          receiptP = this.proxyReceipt(conn, ctx, body, answerTextOf(), u, u.finishReason, Date.now() - t0)
        }
        receiptP
          .then((rc) =>
            this.deps.billing
              .settle({ reservation: ctx.reservation, requestId: ctx.requestId, client: ctx.client, worker: conn.account, coefficient: conn.info.coefficient, usage: u, receipt: { cell: rc.receipt.cell, client: ctx.client, worker: conn.account, signedUsage } })
              .then((s) => ({ ...s, rc })),
          )
          .then(
            ({ cost, receiptIndex, rc }) => {
              const costInfo = { nano: cost.clientNano, adjustedTokens: cost.adjustedTokens, coefficient: conn.info.coefficient, pricePerTokenNano: prices.pricePerTokenNano }
              // What the proxy knows about the answer travels as trailers; the client node writes the app's final
              // usage (with the cost) into the answer itself: the proxy never rewrites an answer body.
              const receiptTrailers = { ...receiptTrailersOf(rc, receiptIndex), [HEADERS.usage]: signedUsage!.json, [HEADERS.usageSig]: signedUsage!.signature, [HEADERS.cost]: costTrailer(costInfo) }
              // The client's running total, read when the trailer is actually sent: answers on one
              // session finish in any order, and the client checks the totals never go down.
              const charged = () => {
                const c = this.deps.billing.ledger.counters('client', ctx.client)
                return { [HEADERS.charged]: JSON.stringify({ client: ctx.client, tokens: c.tokens.toString(), nano: c.nano.toString() }), ...receiptTrailers }
              }
              recordOutcome(conn, true, (lastByteAt ?? Date.now()) - t0, { ttftMs: firstByteAt === undefined ? undefined : firstByteAt - t0, completionTokens: u.completionTokens })
              if (clientOpen()) {
                if (sse) {
                  cs.once('wantTrailers', () => cs.sendTrailers(charged()))
                  cs.end()
                } else {
                  respond(cs, new Reply(status, Buffer.concat(buffered), { 'content-type': ct }, charged))
                }
              }
              settle({ kind: 'done', outcome: stopped ?? (u.finishReason === 'error' || status >= 400 ? 'failed' : 'succeeded') })
            },
            (err: Error) => {
              log.error('could not bill the answer; withholding it', { error: err })
              endWithError(new UpstreamError('the answer could not be billed'))
              settle({ kind: 'done', outcome: 'failed' })
            },
          )
      }
      ws.once('close', () => {
        if (settled || ws.readableEnded) return
        this.deps.billing.release(ctx.reservation)
        recordOutcome(conn, false)
        if (!relaying) return settle({ kind: 'retry', error: new Error(`worker stream closed before answering (code ${ws.rstCode})`) })
        if (stopped) return settle({ kind: 'done', outcome: stopped })
        log.warn('worker failed mid-stream', { worker: conn.id, rstCode: ws.rstCode })
        // The worker died before signing: the proxy logs a receipt for what the client was sent (nothing is billed).
        this.unbilledReceipt(conn, ctx, body, answerTextOf(), Date.now() - t0, log).then((rt) => {
          endWithError(new UpstreamError(`worker ${conn.id} failed mid-answer (stream reset ${ws.rstCode})`), rt)
          settle({ kind: 'done', outcome: 'failed' })
        })
      })
      sendBody(ws, body)
    })
  }

  /**
   * The last confirmed commit of the receipt log and, for each of the client's own receipts asked
   * for, its Merkle proof against that commit's root (null while the receipt is newer than the
   * commit; `missing` when the log has no such receipt of this client).
   */
  private receiptProofs(client: string, req: ReceiptProofsRequest): ReceiptProofsReply {
    const ledger = this.deps.billing.ledger
    const indices = Array.isArray(req.indices) ? req.indices.slice(0, RECEIPT_PROOFS_MAX) : []
    if (!indices.every((i) => Number.isSafeInteger(i) && i >= 0)) throw new Error('indices must be receipt numbers')
    const last = ledger.lastConfirmedCommit()
    const contract = this.deps.proxyContract?.()
    const commit: ReceiptCommitInfo | null = last && contract ? { seqno: last.seqno, root: last.receiptsRoot, count: last.receiptsCount, proxy: contract, tx: last.tx } : null
    const proofs = indices.map((index) => {
      const r = ledger.receipt(index)
      if (!r || r.client !== client) return { index, proof: null, missing: true }
      if (!commit || index >= commit.count) return { index, proof: null }
      return { index, proof: ledger.receiptProof(index, commit.count).toString('base64') }
    })
    const reply: ReceiptProofsReply = { commit, proofs }
    if (req.from !== undefined) {
      if (!Number.isSafeInteger(req.from) || req.from < 0) throw new Error('from must be a receipt number')
      reply.mine = ledger.receiptsOf('client', client, req.from, RECEIPT_LIST_LIMIT).map((r) => ({ index: r.index, receipt: r.cell.toBoc().toString('base64') }))
    }
    return reply
  }

  /** Receipts each worker asked about in its last statement reply (hashes). */
  private readonly wanted = new WeakMap<WorkerConn, string[]>()

  /** Where a worker's receipts stand in the log: number, and proof against the last confirmed commit. */
  private workerReceipts(conn: WorkerConn, hashes: string[]): NonNullable<WorkerStatement['receipts']> {
    const ledger = this.deps.billing.ledger
    const last = ledger.lastConfirmedCommit()
    const contract = this.deps.proxyContract?.()
    const commit: ReceiptCommitInfo | null = last && contract ? { seqno: last.seqno, root: last.receiptsRoot, count: last.receiptsCount, proxy: contract, tx: last.tx } : null
    const entries = hashes.map((hash): WorkerReceiptEntry => {
      const r = ledger.receiptByHash(hash)
      if (!r || r.worker !== conn.account) return { hash, missing: true }
      if (!commit || r.index >= commit.count) return { hash, index: r.index, proof: null }
      return { hash, index: r.index, proof: ledger.receiptProof(r.index, commit.count).toString('base64') }
    })
    return { commit, entries }
  }

  /** The key receipts name this proxy by: its payment key (what its proxy contract knows), else its identity key. */
  private proxyKey(): Uint8Array {
    const id = this.deps.identity.current()
    return id.claims.paymentKey ? Buffer.from(id.claims.paymentKey, 'hex') : id.publicKey
  }

  /**
   * A receipt the proxy signs itself, for an answer whose worker did not give a valid one (it died
   * mid-answer, or its receipt was refused). It states what the proxy saw: the worker, the request's
   * bytes, and `usage` (zero when nothing is billed); the proxy never reads an answer, so its answer
   * hash is of the empty text. Sampling parameters are unknown here.
   */
  private async proxyReceipt(
    conn: WorkerConn,
    ctx: { requestId: string; salt: Buffer },
    body: Buffer,
    text: string,
    usage: { promptTokens: number; cachedTokens: number; completionTokens: number; reasoningTokens: number },
    finishReason: string,
    elapsedMs: number,
  ): Promise<{ receipt: Receipt; cert: Uint8Array }> {
    const id = this.deps.identity.current()
    const now = Date.now()
    const fields = receiptFields({
      signer: 'proxy',
      requestId: ctx.requestId,
      salt: ctx.salt,
      requestBody: body,
      answerText: text,
      sampling: { temperature: null, top_p: null, seed: null, max_tokens: null, stop: null },
      modelId: conn.info.model.id,
      modelHash: conn.info.model.hash,
      imageHash: conn.peer.imageHash,
      workerKey: conn.peer.publicKey,
      proxyKey: this.proxyKey(),
      usage,
      coefficient: conn.info.coefficient,
      prices: this.deps.billing.params(),
      startedAtMs: now - elapsedMs,
      endedAtMs: now,
      finishReason,
    })
    const receipt = await signReceipt(fields, (d) => id.signAsync(d))
    return { receipt, cert: Buffer.from(id.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64') }
  }

  /** Logs a proxy-signed receipt for an answer that is not billed; resolves to the trailers that carry it (none if logging failed). */
  private async unbilledReceipt(conn: WorkerConn, ctx: { requestId: string; client: string; salt: Buffer }, body: Buffer, text: string, elapsedMs: number, log: Logger): Promise<http2.OutgoingHttpHeaders | undefined> {
    try {
      const rc = await this.proxyReceipt(conn, ctx, body, text, { promptTokens: 0, cachedTokens: 0, completionTokens: 0, reasoningTokens: 0 }, 'error', elapsedMs)
      const index = this.deps.billing.logReceipt(ctx.requestId, { cell: rc.receipt.cell, client: ctx.client, worker: conn.account })
      return receiptTrailersOf(rc, index)
    } catch (err) {
      log.error('could not log a receipt for a failed answer', { error: err })
      return undefined
    }
  }

  private noteRefusal(role: 'worker' | 'client', reason: string, peer: string): void {
    this.refusals.push({ at: Date.now(), role, reason: reason.slice(0, 300), peer: String(peer).slice(0, 80) })
    if (this.refusals.length > MAX_REFUSALS_SHOWN) this.refusals.shift()
  }

  /** Drops connected workers the current policy no longer allows (e.g. their image was revoked on the root). */
  revalidate(refusal: (peer: VerifiedPeer) => string | undefined): number {
    let dropped = 0
    for (const conn of this.workers.values()) {
      const reason = refusal(conn.peer)
      if (!reason) continue
      this.dropWorker(conn, reason)
      dropped++
    }
    return dropped
  }

  /** Disconnects a worker that can no longer be trusted, and counts it as refused. */
  private dropWorker(conn: WorkerConn, reason: string, ban = false): void {
    // A worker caught lying stays away for the life of this proxy, whatever its evidence says when it redials.
    if (ban) this.banned.set(Buffer.from(conn.peer.publicKey).toString('hex'), reason)
    if (!this.workers.has(conn.id)) return
    this.deps.log.warn('worker no longer trusted; disconnecting', { worker: conn.id, reason })
    this.refused.workers++
    this.m.refused.inc({ role: 'worker' })
    this.noteRefusal('worker', reason, conn.remote)
    this.workers.delete(conn.id)
    this.m.workers.set(this.workers.size)
    conn.session.destroy()
  }

  /** Tells each connected worker its cumulative earnings (and hands over the newest payout voucher). */
  async pushStatements(): Promise<void> {
    const ledger = this.deps.billing.ledger
    await Promise.all(
      [...this.workers.values()].map(async (conn) => {
        const c = ledger.counters('worker', conn.account)
        const st: WorkerStatement = { tokens: c.tokens.toString(), nano: c.nano.toString() }
        const voucher = this.deps.payoutVoucher?.(conn.account)
        if (voucher) st.voucher = voucher
        const want = this.wanted.get(conn)
        if (want?.length) st.receipts = this.workerReceipts(conn, want)
        const text = JSON.stringify(st)
        if (this.told.get(conn) === text || conn.session.closed || conn.session.destroyed) return
        try {
          const r = await call(conn.session, PATHS.statement, { headers: { 'content-type': 'application/json' }, body: Buffer.from(text) })
          const answer = JSON.parse((await r.read(CONTROL_BODY_BYTES)).toString())
          if (r.status !== 200) throw new Error(`the worker answered ${r.status}: ${String(answer?.error?.message).slice(0, 200)}`)
          const reply = answer as WorkerStatementReply
          if (Array.isArray(reply.want)) this.wanted.set(conn, reply.want.filter((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h)).slice(0, STATEMENT_RECEIPTS_MAX))
          if (reply.ok) this.told.set(conn, text)
          else this.deps.log.warn('worker did not accept its statement', { worker: conn.id, error: reply.error })
        } catch (err) {
          this.deps.log.debug('could not send a statement', { worker: conn.id, error: (err as Error).message })
        }
      }),
    )
  }

  private meter(conn: WorkerConn, u: Usage): void {
    addUsage(conn.tokens, u)
    addUsage(this.tokens, u)
    this.m.tokens.inc({ kind: 'prompt' }, u.promptTokens)
    this.m.tokens.inc({ kind: 'cached' }, u.cachedTokens)
    this.m.tokens.inc({ kind: 'completion' }, u.completionTokens)
    this.m.tokens.inc({ kind: 'reasoning' }, u.reasoningTokens)
  }

  stats(): Record<string, unknown> {
    return {
      role: 'proxy',
      protocol: PROTOCOL_VERSION,
      identity: identityStats(this.deps.identity.current()),
      serving: this.deps.billing.serving,
      requests: { ...this.counts },
      e2ee: { requests: { ...this.e2eeCounts }, workersWithKey: [...this.workers.values()].filter((w) => (w.hpkeKeys?.size ?? 0) > 0).length },
      tokens: tokenStats(this.tokens),
      money: this.moneyStats(),
      receipts: {
        held: this.deps.billing.ledger.receiptCount(),
        committed: this.deps.billing.ledger.lastConfirmedCommit()?.receiptsCount ?? 0,
        root: this.deps.billing.ledger.receiptsRoot(),
      },
      chain: this.deps.chainStats?.() ?? null,
      reliability: ((c) => (c ? { seqno: c.seqno, hash: c.hash, workers: c.record.workers.length } : null))(this.deps.reliability?.current()),
      clients: { connected: this.clientSessions.size, refused: this.refused.clients, rateLimited: this.rateLimited, limitedNow: this.errorBudget.limitedClients() },
      refusals: [...this.refusals].reverse(),
      queue: this.admission.stats(),
      ...(this.o.timeRouting ? { routing: this.admission.routingTiming(this.workers.size) } : {}),
      workers: {
        connected: this.workers.size,
        refused: this.refused.workers,
        list: [...this.workers.values()].map((w) => ({
          id: w.id,
          remote: w.remote,
          model: w.info.model,
          imageHash: w.peer.imageHash,
          kind: w.peer.kind,
          coefficient: w.info.coefficient,
          activeRequests: w.active,
          maxActiveRequests: w.info.maxActiveRequests,
          avgRequestMs: Math.round(w.avgMs),
          quality: qualityStats(w),
          failRate: Number(w.failRate.toFixed(4)),
          served: w.served,
          failed: w.failed,
          tokens: tokenStats(w.tokens),
        })),
      },
    }
  }

  /** Cumulative money per client and per worker (adjusted tokens and nanoTON), the margin, and the ledger head. */
  private moneyStats(): Record<string, unknown> {
    const ledger = this.deps.billing.ledger
    const clients = ledger.allCounters('client')
    const workers = ledger.allCounters('worker')
    const sum = (l: typeof clients) => l.reduce((t, c) => t + c.nano, 0n)
    const row = (c: (typeof clients)[number]) => ({ account: c.address, tokens: c.tokens.toString(), nano: c.nano.toString(), requests: c.requests, voucheredTokens: c.vouchered.toString() })
    const p = this.deps.billing.params()
    return {
      pricePerTokenNano: p.pricePerTokenNano.toString(),
      workerFeePerTokenNano: p.workerFeePerTokenNano.toString(),
      chargedNano: sum(clients).toString(),
      earnedByWorkersNano: sum(workers).toString(),
      marginNano: (sum(clients) - sum(workers)).toString(),
      reservedNano: this.deps.billing.reservedNano().toString(),
      ledgerHead: ledger.getHead(),
      lastCommit: ledger.lastConfirmedCommit() ?? null,
      clients: clients.map(row),
      workers: workers.map(row),
    }
  }

  /** Ready when both listeners are up, billing serves and at least one worker is connected; otherwise `reason` says which is missing. */
  health(): { ok: boolean; workers: number; serving: boolean; reason?: string } {
    const s = this.deps.billing.serving
    const reason = this.servers.length !== 2 ? 'not listening' : !s.ok ? s.reason : this.workers.size === 0 ? 'no worker' : undefined
    return { ok: !reason, workers: this.workers.size, serving: s.ok, ...(reason ? { reason } : {}) }
  }
}

/** The wrapped key for one of the HPKE keys this worker attested, or undefined when the request does not name it as a recipient. */
function recipientKey(w: WorkerConn, keys: WrappedKey[]): WrappedKey | undefined {
  return keys.find((k) => w.hpkeKeys?.has(k.recipient))
}

function noop(): void {}

/** The receipt trailers the client node keeps: the cell, its number in the log, the signer's certificate. */
function receiptTrailersOf(rc: { receipt: Receipt; cert?: Uint8Array }, index: number | undefined): http2.OutgoingHttpHeaders {
  const t: http2.OutgoingHttpHeaders = { [HEADERS.receipt]: rc.receipt.cell.toBoc().toString('base64') }
  if (index !== undefined) t[HEADERS.receiptIndex] = String(index)
  if (rc.cert) t[HEADERS.receiptCert] = Buffer.from(rc.cert).toString('base64')
  return t
}

