// The worker node: dials its proxies over attested TLS, serves HTTP/2 to them on those sockets, and runs the model.
import http2 from 'node:http2'
import { Counter, Gauge } from 'prom-client'
import type { Capability, InferenceBackend, InferenceKind, TranscriptionResult, Usage } from '../inference/index.ts'
import { addUsage, tokenStats, zeroUsage } from '../core/usage.ts'
import { DEFAULT_CAPABILITIES, probeAudio, vectorToBase64 } from '../inference/index.ts'
import { type VerifiedPeer, type IdentitySource, identityStats } from '../tee/index.ts'
import type { Logger } from '../core/log.ts'
import { clearableTimeout, pacer } from '../core/time.ts'
import { createRegistry, type OpsSource } from '../core/ops.ts'
import type { PeerVerifier } from '../net/attested.ts'
import { maintainProxyLink, revalidateLinks, type ProxyLink as BaseLink } from '../net/proxy-link.ts'
import { errorResponse, InvalidRequestError, isExpectedError, PayloadTooLargeError, RequestCancelledError, RequestTimeoutError, WorkerBusyError } from '../net/errors.ts'
import { json, Reply, respond, respondError, serve, type Routes } from '../net/hop.ts'
import { readBody, parseJsonObject, parseMultipart } from '../net/body.ts'
import { H2_OPTIONS, tuneSession } from '../net/h2.ts'
import { CAPABILITY_PATHS, DEFAULT_MAX_TOKENS_CAP, HEADERS, MAX_AUDIO_BODY_BYTES, MAX_AUDIO_SECONDS, MAX_BODY_BYTES, MAX_TIMEOUT_SEC, PATHS, PROTOCOL_VERSION, usageSigningPayload, type UsageRecord, type WorkerInfo, type WorkerStatement, type WorkerStatementReply, STATEMENT_RECEIPTS_MAX, STATEMENT_BODY_BYTES } from '../net/protocol.ts'
import type { PartyLedger } from '../payments/party-ledger.ts'
import { DuplicateRequestError } from '../payments/billing.ts'
import { checkVoucher, InvalidVoucherError } from '../ton/contracts/index.ts'
import { askedMaxTokens, checkHopAgreement, validateEmbeddingRequest, validateRequest, validateTranscriptionForm, type TranscriptionFormat } from '../net/validate.ts'
import { AnswerAggregator, answerIds, answerText, chunkText, EMBEDDING_OBJECT, TRANSCRIPTION_OBJECT } from '../net/openai.ts'
import { verifyReceiptProofBoc } from '../payments/receipts/proof.ts'
import { newSalt, parsePriceHeader, parseSalt, receiptFields, signReceipt, type SamplingParams } from '../payments/receipts/receipt.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import { e2eeTrace } from '../net/e2ee-trace.ts'
import { E2EE_CONTENT_TYPE, E2eeError, ReplayGuard, openRequest, parseCacheScope, parseWrappedKeys, sealedMultipartType, type AnswerWriter, type E2eeRoute, type HpkeKeyRing } from '../net/e2ee.ts'

/** Room for the encrypted envelope (version byte and tag) on top of the plaintext body limit. */
const E2EE_OVERHEAD_BYTES = 64

export const DEFAULT_COEFFICIENT = 1000
export const MAX_ACTIVE_REQUESTS = 8
export const MAX_TOKENS_CAP = DEFAULT_MAX_TOKENS_CAP
/** Receipts remembered per proxy until proven in its log. */
export const PENDING_RECEIPTS_MAX = 10_000

export interface WorkerOptions {
  /** Proxies to serve, as host:port of their worker listeners. */
  proxies: Array<{ host: string; port: number }>
  /** Price factor, 1000 = 1.0x. Default 1000. */
  coefficient?: number
  /** Concurrent requests across all proxies. Default 8. */
  maxActiveRequests?: number
  /** Highest max_tokens accepted, and the default. Default 1024. */
  maxTokensCap?: number
  /** The wallet the worker is paid to ("0:hex"); absent off-chain. */
  payoutAddress?: string
}

export interface WorkerDeps {
  backend: InferenceBackend
  identity: IdentitySource
  verify: PeerVerifier
  log: Logger
  /** What each proxy said this worker earned, and its payout vouchers. */
  ledger?: PartyLedger
  /** The receipt log's root a proxy contract holds on chain, and the payment key it belongs to; absent off-chain. */
  receiptsRoot?: (proxyContract: string) => Promise<{ seqno: number; root: string; count: number; paymentKey: string }>
  /** The image hash of this worker's own attestation (hex), stated in its receipts. Default: none (zeros). */
  imageHash?: () => string
  /** Called with each newer payout voucher (e.g. to claim it on chain past a threshold). */
  onVoucher?: (proxyId: string, voucher: string, tokens: bigint) => void
  /**
   * This worker's own worker contract with a proxy (raw address), when it is paid on chain. A payout
   * voucher for any other contract is refused on receipt, so it can never shadow a good one.
   */
  payoutContract?: (proxyId: string) => Promise<string>
  /** This worker's HPKE keys (the current one is in its claims); absent: it serves plaintext only, as older workers do. */
  hpke?: HpkeKeyRing
}

interface ProxyLink extends BaseLink<http2.ServerHttp2Session> {
  requests: number
  /** Set for proxies discovered on the root: stops this link when the root no longer offers the proxy. */
  abort?: AbortController
  /** The proxy's latest statement of what this worker earned. */
  earned?: { tokens: string; nano: string }
}


/** A request holding one of the worker's slots (Worker.admit). */
interface AdmittedRequest {
  key: string
  /** Aborted when the proxy resets the stream. */
  ac: AbortController
  /** Aborted by the proxy's in-band cancel (PATHS.cancel). */
  cancel: AbortController
  timeoutMs: number
  /** The deadline (when the request has one); cleared when the slot is given back. */
  deadline?: { signal: AbortSignal; clear(): void }
  timeoutSignal?: AbortSignal
  /** Aborts on a reset, a cancel or the deadline. */
  signal: AbortSignal
  /** Set once the answer is sent: the stream closing after that is not a reset. */
  finished: boolean
}

