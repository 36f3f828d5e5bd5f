// Spec: ConfigfsTsmProvider against a fake configfs-tsm kernel — happy path, wrong provider, races, EBUSY, cleanup, bad input.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ConfigfsTsmProvider, FakeTsmKernel, TsmError } from '../../src/tee/tdx/index.ts'
import { attestQuote } from '../../src/cli/attest-tdx.ts'

const ROOT = '/sys/kernel/config/tsm/report'
const reportData = new Uint8Array(64).map((_, i) => i)

function setup(kernel = new FakeTsmKernel(), opts: ConstructorParameters<typeof ConfigfsTsmProvider>[0] = {}) {
  const sleeps: number[] = []
  let n = 0
  const provider = new ConfigfsTsmProvider(opts, {
    fs: kernel,
    sleep: async (ms) => void sleeps.push(ms),
    uniqueName: () => `r${n++}`,
  })
  return { kernel, provider, sleeps }
}

const tsmError = (code: string) => (e: unknown) => e instanceof TsmError && e.code === code

test('happy path: mkdir, provider, generation, 64-byte inblob, outblob, generation, rmdir', async () => {
  const { kernel, provider } = setup()
  assert.equal(provider.kind, 'tdx')
  const quote = await provider.quote(reportData)
  assert.deepEqual(quote, kernel.makeQuote(reportData))
  assert.deepEqual(kernel.ops, [
    `mkdir ${ROOT}/r0`,
    'read provider',
    'read generation',
    'write inblob 64',
    'read outblob',
    'read generation',
    `rmdir ${ROOT}/r0`,
  ])
  assert.equal(kernel.dirs.size, 0)
})

test('a provider other than tdx_guest is refused, and the directory is removed', async () => {
  const { kernel, provider } = setup(new FakeTsmKernel({ provider: 'sev_guest' }))
  await assert.rejects(provider.quote(reportData), (e: unknown) => tsmError('wrong-provider')(e) && /"sev_guest"/.test((e as Error).message))
  assert.equal(kernel.dirs.size, 0)
  assert.ok(!kernel.ops.some((op) => op.startsWith('write')), 'nothing is written to a foreign provider')
})

test('a generation race (someone else wrote our inblob) is retried in a fresh directory', async () => {
  const { kernel, provider } = setup()
  kernel.races = 1
  const quote = await provider.quote(reportData)
  assert.deepEqual(quote, kernel.makeQuote(reportData))
  assert.deepEqual(
    kernel.ops.filter((op) => /^(mkdir|rmdir)/.test(op)),
    [`mkdir ${ROOT}/r0`, `rmdir ${ROOT}/r0`, `mkdir ${ROOT}/r1`, `rmdir ${ROOT}/r1`],
  )
  assert.equal(kernel.dirs.size, 0)
})

test('a persistent race gives up with generation-race after the retry budget', async () => {
  const { kernel, provider } = setup(new FakeTsmKernel(), { maxRaceRetries: 2 })
  kernel.races = 100
  await assert.rejects(provider.quote(reportData), (e: unknown) => tsmError('generation-race')(e) && /generation moved from 0 to 2/.test((e as Error).message))
  assert.equal(kernel.ops.filter((op) => op.startsWith('mkdir')).length, 3)
  assert.equal(kernel.dirs.size, 0)
})

test('EBUSY is retried with exponential back-off', async () => {
  const { kernel, provider, sleeps } = setup(new FakeTsmKernel(), { busyBackoffMs: 10 })
  kernel.busy = { 'write-inblob': 1, 'read-outblob': 2 }
  const quote = await provider.quote(reportData)
  assert.deepEqual(quote, kernel.makeQuote(reportData))
  assert.deepEqual(sleeps, [10, 20, 40])
  assert.equal(kernel.dirs.size, 0)
})

test('EBUSY on mkdir is retried too; a TSM that stays busy fails with busy', async () => {
  const a = setup()
  a.kernel.busy = { mkdir: 1 }
  await a.provider.quote(reportData)
  assert.equal(a.sleeps.length, 1)

  const b = setup(new FakeTsmKernel(), { maxBusyRetries: 3, busyBackoffMs: 100 })
  b.kernel.busy = { 'read-outblob': 1_000 }
  await assert.rejects(b.provider.quote(reportData), tsmError('busy'))
  assert.deepEqual(b.sleeps, [100, 200, 400])
  assert.equal(b.kernel.dirs.size, 0)
})

test('the report directory is removed when reading the quote fails', async () => {
  const kernel = new FakeTsmKernel({
    makeQuote: () => {
      throw Object.assign(new Error('EIO: I/O error'), { code: 'EIO' })
    },
  })
  const { provider } = setup(kernel)
  await assert.rejects(provider.quote(reportData), (e: unknown) => tsmError('io')(e) && /outblob/.test((e as Error).message))
  assert.equal(kernel.ops.at(-1), `rmdir ${ROOT}/r0`)
  assert.equal(kernel.dirs.size, 0)
})

test('report data that is not exactly 64 bytes is refused before touching the kernel', async () => {
  const { kernel, provider } = setup()
  await assert.rejects(provider.quote(new Uint8Array(32)), tsmError('bad-report-data'))
  await assert.rejects(provider.quote(new Uint8Array(65)), tsmError('bad-report-data'))
  assert.deepEqual(kernel.ops, [])
})

test('outside a TDX guest (no configfs-tsm) the error says so', async () => {
  const { provider } = setup(new FakeTsmKernel({ present: false }))
  await assert.rejects(provider.quote(reportData), (e: unknown) => tsmError('unavailable')(e) && /not inside a TDX guest/.test((e as Error).message))
})

test('an aborted signal stops the provider and still removes the directory', async () => {
  const kernel = new FakeTsmKernel()
  const ac = new AbortController()
  const provider = new ConfigfsTsmProvider({}, {
    fs: {
      mkdir: (p) => kernel.mkdir(p),
      rmdir: (p) => kernel.rmdir(p),
      writeFile: (p, d) => kernel.writeFile(p, d),
      readFile: async (p) => {
        const out = await kernel.readFile(p)
        if (p.endsWith('/generation')) ac.abort()
        return out
      },
    },
  })
  await assert.rejects(provider.quote(reportData, { signal: ac.signal }), { name: 'AbortError' })
  assert.equal(kernel.dirs.size, 0)
})

test('attestQuote prints the quote as hex; outside a TDX guest it exits 1 with a clear error; bad hex exits 2', async () => {
  const { kernel, provider } = setup()
  const out: string[] = []
  const err: string[] = []
  const io = { provider, stdout: (s: string) => void out.push(s), stderr: (s: string) => void err.push(s) }
  const hex = Buffer.from(reportData).toString('hex')
  assert.equal(await attestQuote({ reportDataHex: hex }, io), 0)
  assert.equal(out.join(''), `${Buffer.from(kernel.makeQuote(reportData)).toString('hex')}\n`)

  const outside = setup(new FakeTsmKernel({ present: false }))
  assert.equal(await attestQuote({ reportDataHex: hex }, { ...io, provider: outside.provider }), 1)
  assert.match(err.join(''), /not inside a TDX guest/)

  assert.equal(await attestQuote({ reportDataHex: 'abcd' }, io), 2)
  assert.match(err.join(''), /exactly 64 bytes/)
})
