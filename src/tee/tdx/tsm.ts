// The TDX EvidenceProvider: asks the guest kernel for a quote through Linux configfs-tsm (/sys/kernel/config/tsm/report).

import { sleepOrAbort } from '../../core/time.ts'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import type { EvidenceProvider } from '../types.ts'
import {
  REPORT_DATA_BYTES,
  TSM_BUSY_BACKOFF_MS,
  TSM_MAX_BACKOFF_MS,
  TSM_MAX_BUSY_RETRIES,
  TSM_MAX_RACE_RETRIES,
  TSM_PROVIDER_TDX,
  TSM_REPORT_ROOT,
} from './constants.ts'
import { TsmError } from './errors.ts'

/**
 * The filesystem operations the provider needs, so tests can substitute a fake kernel.
 * Failures reject with a Node-style error carrying `code` (ENOENT, EBUSY, ...).
 */
export interface TsmFs {
  mkdir(path: string): Promise<void>
  rmdir(path: string): Promise<void>
  readFile(path: string): Promise<Uint8Array>
  /** Must hand the kernel all of `data` in one write: configfs takes inblob in a single write. */
  writeFile(path: string, data: Uint8Array): Promise<void>
}

/** The real configfs, through node:fs. */
export const nodeTsmFs: TsmFs = {
  mkdir: async (p) => {
    await fs.mkdir(p)
  },
  rmdir: (p) => fs.rmdir(p),
  readFile: async (p) => new Uint8Array(await fs.readFile(p)),
  writeFile: (p, data) => fs.writeFile(p, data),
}

export interface ConfigfsTsmOptions {
  /** The configfs-tsm report directory. Default TSM_REPORT_ROOT. */
  root?: string
  /** EBUSY retries before giving up. Default TSM_MAX_BUSY_RETRIES. */
  maxBusyRetries?: number
  /** Retries after another writer raced us. Default TSM_MAX_RACE_RETRIES. */
  maxRaceRetries?: number
  /** First back-off after EBUSY, doubled each time up to TSM_MAX_BACKOFF_MS. Default TSM_BUSY_BACKOFF_MS. */
  busyBackoffMs?: number
}

export interface ConfigfsTsmDeps {
  /** Default nodeTsmFs. */
  fs?: TsmFs
  /** Default: a timer that honours the signal. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  /** Name of the per-request report directory. Default: pid plus random hex. */
  uniqueName?: () => string
}

function errno(err: unknown): string | undefined {
  return (err as { code?: unknown })?.code as string | undefined
}


/** Thrown inside one attempt when the generation counter shows a concurrent writer. */
class RaceDetected extends Error {}

/**
 * Quotes through configfs-tsm: mkdir a fresh report directory, check `provider` is tdx_guest,
 * read `generation`, write the 64 bytes of report data to `inblob`, read `outblob`, and check
 * `generation` moved by exactly one (else someone else wrote: retry). The directory is removed
 * on every path. EBUSY is retried with exponential back-off.
 */
export class ConfigfsTsmProvider implements EvidenceProvider {
  readonly kind = 'tdx' as const
  private readonly root: string
  private readonly maxBusy: number
  private readonly maxRace: number
  private readonly backoffMs: number
  private readonly fs: TsmFs
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  private readonly uniqueName: () => string

  constructor(opts: ConfigfsTsmOptions = {}, deps: ConfigfsTsmDeps = {}) {
    this.root = (opts.root ?? TSM_REPORT_ROOT).replace(/\/+$/, '')
    this.maxBusy = opts.maxBusyRetries ?? TSM_MAX_BUSY_RETRIES
    this.maxRace = opts.maxRaceRetries ?? TSM_MAX_RACE_RETRIES
    this.backoffMs = opts.busyBackoffMs ?? TSM_BUSY_BACKOFF_MS
    this.fs = deps.fs ?? nodeTsmFs
    this.sleep = deps.sleep ?? sleepOrAbort
    this.uniqueName = deps.uniqueName ?? (() => `cocoon-${process.pid}-${randomBytes(6).toString('hex')}`)
  }

  async quote(reportData: Uint8Array, opts: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    if (!(reportData instanceof Uint8Array) || reportData.length !== REPORT_DATA_BYTES) {
      throw new TsmError('bad-report-data', `report data must be exactly ${REPORT_DATA_BYTES} bytes, got ${reportData?.length}`)
    }
    let busy = 0
    let races = 0
    for (;;) {
      opts.signal?.throwIfAborted()
      try {
        return await this.attempt(reportData, opts.signal)
      } catch (err) {
        if (err instanceof RaceDetected) {
          if (++races > this.maxRace) throw new TsmError('generation-race', `${err.message}; gave up after ${this.maxRace} retries`)
          continue
        }
        if (errno(err) === 'EBUSY') {
          if (++busy > this.maxBusy) throw new TsmError('busy', `the TSM stayed busy (EBUSY) through ${this.maxBusy} retries`, { cause: err })
          await this.sleep(Math.min(this.backoffMs * 2 ** (busy - 1), TSM_MAX_BACKOFF_MS), opts.signal)
          continue
        }
        throw err
      }
    }
  }

  private async attempt(reportData: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    const dir = `${this.root}/${this.uniqueName()}`
    try {
      await this.fs.mkdir(dir)
    } catch (err) {
      if (errno(err) === 'ENOENT') {
        throw new TsmError('unavailable', `${this.root} does not exist: not inside a TDX guest, or the kernel lacks configfs-tsm (CONFIG_TSM_REPORTS, Linux >= 6.7) or configfs is not mounted`, { cause: err })
      }
      throw wrapIo(err, `mkdir ${dir}`)
    }
    try {
      const provider = text(await this.io(() => this.fs.readFile(`${dir}/provider`), `read ${dir}/provider`))
      if (provider !== TSM_PROVIDER_TDX) throw new TsmError('wrong-provider', `the TSM provider is "${provider}", not "${TSM_PROVIDER_TDX}"`)
      const before = generation(await this.io(() => this.fs.readFile(`${dir}/generation`), `read ${dir}/generation`))
      signal?.throwIfAborted()
      await this.io(() => this.fs.writeFile(`${dir}/inblob`, reportData), `write ${dir}/inblob`)
      const quote = await this.io(() => this.fs.readFile(`${dir}/outblob`), `read ${dir}/outblob`)
      const after = generation(await this.io(() => this.fs.readFile(`${dir}/generation`), `read ${dir}/generation`))
      if (after !== before + 1) throw new RaceDetected(`generation moved from ${before} to ${after} around our write: another writer used ${dir}`)
      if (quote.length === 0) throw new TsmError('empty-quote', `${dir}/outblob is empty`)
      return quote
    } finally {
      // Always remove the directory, even on failure, so report entries do not pile up in the kernel.
      await this.fs.rmdir(dir).catch(() => undefined)
    }
  }

  /** Runs one filesystem call; EBUSY passes through for retry, anything else becomes TsmError('io'). */
  private async io<T>(op: () => Promise<T>, what: string): Promise<T> {
    try {
      return await op()
    } catch (err) {
      throw wrapIo(err, what)
    }
  }
}

function wrapIo(err: unknown, what: string): unknown {
  if (err instanceof TsmError || errno(err) === 'EBUSY') return err
  return new TsmError('io', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
}

function text(b: Uint8Array): string {
  return Buffer.from(b).toString('utf8').trim()
}

function generation(b: Uint8Array): number {
  const s = text(b)
  if (!/^\d+$/.test(s)) throw new TsmError('io', `generation is "${s}", not a number`)
  return Number(s)
}