export function createWorker(opts: WorkerOptions, deps: WorkerDeps): Worker {
  return new Worker(deps, {
    proxies: opts.proxies,
    coefficient: opts.coefficient ?? DEFAULT_COEFFICIENT,
    maxActiveRequests: opts.maxActiveRequests ?? MAX_ACTIVE_REQUESTS,
    maxTokensCap: opts.maxTokensCap ?? MAX_TOKENS_CAP,
    payoutAddress: opts.payoutAddress ?? '',
  })
}

export class Worker implements OpsSource {
  /** Set by the node's start-up when it runs on a chain (see OpsSource). */
  chainReachability?: OpsSource['chainReachability']
  readonly registry = createRegistry('worker')
  private readonly h2 = http2.createServer(H2_OPTIONS)
  private links: ProxyLink[]
  private readonly stopping = new AbortController()
  private active = 0
  /** Running requests by id, so the proxy can stop one in-band (and still get its usage). */
  private readonly running = new Map<string, AbortController>()
  private readonly counts = { requests: 0, succeeded: 0, failed: 0, cancelled: 0, rejected: 0 }
  private readonly tokens = zeroUsage()
  private readonly m = {
    requests: new Counter({ name: 'cocoon_worker_requests_total', help: 'Inference requests by outcome', labelNames: ['outcome'], registers: [this.registry] }),
    tokens: new Counter({ name: 'cocoon_worker_tokens_total', help: 'Tokens processed by kind', labelNames: ['kind'], registers: [this.registry] }),
    active: new Gauge({ name: 'cocoon_worker_active_requests', help: 'Requests running now', registers: [this.registry] }),
  }

  constructor(
    private readonly deps: WorkerDeps,
    private readonly o: Required<WorkerOptions>,
  ) {
    this.links = o.proxies.map((p) => ({ target: `${p.host}:${p.port}`, state: 'connecting', requests: 0 }))
    // Errors after an answer's headers reset the stream: the proxy relays answers, it never reads an error event from here.
    this.h2.on('stream', serve(this.routes(), { log: deps.log, peer: (stream) => this.links.find((l) => l.session === stream.session), sseErrors: false }))
  }

  /** What the worker serves to the proxy on every link's session. */
  private routes(): Routes<ProxyLink | undefined, http2.ServerHttp2Stream> {
    return {
      [`GET ${PATHS.workerInfo}`]: () => json(this.info()),
      [`POST ${PATHS.statement}`]: async (req) => json(await this.onStatement(req.peer, (await req.read(STATEMENT_BODY_BYTES)).toString())),
      [`POST ${PATHS.cancel}`]: (req) => {
        const ac = this.running.get(runningKey(req.headers))
        ac?.abort(new Error('cancelled by the proxy'))
        return json({ cancelled: ac !== undefined })
      },
      [`POST ${PATHS.embeddings}`]: (req, stream) => this.serveUnary(stream, req.headers, 'embeddings'),
      [`POST ${PATHS.transcriptions}`]: (req, stream) => this.serveUnary(stream, req.headers, 'transcriptions'),
      [`POST ${PATHS.chat}`]: (req, stream) => this.serveInference(stream, req.headers, 'chat'),
      [`POST ${PATHS.completions}`]: (req, stream) => this.serveInference(stream, req.headers, 'completion'),
    }
  }

  /** What this worker's model serves. */
  capabilities(): readonly Capability[] {
    return this.deps.backend.model.capabilities ?? DEFAULT_CAPABILITIES
  }

  info(): WorkerInfo {
    const m = this.deps.backend.model
    return {
      protocol: PROTOCOL_VERSION,
      model: { id: m.id, hash: m.hash, endpoints: this.capabilities().map((c) => CAPABILITY_PATHS[c]) },
      coefficient: this.o.coefficient,
      maxActiveRequests: this.o.maxActiveRequests,
      maxTokensCap: this.o.maxTokensCap,
      ...(this.o.payoutAddress ? { payoutAddress: this.o.payoutAddress } : {}),
      certificate: this.deps.identity.current().certPem.replace(/-----[^-]+-----|\s/g, ''),
    }
  }

  start(): void {
    this.o.proxies.forEach((p, i) => void this.connectLoop(p, this.links[i]))
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    for (const l of this.links) l.session?.close()
    await Promise.race([
      Promise.all(this.links.map((l) => (l.session && !l.session.closed ? new Promise((r) => l.session!.once('close', r)) : null))),
      new Promise((r) => setTimeout(r, 2000).unref()),
    ])
    for (const l of this.links) l.session?.destroy()
  }

  /**
   * The proxies the root offers now (host, worker port, payment key): the worker serves each of them at
   * once, besides the configured ones; one no longer offered is left once its requests are done.
   */
  setDiscovered(list: Array<{ id: string; host: string; port: number }>): void {
    const wanted = new Map(list.map((p) => [`${p.host}:${p.port}`, p]))
    const configured = new Set(this.o.proxies.map((p) => `${p.host}:${p.port}`))
    for (const l of this.links) {
      if (wanted.delete(l.target) || configured.has(l.target) || !l.abort) continue
      this.deps.log.info('proxy no longer offered by the root; leaving it', { proxy: l.target })
      l.abort.abort()
      l.session?.close()
    }
    this.links = this.links.filter((l) => !l.abort?.signal.aborted)
    for (const d of wanted.values()) {
      const link: ProxyLink = { target: `${d.host}:${d.port}`, state: 'connecting', requests: 0, abort: new AbortController() }
      this.links.push(link)
      void this.connectLoop(d, link, AbortSignal.any([this.stopping.signal, link.abort!.signal]))
    }
  }

  private connectLoop(target: { host: string; port: number }, link: ProxyLink, signal: AbortSignal = this.stopping.signal): Promise<void> {
    return maintainProxyLink(link, target, {
      identity: this.deps.identity,
      verify: this.deps.verify,
      log: this.deps.log,
      signal,
      distrusted: (id) => this.deps.ledger?.isDistrusted(id),
      // The worker dialled, but the proxy is the HTTP/2 client: serve HTTP/2 on this socket.
      open: async (socket) => {
        let session!: http2.ServerHttp2Session
        this.h2.once('session', (s: http2.ServerHttp2Session) => {
          session = s
          tuneSession(s)
        })
        this.h2.emit('connection', socket)
        return session
      },
    })
  }


