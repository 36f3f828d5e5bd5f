// The speech backend: CMU PocketSphinx (Debian's pocketsphinx + pocketsphinx-en-us) as a child process per request, offline.
//
// Audio is first converted by sox to what the acoustic model was trained on (16 kHz, mono,
// 16-bit PCM), then decoded by `pocketsphinx_continuous -time yes`, whose output is the
// hypothesis of each utterance followed by one line per word: `word start end posterior`.
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import { existsSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Logger } from '../core/log.ts'
import { BackendError, type InferenceBackend, type InferenceEvent, type ModelInfo, type TranscriptSegment, type TranscriptionRequest, type TranscriptionResult } from './types.ts'

/** Where Debian's pocketsphinx-en-us puts the US English model. */
export const DEFAULT_POCKETSPHINX_MODEL_DIR = '/usr/share/pocketsphinx/model/en-us'
export const POCKETSPHINX_BINARY = 'pocketsphinx_continuous'
/** Decoders running at once; more wait. Each is one CPU-bound child process. */
export const DEFAULT_SPEECH_PARALLEL = 2
/** Real-time factor allowance: decoding may take this many seconds per audio second, plus a minute. */
const DECODE_SECONDS_PER_AUDIO_SECOND = 4

export interface PocketSphinxOptions {
  /** The model directory: an acoustic model folder (`<lang>`), `<lang>.lm.bin` and `cmudict-<lang>.dict`. Default the Debian path. */
  modelDir?: string
  /** Id shown in /v1/models. Default 'pocketsphinx-en-us'. */
  modelId?: string
  /** Concurrent decoders. Default 2. */
  parallel?: number
}

interface ModelFiles {
  hmm: string
  lm: string
  dict: string
  /** ISO-639-1 language of the model. */
  language: string
}

async function findModelFiles(dir: string): Promise<ModelFiles> {
  const names = await fs.readdir(dir).catch(() => {
    throw new Error(`pocketsphinx model directory ${dir} is missing; install it with: apt-get install pocketsphinx pocketsphinx-en-us`)
  })
  const lm = names.find((n) => n.endsWith('.lm.bin') && !n.includes('phone'))
  const dict = names.find((n) => n.endsWith('.dict'))
  const hmmName = lm?.replace(/\.lm\.bin$/, '')
  if (!lm || !dict || !hmmName || !names.includes(hmmName)) throw new Error(`${dir} does not hold a pocketsphinx model (<lang>/, <lang>.lm.bin, *.dict)`)
  return { hmm: path.join(dir, hmmName), lm: path.join(dir, lm), dict: path.join(dir, dict), language: hmmName.slice(0, 2).toLowerCase() }
}

/** Is the engine installed here (the binary on PATH, and the model directory)? */
export function pocketSphinxAvailable(modelDir = DEFAULT_POCKETSPHINX_MODEL_DIR): boolean {
  const onPath = (process.env.PATH ?? '').split(path.delimiter).some((d) => d && existsSync(path.join(d, POCKETSPHINX_BINARY)))
  return onPath && existsSync(modelDir)
}

/** SHA-256 over every file of the model, in path order (path, NUL, contents): the model hash a root can allow. */
export async function hashModelDir(dir: string): Promise<string> {
  const files: string[] = []
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) files.push(p)
    }
  }
  await walk(dir)
  files.sort()
  const h = crypto.createHash('sha256')
  for (const f of files) {
    h.update(path.relative(dir, f) + '\0')
    h.update(await fs.readFile(f))
  }
  return h.digest('hex')
}

