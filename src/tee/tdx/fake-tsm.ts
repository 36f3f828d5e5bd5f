// A fake configfs-tsm kernel for tests: an in-memory report tree with the kernel's generation semantics and injectable faults.

import type { TsmFs } from './tsm.ts'

function fsError(code: string, path: string): Error {
  return Object.assign(new Error(`${code}: fake configfs-tsm, ${path}`), { code })
}

interface FakeReport {
  generation: number
  inblob?: Uint8Array
}

export interface FakeTsmKernelOptions {
  /** Report directory root. Default /sys/kernel/config/tsm/report. */
  root?: string
  /** What `provider` reads. Default tdx_guest. */
  provider?: string
  /** False models a machine without configfs-tsm: mkdir fails with ENOENT. Default true. */
  present?: boolean
  /** Produces the outblob for an inblob. Default: a recognizable fake quote embedding the report data. */
  makeQuote?: (inblob: Uint8Array) => Uint8Array
}

/**
 * A fake of the kernel side of configfs-tsm. Like the kernel, it bumps a directory's
 * `generation` on every inblob write. Faults: `busy` (EBUSY answers still to give, per
 * operation), `raceOnce` (a concurrent writer bumps the generation during the next outblob
 * read). It records every operation and which directories still exist.
 */
export class FakeTsmKernel implements TsmFs {
  readonly root: string
  provider: string
  present: boolean
  makeQuote: (inblob: Uint8Array) => Uint8Array
  /** Remaining EBUSY answers per operation kind. */
  busy: Partial<Record<'mkdir' | 'write-inblob' | 'read-outblob', number>> = {}
  /** Number of upcoming outblob reads during which another writer interferes. */
  races = 0
  readonly ops: string[] = []
  readonly dirs = new Map<string, FakeReport>()

  constructor(opts: FakeTsmKernelOptions = {}) {
    this.root = (opts.root ?? '/sys/kernel/config/tsm/report').replace(/\/+$/, '')
    this.provider = opts.provider ?? 'tdx_guest'
    this.present = opts.present ?? true
    this.makeQuote = opts.makeQuote ?? ((inblob) => Buffer.concat([Buffer.from('FAKE-TDX-QUOTE:'), inblob]))
  }

  private takeBusy(kind: 'mkdir' | 'write-inblob' | 'read-outblob', path: string): void {
    const n = this.busy[kind] ?? 0
    if (n > 0) {
      this.busy[kind] = n - 1
      throw fsError('EBUSY', path)
    }
  }

  private split(path: string): { dir: string; report: FakeReport; attr: string } {
    const i = path.lastIndexOf('/')
    const dir = path.slice(0, i)
    const report = this.dirs.get(dir)
    if (!report) throw fsError('ENOENT', path)
    return { dir, report, attr: path.slice(i + 1) }
  }

  async mkdir(path: string): Promise<void> {
    this.ops.push(`mkdir ${path}`)
    if (!this.present || path.slice(0, path.lastIndexOf('/')) !== this.root) throw fsError('ENOENT', path)
    this.takeBusy('mkdir', path)
    if (this.dirs.has(path)) throw fsError('EEXIST', path)
    this.dirs.set(path, { generation: 0 })
  }

  async rmdir(path: string): Promise<void> {
    this.ops.push(`rmdir ${path}`)
    if (!this.dirs.delete(path)) throw fsError('ENOENT', path)
  }

  async readFile(path: string): Promise<Uint8Array> {
    const { report, attr } = this.split(path)
    this.ops.push(`read ${attr}`)
    switch (attr) {
      case 'provider':
        return Buffer.from(`${this.provider}\n`)
      case 'generation':
        return Buffer.from(`${report.generation}\n`)
      case 'outblob': {
        this.takeBusy('read-outblob', path)
        if (!report.inblob) throw fsError('EINVAL', path)
        if (this.races > 0) {
          this.races--
          report.generation++ // someone else wrote inblob meanwhile
        }
        return this.makeQuote(report.inblob)
      }
      default:
        throw fsError('ENOENT', path)
    }
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    const { report, attr } = this.split(path)
    this.ops.push(`write ${attr} ${data.length}`)
    if (attr !== 'inblob') throw fsError('EACCES', path)
    this.takeBusy('write-inblob', path)
    if (data.length > 64) throw fsError('EINVAL', path)
    report.inblob = new Uint8Array(data)
    report.generation++
  }
}
