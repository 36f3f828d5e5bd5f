// `cocoon bench scale-workers`: many SIMULATED workers in one process, for `cocoon bench --scale`.
//
// Each simulated worker is a full peer of the proxy as far as the proxy can tell: its own Ed25519 key, its own
// attested certificate (simulated TEE evidence, made by src/tee like a real worker's), its own mutual-TLS
// connection and HTTP/2 session, the worker protocol (worker info, statements, cancel), signed usage and signed
// receipts. Only the model is fake: a FAKE backend in this process streams a few fixed chunks, pausing between
// chunks by the worker's speed tier, so that the proxy's routing has fast and slow workers to choose between.
//
// Prints one JSON line on stdout once every worker is connected: {"stats":"http://127.0.0.1:PORT"}; that URL
// answers GET with the counts per tier (ScaleWorkerStats).
import http from 'node:http'
import http2 from 'node:http2'
import { parseArgs } from 'node:util'
import { dialAttested } from '../net/attested.ts'
import { readBody } from '../net/body.ts'
import { H2_OPTIONS, tuneSession } from '../net/h2.ts'
import { json, serve } from '../net/hop.ts'
import { createLogger } from '../core/log.ts'
import { HEADERS, PATHS, PROTOCOL_VERSION, usageSigningPayload, type UsageRecord, type WorkerInfo } from '../net/protocol.ts'
import { newSalt, parsePriceHeader, parseSalt, receiptFields, signReceipt } from '../payments/receipts/receipt.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../payments/pricing.ts'
import { createIdentity, createPeerVerifier, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, DEFAULT_MAX_CERT_AGE_SEC, type Identity, type Policy, type VerifiedPeer } from '../tee/index.ts'
import { BENCH_UPSTREAM_MODEL, BENCH_UPSTREAM_MODEL_HASH, FAKE_PROMPT_TOKENS } from './constants.ts'
import { fakeChunkText } from './fake-backend.ts'

/** A speed tier of simulated workers: its FAKE backend pauses this long before each chunk. */
export interface ScaleTier {
  name: string
  chunkDelayMs: number
}

/** fast / medium / slow: each tier four times slower than the one before, so routing has a clear best. */
export const SCALE_TIERS: readonly ScaleTier[] = [
  { name: 'fast', chunkDelayMs: 20 },
  { name: 'medium', chunkDelayMs: 80 },
  { name: 'slow', chunkDelayMs: 320 },
]

/** What GET on the stats URL answers. */
export interface ScaleWorkerStats {
  /** Workers whose session to the proxy is up now. */
  connected: number
  /** Sessions that closed after connecting. */
  dropped: number
  /** Per tier: its workers, and the answers they finished and abandoned (client or proxy went away). */
  tiers: Array<{ name: string; chunkDelayMs: number; workers: number; served: number; abandoned: number }>
}

export interface ScaleWorkersOptions {
  proxy: { host: string; port: number }
  workers: number
  /** Slots each worker advertises (maxActiveRequests). */
  slots: number
  /** Content chunks per answer, and bytes per chunk. */
  chunks: number
  chunkBytes: number
  /** Dials in flight at once while connecting. */
  dialConcurrency?: number
  say?: (line: string) => void
}

const DEFAULT_DIAL_CONCURRENCY = 16
const MAX_TOKENS_CAP = 4096
const CONFIG_HASH = '00'.repeat(32)

interface SimWorker {
  identity: Identity
  /** The image hash its simulated evidence states. */
  image: string
  tier: (typeof counts)[number]
  proxyKey?: Uint8Array
}

const counts: Array<{ tier: ScaleTier; workers: number; served: number; abandoned: number }> = []

