// The README's quick start, run as written: `npm start` on the DEFAULT ports, then the README's own curl line and
// JavaScript snippet (read from README.md, never copied here), Ctrl-C, and no process left; a second start reuses the
// state. Then a devnet stopped during start-up, and the README's commands checked against `cocoon --help`.
// This is the one test file allowed to use the devnet's default ports.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { BIN, MODELS_DIR, ROOT, cocoon, isAlive, randomPortOffset, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import { DEVNET_OPTIONS, STOP_GRACE_MS } from '../../src/cli/devnet.ts'
import { DEVNET_PORTS, devnetPorts, type DevnetState } from '../../src/node/devnet.ts'
import { portIsFree } from '../../src/core/ports.ts'

const run = promisify(execFile)
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
const PACKAGE = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
const READY_TIMEOUT_MS = 120_000
/** How long every child may take to exit after the devnet is told to stop: its grace period, plus slack for a loaded machine. */
const EXIT_WITHIN_MS = STOP_GRACE_MS + 10_000

/** The README's fenced code blocks, with their language. */
function codeBlocks(md: string): Array<{ lang: string; text: string }> {
  return [...md.matchAll(/^```(\w*)\n([\s\S]*?)^```/gm)].map((m) => ({ lang: m[1], text: m[2] }))
}
function block(lang: string, has: string): string {
  const b = codeBlocks(README).find((x) => x.lang === lang && x.text.includes(has))
  assert.ok(b, `README.md has a \`\`\`${lang} block with "${has}"`)
  return b.text
}

/** The environment a new user has: nothing of ours set but COCOON_MODELS (there is no network here to download the model). */
function userEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COCOON_')))
  return { ...env, COCOON_MODELS: MODELS_DIR }
}

function readState(dir: string): DevnetState {
  return JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
}

function childPids(state: DevnetState): number[] {
  return Object.values(state.children)
    .map((c) => c.pid)
    .filter((p): p is number => typeof p === 'number')
}

/** Spawns a `cocoon` command line the way a user's shell would, in `cwd`, collecting its output. */
function spawnUser(argv: string[], cwd: string): Proc {
  const proc = spawn(argv[0] === 'node' ? process.execPath : argv[0], argv.slice(1), { cwd, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  proc.stdout!.on('data', (d: Buffer) => ((out += d), listeners.forEach((l) => l())))
  proc.stderr!.on('data', (d: Buffer) => ((err += d), (out += d), listeners.forEach((l) => l())))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => (listeners.forEach((l) => l()), resolve({ code, signal }))))
  process.once('exit', () => proc.kill('SIGKILL'))
  return {
    proc,
    exited,
    output: () => out,
    stderr: () => err,
    waitForOutput: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => (listeners.delete(check), reject(new Error(`timed out waiting for ${re}:\n${out}`))), timeoutMs)
        const check = () => {
          const m = out.match(re)
          if (m) (clearTimeout(timer), listeners.delete(check), resolve(m))
          else if (proc.exitCode !== null || proc.signalCode !== null) (clearTimeout(timer), listeners.delete(check), reject(new Error(`exited before printing ${re}:\n${out}`)))
        }
        listeners.add(check)
        check()
      }),
  }
}

