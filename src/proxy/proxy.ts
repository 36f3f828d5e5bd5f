// The proxy node: accepts attested workers and clients, routes each request to a worker, relays the answer, meters usage.
import http2 from 'node:http2'
import type tls from 'node:tls'
import { Counter, Gauge } from 'prom-client'
import { type IdentitySource, type VerifiedPeer, identityStats } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'
import { createRegistry, type OpsSource } from '../core/ops.ts'
import { mapYielding } from '../core/time.ts'
import { listenAttested, type AttestedSocket, type PeerVerifier } from '../net/attested.ts'
import { ConflictError, InvalidRequestError, TooManyRequestsError, UnfundedClientError } from '../net/errors.ts'
import { call, json, respondError, serve, type HopRequest, type Routes } from '../net/hop.ts'
import { discardBody, readBody } from '../net/body.ts'
import { intHeader, parseHopRouting } from '../net/validate.ts'
import { H2_OPTIONS, tuneSession } from '../net/h2.ts'
import { DEFAULT_MAX_COEFFICIENT, DEFAULT_TIMEOUT_SEC, HEADERS, MAX_AUDIO_BODY_BYTES, MAX_BODY_BYTES, MAX_REQUEST_ID_CHARS, MAX_TIMEOUT_SEC, PATHS, PROTOCOL_VERSION, type WorkerInfo, type WorkerStatementReply, type WorkerReceiptEntry, STATEMENT_RECEIPTS_MAX, CONTROL_BODY_BYTES, RECEIPT_PROOFS_BODY_BYTES, type ReceiptProofsRequest, type ReceiptProofsReply, type ReceiptCommitInfo, RECEIPT_LIST_LIMIT, RECEIPT_PROOFS_MAX, type WorkerStatement, type FinalCharge, type WorkerCandidates } from '../net/protocol.ts'
import { peerCertDer } from '../tee/index.ts'
import { newSalt, parseSalt } from '../payments/receipts/receipt.ts'
import { DuplicateRequestError, ProxyNotServingError, type ProxyBilling } from '../payments/billing.ts'
import { ed25519PublicKey } from '../net/usage.ts'
import { addUsage, tokenStats, zeroUsage, type Usage } from '../core/usage.ts'
import { ErrorBudget } from '../net/error-budget.ts'
import { DEFAULT_REQUEST_MS, qualityStats, setReliability, workerEndpoints, WorkerPool, type WorkerConn } from './routing.ts'
import { AdmissionQueue, DEFAULT_QUEUE_DEPTH, DEFAULT_QUEUE_MAX_WAIT_MS } from './admission.ts'
import type { ReliabilityPublisher } from './reliability.ts'
import { tapStream } from '../net/tap.ts'
import { e2eeTrace } from '../net/e2ee-trace.ts'
import { CACHE_SCOPE_BYTES, type E2eeError, parseCacheScope, parseRoute, parseWrappedKeys } from '../net/e2ee.ts'
import { Exchange, type E2eeRequest, type ExchangeHost, type ExchangeRequest, type Outcome } from './exchange.ts'

