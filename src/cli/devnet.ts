// `cocoon devnet`: a whole local network (proxy, workers, client) as supervised child processes, one command.
// The supervisor stays small: the start-up work that needs TON, x509 or the model code runs in a child of its own
// (./devnet-setup.ts), so this process, which lives as long as the devnet, never loads them.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { pocketSphinxAvailable } from '../inference/index.ts'
import { ConfigError } from '../core/errors.ts'
import { sleep } from '../core/time.ts'
import { portIsFree } from '../core/ports.ts'
import { getJson } from '../core/http-client.ts'
import { SUPERVISED_ENV } from '../core/supervised.ts'
import { DEVNET_POLL_TIMEOUT_MS, DEVNET_READY_TIMEOUT_MS, devnetPortOffsetProblem, devnetPorts, devnetPortsByRole, type DevnetState } from '../node/devnet.ts'
import { ADMIN_TOKEN_FILE, dashboardUrl } from '../node/admin.ts'
import { buildDashboardIfMissing } from '../dashboard/build.ts'
import { NODE_HEAP_ENV, NodeHeapSettingError, nodeHeapArgs, nodeHeapMib } from '../core/node-heap.ts'
import type { ChainSections, DevnetSetupMessage, DevnetSetupRequest } from './devnet-setup.ts'

export const DEFAULT_DEVNET_MODEL = 'hf:ggml-org/tiny-llamas/stories260K.gguf'
export const STOP_GRACE_MS = 5_000
/** A child that keeps dying is given up on after this many restarts in RESTART_WINDOW_MS. */
export const MAX_RESTARTS = 5
export const RESTART_WINDOW_MS = 60_000

const BIN = fileURLToPath(new URL('../../bin/cocoon.js', import.meta.url))

/** The devnet could not start; it has already stopped every child it started. The message says what failed and what to do. */
export class DevnetStartError extends Error {
  readonly name = 'DevnetStartError'
}

interface Child {
  name: string
  config: string
  proc?: ChildProcess
  restarts: number[]
  stopped: boolean
  /** The last line the child printed that was not a structured info log: usually why it died. */
  lastError?: string
}

function isRunning(p: ChildProcess | undefined): p is ChildProcess {
  return !!p && p.exitCode === null && p.signalCode === null
}

/** Signals a child's whole process group (each child leads its own, so a terminal's Ctrl-C reaches only the devnet). */
function signalChild(p: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-p.pid!, signal)
  } catch {
    try {
      p.kill(signal)
    } catch {}
  }
}

/** `cocoon devnet`'s flags (the README and the usage text are checked against these). */
export const DEVNET_OPTIONS = {
  workers: { type: 'string', default: '1' },
  proxies: { type: 'string', default: '1' },
  model: { type: 'string', default: DEFAULT_DEVNET_MODEL },
  dir: { type: 'string', default: '.cocoon/devnet' },
  'port-offset': { type: 'string', default: '0' },
  threads: { type: 'string', default: '1' },
  'no-chain': { type: 'boolean', default: false },
  'no-speech': { type: 'boolean', default: false },
} as const

