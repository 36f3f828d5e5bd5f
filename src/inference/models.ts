// Model resolution: turns a model spec (a file path or hf:owner/repo/file) into a verified local GGUF file, its SHA-256 and its id.

import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Logger } from '../core/log.ts'
import { DEFAULT_HUB_URL, KNOWN_MODEL_SHA256, MAX_DOWNLOAD_REDIRECTS, PROGRESS_BAR_INTERVAL_MS, PROGRESS_LOG_INTERVAL_MS } from './constants.ts'

/** The model spec names a local file that does not exist (nor in COCOON_MODELS). */
export class ModelFileNotFoundError extends Error {
  readonly name = 'ModelFileNotFoundError'
  constructor(readonly spec: string, readonly tried: string[]) {
    super(`model file '${spec}' not found (looked in: ${tried.join(', ')})`)
  }
}

/** The spec is neither a usable path nor a well-formed `hf:<owner>/<repo>[@<revision>]/<file>`. */
export class InvalidModelSpecError extends Error {
  readonly name = 'InvalidModelSpecError'
  constructor(readonly spec: string, reason: string) {
    super(`invalid model spec '${spec}': ${reason}`)
  }
}

/** The weights do not hash to the expected SHA-256 (a corrupt or substituted file). */
export class ModelHashMismatchError extends Error {
  readonly name = 'ModelHashMismatchError'
  constructor(readonly file: string, readonly expectedSha256: string, readonly actualSha256: string) {
    super(`SHA-256 of model '${file}' is ${actualSha256}, expected ${expectedSha256}`)
  }
}

/** Downloading from the hub failed (HTTP error, connection, redirect loop). */
export class ModelDownloadError extends Error {
  readonly name = 'ModelDownloadError'
  constructor(message: string, readonly status?: number) {
    super(message)
  }
}

export interface DownloadProgress {
  /** The spec being downloaded. */
  spec: string
  receivedBytes: number
  /** From Content-Length; undefined if the server did not say. */
  totalBytes?: number
}

export interface ResolveModelOptions {
  /** Directory searched first, by file name and by `<owner>/<repo>/<file>`. Default: $COCOON_MODELS. */
  modelsDir?: string
  /** Download cache. Default: $XDG_CACHE_HOME/cocoon/models, else ~/.cache/cocoon/models. */
  cacheDir?: string
  /** Hub base URL for `hf:` specs. Default https://huggingface.co. */
  hubUrl?: string
  /** Required SHA-256 (lowercase hex). Default: the built-in table of known models, else the hub's ETag when it is a SHA-256. */
  expectedSha256?: string
  /** Hub access token for gated repos. Default: $HF_TOKEN. Sent to the hub only, never to the CDN it redirects to. */
  hubToken?: string
  /** Download progress. When absent, a bar is drawn on a TTY stderr, or a line is logged every few seconds. */
  onProgress?: (p: DownloadProgress) => void
  signal?: AbortSignal
  log?: Logger
}

export interface ResolvedModel {
  /** Absolute path of the GGUF file. */
  path: string
  /** SHA-256 of the weights, lowercase hex: the model hash that workers advertise. */
  sha256: string
  /** The model id: see {@link modelIdFromFile}. */
  id: string
}

export interface HfSpec {
  owner: string
  repo: string
  /** Branch, tag or commit; 'main' unless the spec says `repo@rev`. */
  revision: string
  /** Path of the file inside the repository; may contain '/'. */
  file: string
}

const SHA256_HEX = /^[0-9a-f]{64}$/
const HF_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
const HF_REVISION = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

/**
 * The model id for a weights file: its file name without the `.gguf` extension (so
 * `stories260K.gguf` is `stories260K`). It is what /v1/models shows and requests name.
 */
export function modelIdFromFile(file: string): string {
  return path.basename(file).replace(/\.gguf$/i, '')
}

