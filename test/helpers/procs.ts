// Spawning real `cocoon` child processes for end-to-end tests, and cleaning them up whatever happens.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { devnetPortOffsetProblem } from '../../src/node/devnet.ts'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const BIN = path.join(ROOT, 'bin', 'cocoon.js')
export const MODELS_DIR = process.env.COCOON_MODELS ?? path.resolve(ROOT, '..', 'shared', 'models')

const live = new Set<ChildProcess>()
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL')
})

export interface Proc {
  proc: ChildProcess
  /** stdout and stderr, interleaved as they arrived. */
  output(): string
  /** stderr alone. */
  stderr(): string
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/**
 * Spawns `cocoon <args>`, collecting stdout and stderr. With `netns`, inside that Linux network namespace
 * (`ip netns exec NS node …`: ip execs node in place, so the process's pid is node's).
 */
export function cocoon(args: string[], env: NodeJS.ProcessEnv = {}, opts: { netns?: string } = {}): Proc {
  const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, process.execPath, BIN, ...args]] : [process.execPath, [BIN, ...args]]
  const proc = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, COCOON_MODELS: MODELS_DIR, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(proc)
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  const onData = (d: Buffer) => {
    out += d.toString()
    for (const l of listeners) l()
  }
  proc.stdout!.on('data', onData)
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
    onData(d)
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc)
      for (const l of listeners) l()
      resolve({ code, signal })
    }),
  )
  return {
    proc,
    output: () => out,
    stderr: () => err,
    exited,
    waitForOutput(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re)
          if (m) {
            cleanup()
            resolve(m)
          } else if (proc.exitCode !== null || proc.signalCode !== null) {
            cleanup()
            reject(new Error(`process exited before printing ${re}:\n${out}`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timed out waiting for ${re}:\n${out}`))
        }, timeoutMs)
        const cleanup = () => {
          clearTimeout(timer)
          listeners.delete(check)
        }
        listeners.add(check)
        check()
      })
    },
  }
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `cocoon-${prefix}-`))
}

/**
 * A port offset unlikely to collide with a devnet on default ports or another test. Every devnet
 * port stays below 32768, where Linux starts handing out ephemeral ports for outgoing connections.
 */
export function randomPortOffset(): number {
  for (;;) {
    const offset = 3_000 + Math.floor(Math.random() * 160) * 100
    // The same check `cocoon devnet --port-offset` makes: no port on the Fetch standard's blocked list.
    if (!devnetPortOffsetProblem(offset, 16)) return offset
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