export async function runDevnet(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: DEVNET_OPTIONS, strict: true })
  const workers = Number(values.workers)
  if (!Number.isInteger(workers) || workers < 1 || workers > 16) throw new ConfigError('--workers', 'must be an integer from 1 to 16')
  const proxyCount = Number(values.proxies)
  if (!Number.isInteger(proxyCount) || proxyCount < 1 || proxyCount > 8) throw new ConfigError('--proxies', 'must be an integer from 1 to 8')
  const offset = Number(values['port-offset'])
  if (!Number.isInteger(offset) || offset < 0 || offset > 50_000) throw new ConfigError('--port-offset', 'must be an integer from 0 to 50000')
  const threads = Number(values.threads)
  if (!Number.isInteger(threads) || threads < 1) throw new ConfigError('--threads', 'must be a positive integer')
  const withChain = !values['no-chain']
  try {
    nodeHeapMib()
  } catch (err) {
    if (err instanceof NodeHeapSettingError) throw new ConfigError(NODE_HEAP_ENV, err.problem)
    throw err
  }
  // A speech worker (transcriptions) joins when Debian's pocketsphinx and pocketsphinx-en-us are
  // installed; it takes the worker slot after the others (ports, wallet, stats).
  const withSpeech = !values['no-speech'] && pocketSphinxAvailable()
  const workerNames = [...Array.from({ length: workers }, (_, i) => `worker-${i}`), ...(withSpeech ? ['worker-speech'] : [])]
  const offsetProblem = devnetPortOffsetProblem(offset, workerNames.length, withChain, proxyCount)
  if (offsetProblem) throw new ConfigError('--port-offset', offsetProblem.replace(/^--port-offset /, ''))
  const dir = path.resolve(values.dir!)
  const logDir = path.join(dir, 'logs')
  fs.mkdirSync(logDir, { recursive: true })
  const say = (line: string) => process.stdout.write(`[devnet] ${line}\n`)
  const ports = devnetPorts(offset, workerNames.length, proxyCount)

  const children: Child[] = []
  /** The setup child (./devnet-setup.ts) while it runs. */
  let setupProc: ChildProcess | undefined
  let shuttingDown = false
  let ready = false
  const stateFile = path.join(dir, 'devnet.json')

  /** Stops every child still running: SIGTERM to its process group, SIGKILL after the grace period. */
  const stopChildren = async () => {
    if (isRunning(setupProc)) signalChild(setupProc, 'SIGKILL')
    const alive = children.filter((c) => isRunning(c.proc))
    const exited = Promise.all(alive.map((c) => new Promise((r) => (isRunning(c.proc) ? c.proc!.once('exit', r) : r(null)))))
    for (const c of alive) signalChild(c.proc!, 'SIGTERM')
    const timer = setTimeout(() => alive.forEach((c) => isRunning(c.proc) && signalChild(c.proc!, 'SIGKILL')), STOP_GRACE_MS)
    await exited
    clearTimeout(timer)
    fs.rmSync(stateFile, { force: true })
  }
  // Last resort, if this process exits any other way: no child outlives it.
  process.on('exit', () => {
    for (const c of children) if (isRunning(c.proc)) signalChild(c.proc, 'SIGKILL')
    if (isRunning(setupProc)) signalChild(setupProc, 'SIGKILL')
  })

  const shutdown = async (signal: string) => {
    if (shuttingDown) return
    shuttingDown = true
    say(`${signal}: stopping`)
    await stopChildren()
    say('stopped')
    process.exit(0)
  }
  // Installed before anything starts, so Ctrl-C during start-up stops what has started so far.
  process.on('SIGINT', () => void shutdown('SIGINT'))
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGHUP', () => void shutdown('SIGHUP'))

  /** A start-up step failed: stop everything started so far, then report one line. */
  const fail = async (what: string): Promise<never> => {
    shuttingDown = true
    await stopChildren()
    throw new DevnetStartError(what)
  }
  // A child that dies before the devnet is ready ends the start-up: restarting would only hide why.
  let startupDeath: ((c: Child, how: string) => void) | undefined
  const died = new Promise<never>((_, reject) => {
    startupDeath = (c, how) => reject(new DevnetStartError(`the ${c.name} exited during start-up (${how})${c.lastError ? `: ${c.lastError}` : ''}; see ${path.join(logDir, `${c.name}.log`)}`))
  })
  died.catch(() => {})
  /** Runs a start-up step, failing fast if a child dies meanwhile. */
  const step = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await Promise.race([p, died])
    } catch (err) {
      if (shuttingDown) return new Promise<never>(() => {}) // Ctrl-C: shutdown() exits the process
      return fail((err as Error).message)
    }
  }

  // Every port must be free before anything starts, so a second devnet fails at once and names the port.
  for (const { role, port } of devnetPortsByRole(ports, withChain)) {
    if (!(await portIsFree('127.0.0.1', port))) {
      throw new DevnetStartError(`port ${port} for the ${role} is already in use (is another devnet running?); stop what holds it, or run with --port-offset K`)
    }
  }

  // npm install builds the dashboard; a checkout that skipped it gets it built here (about a second).
  await buildDashboardIfMissing()
  say(`resolving model ${values.model}`)
  if (!withSpeech && !values['no-speech']) say('no speech worker: `sudo apt-get install pocketsphinx pocketsphinx-en-us sox` adds one for /v1/audio/transcriptions')
  const setup = runSetup({ dir, model: values.model!, withSpeech, chainUrl: withChain ? `http://127.0.0.1:${ports.chain}` : null, workers: workerNames, proxies: ports.proxies }, say)
  setupProc = setup.proc
  const { model, speech, image } = await setup.resolved.catch((err: Error) => {
    if (shuttingDown) return new Promise<never>(() => {}) // Ctrl-C: shutdown() exits the process
    throw err
  })
  if (shuttingDown) return new Promise<never>(() => {})
  // Without a chain the allow-lists come from here; with one, from the root contract the devnet deploys.
  const policy = { acceptKinds: ['simulated', 'none'], imageHashes: withChain ? {} : { proxy: [image], worker: [image], client: '*' } }

  const write = (name: string, cfg: unknown) => {
    const file = path.join(dir, `${name}.json`)
    fs.writeFileSync(file, JSON.stringify(cfg, null, 2) + '\n')
    return file
  }
  let chainCfg: ((role: 'client' | 'proxy' | 'worker') => Record<string, unknown>) | undefined
  let rootAddress: string | undefined
  let chainChild: Child | undefined
  if (withChain) {
    chainChild = { name: 'chain', restarts: [], stopped: false, config: '' }
    children.push(chainChild)
  }
  const writeConfigs = () => {
    for (const pp of ports.proxies) {
      children.push({
        name: pp.name,
        restarts: [],
        stopped: false,
        config: write(pp.name, {
          role: 'proxy',
          dataDir: path.join(dir, pp.name),
          ...chainCfg?.('proxy'),
          tee: { kind: 'simulated' },
          policy,
          stats: `127.0.0.1:${pp.stats}`,
          workerListen: `127.0.0.1:${pp.workers}`,
          clientListen: `127.0.0.1:${pp.clients}`,
        }),
      })
    }
    for (let i = 0; i < workers; i++) {
      children.push({
        name: `worker-${i}`,
        restarts: [],
        stopped: false,
        config: write(`worker-${i}`, {
          role: 'worker',
          dataDir: path.join(dir, `worker-${i}`),
          ...chainCfg?.('worker'),
          tee: { kind: 'simulated' },
          policy,
          stats: `127.0.0.1:${ports.workers[i]}`,
          // On chain, workers discover the proxies from the root; off-chain they are named here.
          ...(chainCfg ? {} : { proxies: ports.proxies.map((pp) => `127.0.0.1:${pp.workers}`) }),
          backend: { kind: 'llama', model: model.path, modelId: model.id, threads, parallel: 2 },
        }),
      })
    }
    if (speech) {
      children.push({
        name: 'worker-speech',
        restarts: [],
        stopped: false,
        config: write('worker-speech', {
          role: 'worker',
          dataDir: path.join(dir, 'worker-speech'),
          ...chainCfg?.('worker'),
          tee: { kind: 'simulated' },
          policy,
          stats: `127.0.0.1:${ports.workers[workers]}`,
          proxies: ports.proxies.map((pp) => `127.0.0.1:${pp.workers}`),
          backend: { kind: 'pocketsphinx', model: speech.dir, modelId: speech.id, parallel: 1 },
        }),
      })
    }
    children.push({
      name: 'client',
      restarts: [],
      stopped: false,
      config: write('client', {
        role: 'client',
        dataDir: path.join(dir, 'client'),
        ...chainCfg?.('client'),
        tee: { kind: 'none' },
        policy,
        listen: `127.0.0.1:${ports.client}`,
        // On chain, the client discovers the proxies from the root and keeps sessions to the best two.
        ...(chainCfg ? {} : { proxies: ports.proxies.map((pp) => `127.0.0.1:${pp.clients}`) }),
      }),
    })
  }

  const baseUrl = `http://127.0.0.1:${ports.client}/v1`
  const childPorts = (name: string): Record<string, number> => {
    if (name === 'chain') return { rpc: ports.chain }
    if (name === 'client') return { api: ports.client }
    const pp = ports.proxies.find((x) => x.name === name)
    if (pp) return { stats: pp.stats, workers: pp.workers, clients: pp.clients }
    return { stats: ports.workers[Number(name.split('-')[1])] }
  }
  const writeState = () => {
    if (shuttingDown) return
    const state: DevnetState = {
      pid: process.pid,
      baseUrl,
      ports,
      children: Object.fromEntries(children.map((c) => [c.name, { pid: c.proc?.pid ?? null, role: roleOf(c.name), ports: childPorts(c.name), config: c.config, log: path.join(logDir, `${c.name}.log`) }])),
      chain: withChain ? { url: `http://127.0.0.1:${ports.chain}`, endpoint: `http://127.0.0.1:${ports.chain}/api/v2/jsonRPC`, root: rootAddress ?? null, ownerKey: path.join(dir, 'owner.key') } : null,
      model: { id: model.id, path: model.path, sha256: model.sha256 },
      speech,
    }
    fs.writeFileSync(stateFile + '.tmp', JSON.stringify(state, null, 2) + '\n')
    fs.renameSync(stateFile + '.tmp', stateFile)
  }

  const launch = (c: Child) => {
    if (shuttingDown) return
    const role = c.name.split('-')[0]
    const logFile = fs.openSync(path.join(logDir, `${c.name}.log`), 'a')
    const args = c.name === 'chain' ? ['chain', '--dir', path.join(dir, 'chain'), '--port', String(ports.chain)] : [role, '--config', c.config]
    // The devnet prints the dashboard URL with its token itself; the children keep it out of their logs.
    // Own process group (detached), and stdin a pipe from us: if the devnet dies without stopping it, the child sees EOF and stops itself.
    const proc = spawn(process.execPath, [...nodeHeapArgs(args[0]), BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, [SUPERVISED_ENV]: '1', COCOON_ADMIN_TOKEN_PRINT: '0' }, detached: true })
    c.proc = proc
    proc.stdin!.on('error', () => {})
    // Keep full logs on disk; echo only warnings and errors, so the console stays readable.
    for (const stream of [proc.stdout!, proc.stderr!]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        fs.writeSync(logFile, line + '\n')
        if (/"level":"(warn|error)"/.test(line) || !line.startsWith('{')) {
          let msg = line
          try {
            const r = JSON.parse(line)
            msg = `${r.level}: ${r.msg}${r.reason ? ` (${r.reason})` : r.error ? ` (${typeof r.error === 'object' ? r.error.message : r.error})` : ''}`
          } catch {}
          if (stream === proc.stderr || /^(error|warn):/.test(msg)) c.lastError = msg.replace(/^cocoon \w+: /, '')
          process.stdout.write(`[${c.name}] ${msg}\n`)
        }
      })
    }
    proc.once('exit', (code, signal) => {
      // Let the last lines of output reach the log first.
      setImmediate(() => fs.closeSync(logFile))
      if (shuttingDown || c.stopped) return
      const how = signal ? `signal ${signal}` : `exit code ${code}`
      if (!ready) return setImmediate(() => startupDeath!(c, how))
      say(`${c.name} (pid ${proc.pid}) died: ${how}; see ${path.join(logDir, `${c.name}.log`)}`)
      const now = Date.now()
      c.restarts = c.restarts.filter((t) => now - t < RESTART_WINDOW_MS)
      if (c.restarts.length >= MAX_RESTARTS) {
        say(`${c.name} died ${MAX_RESTARTS} times within ${RESTART_WINDOW_MS / 1000}s; not restarting it`)
        c.stopped = true
        writeState()
        return
      }
      c.restarts.push(now)
      setTimeout(() => {
        if (shuttingDown) return
        say(`restarting ${c.name}`)
        launch(c)
        writeState()
      }, 1_000).unref()
    })
  }

  if (chainChild) {
    launch(chainChild)
    writeState()
    say(`starting the devnet chain on port ${ports.chain}`)
    const onChain = await step(setup.chain)
    rootAddress = onChain.root
    chainCfg = (role) => ({ chain: onChain.sections[role] })
  }
  if (shuttingDown) return new Promise<never>(() => {})
  writeConfigs()
  for (const c of children) if (c !== chainChild) launch(c)
  writeState()
  say(`starting ${proxyCount === 1 ? 'proxy' : `${proxyCount} proxies`}, ${workerNames.length} worker(s) and client; logs in ${logDir}`)

  // Ready means what the banner promises: the client answers /healthz and lists the model, served by every worker.
  const deadline = Date.now() + DEVNET_READY_TIMEOUT_MS
  const isReady = async () => {
    const connected = await Promise.all(
      ports.proxies.map((pp) =>
        fetchJson(`http://127.0.0.1:${pp.stats}/jsonstats`)
          .then((s) => (s as { workers: { connected: number } }).workers.connected >= workerNames.length)
          .catch(() => false),
      ),
    )
    if (!connected.every(Boolean)) return false
    const healthy = await fetchJson(`http://127.0.0.1:${ports.client}/healthz`).then((h) => (h as { ok: boolean }).ok).catch(() => false)
    if (!healthy) return false
    return fetchJson(`${baseUrl}/models`)
      .then((m) => [model.id, ...(speech ? [speech.id] : [])].every((id) => (m as { data: Array<{ id: string }> }).data.some((x) => x.id === id)))
      .catch(() => false)
  }
  while (!(await step(isReady()))) {
    if (shuttingDown) return new Promise<never>(() => {})
    if (Date.now() > deadline) {
      const why = await fetchJson(`http://127.0.0.1:${ports.client}/healthz`).then((h) => (h as { reason?: string }).reason).catch(() => 'the client does not answer')
      await fail(`the devnet was not ready after ${DEVNET_READY_TIMEOUT_MS / 1000}s${why ? ` (${why})` : ''}; see the logs in ${logDir}`)
    }
    await sleep(200)
  }
  if (shuttingDown) return new Promise<never>(() => {})
  ready = true
  const token = readToken(path.join(dir, 'client', ADMIN_TOKEN_FILE))
  const dashboards = `  dashboard:        ${dashboardUrl('127.0.0.1', ports.client, token)}\n                    proxy ${dashboardUrl('127.0.0.1', ports.proxyStats)}  worker ${ports.workers.map((p) => dashboardUrl('127.0.0.1', p)).join('  ')}\n                    (admin tokens: ${path.join(dir, '<node>', ADMIN_TOKEN_FILE)})\n`
  const curl = `curl ${baseUrl}/chat/completions -H 'content-type: application/json' -d '{"model":"${model.id}","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":64}'`
  process.stdout.write(
    `\nCocoon devnet is ready.\n\n  OpenAI base URL:  ${baseUrl}\n${dashboards}  model:            ${model.id}\n${speech ? `  speech model:     ${speech.id}\n` : ''}${rootAddress ? `  chain:            http://127.0.0.1:${ports.chain}/api/v2/jsonRPC (root ${rootAddress})\n` : ''}  stats:            http://127.0.0.1:${ports.client}/jsonstats  ${ports.proxies.map((pp) => `http://127.0.0.1:${pp.stats}/jsonstats`).join('  ')}\n\n  ${curl}\n\nPress Ctrl-C to stop.\n`,
  )
}

