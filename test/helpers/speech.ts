// Test audio made with Debian's espeak-ng, and the word error rate of a transcript against what was said.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

/**
 * The sentence the tests speak, and the voice: espeak-ng's Klatt voice is the one PocketSphinx's
 * US English model understands best (its default voice is mostly misheard).
 */
export const SPOKEN_SENTENCE = 'hello world this is a test of speech recognition'
export const ESPEAK_ARGS = ['-v', 'en-us+klatt', '-s', '150']
/**
 * The highest word error rate the tests accept for PocketSphinx on that espeak-ng audio: "most
 * words right". Measured at 0.0 on an idle machine; other espeak voices measure 0.5-0.9.
 */
export const MAX_WORD_ERROR_RATE = 0.35

/** Writes `text` spoken by espeak-ng as a WAV file (22.05 kHz mono 16-bit) and returns its path. */
export function speak(dir: string, text = SPOKEN_SENTENCE, name = 'speech.wav'): string {
  const file = path.join(dir, name)
  execFileSync('espeak-ng', [...ESPEAK_ARGS, '-w', file, text])
  if (!fs.existsSync(file)) throw new Error('espeak-ng wrote no audio')
  return file
}

/** Word error rate: word-level edit distance (substitutions, insertions, deletions) over the reference's length. */
export function wordErrorRate(reference: string, hypothesis: string): number {
  const words = (s: string) => s.toLowerCase().replace(/[^a-z0-9' ]+/g, ' ').split(/\s+/).filter(Boolean)
  const r = words(reference)
  const h = words(hypothesis)
  let prev = Array.from({ length: h.length + 1 }, (_, j) => j)
  for (let i = 1; i <= r.length; i++) {
    const cur = [i]
    for (let j = 1; j <= h.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1))
    prev = cur
  }
  return r.length === 0 ? (h.length === 0 ? 0 : 1) : prev[h.length] / r.length
}

/** A WAV file: fmt chunk (format, channels, rate, bits; byteRate as claimed) and `dataBytes` of silence. */
export function wav(o: { format?: number; channels?: number; rate: number; bits: number; claimedByteRate?: number; dataBytes: number; dataSize?: number }): Buffer {
  const fmt = Buffer.alloc(24)
  fmt.write('fmt ', 0, 'latin1')
  fmt.writeUInt32LE(16, 4)
  fmt.writeUInt16LE(o.format ?? 1, 8)
  fmt.writeUInt16LE(o.channels ?? 1, 10)
  fmt.writeUInt32LE(o.rate, 12)
  fmt.writeUInt32LE(o.claimedByteRate ?? o.rate * (o.channels ?? 1) * (o.bits / 8), 16)
  fmt.writeUInt16LE((o.channels ?? 1) * (o.bits / 8), 20)
  fmt.writeUInt16LE(o.bits, 22)
  const data = Buffer.alloc(8 + o.dataBytes)
  data.write('data', 0, 'latin1')
  data.writeUInt32LE(o.dataSize ?? o.dataBytes, 4)
  const head = Buffer.alloc(12)
  head.write('RIFF', 0, 'latin1')
  head.writeUInt32LE(4 + fmt.length + data.length, 4)
  head.write('WAVE', 8, 'latin1')
  return Buffer.concat([head, fmt, data])
}