  /**
   * Admits a request to a slot, or answers it (503 at the limit of active requests, 409 when its key is already
   * running) and returns undefined. Three ways to stop it: the stream is reset (`ac`: nothing can be sent back),
   * the proxy cancels in-band (`cancel`: the answer ends normally, with usage), or the deadline passes; `signal`
   * aborts on any of them. Set `finished` once the answer is sent, and `release` the key when done.
   */
  private admit(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): AdmittedRequest | undefined {
    if (this.active >= this.o.maxActiveRequests) {
      this.counts.rejected++
      this.m.requests.inc({ outcome: 'rejected' })
      respondError(stream, new WorkerBusyError(this.o.maxActiveRequests))
      return undefined
    }
    this.active++
    this.m.active.set(this.active)
    const ac = new AbortController()
    const cancel = new AbortController()
    const key = this.claimRunning(stream, headers, cancel)
    if (key === undefined) return undefined
    const timeoutMs = Number(headers[HEADERS.timeoutMs])
    const deadline = Number.isFinite(timeoutMs) && timeoutMs > 0 ? clearableTimeout(Math.max(1, Math.floor(timeoutMs))) : undefined
    const timeoutSignal = deadline?.signal
    const slot: AdmittedRequest = { key, ac, cancel, timeoutMs, deadline, timeoutSignal, signal: AbortSignal.any([ac.signal, cancel.signal, ...(timeoutSignal ? [timeoutSignal] : [])]), finished: false }
    stream.once('close', () => {
      if (!slot.finished) ac.abort(new Error('stream reset by the proxy'))
    })
    return slot
  }

  /** Gives an admitted request's slot back, and lets go of its deadline's timer. */
  private release(slot: AdmittedRequest): void {
    slot.deadline?.clear()
    this.running.delete(slot.key)
    this.active--
    this.m.active.set(this.active)
  }

  /** Registers a running request under its key; a key already running is refused with 409 (and the slot given back). */
  private claimRunning(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ac: AbortController): string | undefined {
    const key = runningKey(headers)
    if (!this.running.has(key)) {
      this.running.set(key, ac)
      return key
    }
    this.active--
    this.m.active.set(this.active)
    respondError(stream, new DuplicateRequestError(key.slice(2, 66)))
    return undefined
  }

  private async serveInference(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, kind: InferenceKind): Promise<void> {
    const requestId = String(headers[HEADERS.requestId] ?? crypto.randomUUID())
    e2eeTrace?.(requestId, 'w.start')
    const log = this.deps.log.child({ requestId })
    this.counts.requests++
    const slot = this.admit(stream, headers)
    if (!slot) return
    const { key, ac, cancel, signal, timeoutSignal, timeoutMs } = slot
    const startedAtMs = Date.now()
    const created = Math.floor(startedAtMs / 1000)
    // The client node's salt keys the receipt's hashes; a request without one gets a fresh one nobody else knows.
    const salt = parseSalt(headers[HEADERS.salt]) ?? newSalt()
    let usage: Usage = zeroUsage()
    let finishReason = 'error'
    let estimated = false
    let chunks = 0
    /** Seals the answer to the client when the request came end-to-end encrypted. */
    let sealer: AnswerWriter | undefined
    let firstTokenAtMs = 0
    try {
      const received = await readBody(stream, MAX_BODY_BYTES + E2EE_OVERHEAD_BYTES)
      e2eeTrace?.(requestId, 'w.body')
      let raw = received
      /** The decrypted body, already parsed (to check it against the route) when the request was encrypted. */
      let parsed: Record<string, unknown> | undefined
      // Cached prompt state is reused only between requests of one scope (one app of one client node): the sealed
      // one for an encrypted request, else the hop header; a request without one shares only with others without.
      let cacheScope: string | undefined
      if (headers[HEADERS.e2eeRoute] !== undefined) {
        const opened = await this.openEncrypted(received, headers, kind)
        raw = opened.body
        parsed = opened.parsed
        sealer = opened.answer
        cacheScope = opened.cacheScope
        e2eeTrace?.(requestId, 'w.opened')
      } else {
        if (received.length > MAX_BODY_BYTES) throw new PayloadTooLargeError(MAX_BODY_BYTES)
        cacheScope = parseCacheScope(headers[HEADERS.cacheScope])
      }
      const body = parsed ?? parseJsonObject(raw)
      // The proxy reserved funds for at most this many completion tokens.
      const reserved = Number(headers[HEADERS.maxTokens])
      const maxTokensCap = Number.isSafeInteger(reserved) && reserved > 0 ? Math.min(reserved, this.o.maxTokensCap) : this.o.maxTokensCap
      const req = validateRequest(kind, body, requestId, { modelId: this.deps.backend.model.id, maxTokensCap, features: this.deps.backend.features })
      if (cacheScope !== undefined) req.cacheScope = cacheScope
      // The proxy routed and reserved by the hop headers: run nothing else than what they say.
      checkHopAgreement(headers, { model: body.model, stream: body.stream === true, maxTokens: askedMaxTokens(body) }, this.o.maxTokensCap)
      const ids = answerIds(kind, requestId)
      let answerId: string | undefined
      const streaming = body.stream === true
      const agg = streaming ? undefined : new AnswerAggregator(kind)
      const out = new EventCoalescer(stream, sealer)
      const eventType = sealer ? E2EE_CONTENT_TYPE : 'text/event-stream'
      let text = ''
      let streamError: unknown
      try {
        for await (const ev of this.deps.backend.run(req, { signal })) {
          if (ev.type === 'chunk') {
            if (chunks++ === 0) {
              firstTokenAtMs = Date.now()
              e2eeTrace?.(requestId, 'w.token')
            }
            if (answerId === undefined) answerId = (JSON.parse(ev.json) as { id?: string }).id ?? ids.id
            if (agg) agg.add(ev.json)
            else {
              text += chunkText(ev.json)
              if (!stream.headersSent) stream.respond({ ':status': 200, 'content-type': eventType, 'cache-control': 'no-cache' }, { waitForTrailers: true })
              if (!out.push(`data: ${ev.json}\n\n`)) await drained(stream, signal)
              if (chunks === 1) e2eeTrace?.(requestId, 'w.written')
            }
          } else {
            usage = ev.usage
            finishReason = ev.finishReason
            estimated = ev.estimated ?? false
          }
        }
      } catch (err) {
        if (chunks === 0 && !signal.aborted) throw err
        streamError = err
        estimated = true
        usage = { ...zeroUsage(), completionTokens: chunks }
      }
      if (timeoutSignal?.aborted && !ac.signal.aborted && !cancel.signal.aborted) streamError ??= new RequestTimeoutError(timeoutMs)
      if (ac.signal.aborted || cancel.signal.aborted) {
        this.counts.cancelled++
        this.m.requests.inc({ outcome: 'cancelled' })
        log.info('request cancelled by the proxy', { completionTokens: usage.completionTokens, inBand: !ac.signal.aborted })
      }
      if (ac.signal.aborted) {
        this.meter(usage)
        return
      }
      this.meter(usage)
      const record: UsageRecord = {
        requestId,
        answer: { id: answerId ?? ids.id, object: ids.chunkObject, model: req.model, created },
        ...usage,
        finishReason: streamError ? 'error' : finishReason,
        ...(estimated ? { estimated } : {}),
      }
      const answer = streaming || streamError ? undefined : agg!.build(requestId, req.model, created, usage, finishReason)
      const sampling: SamplingParams = { temperature: req.temperature ?? null, top_p: req.topP ?? null, seed: req.seed ?? null, max_tokens: req.maxTokens, stop: req.stop ?? null }
      const finish = cancel.signal.aborted ? 'cancelled' : timeoutSignal?.aborted ? 'timeout' : record.finishReason
      const trailers = await this.usageTrailers(record, {
        stream,
        salt,
        raw,
        text: answer ? answerText(answer) : text,
        sampling,
        model: req.model,
        startedAtMs,
        firstTokenAtMs,
        finishReason: finish,
        prices: headers[HEADERS.price],
      })
      if (streaming) {
        if (!stream.headersSent) stream.respond({ ':status': 200, 'content-type': eventType, 'cache-control': 'no-cache' }, { waitForTrailers: true })
        out.flush()
        if (streamError) {
          const event = `data: ${JSON.stringify(errorResponse(streamError).body)}\n\n`
          stream.write(sealer ? sealer.data(event) : event)
        }
        // No usage chunk and no [DONE] here: the client node writes them once the proxy has billed the answer.
        slot.finished = true
        stream.once('wantTrailers', () => stream.sendTrailers(trailers))
        stream.end(sealer?.final())
        e2eeTrace?.(requestId, 'w.end')
      } else {
        slot.finished = true
        if (streamError) {
          const r = errorResponse(streamError)
          respond(stream, sealedJson(r.status, r.body, trailers, sealer))
        } else {
          respond(stream, sealedJson(200, answer, trailers, sealer))
        }
      }
      if (!cancel.signal.aborted) {
        this.counts[streamError ? 'failed' : 'succeeded']++
        this.m.requests.inc({ outcome: streamError ? 'failed' : 'succeeded' })
      }
    } catch (err) {
      slot.finished = true
      this.counts.failed++
      this.m.requests.inc({ outcome: 'failed' })
      if (!isExpectedError(err)) log.error('request failed', { error: err })
      respondErrorSealed(stream, err, sealer)
    } finally {
      this.release(slot)
    }
  }