/** Starts the simulated workers; resolves once every one is connected, with the stats server. */
export async function startScaleWorkers(o: ScaleWorkersOptions): Promise<{ statsUrl: string; close(): Promise<void> }> {
  const say = o.say ?? (() => {})
  counts.length = 0
  for (const tier of SCALE_TIERS) counts.push({ tier, workers: 0, served: 0, abandoned: 0 })
  const image = await simulatedImageHash('')
  const provider = new SimulatedEvidenceProvider(image)
  const policy: Policy = { acceptKinds: ['simulated'], imageHashes: { proxy: [image], worker: [image] }, modelHashes: '*', maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC }
  // One process, many workers: they share the verdict cache on the proxy's one certificate. The proxy gets no
  // such help: every worker's certificate is its own.
  const verify = createPeerVerifier(policy, { simulated: new SimulatedEvidenceVerifier() })
  const h2 = http2.createServer(H2_OPTIONS)
  const sessions = new Set<http2.ServerHttp2Session>()
  let connected = 0
  let dropped = 0
  let stopping = false
  const byWorker = new WeakMap<http2.Http2Session, SimWorker>()
  // What each simulated worker serves the proxy, through the same router and error edge as a real worker.
  const route = serve<SimWorker | undefined>(
    {
      [`GET ${PATHS.workerInfo}`]: () => json(info()),
      [`POST ${PATHS.statement}`]: () => json({ ok: true }),
      // Answers stop when their stream goes away; nothing is queued here to cancel.
      [`POST ${PATHS.cancel}`]: () => json({ cancelled: false }),
      [`POST ${PATHS.chat}`]: (req, stream) => answer(req.peer!, stream, req.headers, o),
    },
    { log: createLogger({ role: 'scale-workers' }, 'error'), peer: (stream) => byWorker.get(stream.session!), sseErrors: false },
  )
  h2.on('stream', (stream, headers) => {
    if (byWorker.has(stream.session!)) route(stream, headers)
    else stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
  })

  const t0 = performance.now()
  const made: SimWorker[] = []
  for (let i = 0; i < o.workers; i++) {
    const tier = counts[Math.min(counts.length - 1, Math.floor((i * counts.length) / o.workers))]
    tier.workers++
    made.push({ identity: await createIdentity({ role: 'worker', provider, configHash: CONFIG_HASH, modelId: BENCH_UPSTREAM_MODEL, modelHash: BENCH_UPSTREAM_MODEL_HASH }), image, tier })
  }
  say(`made ${o.workers} worker identities in ${Math.round(performance.now() - t0)} ms`)

  const info = (): WorkerInfo => ({
    protocol: PROTOCOL_VERSION,
    model: { id: BENCH_UPSTREAM_MODEL, hash: BENCH_UPSTREAM_MODEL_HASH, endpoints: [PATHS.chat] },
    coefficient: 1000,
    maxActiveRequests: o.slots,
    maxTokensCap: MAX_TOKENS_CAP,
  })

  const connect = async (w: SimWorker) => {
    const { socket, peer } = await dialAttested({ ...o.proxy, identity: w.identity, verify, expectedRole: 'proxy' })
    w.proxyKey = proxyKeyOf(peer)
    const session = await new Promise<http2.ServerHttp2Session>((resolve) => {
      h2.once('session', (s: http2.ServerHttp2Session) => {
        byWorker.set(s, w)
        tuneSession(s)
        resolve(s)
      })
      h2.emit('connection', socket)
    })
    sessions.add(session)
    connected++
    session.on('error', () => {})
    session.once('close', () => {
      sessions.delete(session)
      connected--
      if (!stopping) dropped++
    })
  }
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(o.dialConcurrency ?? DEFAULT_DIAL_CONCURRENCY, o.workers) }, async () => {
      while (next < made.length) await connect(made[next++])
    }),
  )
  say(`connected ${o.workers} workers in ${Math.round(performance.now() - t0)} ms`)

  const stats = http.createServer((_req, res) => {
    const body: ScaleWorkerStats = {
      connected,
      dropped,
      tiers: counts.map((c) => ({ name: c.tier.name, chunkDelayMs: c.tier.chunkDelayMs, workers: c.workers, served: c.served, abandoned: c.abandoned })),
    }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(body))
  })
  await new Promise<void>((resolve) => stats.listen(0, '127.0.0.1', resolve))
  return {
    statsUrl: `http://127.0.0.1:${(stats.address() as { port: number }).port}`,
    async close() {
      stopping = true
      for (const s of sessions) s.destroy()
      await new Promise<void>((resolve) => stats.close(() => resolve()))
    },
  }
}

