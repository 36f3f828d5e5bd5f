// Simulated TEE for machines without TDX: an unsigned, unmistakable quote over the hash of the running code.
//
// A simulated quote proves nothing; anyone can forge one. It exists so the whole protocol runs
// on a laptop or in CI. Safety comes from policy: production policies never accept kind
// 'simulated' (see assertProductionPolicy), and the quote travels in its own extension OID, so
// it can never be taken for TDX evidence.

import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EvidenceRefusedError, type EvidenceProvider, type EvidenceVerifier, type VerifiedEvidence } from './types.ts'
import { REPORT_DATA_BYTES } from './constants.ts'
import { isHex, toHex } from './hex.ts'

/** ASCII magic that opens every simulated quote; the NUL ends it so no real quote format can start this way by accident. */
export const SIMULATED_QUOTE_MAGIC = new TextEncoder().encode('COCOON-SIMULATED-TEE-QUOTE\0')
export const SIMULATED_QUOTE_VERSION = 1
const IMAGE_HASH_BYTES = 32
const HEADER_BYTES = SIMULATED_QUOTE_MAGIC.length + 1
/** magic ‖ version ‖ imageHash(32) ‖ reportData(64) */
export const SIMULATED_QUOTE_BYTES = HEADER_BYTES + IMAGE_HASH_BYTES + REPORT_DATA_BYTES

/** Domain separation for simulatedImageHash, versioned so the definition can change without colliding. */
const IMAGE_HASH_DOMAIN = 'cocoon-simulated-image-hash-v1'
/** What counts as "the code": every file under these folders, plus these files, relative to the project root. */
const CODE_DIRS = ['src', 'bin']
const CODE_FILES = ['package.json']

export class SimulatedEvidenceProvider implements EvidenceProvider {
  readonly kind = 'simulated' as const
  readonly #imageHash: Uint8Array

  /** @param imageHash lowercase hex SHA-256, normally `await simulatedImageHash()`. */
  constructor(imageHash: string) {
    if (!isHex(imageHash, IMAGE_HASH_BYTES)) throw new TypeError('imageHash must be 64 lowercase hex chars')
    this.#imageHash = Buffer.from(imageHash, 'hex')
  }

  async quote(reportData: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array> {
    opts?.signal?.throwIfAborted()
    if (reportData.length !== REPORT_DATA_BYTES) throw new RangeError(`report data must be ${REPORT_DATA_BYTES} bytes`)
    const q = new Uint8Array(SIMULATED_QUOTE_BYTES)
    q.set(SIMULATED_QUOTE_MAGIC, 0)
    q[SIMULATED_QUOTE_MAGIC.length] = SIMULATED_QUOTE_VERSION
    q.set(this.#imageHash, HEADER_BYTES)
    q.set(reportData, HEADER_BYTES + IMAGE_HASH_BYTES)
    return q
  }
}

/** Checks the layout only: there is no signature to check. Whether to trust the result is the policy's call. */
export class SimulatedEvidenceVerifier implements EvidenceVerifier {
  readonly kind = 'simulated' as const

  async verify(quote: Uint8Array, opts?: { now?: Date; signal?: AbortSignal }): Promise<VerifiedEvidence> {
    opts?.signal?.throwIfAborted()
    return parseSimulatedQuote(quote)
  }
}

/** Splits a simulated quote into its fields; throws EvidenceRefusedError unless the layout is exact. */
export function parseSimulatedQuote(quote: Uint8Array): VerifiedEvidence {
  if (quote.length !== SIMULATED_QUOTE_BYTES) {
    throw new EvidenceRefusedError(`simulated quote is ${quote.length} bytes, expected ${SIMULATED_QUOTE_BYTES}`)
  }
  if (!SIMULATED_QUOTE_MAGIC.every((b, i) => quote[i] === b)) throw new EvidenceRefusedError('simulated quote magic missing')
  const version = quote[SIMULATED_QUOTE_MAGIC.length]
  if (version !== SIMULATED_QUOTE_VERSION) throw new EvidenceRefusedError(`simulated quote version ${version} unsupported`)
  return {
    kind: 'simulated',
    imageHash: toHex(quote.subarray(HEADER_BYTES, HEADER_BYTES + IMAGE_HASH_BYTES)),
    reportData: toHex(quote.subarray(HEADER_BYTES + IMAGE_HASH_BYTES)),
  }
}

const imageHashCache = new Map<string, Promise<string>>()

/**
 * "The hash of the running code", lowercase hex SHA-256 over the UTF-8 text
 *
 *     cocoon-simulated-image-hash-v1\n
 *     <JSON string of tag>\n
 *     <relative path>\t<hex SHA-256 of content>\n   (one line per file, sorted by path)
 *
 * for every file under the project's src/ and bin/, plus package.json. Paths use '/'.
 * Computed once per tag per process, so code edited while running does not change it.
 *
 * @param tag simulates a different image build: the same code under another tag hashes
 *   differently. Tests use it to stand up a peer whose image a policy does not list. Default ''.
 */
export function simulatedImageHash(tag = ''): Promise<string> {
  let h = imageHashCache.get(tag)
  if (!h) {
    h = computeImageHash(tag)
    imageHashCache.set(tag, h)
    h.catch(() => imageHashCache.delete(tag))
  }
  return h
}

async function computeImageHash(tag: string): Promise<string> {
  const root = findProjectRoot()
  const files: string[] = [...CODE_FILES.map((f) => join(root, f))]
  for (const d of CODE_DIRS) {
    const dir = join(root, d)
    if (existsSync(dir)) files.push(...(await listFiles(dir)))
  }
  const entries = await Promise.all(
    files.map(async (f) => {
      const digest = createHash('sha256').update(await readFile(f)).digest('hex')
      return { path: relative(root, f).split(sep).join('/'), digest }
    }),
  )
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  const h = createHash('sha256').update(`${IMAGE_HASH_DOMAIN}\n${JSON.stringify(tag)}\n`)
  for (const e of entries) h.update(`${e.path}\t${e.digest}\n`)
  return h.digest('hex')
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...(await listFiles(p)))
    else if (e.isFile()) out.push(p)
  }
  return out
}

/** Walks up from this module to the nearest package.json, so the hash works from src/ or from a build output. */
function findProjectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new Error('simulatedImageHash: no package.json above ' + fileURLToPath(import.meta.url))
    dir = up
  }
}
