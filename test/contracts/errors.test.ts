// Drift tests: the TypeScript mirrors of exit codes, opcodes and protocol constants must
// match the Tolk sources they mirror.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { CONTRACTS_DIR } from '../../src/ton/contracts/compile.ts'
import { ContractExitCode, contractExitCodeName, tolkErrorConstName, type ContractExitCodeName } from '../../src/ton/contracts/errors.ts'
import {
  ChannelState,
  DEPOSIT_GAS_NANO,
  HashKind,
  Op,
  tolkStructName,
  VOUCHER_DOMAIN,
  VOUCHER_MIN_VALUE_NANO,
  type OpName,
} from '../../src/ton/contracts/opcodes.ts'

function tolkSource(file: string): string {
  return readFileSync(path.join(CONTRACTS_DIR, file), 'utf8')
}

/** `const NAME = <int>` declarations of a Tolk file (decimal or hex). */
function tolkIntConsts(file: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const m of tolkSource(file).matchAll(/^const\s+([A-Z0-9_]+)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*$/gm)) {
    out.set(m[1], Number(m[2]))
  }
  return out
}

function tonConst(file: string, name: string): bigint {
  const m = tolkSource(file).match(new RegExp(`^const\\s+${name}\\s*=\\s*ton\\("([0-9.]+)"\\)`, 'm'))
  assert.ok(m, `${name} not found in ${file}`)
  const [whole, frac = ''] = m[1].split('.')
  return BigInt(whole) * 1_000_000_000n + BigInt(frac.padEnd(9, '0'))
}

describe('contract constants mirrored in TypeScript', () => {
  it('has exactly the exit codes of contracts/errors.tolk', () => {
    const tolk = tolkIntConsts('errors.tolk')
    const ts = new Map(
      (Object.keys(ContractExitCode) as ContractExitCodeName[]).map((n) => [tolkErrorConstName(n), ContractExitCode[n]]),
    )
    assert.deepEqual(new Map([...ts].sort()), new Map([...tolk].sort()))
  })

  it('gives every exit code one meaning', () => {
    const codes = Object.values(ContractExitCode)
    assert.equal(new Set(codes).size, codes.length)
    assert.equal(contractExitCodeName(123), 'VoucherBadSignature')
    assert.equal(contractExitCodeName(9), undefined)
  })

  it('has exactly the opcodes of contracts/messages.tolk', () => {
    const tolk = new Map<string, number>()
    for (const m of tolkSource('messages.tolk').matchAll(/^struct\s+\((0x[0-9a-fA-F]{8})\)\s+(\w+)/gm)) {
      tolk.set(m[2], Number(m[1]))
    }
    const ts = new Map((Object.keys(Op) as OpName[]).map((n) => [tolkStructName(n), Op[n]]))
    assert.deepEqual(new Map([...ts].sort()), new Map([...tolk].sort()))
    assert.equal(new Set(Object.values(Op)).size, Object.values(Op).length, 'opcodes are unique')
  })

  it('has the voucher domain, hash kinds, states and gas minimums of the Tolk sources', () => {
    assert.equal(tolkIntConsts('messages.tolk').get('VOUCHER_DOMAIN'), VOUCHER_DOMAIN)
    const storage = tolkIntConsts('storage.tolk')
    assert.equal(storage.get('HASH_KIND_PROXY_IMAGE'), HashKind.proxyImage)
    assert.equal(storage.get('HASH_KIND_WORKER_IMAGE'), HashKind.workerImage)
    assert.equal(storage.get('HASH_KIND_MODEL'), HashKind.model)
    assert.equal(storage.get('STATE_ACTIVE'), ChannelState.active)
    assert.equal(storage.get('STATE_CLOSING'), ChannelState.closing)
    assert.equal(storage.get('STATE_CLOSED'), ChannelState.closed)
    assert.equal(tonConst('fees.tolk', 'VOUCHER_MIN_VALUE_NANO'), VOUCHER_MIN_VALUE_NANO)
    assert.equal(tonConst('fees.tolk', 'DEPOSIT_GAS_NANO'), DEPOSIT_GAS_NANO)
  })
})