  /** Requests seen, by their HPKE enc, for as long as they could be valid: a replayed request is refused. */
  private readonly replays = new ReplayGuard(MAX_TIMEOUT_SEC * 1000)
  readonly e2eeCounts = { opened: 0, refused: 0 }

  /**
   * Opens an end-to-end encrypted chat or completions request (docs/e2ee.md) and checks that the routing data the
   * proxy routed and billed by is what the body says. Throws E2eeError (a 502, so the proxy may try another recipient).
   */
  private async openEncrypted(received: Buffer, headers: http2.IncomingHttpHeaders, kind: InferenceKind): Promise<{ body: Buffer; parsed: Record<string, unknown>; answer: AnswerWriter; cacheScope?: string }> {
    const opened = await this.openSealed(received, headers, kind === 'chat' ? PATHS.chat : PATHS.completions, MAX_BODY_BYTES, (plain, r) => sealedJsonBody(plain, r))
    return { body: opened.body, parsed: opened.checked, answer: opened.answer, cacheScope: opened.cacheScope }
  }

  /**
   * Opens an end-to-end encrypted request for `path` and runs `check` on its plaintext and route: it throws
   * E2eeError when the body disagrees with the route the proxy routed, reserved and billed by. Counted as
   * opened or refused on /jsonstats.
   */
  private async openSealed<T>(received: Buffer, headers: http2.IncomingHttpHeaders, path: string, maxPlainBytes: number, check: (plain: Buffer, route: E2eeRoute) => T | Promise<T>): Promise<{ body: Buffer; answer: AnswerWriter; checked: T; cacheScope?: string }> {
    try {
      if (!this.deps.hpke) throw new E2eeError('this worker has no HPKE key')
      const keys = parseWrappedKeys(headers[HEADERS.e2eeKeys])
      if (keys.length !== 1) throw new E2eeError('expected exactly one wrapped key')
      const opened = await openRequest(received, String(headers[HEADERS.e2eeRoute]), keys[0], this.deps.hpke)
      if (opened.body.length > maxPlainBytes) throw new PayloadTooLargeError(maxPlainBytes)
      this.replays.check(opened.encHash)
      const r = opened.route
      if (r.path !== path || (headers[HEADERS.requestId] !== undefined && r.requestId !== headers[HEADERS.requestId])) {
        throw new E2eeError('the routing headers do not match the encrypted body')
      }
      const checked = await check(opened.body, r)
      this.e2eeCounts.opened++
      return { body: opened.body, answer: opened.answer, checked, cacheScope: opened.cacheScope }
    } catch (err) {
      this.e2eeCounts.refused++
      throw err
    }
  }

