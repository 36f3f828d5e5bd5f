// Spec: the layer rules of src/ (.dependency-cruiser.cjs) hold, and they do bite on a forbidden import or a cycle.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const DEPCRUISE = path.join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs')
const CONFIG = path.join(ROOT, '.dependency-cruiser.cjs')

function cruise(cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [DEPCRUISE, 'src', '--config', CONFIG, '--output-type', 'err'], { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr })
    })
  })
}

/** A throw-away tree shaped like src/, with the given files. */
function tree(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-layers-'))
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true })
    fs.writeFileSync(path.join(dir, f), text)
  }
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), fs.readFileSync(path.join(ROOT, 'tsconfig.json')))
  return dir
}

test('src/ keeps its layers: no forbidden import, no cycle', async () => {
  const { code, out } = await cruise(ROOT)
  assert.equal(code, 0, out)
})

test('a seam importing a role, core importing a seam, or a deep import past an index.ts fails the check', async () => {
  const dir = tree({
    'src/core/log.ts': "import { x } from '../tee/types.ts'\nexport const log = x\n",
    'src/tee/types.ts': 'export const x = 1\n',
    'src/tee/index.ts': "export * from './types.ts'\n",
    'src/net/hop.ts': "import { w } from '../worker/worker.ts'\nexport const h = w\n",
    'src/worker/worker.ts': "import { x } from '../tee/types.ts'\nexport const w = x\n",
  })
  try {
    const { code, out } = await cruise(dir)
    assert.notEqual(code, 0)
    assert.match(out, /core-imports-nothing/)
    assert.match(out, /net-is-a-seam/)
    assert.match(out, /tee-surface/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a cycle between two roles fails the check', async () => {
  const dir = tree({
    'src/proxy/proxy.ts': "import { c } from '../client/client.ts'\nexport const p = c\n",
    'src/client/client.ts': "import type { p } from '../proxy/proxy.ts'\nexport const c: typeof p = 1\n",
  })
  try {
    const { code, out } = await cruise(dir)
    assert.notEqual(code, 0)
    assert.match(out, /roles-use-seams/)
    assert.match(out, /no-cycles/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test("a role's start-up loading another role, startNode loading a role up front, or the devnet supervisor loading TON fails the check", async () => {
  const dir = tree({
    'src/client/client.ts': 'export const c = 1\n',
    'src/proxy/proxy.ts': 'export const p = 1\n',
    'src/node/run-client.ts': "import { c } from '../client/client.ts'\nimport { p } from '../proxy/proxy.ts'\nexport const startClient = () => c + p\n",
    // A static import of a role's start-up: every node would load the client's code.
    'src/node/run.ts': "import { startClient } from './run-client.ts'\nimport type { p } from '../proxy/proxy.ts'\nexport const startNode = async (): Promise<typeof p> => startClient()\nexport const later = () => import('./run-client.ts')\n",
    'src/ton/chain-client/index.ts': 'export const chain = 1\n',
    'src/cli/devnet.ts': "import { chain } from '../ton/chain-client/index.ts'\nexport const d = chain\nexport const setup = () => import('../ton/chain-client/index.ts')\n",
  })
  try {
    const { code, out } = await cruise(dir)
    assert.notEqual(code, 0)
    assert.match(out, /each-role-starts-alone: src\/node\/run-client\.ts → src\/proxy\/proxy\.ts/)
    assert.doesNotMatch(out, /each-role-starts-alone: src\/node\/run-client\.ts → src\/client/)
    assert.match(out, /start-up-loads-roles-on-demand: src\/node\/run\.ts → src\/node\/run-client\.ts/)
    // Type-only imports and import() are allowed: they load nothing up front. Each violation is reported once.
    assert.doesNotMatch(out, /start-up-loads-roles-on-demand: src\/node\/run\.ts → src\/proxy/)
    assert.match(out, /devnet-supervisor-stays-small: src\/cli\/devnet\.ts → src\/ton\/chain-client\/index\.ts/)
    assert.equal(out.match(/devnet-supervisor-stays-small/g)?.length, 1, out)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