/** Parses `hf:<owner>/<repo>[@<revision>]/<file>`; throws InvalidModelSpecError saying what is wrong. */
export function parseHfSpec(spec: string): HfSpec {
  if (!spec.startsWith('hf:')) throw new InvalidModelSpecError(spec, "expected the prefix 'hf:'")
  const parts = spec.slice(3).split('/')
  if (parts.length < 3) throw new InvalidModelSpecError(spec, 'expected hf:<owner>/<repo>/<file>, e.g. hf:ggml-org/tiny-llamas/stories260K.gguf')
  const [owner, repoRev, ...fileParts] = parts
  const at = repoRev.indexOf('@')
  const repo = at === -1 ? repoRev : repoRev.slice(0, at)
  const revision = at === -1 ? 'main' : repoRev.slice(at + 1)
  if (!HF_NAME.test(owner)) throw new InvalidModelSpecError(spec, `bad owner '${owner}'`)
  if (!HF_NAME.test(repo)) throw new InvalidModelSpecError(spec, `bad repository name '${repo}'`)
  if (!HF_REVISION.test(revision) || revision.includes('..')) throw new InvalidModelSpecError(spec, `bad revision '${revision}'`)
  // The file path becomes part of a cache path: no empty, '.' or '..' segments may escape it.
  for (const seg of fileParts) {
    if (seg === '' || seg === '.' || seg === '..' || seg.includes('\\')) throw new InvalidModelSpecError(spec, `bad file path '${fileParts.join('/')}'`)
  }
  return { owner, repo, revision, file: fileParts.join('/') }
}

/** $XDG_CACHE_HOME/cocoon/models, else ~/.cache/cocoon/models. */
export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache')
  return path.join(base, 'cocoon', 'models')
}

/**
 * Resolves a model spec to a verified local file. Lookup order for `hf:` specs:
 * COCOON_MODELS/<file name>, COCOON_MODELS/<owner>/<repo>/<file>, the cache
 * (<cacheDir>/hf/<owner>/<repo>[@rev]/<file>), then a download from the hub into the cache.
 * A plain path is used as is; a bare file name that does not exist is also looked up in
 * COCOON_MODELS. The SHA-256 is checked against the expected hash when one is known.
 */
export async function resolveModel(spec: string, opts: ResolveModelOptions = {}): Promise<ResolvedModel> {
  const modelsDir = opts.modelsDir ?? process.env.COCOON_MODELS
  const cacheDir = opts.cacheDir ?? defaultCacheDir()
  const expected = opts.expectedSha256?.toLowerCase()
  if (expected !== undefined && !SHA256_HEX.test(expected)) throw new InvalidModelSpecError(spec, `expected SHA-256 '${opts.expectedSha256}' is not 64 hex digits`)

  if (!spec.startsWith('hf:')) {
    if (spec.length === 0) throw new InvalidModelSpecError(spec, 'empty model spec')
    const tried: string[] = []
    const candidates = [path.resolve(spec)]
    if (modelsDir && !spec.includes('/') && !spec.includes(path.sep)) candidates.push(path.join(modelsDir, spec))
    for (const file of candidates) {
      tried.push(file)
      if (await isFile(file)) return verifiedLocal(file, expected, cacheDir, opts)
    }
    throw new ModelFileNotFoundError(spec, tried)
  }

  const hf = parseHfSpec(spec)
  const known = expected ?? KNOWN_MODEL_SHA256[`${hf.owner}/${hf.repo}/${hf.file}`]
  const local: string[] = []
  if (modelsDir) local.push(path.join(modelsDir, path.basename(hf.file)), path.join(modelsDir, hf.owner, hf.repo, hf.file))
  const cached = path.join(cacheDir, 'hf', hf.owner, hf.revision === 'main' ? hf.repo : `${hf.repo}@${hf.revision}`, hf.file)
  local.push(cached)
  for (const file of local) {
    if (await isFile(file)) return verifiedLocal(file, known, cacheDir, opts)
  }
  // Several workers in one process (the devnet) may ask for the same model at once: one download serves them all.
  let pending = downloads.get(cached)
  if (!pending) {
    pending = download(spec, hf, cached, known, opts).finally(() => downloads.delete(cached))
    downloads.set(cached, pending)
  }
  const sha256 = await pending
  if (known !== undefined && sha256 !== known) throw new ModelHashMismatchError(cached, known, sha256)
  return { path: cached, sha256, id: modelIdFromFile(hf.file) }
}

/** Downloads in progress in this process, by destination path. */
const downloads = new Map<string, Promise<string>>()