  /**
   * Embeddings and transcriptions: one whole answer, no stream. Billed like any answer, by the
   * signed usage trailer: prompt tokens for embeddings, audio seconds (rounded up) for
   * transcriptions. A request stopped before its answer is ready produces nothing and is not billed.
   */
  private async serveUnary(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, cap: 'embeddings' | 'transcriptions'): Promise<void> {
    const requestId = String(headers[HEADERS.requestId] ?? crypto.randomUUID())
    const log = this.deps.log.child({ requestId })
    const backend = this.deps.backend
    this.counts.requests++
    if (!this.capabilities().includes(cap) || (cap === 'embeddings' ? !backend.embed : !backend.transcribe)) {
      this.counts.rejected++
      return respondError(stream, new InvalidRequestError(`model '${backend.model.id}' does not serve ${CAPABILITY_PATHS[cap]}`, 'model'))
    }
    const slot = this.admit(stream, headers)
    if (!slot) return
    const { key, ac, cancel, signal, timeoutSignal, timeoutMs } = slot
    const created = Math.floor(Date.now() / 1000)
    const startedAtMs = Date.now()
    const model = backend.model.id
    // The client node's salt keys the receipt's hashes, as for chat.
    const salt = parseSalt(headers[HEADERS.salt]) ?? newSalt()
    let raw: Buffer = Buffer.alloc(0)
    let sampling: SamplingParams = { temperature: null, top_p: null, seed: null, max_tokens: null, stop: null }
    /** Seals the answer to the client when the request came end-to-end encrypted. */
    let sealer: AnswerWriter | undefined
    try {
      let answer: { contentType: string; text: string }
      let usage: Usage
      let id: string
      let object: string
      const sealed = headers[HEADERS.e2eeRoute] !== undefined
      if (cap === 'embeddings') {
        let body: Record<string, unknown>
        if (sealed) {
          const opened = await this.openSealed(await readBody(stream, MAX_BODY_BYTES + E2EE_OVERHEAD_BYTES), headers, PATHS.embeddings, MAX_BODY_BYTES, (plain, r) => sealedJsonBody(plain, r))
          ;({ body: raw, answer: sealer, checked: body } = opened)
        } else {
          raw = await readBody(stream, MAX_BODY_BYTES)
          body = parseJsonObject(raw)
        }
        const { req, encoding } = validateEmbeddingRequest(body, requestId, { modelId: model })
        checkHopAgreement(headers, { model: body.model, stream: body.stream === true })
        const r = await backend.embed!(req, { signal })
        usage = { ...zeroUsage(), promptTokens: r.promptTokens }
        id = `emb-${requestId}`
        object = EMBEDDING_OBJECT
        const data = r.vectors.map((v, index) => ({ object: 'embedding', index, embedding: encoding === 'base64' ? vectorToBase64(v) : v }))
        answer = { contentType: 'application/json', text: JSON.stringify({ object: 'list', data, model, usage: { prompt_tokens: usage.promptTokens, total_tokens: usage.promptTokens } }) }
      } else {
        let form: FormData
        if (sealed) {
          // The multipart boundary comes from inside the encryption (the body's first line), never from a clear header.
          const opened = await this.openSealed(await readBody(stream, MAX_AUDIO_BODY_BYTES + E2EE_OVERHEAD_BYTES), headers, PATHS.transcriptions, MAX_AUDIO_BODY_BYTES, async (plain, r) => {
            let f: FormData
            try {
              f = await parseMultipart(plain, sealedMultipartType(plain))
            } catch {
              throw new E2eeError('the decrypted body is not a multipart form')
            }
            if (r.model !== f.get('model') || r.stream || r.maxTokens !== undefined) throw new E2eeError('the routing headers do not match the encrypted body')
            return f
          })
          ;({ body: raw, answer: sealer, checked: form } = opened)
        } else {
          raw = await readBody(stream, MAX_AUDIO_BODY_BYTES)
          form = await parseMultipart(raw, headers['content-type'])
        }
        const f = validateTranscriptionForm(form, { modelId: model })
        checkHopAgreement(headers, { model: form.get('model'), stream: false })
        sampling = { ...sampling, temperature: f.temperature ?? null }
        const audio = new Uint8Array(await f.file.arrayBuffer())
        const probe = await probeAudio(audio, signal)
        const seconds = Math.max(1, Math.ceil(probe.durationSec))
        // The proxy reserved funds for at most this much audio.
        const reserved = Number(headers[HEADERS.maxAudioSeconds])
        const maxSeconds = Number.isSafeInteger(reserved) && reserved > 0 ? Math.min(reserved, MAX_AUDIO_SECONDS) : MAX_AUDIO_SECONDS
        if (seconds > maxSeconds) throw new InvalidRequestError(`the audio is ${seconds} s long; at most ${maxSeconds} s are accepted for a file of this size`, 'file')
        const r = await backend.transcribe!(
          { model, audio, filename: f.file.name || `audio.${probe.format}`, format: probe.format, durationSec: probe.durationSec, language: f.language, prompt: f.prompt, temperature: f.temperature, requestId },
          { signal },
        )
        usage = { ...zeroUsage(), audioSeconds: seconds }
        id = `tr-${requestId}`
        object = TRANSCRIPTION_OBJECT
        answer = transcriptionAnswer(r, f.responseFormat, probe.durationSec, seconds, f.temperature ?? 0)
      }
      if (signal.aborted) throw signal.reason ?? new Error('aborted')
      this.meter(usage)
      const record: UsageRecord = { requestId, answer: { id, object, model, created }, ...usage, finishReason: 'stop' }
      const trailers = await this.usageTrailers(record, { stream, salt, raw, text: answerText(answer.text), sampling, model, startedAtMs, finishReason: 'stop', prices: headers[HEADERS.price] })
      slot.finished = true
      // Sealed, the answer's content type is not sent: the client node knows it from its own request (docs/e2ee.md).
      respond(stream, sealer ? new Reply(200, Buffer.concat([sealer.data(answer.text), sealer.final()]), { 'content-type': E2EE_CONTENT_TYPE }, trailers) : new Reply(200, answer.text, { 'content-type': answer.contentType }, trailers))
      this.counts.succeeded++
      this.m.requests.inc({ outcome: 'succeeded' })
    } catch (err) {
      slot.finished = true
      if (ac.signal.aborted || cancel.signal.aborted) {
        this.counts.cancelled++
        this.m.requests.inc({ outcome: 'cancelled' })
        log.info('request cancelled by the proxy before its answer was ready; nothing to bill')
        respondErrorSealed(stream, new RequestCancelledError(), sealer)
        return
      }
      this.counts.failed++
      this.m.requests.inc({ outcome: 'failed' })
      const e = timeoutSignal?.aborted ? new RequestTimeoutError(timeoutMs) : err
      if (!isExpectedError(e)) log.error('request failed', { error: e })
      respondErrorSealed(stream, e, sealer)
    } finally {
      this.release(slot)
    }
  }

