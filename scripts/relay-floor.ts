// The floor under issue 10's CPU target: what Node itself costs per request on the network's path, with none of
// Cocoon's work (no attestation, routing, payments, signatures, receipts, E2EE). Three bare relays in three
// processes, shaped like the client node, the proxy and the worker: HTTP/1.1 in at the edge, TLS 1.3 + HTTP/2
// between them, and HTTP/1.1 with keep-alive to the bench's fake backend at the end, each answer's SSE relayed
// chunk by chunk. The load is the bench's own (autocannon, 30 connections, the overhead body); CPU time per
// request is read from /proc/PID/stat over the load window, as `cocoon bench` reads it (docs/benchmarks.md).
//
//   node --import tsx scripts/relay-floor.ts [--seconds 15] [--rounds 3] [--c1-seconds 5]
//
// Each round also measures the p50 latency at concurrency 1, direct and relayed (`c1AddedP50Ms`): the floor under
// issue 10's added-latency target, as `cocoon bench` measures it (one connection, one request at a time).
//
// Run it beside `cocoon bench` on the same machine: the ratio of the two is what Cocoon's own work costs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { runLoad } from '../src/bench/load.ts'
import { cpuTimeMs, spawnCocoon } from '../src/bench/procs.ts'
import { overheadRequestBody } from '../src/bench/overhead.ts'
import { FAKE_CHUNK_BYTES, FAKE_CHUNK_COUNT } from '../src/bench/constants.ts'

const role = process.env.RELAY_FLOOR_ROLE
if (role) await serve(role)
else await main()

