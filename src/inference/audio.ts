// Audio uploads: which container a file is, and how long it plays, before any engine runs (billing needs the duration).
import { execFile } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { BackendError } from './types.ts'

/** Containers we recognise by their first bytes. */
export type AudioFormat = 'wav' | 'flac' | 'ogg' | 'opus' | 'mp3' | 'webm' | 'm4a'

export interface AudioInfo {
  format: AudioFormat
  durationSec: number
}

/** How long `soxi` may take to read a header. */
export const PROBE_TIMEOUT_MS = 10_000

/** Formats sox on this machine reads, from `sox -h` (empty when sox is missing). Cached per process. */
let soxFormats: Promise<ReadonlySet<string>> | undefined
export function soxReadableFormats(): Promise<ReadonlySet<string>> {
  soxFormats ??= new Promise((resolve) => {
    execFile('sox', ['-h'], { timeout: PROBE_TIMEOUT_MS }, (err, stdout) => {
      const line = /AUDIO FILE FORMATS:([^\n]*)/.exec(String(stdout ?? ''))
      resolve(new Set(err && !line ? [] : (line?.[1] ?? '').trim().split(/\s+/)))
    })
  })
  return soxFormats
}

/** The container of `bytes` by magic number, or undefined. */
export function sniffAudioFormat(bytes: Uint8Array): AudioFormat | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const ascii = (start: number, end: number) => b.subarray(start, end).toString('latin1')
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WAVE') return 'wav'
  if (ascii(0, 4) === 'fLaC') return 'flac'
  if (ascii(0, 4) === 'OggS') return b.subarray(0, 256).includes('OpusHead') ? 'opus' : 'ogg'
  if (ascii(0, 3) === 'ID3' || (b.length >= 2 && b[0] === 0xff && (b[1] & 0xe0) === 0xe0)) return 'mp3'
  if (b.length >= 4 && b.readUInt32BE(0) === 0x1a45dfa3) return 'webm'
  if (ascii(4, 8) === 'ftyp') return 'm4a'
  return undefined
}

/** WAV sample formats whose bytes per second follow from rate × channels × bits: PCM, float, A-law, µ-law, extensible. */
const LINEAR_WAV_FORMATS = new Set([1, 3, 6, 7, 0xfffe])

/**
 * A WAV's duration: the sample data actually present, at the rate, channels and sample size
 * the decoder will use. The header's own byte-rate field is ignored, so a header cannot make
 * audio look shorter (cheaper) than what gets decoded. Undefined for a compressed WAV
 * (ADPCM, …), which is measured by sox instead; a 400 if the header is broken.
 */
export function wavDurationSec(bytes: Uint8Array): number | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let bytesPerSecond = 0
  let linear = true
  let off = 12
  while (off + 8 <= b.length) {
    const id = b.subarray(off, off + 4).toString('latin1')
    let size = b.readUInt32LE(off + 4)
    if (id === 'fmt ' && off + 24 <= b.length) {
      const format = b.readUInt16LE(off + 8)
      const channels = b.readUInt16LE(off + 10)
      const rate = b.readUInt32LE(off + 12)
      const bits = b.readUInt16LE(off + 22)
      linear = LINEAR_WAV_FORMATS.has(format)
      bytesPerSecond = (rate * channels * Math.ceil(bits / 8)) | 0
    }
    if (id === 'data') {
      if (!linear) return undefined
      if (bytesPerSecond <= 0) break
      // Streaming writers (espeak-ng to a pipe, sox) leave 0 or 0xFFFFFFFF: the data runs to the end.
      if (size === 0 || size === 0xffffffff || off + 8 + size > b.length) size = b.length - off - 8
      return size / bytesPerSecond
    }
    off += 8 + size + (size & 1)
  }
  throw new BackendError('the WAV file has no readable fmt and data chunks', 400)
}

/**
 * Identifies the upload and measures it. WAV is read here; other containers through `soxi`
 * when this machine's sox reads them. Anything else is a 400 naming what is accepted.
 */
export async function probeAudio(bytes: Uint8Array, signal?: AbortSignal): Promise<AudioInfo> {
  const format = sniffAudioFormat(bytes)
  const readable = await soxReadableFormats()
  const accepted: string[] = ['wav', ...['flac', 'ogg', 'mp3', 'opus'].filter((f) => readable.has(f))]
  if (!format || !accepted.includes(format)) {
    throw new BackendError(`unsupported audio format${format ? ` '${format}'` : ''}; this worker accepts ${accepted.join(', ')}`, 400)
  }
  if (format === 'wav') {
    const d = wavDurationSec(bytes)
    if (d !== undefined) return { format, durationSec: d }
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cocoon-audio-'))
  try {
    const file = path.join(dir, `in.${format}`)
    await fs.writeFile(file, bytes)
    const out = await new Promise<string>((resolve, reject) =>
      execFile('soxi', ['-D', file], { timeout: PROBE_TIMEOUT_MS, signal }, (err, stdout) => (err ? reject(err) : resolve(String(stdout)))),
    )
    const d = Number(out.trim())
    if (!Number.isFinite(d) || d < 0) throw new Error(`soxi said ${out.trim().slice(0, 40)}`)
    return { format, durationSec: d }
  } catch (err) {
    if (err instanceof BackendError) throw err
    throw new BackendError(`the ${format} file could not be read: ${(err as Error).message.slice(0, 200)}`, 400)
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
}