  /** A proxy's statement of earnings: it must never go backwards. */
  private async onStatement(link: ProxyLink | undefined, text: string): Promise<WorkerStatementReply> {
    const r = await this.onStatementChecked(link, text)
    if (!link?.proxyId || link.state === 'distrusted') return r
    // Ask about the receipts this worker signed for this proxy that are not yet proven in its log.
    const pending = this.pendingReceipts.get(link.proxyId)
    return pending?.size ? { ...r, want: [...pending.keys()].slice(0, STATEMENT_RECEIPTS_MAX) } : r
  }

  private async onStatementChecked(link: ProxyLink | undefined, text: string): Promise<WorkerStatementReply> {
    if (!link?.proxyId) return { ok: false, error: 'unknown session' }
    let st: WorkerStatement
    try {
      st = JSON.parse(text) as WorkerStatement
      BigInt(st.tokens)
      BigInt(st.nano)
    } catch {
      return { ok: false, error: 'malformed statement' }
    }
    const log = this.deps.log.child({ proxy: link.target })
    link.earned = { tokens: st.tokens, nano: st.nano }
    if (!this.deps.ledger) return { ok: true }
    try {
      this.deps.ledger.recordStatement(link.proxyId, { tokens: BigInt(st.tokens), nano: BigInt(st.nano) })
    } catch (err) {
      log.error('proxy reported less than it already owed; disconnecting', { reason: (err as Error).message })
      link.state = 'distrusted'
      link.lastError = (err as Error).message
      setImmediate(() => link.session?.close())
      return { ok: false, error: 'statement went backwards' }
    }
    if (st.voucher) {
      // A voucher is kept only if this proxy signed it, as a payout, for no more than it says was earned;
      // its target (this worker's contract) is checked again before it is submitted.
      let tokens: bigint
      try {
        const v = checkVoucher(st.voucher, { kind: 'workerPayout', signer: link.proxyId, maxTokens: BigInt(st.tokens) })
        if (this.deps.payoutContract) {
          const mine = await this.deps.payoutContract(link.proxyId).catch((err: Error) => {
            throw new Error(`cannot check its target now (${err.message}); it will be checked when resent`)
          })
          if (v.target.toRawString() !== mine) throw new Error(`it is for another contract (${v.target.toRawString()}), not this worker's (${mine})`)
        }
        tokens = v.tokens
      } catch (err) {
        const reason = err instanceof InvalidVoucherError ? err.reason : (err as Error).message
        log.warn('refused a voucher from the proxy', { reason })
        return { ok: false, error: `voucher refused: ${reason}` }
      }
      if (this.deps.ledger.recordVoucher(link.proxyId, tokens, st.voucher)) this.deps.onVoucher?.(link.proxyId, st.voucher, tokens)
    }
    const bad = await this.checkReceipts(link, st)
    if (bad) {
      this.distrustForReceipts(link, bad)
      return { ok: false, error: `receipts: ${bad}` }
    }
    return { ok: true }
  }

  /** Receipts this worker signed, per proxy, until their proof in that proxy's committed log is checked. */
  private readonly pendingReceipts = new Map<string, Map<string, { earnedNano: bigint; index?: number }>>()
  private readonly receiptCounts = { signed: 0, verified: 0, unlogged: 0, proxiesDropped: 0 }
  /** Per proxy: what this worker earned by receipts proven in its log (since start). */
  private readonly provenEarnedNano = new Map<string, bigint>()

  private distrustForReceipts(link: ProxyLink, reason: string): void {
    this.deps.log.error('proxy receipt log disagrees with the receipts this worker signed; disconnecting', { proxy: link.target, reason })
    this.receiptCounts.proxiesDropped++
    if (link.proxyId) this.deps.ledger?.distrust(link.proxyId, reason)
    link.state = 'distrusted'
    link.lastError = reason
    setImmediate(() => link.session?.close())
  }

  /**
   * Checks what the proxy says of this worker's receipts: each proof against the commit's root (and,
   * with a chain, that root against the proxy contract's), that a receipt once logged never goes
   * missing, and that the earnings the proxy states cover every receipt proven in its log.
   * Returns why the proxy cannot be trusted, or undefined.
   */
  private async checkReceipts(link: ProxyLink, st: WorkerStatement): Promise<string | undefined> {
    const proxyId = link.proxyId!
    const pending = this.pendingReceipts.get(proxyId)
    const c = st.receipts?.commit ?? null
    // A statement may carry hundreds of proofs: the streams this worker serves go on in between.
    const pace = pacer()
    for (const e of st.receipts?.entries ?? []) {
      await pace()
      const mine = pending?.get(e.hash)
      if (!mine) continue
      if (e.missing) {
        // Logged once, then gone: the log was rewritten. Never logged: the proxy may have died before it could (counted, not fatal).
        if (mine.index !== undefined) return `receipt ${mine.index} (${e.hash.slice(0, 16)}…) is no longer in the log`
        this.receiptCounts.unlogged++
        pending!.delete(e.hash)
        continue
      }
      if (typeof e.index !== 'number') continue
      if (mine.index !== undefined && mine.index !== e.index) return `receipt ${e.hash.slice(0, 16)}… moved from ${mine.index} to ${e.index}`
      mine.index = e.index
      if (!e.proof || !c) continue
      try {
        verifyReceiptProofBoc(Buffer.from(e.proof, 'base64'), Buffer.from(c.root, 'hex'), e.index, Buffer.from(e.hash, 'hex'))
      } catch (err) {
        return `receipt ${e.index}: ${(err as Error).message}`
      }
      pending!.delete(e.hash)
      this.receiptCounts.verified++
      this.provenEarnedNano.set(proxyId, (this.provenEarnedNano.get(proxyId) ?? 0n) + mine.earnedNano)
    }
    const proven = this.provenEarnedNano.get(proxyId) ?? 0n
    if (BigInt(st.nano) < proven) return `it states earnings of ${st.nano} nanoTON, less than the ${proven} of the receipts proven in its log`
    if (c && this.deps.receiptsRoot) {
      // The root must be the one the proxy contract holds for that commit; checked off the reply path.
      void this.deps.receiptsRoot(c.proxy).then(
        (onChain) => {
          if (link.peer?.claims.paymentKey && onChain.paymentKey !== link.peer.claims.paymentKey) this.distrustForReceipts(link, `the proxy contract ${c.proxy} is not this proxy's`)
          else if (onChain.seqno === c.seqno && (onChain.root !== c.root || onChain.count !== c.count)) this.distrustForReceipts(link, `commit ${c.seqno}: the chain holds another receipt root or count`)
        },
        (err: Error) => this.deps.log.debug('could not read the receipt root on chain', { error: err.message }),
      )
    }
    return undefined
  }

