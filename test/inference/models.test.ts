// Model resolution: COCOON_MODELS and cache lookups, downloads from a local fake hub with SHA-256 checks, hash sidecars, spec parsing.

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import {
  InvalidModelSpecError,
  ModelFileNotFoundError,
  ModelHashMismatchError,
  hashSidecarPath,
  modelIdFromFile,
  parseHfSpec,
  resolveModel,
  type DownloadProgress,
} from '../../src/inference/models.ts'

const MODELS_DIR = process.env.COCOON_MODELS ?? path.resolve(import.meta.dirname, '../../../shared/models')
const STORIES_SHA256 = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d'
const STORIES_SPEC = 'hf:ggml-org/tiny-llamas/stories260K.gguf'

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** A FAKE Hugging Face hub on loopback: `resolve` URLs redirect to a "CDN" path, with X-Linked-Etag on the redirect, like the real hub. */
class FakeHub {
  files = new Map<string, { body: Buffer; etag?: string }>()
  requests: Array<{ url: string; auth?: string }> = []
  url = ''
  /** Where `resolve` redirects to; this same server when unset. */
  cdn?: FakeHub
  private server = http.createServer((req, res) => {
    const url = req.url ?? ''
    this.requests.push({ url, auth: req.headers.authorization })
    const m = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url)
    if (m) {
      const key = `${m[1]}/${m[2]}/${m[4]}@${m[3]}`
      const f = this.files.get(key)
      if (!f) {
        res.writeHead(404).end('Entry not found')
        return
      }
      const headers: Record<string, string> = { location: `${this.cdn?.url ?? ''}/cdn/${encodeURIComponent(key)}` }
      if (f.etag) headers['x-linked-etag'] = `"${f.etag}"`
      res.writeHead(302, headers).end()
      return
    }
    const c = /^\/cdn\/(.+)$/.exec(url)
    const f = c && this.files.get(decodeURIComponent(c[1]))
    if (!f) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-length': String(f.body.length), etag: '"not-a-sha"' })
    // Several writes, so progress is reported more than once.
    const step = Math.ceil(f.body.length / 8)
    for (let i = 0; i < f.body.length; i += step) res.write(f.body.subarray(i, i + step))
    res.end()
  })

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

