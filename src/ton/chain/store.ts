// On-disk state of the devnet chain: account snapshot (state.json), network config (config.boc), written atomically.
import fs from 'node:fs'
import path from 'node:path'
import type { snapshotToSerializable } from '@ton/sandbox'
import type { ClockState } from './clock.ts'
import { ChainDirLockedError, ChainStateCorruptError } from './errors.ts'

export const STATE_FILE = 'state.json'
export const CONFIG_FILE = 'config.boc'
export const TX_LOG_FILE = 'transactions.jsonl'
export const LOCK_FILE = 'chain.lock'

const STATE_FORMAT = 'cocoon-devnet-state'
const STATE_VERSION = 1

type SerializableSnapshot = ReturnType<typeof snapshotToSerializable>

/**
 * state.json. `snapshot` is @ton/sandbox's own serializable snapshot with the transaction list
 * emptied and the network config moved out to config.boc (it is 100+ KB and rarely changes).
 */
export interface PersistedState {
  format: typeof STATE_FORMAT
  version: typeof STATE_VERSION
  /** Unix milliseconds of this write. */
  savedAt: number
  /** Accepted message batches so far; the devnet's "block" number. */
  seqno: number
  clock: ClockState
  snapshot: Omit<SerializableSnapshot, 'networkConfig' | 'transactions'>
}

/** Writes a file so that readers (and a restart after kill -9) see either the old or the new content, never a mix. */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, 'w')
  try {
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  syncDir(path.dirname(file))
}

/** Makes a rename durable across power loss; best effort (not every filesystem allows fsync on a directory). */
function syncDir(dir: string): void {
  let fd: number | undefined
  try {
    fd = fs.openSync(dir, 'r')
    fs.fsyncSync(fd)
  } catch {
    // durability against process death does not need this; only power loss does
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
}

export function readState(dir: string): PersistedState | undefined {
  const file = path.join(dir, STATE_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new ChainStateCorruptError(file, (err as Error).message)
  }
  const s = parsed as Partial<PersistedState>
  if (s?.format !== STATE_FORMAT) throw new ChainStateCorruptError(file, `format is not ${STATE_FORMAT}`)
  if (s.version !== STATE_VERSION) throw new ChainStateCorruptError(file, `unsupported version ${String(s.version)}`)
  if (typeof s.seqno !== 'number' || !s.snapshot || !Array.isArray(s.snapshot.contracts) || !s.clock) {
    throw new ChainStateCorruptError(file, 'missing fields')
  }
  return s as PersistedState
}

export function writeState(dir: string, state: PersistedState): void {
  writeFileAtomic(path.join(dir, STATE_FILE), JSON.stringify(state))
}

/** The network config as base64 BOC, or undefined on first start. */
export function readConfig(dir: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, CONFIG_FILE)).toString('base64')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export function writeConfig(dir: string, configBase64: string): void {
  writeFileAtomic(path.join(dir, CONFIG_FILE), Buffer.from(configBase64, 'base64'))
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the directory for this process (two chains writing one state would silently diverge).
 * A lock left by a dead process (kill -9) is taken over. Returns the release function.
 */
export function lockDir(dir: string): () => void {
  const file = path.join(dir, LOCK_FILE)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' })
      return () => fs.rmSync(file, { force: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = Number(fs.readFileSync(file, 'utf8').trim())
      if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) throw new ChainDirLockedError(dir, holder)
      fs.rmSync(file, { force: true })
    }
  }
  throw new ChainDirLockedError(dir, undefined)
}
