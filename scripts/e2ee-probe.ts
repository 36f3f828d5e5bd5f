// E2EE on vs off, side by side, at concurrency 1 (docs/benchmarks.md, "E2EE on vs off"): the bench's
// network (devnet + a worker on the fake backend + a second client node with `e2ee: "off"`), then
// requests alternating between the two client nodes, one at a time, and the medians of each side.
//
//   node --import tsx scripts/e2ee-probe.ts [--requests 300] [--no-chain] [--trace DIR] [--cpu-prof DIR] [--load SECONDS]
//
// --trace DIR     sets COCOON_E2EE_TRACE for the nodes and prints where each request's time went (median
//                 gap between consecutive trace points, each side).
// --cpu-prof DIR  CPU-profiles every client, proxy and worker node (scripts/e2ee-probe-prof.mjs, a preload);
//                 the .cpuprofile files are written when the network stops.
// --load SECONDS  also runs a concurrency-30 load of that length on each side (under the profiler, if on);
//                 --load-side on|off runs it on one side only (e.g. to profile one side alone).
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { startBenchNetwork } from '../src/bench/network.ts'
import { spawnCocoon } from '../src/bench/procs.ts'
import { overheadRequestBody } from '../src/bench/overhead.ts'
import { runLoad } from '../src/bench/load.ts'
import { cpuTimeMs } from '../src/bench/procs.ts'

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '300' },
    'no-chain': { type: 'boolean', default: false },
    trace: { type: 'string' },
    'cpu-prof': { type: 'string' },
    load: { type: 'string', default: '0' },
    'load-side': { type: 'string' },
  },
})
const say = (l: string) => process.stderr.write(`[probe] ${l}\n`)
if (values.trace) {
  fs.rmSync(values.trace, { recursive: true, force: true })
  process.env.COCOON_E2EE_TRACE = path.resolve(values.trace)
}
if (values['cpu-prof']) {
  // --cpu-prof is not allowed in NODE_OPTIONS: a preload profiles the nodes through the inspector instead.
  process.env.PROBE_PROF_DIR = path.resolve(values['cpu-prof'])
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import ${path.resolve('scripts/e2ee-probe-prof.mjs')}`.trim()
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-e2ee-probe-'))
const backend = spawnCocoon('fake-backend', ['bench', 'fake-backend', '--chunks', '50', '--chunk-bytes', '128', '--delay-ms', '0'], path.join(dir, 'fake-backend.log'))
const backendUrl = (await backend.waitForLine(/^\{"url":"([^"]+)"\}$/m, 30_000))[1]
const net = await startBenchNetwork({ backendUrl, dir, noChain: values['no-chain'], say })
const sides = { on: net.clientUrl, off: net.plainClientUrl } as const
type Side = keyof typeof sides

interface Timing {
  headersMs: number
  firstDataMs: number
  totalMs: number
}

function once(side: Side, requestId: string): Promise<Timing> {
  const body = JSON.stringify({ ...JSON.parse(overheadRequestBody(net.upstreamModel)), request_id: requestId })
  const u = new URL(`${sides[side]}/v1/chat/completions`)
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let firstData = 0
    let text = ''
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, agent }, (res) => {
      const headersMs = performance.now() - t0
      if (res.headers['x-cocoon-e2ee'] !== side) reject(new Error(`${side} side answered with e2ee ${String(res.headers['x-cocoon-e2ee'])}`))
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        if (!firstData) firstData = performance.now() - t0
        text += c
      })
      res.on('end', () => {
        if (res.statusCode !== 200 || !text.endsWith('data: [DONE]\n\n')) return reject(new Error(`${side}: HTTP ${res.statusCode} ${text.slice(0, 200)}`))
        resolve({ headersMs, firstDataMs: firstData, totalMs: performance.now() - t0 })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? (s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN
}

try {
  const n = Number(values.requests)
  const warm = 30
  const results: Record<Side, Timing[]> = { on: [], off: [] }
  const cpu = (pid: number | null) => (pid === null ? 0 : (cpuTimeMs(pid) ?? 0))
  for (let i = 0; i < warm + n; i++) {
    // Alternate which side goes first in each pair, so drift hits both alike.
    const order: Side[] = i % 2 === 0 ? ['on', 'off'] : ['off', 'on']
    for (const side of order) {
      const t = await once(side, `probe-${side}-${i}`)
      if (i >= warm) results[side].push(t)
    }
  }
  const row = (side: Side) => {
    const r = results[side]
    return { side, requests: r.length, p50TotalMs: +median(r.map((x) => x.totalMs)).toFixed(3), p50HeadersMs: +median(r.map((x) => x.headersMs)).toFixed(3), p50FirstDataMs: +median(r.map((x) => x.firstDataMs)).toFixed(3) }
  }
  const on = row('on')
  const off = row('off')
  console.log(JSON.stringify({ c1: { on, off, addedP50TotalMs: +(on.p50TotalMs - off.p50TotalMs).toFixed(3), addedP50FirstDataMs: +(on.p50FirstDataMs - off.p50FirstDataMs).toFixed(3) } }))

  const loadSec = Number(values.load)
  if (loadSec > 0) {
    const body = overheadRequestBody(net.upstreamModel)
    const loadSides = values['load-side'] ? [values['load-side'] as Side, values['load-side'] as Side] : (['on', 'off', 'on', 'off'] as Side[])
    for (const side of loadSides) {
      const client = side === 'on' ? net.pids.client : net.pids.plainClient
      const before = { client: cpu(client), proxy: cpu(net.pids.proxy), worker: cpu(net.pids.worker) }
      const r = await runLoad({ url: `${sides[side]}/v1/chat/completions`, body, connections: 30, durationSec: loadSec })
      const per = (k: keyof typeof before, pid: number | null) => +((cpu(pid) - before[k]) / r.ok).toFixed(3)
      console.log(JSON.stringify({ c30: { side, rps: r.rps, p50Ms: r.p50Ms, ok: r.ok, failed: r.failed, cpuMsPerRequest: { client: per('client', client), proxy: per('proxy', net.pids.proxy), worker: per('worker', net.pids.worker) } } }))
    }
  }
} finally {
  await net.stop()
  await backend.stop()
}

if (values.trace) {
  // Median gap between consecutive trace points of each request, per side (first occurrence of each point).
  const points = new Map<string, Map<string, number>>()
  for (const f of fs.readdirSync(values.trace)) {
    for (const line of fs.readFileSync(path.join(values.trace, f), 'utf8').split('\n')) {
      if (!line) continue
      const { id, ev, at } = JSON.parse(line) as { id: string; ev: string; at: number }
      if (!id.startsWith('probe-')) continue
      const m = points.get(id) ?? new Map<string, number>()
      if (!m.has(ev)) m.set(ev, at)
      points.set(id, m)
    }
  }
  for (const side of ['on', 'off']) {
    const gaps = new Map<string, number[]>()
    for (const [id, m] of points) {
      if (!id.startsWith(`probe-${side}-`)) continue
      const evs = [...m.entries()].sort((a, b) => a[1] - b[1])
      for (let i = 1; i < evs.length; i++) {
        const k = `${evs[i - 1][0]} -> ${evs[i][0]}`
        gaps.set(k, [...(gaps.get(k) ?? []), evs[i][1] - evs[i - 1][1]])
      }
    }
    console.log(`trace, E2EE ${side} (median ms, requests):`)
    for (const [k, v] of [...gaps.entries()].sort((a, b) => b[1].length - a[1].length).slice(0, 20)) console.log(`  ${k.padEnd(34)} ${median(v).toFixed(3).padStart(8)}  ${v.length}`)
  }
}
fs.rmSync(dir, { recursive: true, force: true })