describe('resolveModel', () => {
  let tmp: string
  let cacheDir: string
  let emptyModels: string
  let hub: FakeHub
  let stories: Buffer

  before(async () => {
    hub = await new FakeHub().start()
    stories = await fs.readFile(path.join(MODELS_DIR, 'stories260K.gguf'))
  })
  after(async () => {
    await hub.stop()
  })
  beforeEach(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'cocoon-models-'))
    cacheDir = path.join(tmp, 'cache')
    emptyModels = path.join(tmp, 'empty-models')
    await fs.mkdir(emptyModels)
    hub.files.clear()
    hub.requests.length = 0
  })
  afterEach(async () => {
    await fs.rm(tmp, { recursive: true, force: true })
  })

  it('finds an hf: model in COCOON_MODELS by file name and verifies its known hash', async () => {
    const m = await resolveModel(STORIES_SPEC, { modelsDir: MODELS_DIR, cacheDir, hubUrl: hub.url })
    assert.deepEqual(m, { path: path.join(MODELS_DIR, 'stories260K.gguf'), sha256: STORIES_SHA256, id: 'stories260K' })
    assert.equal(hub.requests.length, 0, 'no download')
    // The hash is remembered in the cache, not written into the (possibly read-only) models dir.
    const sidecar = hashSidecarPath(m.path, cacheDir)
    assert.ok(sidecar.startsWith(cacheDir))
    assert.equal(JSON.parse(await fs.readFile(sidecar, 'utf8')).sha256, STORIES_SHA256)
  })

  it('finds an hf: model under COCOON_MODELS/<owner>/<repo>/<file>', async () => {
    const dir = path.join(tmp, 'models', 'ggml-org', 'tiny-llamas')
    await fs.mkdir(dir, { recursive: true })
    await fs.writeFile(path.join(dir, 'stories260K.gguf'), stories)
    const m = await resolveModel(STORIES_SPEC, { modelsDir: path.join(tmp, 'models'), cacheDir, hubUrl: hub.url })
    assert.equal(m.path, path.join(dir, 'stories260K.gguf'))
    assert.equal(m.sha256, STORIES_SHA256)
  })

  it('resolves a plain path, and a bare file name through COCOON_MODELS', async () => {
    const byPath = await resolveModel(path.join(MODELS_DIR, 'stories260K.gguf'), { cacheDir })
    assert.equal(byPath.sha256, STORIES_SHA256)
    assert.equal(byPath.id, 'stories260K')
    const byName = await resolveModel('stories260K.gguf', { modelsDir: MODELS_DIR, cacheDir })
    assert.equal(byName.path, byPath.path)
  })

  it('throws ModelFileNotFoundError for a missing local path, naming where it looked', async () => {
    await assert.rejects(resolveModel(path.join(tmp, 'nope.gguf'), { cacheDir }), (err: unknown) => {
      assert.ok(err instanceof ModelFileNotFoundError)
      assert.match(err.message, /nope\.gguf/)
      return true
    })
  })

  it('rejects a local copy of a known model whose hash is wrong', async () => {
    await fs.writeFile(path.join(emptyModels, 'stories260K.gguf'), Buffer.from('not the real weights'))
    await assert.rejects(resolveModel(STORIES_SPEC, { modelsDir: emptyModels, cacheDir, hubUrl: hub.url }), ModelHashMismatchError)
  })

  it('downloads with progress into the cache, then serves the cache without a second download', async () => {
    hub.files.set('ggml-org/tiny-llamas/stories260K.gguf@main', { body: stories })
    const progress: DownloadProgress[] = []
    const m = await resolveModel(STORIES_SPEC, { modelsDir: emptyModels, cacheDir, hubUrl: hub.url, onProgress: (p) => progress.push(p) })
    const expectedPath = path.join(cacheDir, 'hf', 'ggml-org', 'tiny-llamas', 'stories260K.gguf')
    assert.deepEqual(m, { path: expectedPath, sha256: STORIES_SHA256, id: 'stories260K' })
    assert.deepEqual(await fs.readFile(expectedPath), stories)
    assert.ok(progress.length >= 2, 'progress reported while streaming')
    assert.equal(progress[progress.length - 1].receivedBytes, stories.length)
    assert.equal(progress[0].totalBytes, stories.length)
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].receivedBytes >= progress[i - 1].receivedBytes)
    assert.equal(JSON.parse(await fs.readFile(expectedPath + '.sha256', 'utf8')).sha256, STORIES_SHA256)
    assert.deepEqual(await fs.readdir(path.dirname(expectedPath)), ['stories260K.gguf', 'stories260K.gguf.sha256'], 'no .partial left')

    const n = hub.requests.length
    const again = await resolveModel(STORIES_SPEC, { modelsDir: emptyModels, cacheDir, hubUrl: hub.url })
    assert.deepEqual(again, m)
    assert.equal(hub.requests.length, n, 'cache hit: no second download')
  })

  it('verifies an unknown model against the hub X-Linked-Etag, and supports @revision and nested paths', async () => {
    const body = randomBytes(300_000)
    hub.files.set('acme/weights/q4/model-q4.gguf@v1.0', { body, etag: sha256(body) })
    const m = await resolveModel('hf:acme/weights@v1.0/q4/model-q4.gguf', { modelsDir: emptyModels, cacheDir, hubUrl: hub.url, onProgress: () => {} })
    assert.equal(m.sha256, sha256(body))
    assert.equal(m.id, 'model-q4')
    assert.equal(m.path, path.join(cacheDir, 'hf', 'acme', 'weights@v1.0', 'q4', 'model-q4.gguf'))
  })

  it('rejects a download whose SHA-256 does not match and removes the partial file', async () => {
    const body = randomBytes(100_000)
    hub.files.set('acme/weights/m.gguf@main', { body, etag: 'ab'.repeat(32) })
    const dest = path.join(cacheDir, 'hf', 'acme', 'weights', 'm.gguf')
    await assert.rejects(resolveModel('hf:acme/weights/m.gguf', { modelsDir: emptyModels, cacheDir, hubUrl: hub.url, onProgress: () => {} }), (err: unknown) => {
      assert.ok(err instanceof ModelHashMismatchError)
      assert.equal(err.expectedSha256, 'ab'.repeat(32))
      assert.equal(err.actualSha256, sha256(body))
      return true
    })
    assert.deepEqual(await fs.readdir(path.dirname(dest)), [], 'neither the file nor the .partial remains')

    // An explicit expected hash wins over the hub's, and is checked too.
    hub.files.set('acme/weights/m.gguf@main', { body })
    await assert.rejects(
      resolveModel('hf:acme/weights/m.gguf', { modelsDir: emptyModels, cacheDir, hubUrl: hub.url, expectedSha256: 'cd'.repeat(32), onProgress: () => {} }),
      ModelHashMismatchError,
    )
    assert.deepEqual(await fs.readdir(path.dirname(dest)), [])
  })

  it('reports a missing file on the hub clearly', async () => {
    await assert.rejects(resolveModel('hf:acme/weights/missing.gguf', { modelsDir: emptyModels, cacheDir, hubUrl: hub.url }), /HTTP 404/)
  })

  it('sends the hub token to the hub only, not to the CDN it redirects to', async () => {
    const cdn = await new FakeHub().start()
    cdn.files = hub.files
    hub.cdn = cdn
    try {
      hub.files.set('acme/weights/t.gguf@main', { body: Buffer.from('weights') })
      await resolveModel('hf:acme/weights/t.gguf', { modelsDir: emptyModels, cacheDir, hubUrl: hub.url, hubToken: 'hf_secret', onProgress: () => {} })
      assert.deepEqual(hub.requests.map((r) => r.auth), ['Bearer hf_secret'])
      assert.equal(cdn.requests.length, 1)
      assert.equal(cdn.requests[0].auth, undefined)
    } finally {
      hub.cdn = undefined
      await cdn.stop()
    }
  })

  it('remembers the hash by size and mtime, and rehashes when the file changes', async () => {
    const file = path.join(tmp, 'w.gguf')
    await fs.writeFile(file, Buffer.from('version one'))
    const first = await resolveModel(file, { cacheDir })
    assert.equal(first.sha256, sha256(Buffer.from('version one')))
    // Plant a different hash in the sidecar: a second resolve must trust it (no rehash).
    const sidecar = hashSidecarPath(file, cacheDir)
    const rec = JSON.parse(await fs.readFile(sidecar, 'utf8'))
    await fs.writeFile(sidecar, JSON.stringify({ ...rec, sha256: 'ef'.repeat(32) }))
    assert.equal((await resolveModel(file, { cacheDir })).sha256, 'ef'.repeat(32))
    // Changing the file (size and mtime) invalidates the sidecar.
    await fs.writeFile(file, Buffer.from('version two, longer'))
    assert.equal((await resolveModel(file, { cacheDir })).sha256, sha256(Buffer.from('version two, longer')))
  })
})

