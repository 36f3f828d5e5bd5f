// The contracts' code: from contracts/compiled.json when it matches the Tolk sources (nodes never load the
// compiler, which costs ~160 MiB and a second of CPU), else compiled with @ton/tolk-js (WASM, offline).
import crypto from 'node:crypto'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { Cell } from '@ton/core'

export type ContractName = 'root' | 'proxy' | 'client' | 'worker'

export const CONTRACT_NAMES: readonly ContractName[] = ['root', 'proxy', 'client', 'worker']

/** Folder holding the Tolk sources (repository root `contracts/`). */
export const CONTRACTS_DIR = fileURLToPath(new URL('../../../contracts/', import.meta.url))

export class ContractCompileError extends Error {
  readonly name = 'ContractCompileError'
  constructor(readonly contract: ContractName, readonly compilerMessage: string) {
    super(`compiling ${contract}.tolk failed: ${compilerMessage}`)
  }
}

export interface CompiledContract {
  code: Cell
  /** Hex representation hash of the code cell, as reported by the compiler. */
  codeHashHex: string
  tolkVersion: string
}

const cache = new Map<ContractName, Promise<CompiledContract>>()

/** Compiles `contracts/<name>.tolk` once per process; later calls return the cached result. */
export function compileContract(name: ContractName): Promise<CompiledContract> {
  let pending = cache.get(name)
  if (!pending) {
    pending = compile(name)
    // A failed compile is not cached, so a fixed source can be retried in the same process.
    pending.catch(() => cache.delete(name))
    cache.set(name, pending)
  }
  return pending
}

/** The committed build of the contracts: code per contract, and the hash of the sources it came from. */
export const COMPILED_FILE = path.join(CONTRACTS_DIR, 'compiled.json')

export interface CompiledFile {
  version: 1
  tolkVersion: string
  /** sourcesHash() of the Tolk sources this was compiled from. */
  sourcesHash: string
  contracts: Record<ContractName, { codeBoc64: string; codeHashHex: string }>
}

/** SHA-256 over every contracts/*.tolk file (name and content, sorted by name). */
export function sourcesHash(): string {
  const h = crypto.createHash('sha256')
  for (const f of readdirSync(CONTRACTS_DIR).filter((n) => n.endsWith('.tolk')).sort()) {
    h.update(f).update('\0').update(readFileSync(path.join(CONTRACTS_DIR, f))).update('\0')
  }
  return h.digest('hex')
}

let prebuilt: CompiledFile | null | undefined

/** The committed build, if it was made from exactly the current sources. */
function committedBuild(): CompiledFile | null {
  if (prebuilt !== undefined) return prebuilt
  try {
    const f = JSON.parse(readFileSync(COMPILED_FILE, 'utf8')) as CompiledFile
    prebuilt = f.version === 1 && f.sourcesHash === sourcesHash() ? f : null
  } catch {
    prebuilt = null
  }
  return prebuilt
}

/** Code cell of one contract: the committed build when it is current, else compiled now. */
export async function contractCode(name: ContractName): Promise<Cell> {
  const built = committedBuild()?.contracts[name]
  if (built) return Cell.fromBase64(built.codeBoc64)
  return (await compileContract(name)).code
}

/** Compiles every contract and writes contracts/compiled.json (`npm run build:contracts`). */
export async function writeCompiledFile(file = COMPILED_FILE): Promise<CompiledFile> {
  const contracts = {} as CompiledFile['contracts']
  let tolkVersion = ''
  for (const name of CONTRACT_NAMES) {
    const c = await compileContract(name)
    contracts[name] = { codeBoc64: c.code.toBoc().toString('base64'), codeHashHex: c.codeHashHex }
    tolkVersion = c.tolkVersion
  }
  const out: CompiledFile = { version: 1, tolkVersion, sourcesHash: sourcesHash(), contracts }
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n')
  prebuilt = undefined
  return out
}

export interface ContractCodes {
  root: Cell
  proxy: Cell
  client: Cell
  worker: Cell
}

/** Code cells of all four contracts. Compiled one after another: the compiler is single-threaded WASM. */
export async function contractCodes(): Promise<ContractCodes> {
  const root = await contractCode('root')
  const proxy = await contractCode('proxy')
  const client = await contractCode('client')
  const worker = await contractCode('worker')
  return { root, proxy, client, worker }
}

async function compile(name: ContractName): Promise<CompiledContract> {
  const { runTolkCompiler } = await import('@ton/tolk-js')
  const result = await runTolkCompiler({
    entrypointFileName: `${name}.tolk`,
    // Imports resolve relative to the importing file; keep every read inside contracts/.
    fsReadCallback: (file) => readFileSync(path.resolve(CONTRACTS_DIR, file), 'utf8'),
  })
  if (result.status === 'error') throw new ContractCompileError(name, result.message)
  const code = Cell.fromBase64(result.codeBoc64)
  return { code, codeHashHex: result.codeHashHex, tolkVersion: result.tolkVersion }
}