/** The key receipts name the proxy by: its payment key when it has one, else its identity key (as a real worker does). */
function proxyKeyOf(peer: VerifiedPeer): Uint8Array {
  return peer.claims.paymentKey ? Buffer.from(peer.claims.paymentKey, 'hex') : Buffer.from(peer.publicKey)
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The FAKE backend's answer, streamed at the worker's tier speed, then the signed usage and receipt as trailers. */
async function answer(w: SimWorker, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, o: ScaleWorkersOptions): Promise<void> {
  const startedAtMs = Date.now()
  const raw = await readBody(stream, 64 * 1024)
  const requestId = String(headers[HEADERS.requestId] ?? '')
  const salt = parseSalt(headers[HEADERS.salt]) ?? newSalt()
  const prices = parsePriceHeader(headers[HEADERS.price]) ?? OFFCHAIN_PRICE_PARAMS
  const maxTokens = Number(headers[HEADERS.maxTokens] ?? o.chunks)
  const chunks = Math.max(1, Math.min(o.chunks, Number.isSafeInteger(maxTokens) && maxTokens > 0 ? maxTokens : o.chunks))
  const id = `chatcmpl-scale-${requestId.slice(0, 32)}`
  const created = Math.floor(startedAtMs / 1000)
  stream.respond({ ':status': 200, 'content-type': 'text/event-stream' }, { waitForTrailers: true })
  let text = ''
  for (let i = 0; i < chunks; i++) {
    await sleep(w.tier.tier.chunkDelayMs)
    if (stream.destroyed || stream.closed) {
      w.tier.abandoned++
      return
    }
    const t = fakeChunkText(i, o.chunkBytes)
    text += t
    const finish = i === chunks - 1 ? 'stop' : null
    stream.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: BENCH_UPSTREAM_MODEL, choices: [{ index: 0, delta: { content: t }, finish_reason: finish }] })}\n\n`)
  }
  const record: UsageRecord = {
    requestId,
    answer: { id, object: 'chat.completion.chunk', model: BENCH_UPSTREAM_MODEL, created },
    promptTokens: FAKE_PROMPT_TOKENS,
    cachedTokens: 0,
    completionTokens: chunks,
    reasoningTokens: 0,
    finishReason: 'stop',
  }
  const usage = JSON.stringify(record)
  const sig = await w.identity.signAsync(usageSigningPayload(usage))
  const receipt = await signReceipt(
    receiptFields({
      signer: 'worker',
      requestId,
      salt,
      requestBody: raw,
      answerText: text,
      sampling: { temperature: null, top_p: null, seed: null, max_tokens: chunks, stop: null },
      modelId: BENCH_UPSTREAM_MODEL,
      modelHash: BENCH_UPSTREAM_MODEL_HASH,
      imageHash: w.image,
      workerKey: w.identity.publicKey,
      proxyKey: w.proxyKey ?? Buffer.alloc(32),
      usage: record,
      coefficient: 1000,
      prices,
      startedAtMs,
      endedAtMs: Date.now(),
      finishReason: 'stop',
    }),
    (d) => w.identity.signAsync(d),
  )
  if (stream.destroyed || stream.closed) {
    w.tier.abandoned++
    return
  }
  stream.once('wantTrailers', () => stream.sendTrailers({ [HEADERS.usage]: usage, [HEADERS.usageSig]: Buffer.from(sig).toString('base64'), [HEADERS.receipt]: receipt.boc.toString('base64') }))
  stream.end()
  w.tier.served++
}

/** `cocoon bench scale-workers --proxy HOST:PORT --workers N [--slots S] [--chunks C] [--chunk-bytes B]` */
export async function runScaleWorkersCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { proxy: { type: 'string' }, workers: { type: 'string', default: '1000' }, slots: { type: 'string', default: '16' }, chunks: { type: 'string', default: '8' }, 'chunk-bytes': { type: 'string', default: '32' } },
    strict: true,
  })
  const m = /^(.+):(\d+)$/.exec(values.proxy ?? '')
  if (!m) throw Object.assign(new Error('--proxy HOST:PORT (the proxy\'s worker listener) is required'), { name: 'UsageError' })
  const n = (name: string, v: string | undefined) => {
    const x = Number(v)
    if (!Number.isInteger(x) || x < 1) throw Object.assign(new Error(`--${name} must be an integer >= 1`), { name: 'UsageError' })
    return x
  }
  const say = (line: string) => process.stderr.write(`[scale-workers] ${line}\n`)
  const w = await startScaleWorkers({ proxy: { host: m[1], port: Number(m[2]) }, workers: n('workers', values.workers), slots: n('slots', values.slots), chunks: n('chunks', values.chunks), chunkBytes: n('chunk-bytes', values['chunk-bytes']), say })
  process.stdout.write(JSON.stringify({ stats: w.statsUrl }) + '\n')
  const stop = () => void w.close().then(() => process.exit(0))
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}