/** One relay process: `edge` (HTTP/1.1 in), `mid` (HTTP/2 in) or `tail` (HTTP/2 in, HTTP/1.1 out); prints its port. */
async function serve(r: string): Promise<void> {
  const upstream = process.env.RELAY_FLOOR_UPSTREAM!
  const tls = { key: fs.readFileSync(process.env.RELAY_FLOOR_KEY!), cert: fs.readFileSync(process.env.RELAY_FLOOR_CERT!) }
  let session: http2.ClientHttp2Session | undefined
  const h2Session = () => {
    if (!session || session.closed || session.destroyed) session = http2.connect(upstream, { ca: tls.cert, rejectUnauthorized: true, servername: 'localhost' })
    return session
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
  /** Sends `body` upstream and relays the answer through `reply` (status, data, end). */
  const forward = (body: Buffer, reply: { head(status: number): void; data(c: Buffer): void; end(): void }) => {
    if (r === 'tail') {
      const req = http.request(`${upstream}/v1/chat/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
        reply.head(res.statusCode ?? 502)
        res.on('data', reply.data)
        res.on('end', reply.end)
      })
      req.end(body)
      return
    }
    const s = h2Session().request({ ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json' })
    // Data is read once the headers are in: node:http2 emits 'response' a tick after the frame that carries it.
    s.once('response', (h) => {
      reply.head(Number(h[':status']))
      s.on('data', reply.data)
      s.on('end', reply.end)
    })
    s.end(body)
  }
  const read = (src: NodeJS.ReadableStream, done: (b: Buffer) => void) => {
    const parts: Buffer[] = []
    src.on('data', (c: Buffer) => parts.push(c))
    src.on('end', () => done(Buffer.concat(parts)))
  }
  let port: number
  if (r === 'edge') {
    const server = http.createServer((req, res) =>
      read(req, (body) => forward(body, { head: (status) => res.writeHead(status, { 'content-type': 'text/event-stream' }), data: (c) => res.write(c), end: () => res.end() })),
    )
    server.keepAliveTimeout = 65_000
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  } else {
    const server = http2.createSecureServer({ ...tls, allowHTTP1: false })
    server.on('stream', (stream) =>
      read(stream, (body) => forward(body, { head: (status) => stream.respond({ ':status': status, 'content-type': 'text/event-stream' }), data: (c) => stream.write(c), end: () => stream.end() })),
    )
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  }
  process.stdout.write(`${JSON.stringify({ port })}\n`)
}

function startRelay(r: string, upstream: string, keyFile: string, certFile: string): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]], {
    env: { ...process.env, RELAY_FLOOR_ROLE: r, RELAY_FLOOR_UPSTREAM: upstream, RELAY_FLOOR_KEY: keyFile, RELAY_FLOOR_CERT: certFile },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`relay ${r} exited with ${code}`)))
    proc.stdout!.once('data', (d: Buffer) => {
      const { port } = JSON.parse(d.toString()) as { port: number }
      resolve({ proc, url: `${r === 'edge' ? 'http' : 'https'}://${r === 'edge' ? '127.0.0.1' : 'localhost'}:${port}` })
    })
  })
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '15' }, rounds: { type: 'string', default: '3' }, 'c1-seconds': { type: 'string', default: '5' } } })
  const seconds = Number(values.seconds)
  const c1Seconds = Number(values['c1-seconds'])
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-relay-floor-'))
  const keyFile = path.join(dir, 'key.pem')
  const certFile = path.join(dir, 'cert.pem')
  // A throwaway self-signed P-256 certificate for localhost (the nodes' certificates are P-256 too).
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' })
  // The bench's fake backend, in a process of its own as in `cocoon bench`.
  const backend = spawnCocoon('fake-backend', ['bench', 'fake-backend', '--chunks', String(FAKE_CHUNK_COUNT), '--chunk-bytes', String(FAKE_CHUNK_BYTES), '--delay-ms', '0'], path.join(dir, 'fake-backend.log'))
  const backendUrl = (await backend.waitForLine(/^\{"url":"([^"]+)"\}$/m, 30_000))[1]
  const tail = await startRelay('tail', backendUrl, keyFile, certFile)
  const mid = await startRelay('mid', tail.url, keyFile, certFile)
  const edge = await startRelay('edge', mid.url, keyFile, certFile)
  const body = overheadRequestBody('bench')
  const procs = { edge: edge.proc.pid!, mid: mid.proc.pid!, tail: tail.proc.pid! }
  try {
    // Warm-up: JIT, connections, TLS sessions.
    await runLoad({ url: `${edge.url}/v1/chat/completions`, body, connections: 30, durationSec: 3 })
    for (let i = 0; i < Number(values.rounds); i++) {
      const direct = await runLoad({ url: `${backendUrl}/v1/chat/completions`, body, connections: 30, durationSec: seconds })
      const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuTimeMs(pid) ?? 0]))
      const relayed = await runLoad({ url: `${edge.url}/v1/chat/completions`, body, connections: 30, durationSec: seconds })
      const per = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, +(((cpuTimeMs(pid) ?? 0) - before[k]) / relayed.ok).toFixed(3)]))
      const stack = +Object.values(per).reduce((a, b) => a + b, 0).toFixed(3)
      const c1Direct = await runLoad({ url: `${backendUrl}/v1/chat/completions`, body, connections: 1, durationSec: c1Seconds })
      const c1Relayed = await runLoad({ url: `${edge.url}/v1/chat/completions`, body, connections: 1, durationSec: c1Seconds })
      const c1 = { c1DirectP50Ms: c1Direct.p50Ms, c1RelayedP50Ms: c1Relayed.p50Ms, c1AddedP50Ms: +(c1Relayed.p50Ms - c1Direct.p50Ms).toFixed(3) }
      console.log(JSON.stringify({ round: i + 1, directRps: +direct.rps.toFixed(1), relayedRps: +relayed.rps.toFixed(1), ratioRps: +(relayed.rps / direct.rps).toFixed(3), p50Ms: relayed.p50Ms, failed: relayed.failed + relayed.errors + c1Relayed.failed + c1Relayed.errors, cpuMsPerRequest: { ...per, stack }, ...c1 }))
    }
  } finally {
    for (const p of [edge, mid, tail]) p.proc.kill()
    await backend.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