  /** Remembers a receipt this worker signed for a proxy, to check later that its log holds it. */
  private rememberReceipt(proxyId: string, hash: string, earnedNano: bigint): void {
    let m = this.pendingReceipts.get(proxyId)
    if (!m) this.pendingReceipts.set(proxyId, (m = new Map()))
    m.set(hash, { earnedNano })
    // Bounded: the oldest are forgotten first (a proxy that never commits cannot grow this without end).
    if (m.size > PENDING_RECEIPTS_MAX) m.delete(m.keys().next().value!)
  }

  private meter(u: Usage): void {
    addUsage(this.tokens, u)
    this.m.tokens.inc({ kind: 'prompt' }, u.promptTokens)
    this.m.tokens.inc({ kind: 'cached' }, u.cachedTokens)
    this.m.tokens.inc({ kind: 'completion' }, u.completionTokens)
    this.m.tokens.inc({ kind: 'reasoning' }, u.reasoningTokens)
  }

  /**
   * The signed usage and the signed receipt, as trailers. The receipt states what this worker
   * did for this request: hashes keyed with the client's salt, the model, its image and key, the
   * proxy it served, the sampling parameters, the counts, and the cost at the proxy's prices.
   */
  private async usageTrailers(
    record: UsageRecord,
    r: { stream: http2.ServerHttp2Stream; salt: Buffer; raw: Buffer; text: string; sampling: SamplingParams; model: string; startedAtMs: number; firstTokenAtMs?: number; finishReason: string; prices: unknown },
  ): Promise<http2.OutgoingHttpHeaders> {
    const id = this.deps.identity.current()
    const json = JSON.stringify(record)
    const sig = await id.signAsync(usageSigningPayload(json))
    const trailers: http2.OutgoingHttpHeaders = { [HEADERS.usage]: json, [HEADERS.usageSig]: Buffer.from(sig).toString('base64') }
    const link = this.links.find((l) => l.session === r.stream.session)
    const proxyKey = link?.peer?.claims.paymentKey ? Buffer.from(link.peer.claims.paymentKey, 'hex') : link?.peer ? Buffer.from(link.peer.publicKey) : Buffer.alloc(32)
    const endedAtMs = Date.now()
    try {
      const fields = receiptFields({
        signer: 'worker',
        requestId: record.requestId,
        salt: r.salt,
        requestBody: r.raw,
        answerText: r.text,
        sampling: r.sampling,
        modelId: this.deps.backend.model.id,
        modelHash: this.deps.backend.model.hash,
        imageHash: this.deps.imageHash?.() ?? '',
        workerKey: id.publicKey,
        proxyKey,
        usage: record,
        coefficient: this.o.coefficient,
        prices: parsePriceHeader(r.prices) ?? OFFCHAIN_PRICE_PARAMS,
        startedAtMs: r.startedAtMs,
        // A unary answer (embeddings, transcription) comes whole: its first token is its end.
        firstTokenAtMs: r.firstTokenAtMs ?? endedAtMs,
        endedAtMs,
        finishReason: r.finishReason,
      })
      const receipt = await signReceipt(fields, (d) => id.signAsync(d))
      trailers[HEADERS.receipt] = receipt.boc.toString('base64')
      this.receiptCounts.signed++
      if (link?.proxyId) this.rememberReceipt(link.proxyId, receipt.hash.toString('hex'), fields.adjustedTokens * fields.workerFeePerTokenNano)
    } catch (err) {
      this.deps.log.warn('could not make a receipt', { error: (err as Error).message })
    }
    return trailers
  }



  /** Leaves proxies the current policy no longer allows (e.g. their image was revoked on the root). */
  revalidate(refusal: (peer: VerifiedPeer) => string | undefined): number {
    return revalidateLinks(this.links, refusal, this.deps.log)
  }


  stats(): Record<string, unknown> {
    const m = this.deps.backend.model
    return {
      role: 'worker',
      protocol: PROTOCOL_VERSION,
      model: { id: m.id, hash: m.hash },
      e2ee: { key: this.deps.hpke !== undefined, ...this.e2eeCounts },
      coefficient: this.o.coefficient,
      payoutAddress: this.o.payoutAddress || null,
      maxActiveRequests: this.o.maxActiveRequests,
      activeRequests: this.active,
      requests: { ...this.counts },
      tokens: tokenStats(this.tokens),
      receipts: { ...this.receiptCounts, pending: [...this.pendingReceipts.values()].reduce((t, m) => t + m.size, 0) },
      proxies: this.links.map((l) => {
        const rec = l.proxyId && this.deps.ledger ? this.deps.ledger.get(l.proxyId) : undefined
        return {
          target: l.target,
          state: l.state,
          proxyId: l.proxyId ?? null,
          imageHash: l.peer?.imageHash ?? null,
          lastError: l.lastError ?? null,
          connectedAt: l.connectedAt ?? null,
          // From the ledger once the proxy is known; before that (e.g. just restarted) unknown, never a false zero.
          earned: rec ? { tokens: rec.told.tokens.toString(), nano: rec.told.nano.toString() } : (l.earned ?? (l.proxyId ? { tokens: '0', nano: '0' } : null)),
          voucheredTokens: rec ? rec.vouchered.toString() : '0',
          paidOnChainTokens: rec ? rec.onChainTokens.toString() : '0',
        }
      }),
      identity: identityStats(this.deps.identity.current()),
    }
  }

  health(): { ok: boolean; connectedProxies: number; reason?: string } {
    const connectedProxies = this.links.filter((l) => l.state === 'connected').length
    return { ok: connectedProxies > 0, connectedProxies, ...(connectedProxies === 0 ? { reason: 'no proxy' } : {}) }
  }
}