describe("the README's quick start, verbatim, on the default ports", () => {
  test('npm start serves the curl line and the JavaScript snippet; Ctrl-C leaves no process behind; a second npm start reuses the state', async (t) => {
    // `npm start` is `node bin/cocoon.js devnet` with no flags: run exactly that.
    assert.match(block('sh', 'npm start'), /^npm install && npm start$/m)
    const startArgv = PACKAGE.scripts.start.split(' ')
    assert.deepEqual(startArgv, ['node', 'bin/cocoon.js', 'devnet'])
    const ports = devnetPorts(0, 1)
    const { proxies: _proxies, ...single } = ports
    for (const [role, port] of Object.entries({ ...single, workers: ports.workers[0] })) {
      if (!(await portIsFree('127.0.0.1', port))) {
        t.skip(`default port ${port} (${role}) is already taken on this machine, so the README's quick start cannot run here; stop what holds it to run this test`)
        return
      }
    }
    // A fresh folder stands for the fresh clone's working directory, so the default --dir (.cocoon/devnet) lands there.
    const cwd = tmpDir('readme')
    fs.symlinkSync(path.join(ROOT, 'bin'), path.join(cwd, 'bin'))
    const dir = path.join(cwd, '.cocoon', 'devnet')
    const started = Date.now()
    const devnet = spawnUser(startArgv, cwd)
    let pids: number[] = []
    try {
      await devnet.waitForOutput(/Press Ctrl-C to stop\./, READY_TIMEOUT_MS)
      t.diagnostic(`ready banner after ${((Date.now() - started) / 1000).toFixed(1)} s`)
      // The banner shows what the README shows (its "..." stands for lines that vary, "…" for a part of a line).
      const banner = block('', 'Cocoon devnet is ready.')
      for (const line of banner.split('\n').map((l) => l.trim()).filter((l) => l && l !== '...')) {
        const re = new RegExp('^' + line.split('…').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\s+/g, '\\s+')).join('\\S+') + '$')
        assert.ok(devnet.output().split('\n').some((l) => re.test(l.trim())), `the banner has the README's line "${line}":\n${devnet.output()}`)
      }
      pids = childPids(readState(dir))
      assert.equal(pids.length, readState(dir).speech ? 5 : 4, 'chain, proxy, worker (and the speech worker, when PocketSphinx is installed) and client')

      // The curl line, as the README prints it, through a shell.
      const curl = block('sh', 'curl ')
      const { stdout: sse } = await run('sh', ['-c', curl], { cwd, env: userEnv(), timeout: 60_000 })
      const events = sse.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6))
      assert.equal(events.at(-1), '[DONE]', sse)
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e))
      assert.ok(chunks.some((c) => c.choices?.[0]?.delta?.content), `a streamed answer with text:\n${sse}`)
      assert.ok(chunks.some((c) => c.usage?.cost !== undefined), `the final usage chunk carries the cost, as the README says:\n${sse}`)

      // The JavaScript snippet, unchanged, with the official openai package (it resolves from this checkout's node_modules).
      const snippet = block('js', "from 'openai'")
      const file = path.join(ROOT, '.cocoon', `readme-snippet-${process.pid}.mjs`)
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, snippet)
      try {
        const { stdout } = await run(process.execPath, [file], { cwd, env: userEnv(), timeout: 60_000 })
        assert.match(stdout, /prompt_tokens/, stdout)
        assert.match(stdout, /cost/, stdout)
        assert.ok(stdout.split('{')[0].trim().length > 0, `the snippet prints the generated text:\n${stdout}`)
      } finally {
        fs.rmSync(file, { force: true })
      }

      // Ctrl-C.
      const root = readState(dir).chain!.root
      devnet.proc.kill('SIGINT')
      const { code } = await devnet.exited
      assert.equal(code, 0, devnet.output())
      await waitFor(() => pids.every((p) => !isAlive(p)), `every child (${pids.join(', ')}) to exit`, EXIT_WITHIN_MS)

      // A second `npm start` reuses the state: the same chain, root and funded contracts, and it serves again.
      const again = spawnUser(startArgv, cwd)
      try {
        await again.waitForOutput(/Press Ctrl-C to stop\./, READY_TIMEOUT_MS)
        const state = readState(dir)
        pids = childPids(state)
        assert.equal(state.chain!.root, root, 'the same root contract, from the persisted chain')
        // The client's log is appended across runs: one deposit, made by the first start.
        const deposits = fs.readFileSync(path.join(dir, 'logs', 'client.log'), 'utf8').match(/depositing to a new client contract/g) ?? []
        assert.equal(deposits.length, 1, 'the client contract funded the first time is reused')
        const { stdout } = await run('sh', ['-c', block('sh', 'curl ')], { cwd, env: userEnv(), timeout: 60_000 })
        assert.match(stdout, /data: \[DONE\]/)
        again.proc.kill('SIGINT')
        assert.equal((await again.exited).code, 0, again.output())
        await waitFor(() => pids.every((p) => !isAlive(p)), `every child (${pids.join(', ')}) of the second start to exit`, EXIT_WITHIN_MS)
      } finally {
        if (again.proc.exitCode === null) again.proc.kill('SIGKILL')
      }
    } finally {
      if (devnet.proc.exitCode === null) devnet.proc.kill('SIGKILL')
      for (const p of pids) if (isAlive(p)) process.kill(p, 'SIGKILL')
      fs.rmSync(cwd, { recursive: true, force: true })
    }
  })
})