describe('parseHfSpec', () => {
  it('parses owner, repo, revision and a nested file path', () => {
    assert.deepEqual(parseHfSpec('hf:ggml-org/tiny-llamas/stories260K.gguf'), { owner: 'ggml-org', repo: 'tiny-llamas', revision: 'main', file: 'stories260K.gguf' })
    assert.deepEqual(parseHfSpec('hf:a/b@v2/sub/dir/x.gguf'), { owner: 'a', repo: 'b', revision: 'v2', file: 'sub/dir/x.gguf' })
  })

  it('rejects malformed specs with a message that says what is wrong', () => {
    const cases: Array<[string, RegExp]> = [
      ['hf:ggml-org', /expected hf:<owner>\/<repo>\/<file>/],
      ['hf:ggml-org/tiny-llamas', /expected hf:<owner>\/<repo>\/<file>/],
      ['hf:/tiny-llamas/x.gguf', /bad owner/],
      ['hf:a/b/../../etc/passwd', /bad file path/],
      ['hf:a/b/dir//x.gguf', /bad file path/],
      ['hf:a/b@/x.gguf', /bad revision/],
      ['hf:a/b c/x.gguf', /bad repository name/],
    ]
    for (const [spec, re] of cases) {
      assert.throws(
        () => parseHfSpec(spec),
        (err: unknown) => err instanceof InvalidModelSpecError && re.test(err.message) && err.message.includes(spec),
        spec,
      )
    }
  })

  it('names a model by its file name without .gguf', () => {
    assert.equal(modelIdFromFile('/x/stories260K.gguf'), 'stories260K')
    assert.equal(modelIdFromFile('Qwen3-0.6B-Q8_0.gguf'), 'Qwen3-0.6B-Q8_0')
  })
})
