// `cocoon bench --scale`: one real proxy, many simulated workers, thousands of concurrent streams through it.
//
// Three processes, so that the proxy's CPU and memory are its own:
//   - the proxy: `cocoon proxy` (src/proxy, unchanged) with an off-chain config, its admission queue sized for the
//     load, and COCOON_TIME_ROUTING=1 so that it times every routing decision and reports the figures on /jsonstats;
//   - the simulated workers: `cocoon bench scale-workers` (scale-workers.ts), each with its own attested mutual-TLS
//     HTTP/2 session and a FAKE backend, in speed tiers (fast, medium, slow);
//   - this process: the client side, a few attested client sessions (at most STREAMS_PER_SESSION streams each,
//     the proxy's HTTP/2 limit) that open every stream at once.
// Two warm-up waves (one stream per worker each) let the proxy measure the workers; the measured wave then sends all
// the streams at once. Nothing here asserts a speed; the figures are recorded.
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import http2 from 'node:http2'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { sleep } from '../core/time.ts'
import { dialAttested } from '../net/attested.ts'
import { H2_OPTIONS, tuneSession } from '../net/h2.ts'
import { HEADERS, PATHS } from '../net/protocol.ts'
import { createIdentity, createPeerVerifier, DEFAULT_MAX_CERT_AGE_SEC, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, type Policy } from '../tee/index.ts'
import { BENCH_RESULT_VERSION, BENCH_UPSTREAM_MODEL } from './constants.ts'
import { benchWorkDir, cpuTimeMs, getJsonOrUndefined, peakRssMiB, rssMiB, spawnCocoon } from './procs.ts'
import type { ScaleFigures, ScaleResult } from './schema.ts'
import type { ScaleWorkerStats } from './scale-workers.ts'
import { round } from './stats.ts'

/** Issue 14's scale: 1,000 simulated workers, 10,000 concurrent streams. */
export const SCALE_WORKERS = 1_000
export const SCALE_STREAMS = 10_000
/** Streams per client session: the proxy's HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (net/h2.ts). */
export const STREAMS_PER_SESSION = 1_000
/** Slots each simulated worker advertises: 16,000 at 1,000 workers, so 10,000 streams fit with room to choose. */
export const SCALE_WORKER_SLOTS = 16
/** Each answer: this many chunks of this many bytes. */
export const SCALE_CHUNKS = 8
export const SCALE_CHUNK_BYTES = 32
/** After the workers connect, the proxy idles this long before its memory is read. */
const IDLE_SETTLE_MS = 3_000
const READY_TIMEOUT_MS = 60_000
/** Time allowed for connecting every worker (1,000 attested handshakes on a shared 2-core machine). */
const CONNECT_TIMEOUT_MS = 600_000
/** Time allowed for a wave of streams to finish. */
const WAVE_TIMEOUT_MS = 600_000

export interface ScaleOptions {
  workers?: number
  streams?: number
  workDir?: string
  keepWorkDir?: boolean
  say?: (line: string) => void
}

interface Wave {
  succeeded: number
  failed: number
  /** Failures by HTTP status, or by error for streams that got none. */
  failures: Record<string, number>
  wallMs: number
}