async function verifiedLocal(file: string, expected: string | undefined, cacheDir: string, opts: ResolveModelOptions): Promise<ResolvedModel> {
  const abs = path.resolve(file)
  const sha256 = await hashFileCached(abs, cacheDir, opts.log)
  if (expected !== undefined && sha256 !== expected) throw new ModelHashMismatchError(abs, expected, sha256)
  opts.log?.debug('model resolved', { path: abs, sha256 })
  return { path: abs, sha256, id: modelIdFromFile(abs) }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile()
  } catch {
    return false
  }
}

/** Sidecar contents: the hash is valid while size and mtime are unchanged. */
interface HashRecord {
  size: number
  mtimeMs: number
  sha256: string
}

/**
 * Where the SHA-256 of `file` is remembered. Inside the cache it is the sidecar
 * `<file>.sha256`; for files elsewhere (COCOON_MODELS may be read-only, e.g. a TEE image's
 * mount) it lives in `<cacheDir>/hashes/`, named by the hash of the file's absolute path.
 */
export function hashSidecarPath(file: string, cacheDir: string): string {
  const abs = path.resolve(file)
  const rel = path.relative(path.resolve(cacheDir), abs)
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) return abs + '.sha256'
  return path.join(cacheDir, 'hashes', createHash('sha256').update(abs).digest('hex').slice(0, 32) + '.sha256')
}

/** SHA-256 of a file, from its sidecar when size and mtime still match, so large weights are not rehashed on every start. */
export async function hashFileCached(file: string, cacheDir: string, log?: Logger): Promise<string> {
  const st = await fs.stat(file)
  const sidecar = hashSidecarPath(file, cacheDir)
  try {
    const rec = JSON.parse(await fs.readFile(sidecar, 'utf8')) as HashRecord
    if (rec.size === st.size && rec.mtimeMs === st.mtimeMs && SHA256_HEX.test(rec.sha256)) return rec.sha256
  } catch {
    // no sidecar, or unreadable: hash the file
  }
  const started = Date.now()
  const sha256 = await hashFile(file)
  log?.debug('hashed model file', { path: file, bytes: st.size, ms: Date.now() - started })
  await writeSidecar(sidecar, { size: st.size, mtimeMs: st.mtimeMs, sha256 }, log)
  return sha256
}

async function writeSidecar(sidecar: string, rec: HashRecord, log?: Logger): Promise<void> {
  try {
    await fs.mkdir(path.dirname(sidecar), { recursive: true })
    const tmp = `${sidecar}.${process.pid}.tmp`
    await fs.writeFile(tmp, JSON.stringify(rec) + '\n')
    await fs.rename(tmp, sidecar)
  } catch (err) {
    // Only a cache: without it the next start hashes again.
    log?.debug('could not write the model hash sidecar', { path: sidecar, err })
  }
}

