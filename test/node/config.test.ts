// Node configs: validation names the field, environment overrides, production refuses simulation.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { applyEnvOverrides, ConfigError, validateConfig } from '../../src/node/config.ts'
import { startNode } from '../../src/node/run.ts'
import { silentLogger } from '../../src/core/log.ts'

const policy = { acceptKinds: ['simulated', 'none'], imageHashes: { proxy: '*', worker: '*', client: '*' } }

test('a valid worker config gets its defaults', () => {
  const c = validateConfig({ role: 'worker', policy, proxies: ['127.0.0.1:11001'], backend: { kind: 'llama', model: 'hf:a/b/c.gguf' } })
  assert.equal(c.role, 'worker')
  if (c.role !== 'worker') return
  assert.deepEqual(c.stats, { host: '127.0.0.1', port: 12000 })
  assert.deepEqual(c.tee, { kind: 'simulated', imageTag: undefined })
  assert.equal(c.production, false)
})

test('errors name the field', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ role: 'wizard' }, /config\.role/],
    [{ role: 'client', policy, proxies: ['localhost'] }, /config\.proxies\[0\].*host:port/],
    [{ role: 'client', policy, proxies: ['[::1]:99999'] }, /port 99999/],
    [{ role: 'client', policy, proxies: ['a:1000'], colour: 'red' }, /config\.colour.*unknown/],
    [{ role: 'client', proxies: ['a:1000'] }, /config\.policy.*required/],
    [{ role: 'worker', policy, proxies: ['a:1000'], backend: { kind: 'openai', model: 'm' } }, /backend\.baseUrl.*required/],
    [{ role: 'worker', policy, proxies: ['a:1000'], backend: { kind: 'openai', model: 'm', baseUrl: 'http://x', apiKey: 'sk-1' } }, /secrets do not belong/],
    [{ role: 'worker', policy, proxies: ['a:1000'], backend: { kind: 'llama', model: 'm' }, maxActiveRequests: 0 }, /maxActiveRequests/],
    [{ role: 'proxy', policy, tee: { kind: 'none' } }, /must run in a TEE/],
    [{ role: 'worker', production: true, policy, proxies: ['a:1000'], backend: { kind: 'llama', model: 'm' } }, /production node cannot run on a simulated TEE/],
  ]
  for (const [raw, re] of cases) assert.throws(() => validateConfig(raw), (e: Error) => e instanceof ConfigError && re.test(e.message), JSON.stringify(raw))
})

test('each backend kind has its own settings: gpu and the weights hash for llama, a timeout for openai', () => {
  const worker = (backend: unknown) => validateConfig({ role: 'worker', policy, proxies: ['a:9000'], backend })
  const llama = worker({ kind: 'llama', model: 'm.gguf', gpu: 'auto', expectedSha256: 'ab'.repeat(32) })
  assert.ok(llama.role === 'worker' && llama.backend.kind === 'llama')
  assert.equal(llama.backend.gpu, 'auto')
  assert.equal(llama.backend.expectedSha256, 'ab'.repeat(32))
  const cpu = worker({ kind: 'llama', model: 'm.gguf', gpu: false })
  assert.ok(cpu.role === 'worker' && cpu.backend.kind === 'llama' && cpu.backend.gpu === false)
  const openai = worker({ kind: 'openai', model: 'm', baseUrl: 'http://x', timeoutMs: 5000 })
  assert.ok(openai.role === 'worker' && openai.backend.kind === 'openai' && openai.backend.timeoutMs === 5000)
  const salted = worker({ kind: 'openai', model: 'm', baseUrl: 'http://x', cacheSalt: true })
  assert.ok(salted.role === 'worker' && salted.backend.kind === 'openai' && salted.backend.cacheSalt === true)
  const refused: Array<[unknown, RegExp]> = [
    [{ kind: 'openai', model: 'm', baseUrl: 'http://x', cacheSalt: 'yes' }, /backend\.cacheSalt/],
    [{ kind: 'llama', model: 'm', cacheSalt: true }, /backend\.cacheSalt.*unknown setting for the llama backend/],
    [{ kind: 'llama', model: 'm', gpu: 'cuda' }, /backend\.gpu.*false.*auto/],
    [{ kind: 'openai', model: 'm', baseUrl: 'http://x', gpu: 'auto' }, /backend\.gpu.*unknown setting for the openai backend/],
    [{ kind: 'llama', model: 'm', baseUrl: 'http://x' }, /backend\.baseUrl.*unknown setting for the llama backend/],
  ]
  for (const [backend, re] of refused) assert.throws(() => worker(backend), (e: Error) => e instanceof ConfigError && re.test(e.message), JSON.stringify(backend))
})

test('the chain section holds only the settings of the node\'s own role', () => {
  const chain = { endpoint: 'devnet', root: 'EQCGJEDxBefMWNTdGoX3W7PlHriYgdQr2r4dBU5ywrPYmpD1' }
  const proxy = validateConfig({ role: 'proxy', policy, chain: { ...chain, stakeNano: '5' } })
  assert.ok(proxy.role === 'proxy' && proxy.chain?.stakeNano === 5n && proxy.chain.paymentKeyFile.endsWith('payment.key'))
  const client = validateConfig({ role: 'client', policy, proxies: ['a:9000'], chain })
  assert.ok(client.role === 'client' && client.chain && !('paymentKeyFile' in client.chain))
  assert.throws(() => validateConfig({ role: 'client', policy, proxies: ['a:9000'], chain: { ...chain, stakeNano: '5' } }), /chain\.stakeNano.*unknown chain setting for a client/)
  const budgeted = validateConfig({ role: 'client', policy, chain: { ...chain, fundingBudgetNano: '3000000000' } })
  assert.ok(budgeted.role === 'client' && budgeted.chain?.fundingBudgetNano === 3_000_000_000n)
  assert.throws(() => validateConfig({ role: 'client', policy, chain: { ...chain, fundingBudgetNano: '1.5' } }), /chain\.fundingBudgetNano.*nanoTON/)
  assert.throws(() => validateConfig({ role: 'proxy', policy, chain: { ...chain, fundingBudgetNano: '5' } }), /chain\.fundingBudgetNano.*unknown chain setting for a proxy/)
})

test('COCOON_<SETTING> overrides top-level settings', () => {
  const o = applyEnvOverrides({ role: 'client', policy, proxies: ['a:1000'] }, 'client', { COCOON_LISTEN: '127.0.0.1:9999', COCOON_PROXIES: 'b:2, c:3', COCOON_DEFAULT_TIMEOUT_SEC: '30' })
  const c = validateConfig(o)
  assert.equal(c.role, 'client')
  if (c.role !== 'client') return
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9999 })
  assert.deepEqual(c.proxies, [{ host: 'b', port: 2 }, { host: 'c', port: 3 }])
  assert.equal(c.defaultTimeoutSec, 30)
})

test('a production node refuses a policy that trusts simulated evidence', async () => {
  const cfg = validateConfig({ role: 'client', production: true, policy, proxies: ['127.0.0.1:1000'] })
  await assert.rejects(startNode(cfg, silentLogger), /simulated/)
})