/** An error answer; sealed once the request opened, as long as nothing was sent yet (its message may quote the prompt). */
function respondErrorSealed(stream: http2.ServerHttp2Stream, err: unknown, sealer: AnswerWriter | undefined): void {
  if (!sealer || stream.headersSent || stream.destroyed) return respondError(stream, err, false)
  const r = errorResponse(err)
  respond(stream, sealedJson(r.status, r.body, undefined, sealer))
}

/**
 * The decrypted JSON body of a sealed request, checked against its route: the client node read the route's
 * model, stream and max_tokens from the same body with the same function (askedMaxTokens).
 */
function sealedJsonBody(plain: Buffer, r: E2eeRoute): Record<string, unknown> {
  let body: Record<string, unknown>
  try {
    body = parseJsonObject(plain)
  } catch {
    throw new E2eeError('the decrypted body is not a JSON object')
  }
  if (r.model !== body.model || r.stream !== (body.stream === true) || r.maxTokens !== askedMaxTokens(body)) throw new E2eeError('the routing headers do not match the encrypted body')
  return body
}

/** A JSON answer; sealed as one record and the final record when the request was end-to-end encrypted. */
function sealedJson(status: number, body: unknown, trailers: http2.OutgoingHttpHeaders | undefined, sealer: AnswerWriter | undefined): Reply {
  const text = JSON.stringify(body)
  if (!sealer) return new Reply(status, text, { 'content-type': 'application/json' }, trailers)
  return new Reply(status, Buffer.concat([sealer.data(text), sealer.final()]), { 'content-type': E2EE_CONTENT_TYPE }, trailers)
}

const languageNames = new Intl.DisplayNames(['en'], { type: 'language' })

/** The transcription in the app's response_format, as OpenAI shapes it (the client node adds the cost to `usage`). */
function transcriptionAnswer(r: TranscriptionResult, format: TranscriptionFormat, durationSec: number, seconds: number, temperature: number): { contentType: string; text: string } {
  const usage = { type: 'duration', seconds }
  if (format === 'text') return { contentType: 'text/plain; charset=utf-8', text: r.text + '\n' }
  if (format === 'json') return { contentType: 'application/json', text: JSON.stringify({ text: r.text, usage }) }
  let language = r.language
  try {
    language = (languageNames.of(r.language) ?? r.language).toLowerCase()
  } catch {
    // not a code Intl knows: keep it as given
  }
  const segments = r.segments.map((s) => ({
    id: s.id,
    seek: 0,
    start: round3(s.start),
    end: round3(s.end),
    text: s.text.startsWith(' ') ? s.text : ' ' + s.text,
    tokens: [] as number[],
    temperature,
    avg_logprob: 0,
    compression_ratio: 0,
    no_speech_prob: 0,
  }))
  return { contentType: 'application/json', text: JSON.stringify({ task: 'transcribe', language, duration: round3(durationSec), text: r.text, segments, usage }) }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000
}

/** Flush once this much is pending, without waiting for the window to close. */
const COALESCE_MAX_BYTES = 16 * 1024
/**
 * How long an event after the first may wait for others to travel with it. A model generating faster than one
 * token per COALESCE_WINDOW_MS (the devnet's tiny one makes 1,500 a second on two cores) then sends a few
 * tokens per write instead of one, and every hop after it (the proxy's relay, the client node's decryption
 * and its write to the app) handles a few times fewer frames; a model at 50 tokens a second still sends each
 * token alone, COALESCE_WINDOW_MS late at most. Servers such as vLLM batch stream output the same way.
 * 8 ms rather than 2: with one stream of the devnet model, the client node and the proxy then spent about 0.07 ms
 * of CPU per token instead of 0.17 each, and tokens per second through the network went from 0.56–0.69 of
 * in-process to 0.71–0.91 (docs/benchmarks.md). 8 ms is half a 60 Hz frame: no reader sees the difference.
 */
export const COALESCE_WINDOW_MS = 8

/**
 * Writes SSE events to an HTTP/2 stream, the first at once (time to first byte) and the rest
 * gathered for up to COALESCE_WINDOW_MS: events that arrive together (an upstream's TCP read often
 * holds several, a fast model makes several in a window) then travel in one DATA frame instead of
 * one each. With a sealer the same holds for records: the first event is a record of its own, sent
 * at once, and the events gathered in one window are sealed together into one record when they are
 * written. No event waits more than the window, so streaming stays incremental, with one AEAD
 * operation per write on each side rather than one per token.
 */
class EventCoalescer {
  private pending = ''
  private timer?: NodeJS.Timeout
  private first = true

  constructor(private readonly stream: http2.ServerHttp2Stream, private readonly sealer?: AnswerWriter) {}

  /** Queues an event; false when the stream's buffer is full (the caller waits for 'drain'). */
  push(event: string): boolean {
    if (this.first) {
      this.first = false
      return this.stream.write(this.sealer ? this.sealer.data(event) : event)
    }
    this.pending += event
    if (this.pending.length >= COALESCE_MAX_BYTES) return this.flush()
    this.timer ??= setTimeout(this.onWindow, COALESCE_WINDOW_MS)
    return true
  }

  private readonly onWindow = (): void => {
    this.timer = undefined
    this.flush()
  }

  flush(): boolean {
    clearTimeout(this.timer)
    this.timer = undefined
    if (!this.pending || this.stream.destroyed || this.stream.closed) return true
    const text = this.pending
    this.pending = ''
    return this.stream.write(this.sealer ? this.sealer.data(text) : text)
  }
}

function drained(stream: http2.ServerHttp2Stream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done)
      stream.off('close', done)
      signal.removeEventListener('abort', done)
      resolve()
    }
    stream.once('drain', done)
    stream.once('close', done)
    signal.addEventListener('abort', done, { once: true })
  })
}

/** The key of a running request: the proxy's exchange id for this forward (older proxies send only the app's request id). */
function runningKey(headers: http2.IncomingHttpHeaders): string {
  const x = headers[HEADERS.exchange] ?? headers[HEADERS.requestId]
  return `${headers[HEADERS.exchange] !== undefined ? 'x' : 'r'}:${String(x ?? crypto.randomUUID())}`
}
