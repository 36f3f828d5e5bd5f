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
    [{ role: 'client', policy, proxies: ['a:1'], colour: 'red' }, /config\.colour.*unknown/],
    [{ role: 'client', proxies: ['a:1'] }, /config\.policy.*required/],
    [{ role: 'worker', policy, proxies: ['a:1'], backend: { kind: 'openai', model: 'm' } }, /backend\.baseUrl.*required/],
    [{ role: 'worker', policy, proxies: ['a:1'], backend: { kind: 'openai', model: 'm', baseUrl: 'http://x', apiKey: 'sk-1' } }, /secrets do not belong/],
    [{ role: 'worker', policy, proxies: ['a:1'], backend: { kind: 'llama', model: 'm' }, maxActiveRequests: 0 }, /maxActiveRequests/],
    [{ role: 'proxy', policy, tee: { kind: 'none' } }, /must run in a TEE/],
    [{ role: 'worker', production: true, policy, proxies: ['a:1'], backend: { kind: 'llama', model: 'm' } }, /production node cannot run on a simulated TEE/],
  ]
  for (const [raw, re] of cases) assert.throws(() => validateConfig(raw), (e: Error) => e instanceof ConfigError && re.test(e.message), JSON.stringify(raw))
})

test('COCOON_<SETTING> overrides top-level settings', () => {
  const o = applyEnvOverrides({ role: 'client', policy, proxies: ['a:1'] }, 'client', { COCOON_LISTEN: '127.0.0.1:9999', COCOON_PROXIES: 'b:2, c:3', COCOON_DEFAULT_TIMEOUT_SEC: '30' })
  const c = validateConfig(o)
  assert.equal(c.role, 'client')
  if (c.role !== 'client') return
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9999 })
  assert.deepEqual(c.proxies, [{ host: 'b', port: 2 }, { host: 'c', port: 3 }])
  assert.equal(c.defaultTimeoutSec, 30)
})

test('a production node refuses a policy that trusts simulated evidence', async () => {
  const cfg = validateConfig({ role: 'client', production: true, policy, proxies: ['127.0.0.1:1'] })
  await assert.rejects(startNode(cfg, silentLogger), /simulated/)
})
