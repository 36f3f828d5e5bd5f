// The committed contract build matches the Tolk sources, so nodes that load it run exactly the code the sources say.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { CONTRACT_NAMES, COMPILED_FILE, compileContract, contractCode, sourcesHash, type CompiledFile } from '../../src/ton/contracts/compile.ts'

test('contracts/compiled.json was built from the current sources (run npm run build:contracts after editing them)', async () => {
  const f = JSON.parse(fs.readFileSync(COMPILED_FILE, 'utf8')) as CompiledFile
  assert.equal(f.sourcesHash, sourcesHash(), 'the Tolk sources changed since contracts/compiled.json was written')
  for (const name of CONTRACT_NAMES) {
    const fresh = await compileContract(name)
    assert.equal(f.contracts[name].codeHashHex, fresh.codeHashHex, `${name}: committed code differs from a fresh compile`)
    assert.equal((await contractCode(name)).hash().toString('hex'), fresh.code.hash().toString('hex'))
  }
})