/** Room for the encrypted envelope (version byte and tag) on top of the plaintext body limit. */
const E2EE_OVERHEAD_BYTES = 64

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
  /** What an exchange needs of the proxy (src/proxy/exchange.ts). */
  private readonly exchangeHost: ExchangeHost
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
    this.exchangeHost = {
      log: this.deps.log,
      billing: this.deps.billing,
      admission: this.admission,
      maxAttempts: this.o.maxAttempts,
      workers: this.workers,
      identity: () => this.deps.identity.current(),
      proxyKey: () => this.proxyKey(),
      outcome: (o) => this.finish(o),
      retried: () => {
        this.counts.retries++
        this.m.retries.inc()
      },
      meter: (conn, u) => this.meter(conn, u),
      dropWorker: (conn, reason, ban) => this.dropWorker(conn, reason, ban),
    }
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
        // One the proxy dropped itself (dropWorker: distrusted, or its model or image revoked) is gone already and
        // did not just leave: asking for its model is a 404 again, not a 503 to retry.
        if (this.workers.delete(conn.id)) this.admission.recentModels.workerLeft(info.model.id)
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

  /** The workers serving `model`, with their current certificates, for clients that encrypt to them (PATHS.workers). */
  async candidates(model: string): Promise<WorkerCandidates> {
    const ws = [...this.workers.values()].filter((w) => w.info.model.id === model)
    // As an inference request for it would be: 503 to retry if its workers left lately, else 404 (which also
    // counts against the client's error budget).
    if (ws.length === 0) throw this.admission.modelUnavailable(model)
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
          .map((w) => ({ coefficient: w.info.coefficient, running_requests: w.active, max_running_requests: w.info.maxActiveRequests, max_tokens: w.info.maxTokensCap }))
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
          reply = await this.receiptProofs(req.peer ?? '', JSON.parse(b.toString()) as ReceiptProofsRequest)
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
    try {
      const req = await this.parseInference(cs, headers, path, requestId, client)
      if (!req) return
      if (req.e2ee) this.e2eeCounts.on++
      else this.e2eeCounts.off++
      await new Exchange(this.exchangeHost, cs, req).run()
    } finally {
      this.inflight.delete(key)
    }
  }


  /**
   * Checks an inference request's hop headers and reads its body, into what an exchange is built from; answers
   * the error itself (and resolves undefined) when the request is refused before any worker is involved.
   */
  private async parseInference(cs: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, path: string, requestId: string, client: string): Promise<ExchangeRequest | undefined> {
    e2eeTrace?.(requestId, 'p.start')
    const startedAt = Date.now()
    // Keys the receipt's hashes; only the client node (and so the app) should know it. Without one, nobody can check them.
    const salt = parseSalt(headers[HEADERS.salt]) ?? newSalt()
    try {
      const serving = this.deps.billing.serving
      if (!serving.ok) throw new ProxyNotServingError(serving.reason!)
      // Before reading a byte of the body: a client with no funds gets metadata calls only.
      if (!(await this.deps.billing.isFunded(client))) {
        await discardBody(cs, (path === PATHS.transcriptions ? MAX_AUDIO_BODY_BYTES : MAX_BODY_BYTES) + E2EE_OVERHEAD_BYTES)
        throw new UnfundedClientError()
      }
      // Everything routed, reserved and billed by comes from the hop headers the client node set, checked
      // here like any outside input; the body is only counted (its bytes bound the prompt), never parsed.
      const proto = headers[HEADERS.protocol]
      if (proto !== undefined && proto !== String(PROTOCOL_VERSION)) throw new InvalidRequestError(`this proxy speaks protocol ${PROTOCOL_VERSION}; the request is protocol '${String(proto).slice(0, 16)}' (header ${HEADERS.protocol})`, 'protocol')
      if (headers[HEADERS.salt] !== undefined && !parseSalt(headers[HEADERS.salt])) throw new InvalidRequestError(`'salt' (header ${HEADERS.salt}) must be 64 hex characters`, 'salt')
      const routing = parseHopRouting(headers)
      const maxCoefficient = intHeader(headers[HEADERS.maxCoefficient], DEFAULT_MAX_COEFFICIENT, 'max_coefficient')!
      const pk = headers[HEADERS.prefixKey]
      if (pk !== undefined && (typeof pk !== 'string' || !/^[0-9a-f]{1,64}$/.test(pk))) throw new InvalidRequestError(`'prefix_key' (header ${HEADERS.prefixKey}) must be 1-64 lower-case hex characters`, 'prefix_key')
      const cs0 = parseCacheScope(headers[HEADERS.cacheScope])
      if (headers[HEADERS.cacheScope] !== undefined && cs0 === undefined) throw new InvalidRequestError(`'cache_scope' (header ${HEADERS.cacheScope}) must be ${CACHE_SCOPE_BYTES * 2} lower-case hex characters`, 'cache_scope')
      const timeoutMs = intHeader(headers[HEADERS.timeoutMs], DEFAULT_TIMEOUT_SEC * 1000, 'timeout', { min: 1, max: MAX_TIMEOUT_SEC * 1000 })!
      let e2ee: E2eeRequest | undefined
      if (headers[HEADERS.e2eeRoute] !== undefined) {
        // End-to-end encrypted: the route header is the AAD of the body and keys, so the hop headers must say the same; the body is never opened here.
        try {
          const routeHeader = String(headers[HEADERS.e2eeRoute])
          e2ee = { route: parseRoute(routeHeader), routeHeader, keys: parseWrappedKeys(headers[HEADERS.e2eeKeys]) }
        } catch (err) {
          throw new InvalidRequestError(`bad end-to-end encryption headers: ${(err as E2eeError).reason ?? (err as Error).message}`)
        }
        const r = e2ee.route
        if (r.path !== path) throw new InvalidRequestError('the encrypted request is bound to another endpoint')
        if (r.requestId !== requestId) throw new InvalidRequestError('the encrypted request is bound to another request id', 'request_id')
        if (r.model !== routing.model || r.stream !== routing.stream || r.maxTokens !== routing.maxTokens || r.maxCoefficient !== maxCoefficient) {
          throw new InvalidRequestError('the hop headers disagree with the encrypted request\'s route')
        }
      }
      // A sealed body is its plaintext and 33 bytes (version, cache scope and tag); its length bounds the reservation as a plaintext body's does.
      const body = await readBody(cs, (path === PATHS.transcriptions ? MAX_AUDIO_BODY_BYTES : MAX_BODY_BYTES) + (e2ee ? E2EE_OVERHEAD_BYTES : 0))
      e2eeTrace?.(requestId, 'p.body')
      return { path, body, requestId, client, routing, maxCoefficient, prefixKey: pk, ...(cs0 !== undefined ? { cacheScope: cs0 } : {}), timeoutMs, startedAt, salt, contentType: String(headers['content-type'] ?? ''), e2ee }
    } catch (err) {
      if (!cs.readableEnded) cs.resume()
      this.finish('rejected')
      respondError(cs, err)
      return undefined
    }
  }


  /**
   * The last confirmed commit of the receipt log and, for each of the client's own receipts asked
   * for, its Merkle proof against that commit's root (null while the receipt is newer than the
   * commit; `missing` when the log has no such receipt of this client).
   */
  private async receiptProofs(client: string, req: ReceiptProofsRequest): Promise<ReceiptProofsReply> {
    const ledger = this.deps.billing.ledger
    const indices = Array.isArray(req.indices) ? req.indices.slice(0, RECEIPT_PROOFS_MAX) : []
    if (!indices.every((i) => Number.isSafeInteger(i) && i >= 0)) throw new Error('indices must be receipt numbers')
    const commit = this.lastCommit()
    // Up to 500 proofs (writing one is about 0.1 ms): other requests run in between.
    const proofs = await mapYielding(indices, (index) => {
      const r = ledger.receiptPlace({ index })
      if (!r || r.client !== client) return { index, proof: null, missing: true }
      if (!commit || index >= commit.count) return { index, proof: null }
      return { index, proof: ledger.receiptProof(index, commit.count).toString('base64') }
    })
    const reply: ReceiptProofsReply = { commit, proofs }
    if (req.from !== undefined) {
      if (!Number.isSafeInteger(req.from) || req.from < 0) throw new Error('from must be a receipt number')
      reply.mine = ledger.receiptBocsOf('client', client, req.from, RECEIPT_LIST_LIMIT).map((r) => ({ index: r.index, receipt: r.boc.toString('base64') }))
    }
    return reply
  }

  /** The receipt log's last commit confirmed on chain, as clients and workers are told of it; null before the first. */
  private lastCommit(): ReceiptCommitInfo | null {
    const last = this.deps.billing.ledger.lastConfirmedCommit()
    const contract = this.deps.proxyContract?.()
    return last && contract ? { seqno: last.seqno, root: last.receiptsRoot, count: last.receiptsCount, proxy: contract, tx: last.tx } : null
  }

  /** Receipts each worker asked about in its last statement reply (hashes). */
  private readonly wanted = new WeakMap<WorkerConn, string[]>()

  /** Where a worker's receipts stand in the log: number, and proof against the last confirmed commit. */
  private async workerReceipts(conn: WorkerConn, hashes: string[]): Promise<NonNullable<WorkerStatement['receipts']>> {
    const ledger = this.deps.billing.ledger
    const commit = this.lastCommit()
    const entries = await mapYielding(hashes, (hash): WorkerReceiptEntry => {
      const r = ledger.receiptPlace({ hash })
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
    this.admission.recentModels.forget(conn.info.model.id)
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
        if (want?.length) st.receipts = await this.workerReceipts(conn, want)
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
