// `cocoon chain` as its own process: killed with SIGKILL it resumes from the last accepted message; SIGTERM persists and exits 0.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { after, describe, it } from 'node:test'
import { Address, TonClient } from '@ton/ton'
import { faucet, tempDir } from './helpers.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const ENTRY = path.join(ROOT, 'src/cli/chain-entry.ts')
const START_TIMEOUT_MS = 20_000

interface Running {
  proc: ChildProcess
  url: string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stdout: string[]
}

function startChainProcess(dir: string): Promise<Running> {
  const proc = spawn(process.execPath, ['--import', 'tsx', ENTRY, '--dir', dir, '--port', '0'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, COCOON_LOG_LEVEL: 'warn' },
  })
  const stdout: string[] = []
  const stderr: string[] = []
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  readline.createInterface({ input: proc.stderr! }).on('line', (l) => stderr.push(l))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`chain did not start in time; stderr:\n${stderr.join('\n')}`))
    }, START_TIMEOUT_MS)
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      stdout.push(line)
      const m = /listening on (http:\/\/\S+)/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve({ proc, url: m[1], exited, stdout })
      }
    })
    void exited.then(({ code }) => {
      clearTimeout(timer)
      reject(new Error(`chain exited early with ${code}; stderr:\n${stderr.join('\n')}`))
    })
  })
}

describe('cocoon chain process', () => {
  const dir = tempDir()
  const running: Running[] = []
  after(() => {
    for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('resumes every accepted message after SIGKILL, and persists and exits 0 on SIGTERM', async () => {
    const target = Address.parse('0:' + 'd4'.repeat(32))
    const first = await startChainProcess(dir)
    running.push(first)
    let balance = 0n
    const lts: string[] = []
    for (let i = 1; i <= 3; i++) {
      const out = await faucet(first.url, target.toString(), BigInt(i) * 1_000_000_000n)
      balance = out.balance
      lts.push(out.lt)
    }
    // no grace: the process dies right after the last accepted message was answered
    first.proc.kill('SIGKILL')
    assert.equal((await first.exited).signal, 'SIGKILL')

    const second = await startChainProcess(dir)
    running.push(second)
    const client = new TonClient({ endpoint: `${second.url}/api/v2/jsonRPC` })
    assert.equal(await client.getBalance(target), balance)
    const txs = await client.getTransactions(target, { limit: 10 })
    assert.deepEqual(
      txs.map((t) => t.lt.toString()),
      [...lts].reverse(),
    )
    const stats = (await (await fetch(`${second.url}/jsonstats`)).json()) as { seqno: number }
    assert.equal(stats.seqno, 3)

    second.proc.kill('SIGTERM')
    const exit = await second.exited
    assert.equal(exit.code, 0)
    assert.ok(second.stdout.some((l) => l.includes('state persisted')))
  })
})