async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** An ETag (or X-Linked-Etag) that is a bare or quoted SHA-256, as the hub sends for LFS files. */
function sha256FromEtag(v: string | null): string | undefined {
  if (!v) return undefined
  const s = v.replace(/^W\//, '').replace(/"/g, '').trim().toLowerCase()
  return SHA256_HEX.test(s) ? s : undefined
}

/**
 * Downloads to `<dest>.partial`, hashing while streaming, then renames into place. Redirects
 * are followed by hand: the hub puts the file's SHA-256 in X-Linked-Etag on the redirect
 * itself, which fetch would hide, and the token must not follow to another host.
 */
async function download(spec: string, hf: HfSpec, dest: string, expected: string | undefined, opts: ResolveModelOptions): Promise<string> {
  const hubUrl = (opts.hubUrl ?? DEFAULT_HUB_URL).replace(/\/+$/, '')
  const enc = (p: string) => p.split('/').map(encodeURIComponent).join('/')
  let url = `${hubUrl}/${enc(hf.owner)}/${enc(hf.repo)}/resolve/${enc(hf.revision)}/${enc(hf.file)}`
  const hubOrigin = new URL(hubUrl).origin
  const token = opts.hubToken ?? process.env.HF_TOKEN
  let etagHash: string | undefined
  let res: Response | undefined
  opts.log?.info('downloading model', { spec, url })
  for (let hop = 0; ; hop++) {
    const headers: Record<string, string> = {}
    if (token && new URL(url).origin === hubOrigin) headers.authorization = `Bearer ${token}`
    try {
      res = await fetch(url, { headers, redirect: 'manual', signal: opts.signal })
    } catch (err) {
      if (opts.signal?.aborted) throw err
      throw new ModelDownloadError(`cannot download ${spec} from ${url}: ${causeMessage(err)}`)
    }
    etagHash ??= sha256FromEtag(res.headers.get('x-linked-etag'))
    if (res.status >= 300 && res.status < 400 && res.headers.has('location')) {
      await res.body?.cancel()
      if (hop >= MAX_DOWNLOAD_REDIRECTS) throw new ModelDownloadError(`too many redirects downloading ${spec}`)
      url = new URL(res.headers.get('location')!, url).toString()
      continue
    }
    break
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel()
    throw new ModelDownloadError(`downloading ${spec} failed: HTTP ${res.status} from ${url}`, res.status)
  }
  etagHash ??= sha256FromEtag(res.headers.get('etag'))
  const want = expected ?? etagHash
  if (want === undefined) opts.log?.warn('no expected SHA-256 for this model; it is recorded but not verified', { spec })
  const lengthHeader = res.headers.get('content-length')
  const totalBytes = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined

  await fs.mkdir(path.dirname(dest), { recursive: true })
  const partial = `${dest}.partial`
  const progress = progressReporter(spec, totalBytes, opts)
  const h = createHash('sha256')
  let received = 0
  const out = createWriteStream(partial)
  try {
    const reader = res.body.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      h.update(value)
      received += value.byteLength
      if (!out.write(value)) await new Promise<void>((resolve, reject) => {
        out.once('drain', resolve)
        out.once('error', reject)
      })
      progress.update(received)
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
    progress.done(received)
    if (totalBytes !== undefined && received !== totalBytes) throw new ModelDownloadError(`download of ${spec} ended after ${received} of ${totalBytes} bytes`)
    const sha256 = h.digest('hex')
    if (want !== undefined && sha256 !== want) throw new ModelHashMismatchError(spec, want, sha256)
    await fs.rename(partial, dest)
    const st = await fs.stat(dest)
    await writeSidecar(dest + '.sha256', { size: st.size, mtimeMs: st.mtimeMs, sha256 }, opts.log)
    opts.log?.info('model downloaded', { spec, path: dest, bytes: received, sha256 })
    return sha256
  } catch (err) {
    progress.done(received)
    out.destroy()
    await fs.rm(partial, { force: true })
    if (err instanceof ModelHashMismatchError || err instanceof ModelDownloadError || opts.signal?.aborted) throw err
    throw new ModelDownloadError(`downloading ${spec} failed: ${causeMessage(err)}`)
  }
}

function causeMessage(err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } }
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)
}

interface ProgressReporter {
  update(received: number): void
  done(received: number): void
}

function progressReporter(spec: string, totalBytes: number | undefined, opts: ResolveModelOptions): ProgressReporter {
  if (opts.onProgress) {
    const cb = opts.onProgress
    return { update: (receivedBytes) => cb({ spec, receivedBytes, totalBytes }), done: () => {} }
  }
  const mib = (n: number) => (n / (1024 * 1024)).toFixed(1)
  if (process.stderr.isTTY) {
    let last = 0
    let drawn = false
    const draw = (received: number) => {
      const width = 30
      const frac = totalBytes ? Math.min(1, received / totalBytes) : 0
      const bar = totalBytes ? '#'.repeat(Math.round(frac * width)).padEnd(width, '.') : ''
      const size = totalBytes ? `${mib(received)}/${mib(totalBytes)} MiB ${(frac * 100).toFixed(0)}%` : `${mib(received)} MiB`
      process.stderr.write(`\r${spec} [${bar}] ${size}\x1b[K`)
      drawn = true
    }
    return {
      update(received) {
        const now = Date.now()
        if (now - last < PROGRESS_BAR_INTERVAL_MS) return
        last = now
        draw(received)
      },
      done(received) {
        if (!drawn) return
        draw(received)
        process.stderr.write('\n')
        drawn = false
      },
    }
  }
  let last = Date.now()
  return {
    update(received) {
      const now = Date.now()
      if (now - last < PROGRESS_LOG_INTERVAL_MS) return
      last = now
      opts.log?.info('download progress', { spec, receivedMiB: Number(mib(received)), totalMiB: totalBytes ? Number(mib(totalBytes)) : undefined })
    },
    done() {},
  }
}
