// Compiles the Tolk sources under contracts/ with @ton/tolk-js (WASM, works offline) and
// caches each contract's code cell in memory for the life of the process.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { Cell } from '@ton/core'
import { runTolkCompiler } from '@ton/tolk-js'

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

/** Code cell of one contract. */
export async function contractCode(name: ContractName): Promise<Cell> {
  return (await compileContract(name)).code
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
  const result = await runTolkCompiler({
    entrypointFileName: `${name}.tolk`,
    // Imports resolve relative to the importing file; keep every read inside contracts/.
    fsReadCallback: (file) => readFileSync(path.resolve(CONTRACTS_DIR, file), 'utf8'),
  })
  if (result.status === 'error') throw new ContractCompileError(name, result.message)
  const code = Cell.fromBase64(result.codeBoc64)
  return { code, codeHashHex: result.codeHashHex, tolkVersion: result.tolkVersion }
}