function readToken(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim()
  } catch {
    return undefined
  }
}

function fetchJson(url: string): Promise<unknown> {
  // Longer than the client's own readiness check (READINESS_TIMEOUT_MS), so a busy machine is slow, not "never ready".
  return getJson(url, DEVNET_POLL_TIMEOUT_MS)
}

function roleOf(name: string): 'chain' | 'proxy' | 'worker' | 'client' {
  return name.split('-')[0] as 'chain' | 'proxy' | 'worker' | 'client'
}

/** The setup child's answers: the resolved models and image hash, then (with a chain) the root and the nodes' chain sections. */
interface Setup {
  proc: ChildProcess
  resolved: Promise<{ model: DevnetState['model']; speech: DevnetState['speech']; image: string }>
  chain: Promise<{ root: string; sections: ChainSections }>
}

/**
 * Starts `cocoon devnet-setup` for `req` (./devnet-setup.ts), passing its progress lines to `say`. Either
 * promise fails with a DevnetStartError that says why, when the setup reports an error or exits before
 * answering.
 */
function runSetup(req: DevnetSetupRequest, say: (line: string) => void): Setup {
  const proc = spawn(process.execPath, [BIN, 'devnet-setup'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true })
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)))
  proc.stdin!.on('error', () => {})
  proc.stdin!.end(JSON.stringify(req))
  const resolved = deferred<Awaited<Setup['resolved']>>()
  const chain = deferred<Awaited<Setup['chain']>>()
  chain.promise.catch(() => {}) // without a chain nobody waits for it
  const fail = (err: Error) => {
    resolved.reject(err)
    chain.reject(err)
  }
  readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
    let m: DevnetSetupMessage
    try {
      m = JSON.parse(line) as DevnetSetupMessage
    } catch {
      return say(line.slice(0, 500))
    }
    if ('say' in m) say(m.say)
    else if ('resolved' in m) resolved.resolve(m.resolved)
    else if ('chain' in m) chain.resolve(m.chain)
    else if ('error' in m) fail(new DevnetStartError(m.error))
  })
  // 'close' comes after the last line of stdout was read: a reported error has already failed the promises.
  proc.once('close', (code, signal) => {
    const why = stderr.trim().split('\n').pop()?.replace(/^cocoon devnet-setup: /, '')
    fail(new DevnetStartError(`the devnet setup exited (${signal ? `signal ${signal}` : `exit code ${code}`}) before it finished${why ? `: ${why}` : ''}`))
  })
  return { proc, resolved: resolved.promise, chain: chain.promise }
}

/** A promise with its resolve and reject at hand; settling it again does nothing. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (err: Error) => void } {
  let resolve!: (v: T) => void
  let reject!: (err: Error) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}