export async function runScale(o: ScaleOptions = {}): Promise<ScaleResult> {
  const workers = o.workers ?? SCALE_WORKERS
  const streams = o.streams ?? SCALE_STREAMS
  const say = o.say ?? ((line: string) => process.stderr.write(`[bench --scale] ${line}\n`))
  const date = new Date().toISOString()
  const notes: string[] = []
  const { workDir, logDir } = benchWorkDir(o.workDir, 'cocoon-bench-scale-')
  const image = await simulatedImageHash('')
  const [statsPort, workerPort, clientPort] = await freePorts(3)
  const host = '127.0.0.1'
  const cfgFile = path.join(workDir, 'proxy.json')
  fs.writeFileSync(
    cfgFile,
    JSON.stringify(
      {
        role: 'proxy',
        dataDir: path.join(workDir, 'proxy'),
        tee: { kind: 'simulated' },
        policy: { acceptKinds: ['simulated'], imageHashes: { proxy: [image], worker: [image], client: [image] } },
        stats: `${host}:${statsPort}`,
        workerListen: `${host}:${workerPort}`,
        clientListen: `${host}:${clientPort}`,
        // Every stream of a wave may wait for a slot rather than be refused.
        queueDepth: Math.min(100_000, streams),
        queueMaxWaitMs: WAVE_TIMEOUT_MS,
      },
      null,
      2,
    ),
  )
  let ok = false
  say(`starting the proxy (logs in ${logDir})`)
  const proxy = spawnCocoon('proxy', ['proxy', '--config', cfgFile], path.join(logDir, 'proxy.log'), { ...process.env, COCOON_TIME_ROUTING: '1', COCOON_LOG_LEVEL: 'warn' })
  let fleet: ReturnType<typeof spawnCocoon> | undefined
  try {
    const statsUrl = `http://${host}:${statsPort}/jsonstats`
    await until(async () => (await getJson(statsUrl)) !== undefined, 'the proxy to listen', READY_TIMEOUT_MS)
    await sleep(IDLE_SETTLE_MS)
    const rssBefore = rssMiB(proxy.pid)

    say(`starting ${workers} simulated workers in one process`)
    const connectStart = performance.now()
    fleet = spawnCocoon(
      'scale-workers',
      ['bench', 'scale-workers', '--proxy', `${host}:${workerPort}`, '--workers', String(workers), '--slots', String(SCALE_WORKER_SLOTS), '--chunks', String(SCALE_CHUNKS), '--chunk-bytes', String(SCALE_CHUNK_BYTES)],
      path.join(logDir, 'scale-workers.log'),
    )
    const fleetUrl = (await fleet.waitForLine(/^\{"stats":"([^"]+)"\}$/m, CONNECT_TIMEOUT_MS))[1]
    type ProxyStats = { workers: { connected: number }; routing?: { decisions: number; p50Us: number; p99Us: number; maxUs: number; workers: number }; requests: Record<string, number> }
    await until(async () => ((await getJson(statsUrl)) as ProxyStats | undefined)?.workers.connected === workers, `the proxy to list ${workers} workers`, READY_TIMEOUT_MS)
    const connectSec = (performance.now() - connectStart) / 1000
    say(`${workers} workers connected in ${connectSec.toFixed(1)} s; letting the proxy idle`)
    await sleep(IDLE_SETTLE_MS)
    const rssIdle = rssMiB(proxy.pid)
    const idleSessionKiB = rssBefore !== null && rssIdle !== null ? ((rssIdle - rssBefore) * 1024) / workers : null

    const sessions = Math.ceil(streams / STREAMS_PER_SESSION)
    const clients = await openClientSessions({ host, port: clientPort, count: sessions, image })
    try {
      // Two waves of one stream per worker: with equal priors the proxy spreads them, so it has measured every worker.
      const warm = Math.min(streams, workers)
      say(`warm-up: 2 waves of ${warm} streams, so the proxy measures the workers`)
      for (let round = 0; round < 2; round++) {
        const warmWave = await wave(clients, warm, `warm${round}`)
        if (warmWave.failed > 0) notes.push(`warm-up wave ${round + 1}: ${warmWave.failed} of ${warm} streams failed (${describe(warmWave.failures)})`)
      }
      const fleetBefore = (await getJson(fleetUrl)) as ScaleWorkerStats
      const cpuBefore = cpuTimeMs(proxy.pid)
      say(`measured wave: ${streams} concurrent streams over ${sessions} client session(s)`)
      const measured = await wave(clients, streams, 'load')
      const cpuAfter = cpuTimeMs(proxy.pid)
      const fleetAfter = (await getJson(fleetUrl)) as ScaleWorkerStats
      const ps = (await getJson(statsUrl)) as ProxyStats
      // The proxy's view at the end (each worker's measured quality), kept with the logs (--keep).
      fs.writeFileSync(path.join(workDir, 'proxy-jsonstats.json'), JSON.stringify(ps, null, 2) + '\n')
      if (measured.failed > 0) notes.push(`measured wave: ${measured.failed} of ${streams} streams failed (${describe(measured.failures)})`)
      if (fleetAfter.dropped > 0) notes.push(`${fleetAfter.dropped} worker sessions dropped during the run`)
      const tiers = fleetAfter.tiers.map((t, i) => ({ name: t.name, chunkDelayMs: t.chunkDelayMs, workers: t.workers, requests: t.served - fleetBefore.tiers[i].served }))
      const served = tiers.reduce((s, t) => s + t.requests, 0)
      const fastest = tiers.reduce((a, b) => (b.chunkDelayMs < a.chunkDelayMs ? b : a))
      const r = ps.routing
      if (!r) throw new Error('the proxy reported no routing times; was it started with COCOON_TIME_ROUTING=1?')
      const scale: ScaleFigures = {
        workers,
        streams,
        clientSessions: sessions,
        workerSlots: SCALE_WORKER_SLOTS,
        chunks: SCALE_CHUNKS,
        connectSec: round(connectSec, 1),
        loadAvg1m: round(os.loadavg()[0], 2),
        succeeded: measured.succeeded,
        failed: measured.failed,
        wallSec: round(measured.wallMs / 1000, 2),
        routing: { decisions: r.decisions, workers: r.workers, p50Us: r.p50Us, p99Us: r.p99Us, maxUs: r.maxUs },
        idleSessionKiB: idleSessionKiB === null ? null : round(idleSessionKiB, 1),
        proxyCpuPerRequestMs: cpuBefore !== null && cpuAfter !== null && measured.succeeded > 0 ? round((cpuAfter - cpuBefore) / measured.succeeded, 3) : null,
        proxyPeakRssMiB: peakRssMiB(proxy.pid) === null ? null : round(peakRssMiB(proxy.pid)!, 1),
        tiers,
        fastestTierShare: served > 0 ? round(fastest.requests / served, 3) : 0,
        fastestTierWorkerShare: round(fastest.workers / workers, 3),
      }
      if (idleSessionKiB === null || scale.proxyCpuPerRequestMs === null) notes.push('no /proc on this machine: memory and CPU figures are null')
      notes.push(`machine load: 1-minute load average ${scale.loadAvg1m} on ${os.cpus().length} CPUs at the end of the measured wave; routing times are wall times, so a busy machine inflates them (preemption)`)
      notes.push('every stream carries one of 100 prefix keys, as client nodes send for long shared prompts, so each routing decision includes the prefix-affinity pass')
      notes.push('routing times: every selectWorker call in the proxy process (warm-up and measured wave), timed there with performance.now(); the newest 65,536 are kept')
      notes.push('idle session memory: the proxy\'s RSS after connecting the workers and idling, less its RSS before, per worker; it includes garbage not yet collected')
      ok = true
      return { version: BENCH_RESULT_VERSION, date, machine: { cpus: os.cpus().length, memGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version }, scale, notes }
    } finally {
      for (const c of clients) c.destroy()
    }
  } finally {
    await fleet?.stop()
    await proxy.stop()
    if (ok && !o.keepWorkDir && !o.workDir) fs.rmSync(workDir, { recursive: true, force: true })
    else say(`configs and logs kept in ${workDir}`)
  }
}

/** `count` attested client sessions to the proxy's client listener (simulated evidence, like a client node's). */
async function openClientSessions(o: { host: string; port: number; count: number; image: string }): Promise<http2.ClientHttp2Session[]> {
  const provider = new SimulatedEvidenceProvider(o.image)
  const policy: Policy = { acceptKinds: ['simulated'], imageHashes: { proxy: [o.image] }, modelHashes: '*', maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC }
  const verify = createPeerVerifier(policy, { simulated: new SimulatedEvidenceVerifier() })
  const identity = await createIdentity({ role: 'client', provider, configHash: '00'.repeat(32) })
  const out: http2.ClientHttp2Session[] = []
  for (let i = 0; i < o.count; i++) {
    const { socket } = await dialAttested({ host: o.host, port: o.port, identity, verify, expectedRole: 'proxy' })
    const s = http2.connect('https://proxy.cocoon', { ...H2_OPTIONS, createConnection: () => socket })
    tuneSession(s)
    s.on('error', () => {})
    // Wait for the proxy's SETTINGS, so its stream limit is known before the streams open.
    await new Promise<void>((resolve) => (s.remoteSettings ? resolve() : s.once('remoteSettings', () => resolve())))
    out.push(s)
  }
  return out
}

/**
 * Prefix keys the streams carry, as a client node sends them for long shared prompts (e.g. an app's system
 * prompt): every decision then also runs the proxy's prefix-affinity pass, the dearer case of routing.
 */
const PREFIX_KEYS = 100
const prefixKeys = Array.from({ length: PREFIX_KEYS }, (_, i) => createHash('sha256').update(`scale-prefix-${i}`).digest('hex').slice(0, 32))

/** Opens `n` streaming chat requests at once, spread over the sessions; resolves when every one has ended. */
async function wave(sessions: http2.ClientHttp2Session[], n: number, tag: string): Promise<Wave> {
  const failures: Record<string, number> = {}
  let succeeded = 0
  const fail = (why: string) => (failures[why] = (failures[why] ?? 0) + 1)
  const body = JSON.stringify({ model: BENCH_UPSTREAM_MODEL, messages: [{ role: 'user', content: 'Say something.' }], stream: true, max_tokens: SCALE_CHUNKS })
  const start = performance.now()
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const s = sessions[i % sessions.length]
      let status = 0
      let tail = ''
      let settled = false
      const done = (why?: string) => {
        if (settled) return
        settled = true
        if (why) fail(why)
        else succeeded++
        resolve()
      }
      let req: http2.ClientHttp2Stream
      try {
        req = s.request({ ':method': 'POST', ':path': PATHS.chat, 'content-type': 'application/json', [HEADERS.requestId]: `scale-${tag}-${i}`, [HEADERS.model]: BENCH_UPSTREAM_MODEL, [HEADERS.stream]: '1', [HEADERS.maxTokens]: String(SCALE_CHUNKS), [HEADERS.prefixKey]: prefixKeys[i % prefixKeys.length] })
      } catch (err) {
        return done((err as Error).message.slice(0, 80))
      }
      req.setEncoding('utf8')
      req.on('response', (h) => (status = Number(h[':status'])))
      req.on('data', (d: string) => (tail = (tail + d).slice(-128)))
      // Complete: the worker's last chunk (finish_reason set) and the proxy's trailers with the billed usage and its
      // cost. The proxy relays the worker's events unchanged; the client node, not the proxy, writes [DONE].
      let billed = false
      req.on('trailers', (t) => (billed = typeof t[HEADERS.usage] === 'string' && typeof t[HEADERS.cost] === 'string'))
      req.on('end', () => done(status !== 200 ? `status ${status}` : !billed ? 'no billed usage in the trailers' : /"finish_reason":"(stop|length)"/.test(tail) ? undefined : 'incomplete answer'))
      req.on('error', (err) => done(`stream error: ${err.message.slice(0, 60)}`))
      req.on('close', () => done(status ? `closed early (status ${status})` : `closed (code ${req.rstCode})`))
      req.end(body)
    })
  const all = Promise.all(Array.from({ length: n }, (_, i) => one(i)))
  let timer: NodeJS.Timeout | undefined
  await Promise.race([all, new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error(`a wave of ${n} streams did not finish in ${WAVE_TIMEOUT_MS / 1000} s`)), WAVE_TIMEOUT_MS)))])
  clearTimeout(timer)
  return { succeeded, failed: n - succeeded, failures, wallMs: performance.now() - start }
}

function describe(f: Record<string, number>): string {
  return Object.entries(f)
    .map(([k, v]) => `${v} × ${k}`)
    .join(', ')
}

/** `n` distinct ports free on loopback now. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => resolve(s))
    })),
  )
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

async function until(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

const getJson = (url: string) => getJsonOrUndefined(url, 10_000)