function run(cmd: string, args: string[], timeoutMs: number, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, signal, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} failed: ${(String(stderr).trim() || err.message).slice(0, 300)}`))
      else resolve(String(stdout))
    })
  })
}

const WORD_LINE = /^(\S+) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)$/
const FILLER = /^(<s>|<\/s>|<sil>|\[[A-Z]+\]|\+\+.*\+\+)$/

/** Parses `pocketsphinx_continuous -time yes` output into segments, one per utterance. */
export function parsePocketSphinxOutput(stdout: string): TranscriptSegment[] {
  const segments: TranscriptSegment[] = []
  let words: Array<{ w: string; start: number; end: number }> = []
  const close = () => {
    if (words.length > 0) {
      segments.push({ id: segments.length, start: words[0].start, end: words[words.length - 1].end, text: words.map((x) => x.w).join(' ') })
    }
    words = []
  }
  for (const raw of stdout.split('\n')) {
    const line = raw.trim()
    if (!line) continue
    const m = WORD_LINE.exec(line)
    if (!m) {
      // A hypothesis line starts the next utterance's word list.
      close()
      continue
    }
    if (FILLER.test(m[1])) continue
    words.push({ w: m[1].replace(/\(\d+\)$/, ''), start: Number(m[2]), end: Number(m[3]) })
  }
  close()
  return segments
}

export class PocketSphinxBackend implements InferenceBackend {
  readonly model: ModelInfo
  private active = 0
  private readonly waiting: Array<() => void> = []

  private constructor(
    private readonly files: ModelFiles,
    private readonly parallel: number,
    private readonly log: Logger | undefined,
    id: string,
    hash: string,
  ) {
    this.model = { id, hash, capabilities: ['transcriptions'] }
  }

  static async create(opts: PocketSphinxOptions = {}, deps: { log?: Logger } = {}): Promise<PocketSphinxBackend> {
    const dir = opts.modelDir ?? DEFAULT_POCKETSPHINX_MODEL_DIR
    const files = await findModelFiles(dir)
    await run(POCKETSPHINX_BINARY, ['-h', 'no'], 10_000, new AbortController().signal).catch((err: NodeJS.ErrnoException) => {
      // The binary prints its usage and exits non-zero; only a missing binary is fatal.
      if (/ENOENT/.test(err.message)) throw new Error(`${POCKETSPHINX_BINARY} is not installed; install it with: apt-get install pocketsphinx pocketsphinx-en-us sox`)
    })
    const hash = await hashModelDir(dir)
    const id = opts.modelId ?? `pocketsphinx-${path.basename(dir)}`
    deps.log?.info('pocketsphinx backend ready', { model: id, dir, language: files.language, sha256: hash.slice(0, 16) })
    return new PocketSphinxBackend(files, opts.parallel ?? DEFAULT_SPEECH_PARALLEL, deps.log, id, hash)
  }

  // eslint-disable-next-line require-yield
  async *run(): AsyncIterable<InferenceEvent> {
    throw new BackendError(`model '${this.model.id}' is a speech model: it serves /v1/audio/transcriptions only`, 400)
  }

  async transcribe(req: TranscriptionRequest, opts: { signal: AbortSignal }): Promise<TranscriptionResult> {
    if (req.language && req.language.toLowerCase() !== this.files.language) {
      throw new BackendError(`model '${this.model.id}' transcribes '${this.files.language}' only, not '${req.language}'`, 400)
    }
    await this.slot(opts.signal)
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cocoon-speech-'))
    try {
      const input = path.join(dir, `in.${req.format}`)
      const pcm = path.join(dir, 'pcm.wav')
      await fs.writeFile(input, req.audio)
      const limitMs = 60_000 + Math.ceil(req.durationSec * DECODE_SECONDS_PER_AUDIO_SECOND * 1000)
      try {
        // -R: sox's dither is seeded the same each time, so the same audio always gives the same transcript.
        await run('sox', ['-R', input, '-r', '16000', '-c', '1', '-b', '16', '-e', 'signed-integer', pcm], limitMs, opts.signal)
      } catch (err) {
        if (opts.signal.aborted) throw err
        throw new BackendError(`the audio could not be decoded: ${(err as Error).message}`, 400)
      }
      const stdout = await run(POCKETSPHINX_BINARY, ['-infile', pcm, '-time', 'yes', '-hmm', this.files.hmm, '-lm', this.files.lm, '-dict', this.files.dict, '-logfn', '/dev/null'], limitMs, opts.signal).catch(
        (err: Error) => {
          if (!opts.signal.aborted) this.log?.error('pocketsphinx failed', { requestId: req.requestId, error: err.message })
          throw new BackendError(opts.signal.aborted ? 'the transcription was cancelled' : 'the speech engine failed', opts.signal.aborted ? 499 : 500)
        },
      )
      const segments = parsePocketSphinxOutput(stdout)
      return { text: segments.map((s) => s.text).join(' '), language: this.files.language, segments }
    } finally {
      this.release()
      await fs.rm(dir, { recursive: true, force: true })
    }
  }

  private slot(signal: AbortSignal): Promise<void> {
    if (this.active < this.parallel) {
      this.active++
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const go = () => {
        signal.removeEventListener('abort', onAbort)
        this.active++
        resolve()
      }
      const onAbort = () => {
        const i = this.waiting.indexOf(go)
        if (i !== -1) this.waiting.splice(i, 1)
        reject(new BackendError('the transcription was cancelled', 499))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(go)
    })
  }

  private release(): void {
    this.active--
    this.waiting.shift()?.()
  }

  async close(): Promise<void> {}
}
