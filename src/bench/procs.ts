// Child processes of the bench (`cocoon …` commands): spawned with logs on disk, stopped by pid, never left behind.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CHILD_STOP_GRACE_MS } from './constants.ts'
import { nodeHeapArgs } from '../core/node-heap.ts'

const BIN = fileURLToPath(new URL('../../bin/cocoon.js', import.meta.url))

/**
 * Every child still running. If the bench exits without stopping them they get SIGTERM, not
 * SIGKILL: the devnet must live long enough to stop the nodes it started.
 */
const live = new Set<ChildProcess>()
let exitHookInstalled = false

export interface CocoonProcess {
  name: string
  pid: number
  /** Resolves with the first stdout line that matches; rejects if the process exits first or time runs out. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** SIGTERM, then SIGKILL after CHILD_STOP_GRACE_MS. */
  stop(): Promise<void>
}

/** Spawns `cocoon <args>` (this checkout's bin), appending its stdout and stderr to `logFile`. */
export function spawnCocoon(name: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): CocoonProcess {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const p of live) p.kill('SIGTERM')
    })
  }
  const proc = spawn(process.execPath, [...nodeHeapArgs(args[0], env), BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
  if (proc.pid === undefined) throw new Error(`could not start ${name}`)
  live.add(proc)
  const log = fs.openSync(logFile, 'a')
  let out = ''
  const listeners = new Set<() => void>()
  proc.stdout!.on('data', (d: Buffer) => {
    fs.writeSync(log, d)
    out += d.toString()
    // Only the head of stdout is searched; keep memory flat for chatty children.
    if (out.length > 1 << 20) out = out.slice(-(1 << 16))
    for (const l of listeners) l()
  })
  proc.stderr!.on('data', (d: Buffer) => fs.writeSync(log, d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc)
      fs.closeSync(log)
      for (const l of listeners) l()
      resolve({ code, signal })
    }),
  )
  return {
    name,
    pid: proc.pid,
    exited,
    waitForLine(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re)
          if (m) {
            done()
            resolve(m)
          } else if (proc.exitCode !== null || proc.signalCode !== null) {
            done()
            reject(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before it was ready; see ${logFile}`))
          }
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`${name} not ready after ${timeoutMs / 1000}s; see ${logFile}`))
        }, timeoutMs)
        const done = () => {
          clearTimeout(timer)
          listeners.delete(check)
        }
        listeners.add(check)
        check()
      })
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), CHILD_STOP_GRACE_MS)
      await exited
      clearTimeout(timer)
    },
  }
}

/** The folder a bench run keeps configs and logs in (`given`, or a fresh temporary one), with its logs/ made. */
export function benchWorkDir(given: string | undefined, prefix: string): { workDir: string; logDir: string } {
  const workDir = given ?? fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  const logDir = path.join(workDir, 'logs')
  fs.mkdirSync(logDir, { recursive: true })
  return { workDir, logDir }
}

/** Peak resident set size of `pid` so far (VmHWM in /proc), in MiB; null where /proc is not available. */
export function peakRssMiB(pid: number): number | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status)
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ: 100 on every Linux we run on). */
const USER_HZ = 100

/**
 * CPU time `pid` has used so far (user + system, its own threads, not its children), in ms, from
 * /proc/PID/stat; null where /proc is not available or the process is gone.
 */
export function cpuTimeMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / USER_HZ
  } catch {
    return null
  }
}

/** Resident set size of `pid` now (VmRSS), in MiB; null where /proc is not available. */
export function rssMiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

/** GETs `url` as JSON within `timeoutMs`; undefined when the node is not up (yet), answers no JSON or is too slow. */
export async function getJsonOrUndefined(url: string, timeoutMs: number): Promise<unknown> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    return await r.json()
  } catch {
    return undefined
  }
}