describe('a devnet stopped during start-up leaves no child behind', () => {
  /** Starts a devnet and returns once its chain serves, before the proxy, workers and client start. */
  async function startUntilChain(): Promise<{ devnet: Proc; dir: string; chainPid: number }> {
    const dir = tmpDir('startup')
    const devnet = cocoon(['devnet', '--dir', dir, '--port-offset', String(randomPortOffset())])
    await devnet.waitForOutput(/\[chain\] devnet chain listening on/, READY_TIMEOUT_MS)
    const state = readState(dir)
    assert.deepEqual(Object.keys(state.children), ['chain'], 'only the chain has started')
    return { devnet, dir, chainPid: state.children.chain.pid! }
  }

  test('Ctrl-C after the chain started: the devnet stops it and exits', async () => {
    const { devnet, dir, chainPid } = await startUntilChain()
    try {
      assert.ok(isAlive(chainPid))
      devnet.proc.kill('SIGINT')
      await devnet.exited
      await waitFor(() => !isAlive(chainPid), `the chain (pid ${chainPid}) to exit`, EXIT_WITHIN_MS)
      assert.doesNotMatch(devnet.output(), /\[devnet\] starting proxy/, 'no node was started after Ctrl-C')
    } finally {
      if (isAlive(chainPid)) process.kill(chainPid, 'SIGKILL')
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('kill -9 of the devnet after the chain started: the chain notices and stops itself', async () => {
    const { devnet, dir, chainPid } = await startUntilChain()
    try {
      devnet.proc.kill('SIGKILL')
      await devnet.exited
      await waitFor(() => !isAlive(chainPid), `the orphaned chain (pid ${chainPid}) to stop itself`, EXIT_WITHIN_MS)
    } finally {
      if (isAlive(chainPid)) process.kill(chainPid, 'SIGKILL')
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("the README's commands exist as written", () => {
  test('every cocoon subcommand and flag the README names is in `cocoon --help`, and the devnet flags are the code\'s', async () => {
    const { stdout: help } = await run(process.execPath, [BIN, '--help'], { cwd: ROOT, env: userEnv() })
    // Help entries by subcommand: the usage lines that start with `cocoon <sub>`, with their continuation lines.
    const helpFor = new Map<string, string>()
    let current = ''
    for (const line of help.split('\n')) {
      const m = /^\s+cocoon (\w+)/.exec(line)
      if (m) current = m[1]
      else if (!/^\s{4,}/.test(line)) current = ''
      if (current) helpFor.set(current, (helpFor.get(current) ?? '') + '\n' + line)
    }
    // Every `cocoon …` the README shows, in code spans and code blocks; `npm start -- …` is `cocoon devnet …`.
    const commands = [...README.matchAll(/`((?:npx )?cocoon [^`]+)`/g)].map((m) => m[1].replace(/^npx /, ''))
    for (const m of README.matchAll(/`npm start -- ([^`]+)`/g)) commands.push(`cocoon devnet ${m[1]}`)
    assert.ok(commands.length >= 10, `found the README's commands: ${commands.join(' / ')}`)
    for (const command of commands) {
      if (command === 'cocoon …') continue
      const [, sub, rest = ''] = /^cocoon (\w+)\s*(.*)$/.exec(command) ?? []
      assert.ok(sub && helpFor.has(sub), `README's \`${command}\`: \`cocoon ${sub}\` is not in cocoon --help`)
      const entry = helpFor.get(sub)!
      for (const flag of rest.match(/--[a-z][a-z-]*/g) ?? []) assert.ok(entry.includes(flag), `README's \`${command}\`: ${flag} is not in cocoon --help for ${sub}:\n${entry}`)
      // Actions such as `root show|set-params|…` or `client topup|withdraw|close`.
      const first = rest.split(/\s/)[0].replaceAll('\\', '')
      const actions = /^[a-z][a-z|-]*$/.test(first) ? first.split('|') : []
      for (const action of actions) assert.match(entry, new RegExp(`[ |]${action}[ |\n]`), `README's \`${command}\`: action ${action} is not in cocoon --help for ${sub}:\n${entry}`)
    }
    // The help's devnet flags are the ones the code parses, and the README's are among them.
    const devnetFlags = new Set((helpFor.get('devnet')!.match(/--[a-z][a-z-]*/g) ?? []).map((f) => f.slice(2)))
    assert.deepEqual([...devnetFlags].sort(), Object.keys(DEVNET_OPTIONS).sort())
    // The npm scripts the README runs exist.
    for (const m of README.matchAll(/\bnpm (?:run )?(start|test|bench)\b/g)) assert.ok(PACKAGE.scripts[m[1]], `npm ${m[1]} is a script`)
    // Ports the README names are the code's.
    assert.match(README, new RegExp(`OpenAI base URL:\\s+http://127\\.0\\.0\\.1:${DEVNET_PORTS.client}/v1`))
    assert.match(README, new RegExp(`${DEVNET_PORTS.chain} \\(chain\\)`))
    assert.match(README, new RegExp(`cocoon chain \\[--dir DIR\\] \\[--port ${DEVNET_PORTS.chain}\\]`))
    assert.match(helpFor.get('chain')!, new RegExp(`--port ${DEVNET_PORTS.chain}\\b`), 'the usage text shows the chain\'s real default port')
  })
})
