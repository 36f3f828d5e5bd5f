// The one blocked-port list: it is exactly what Node's fetch refuses, and every port a config, a flag or an offset produces goes through it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FETCH_BAD_PORTS, portProblem } from '../../src/core/ports.ts'
import { ConfigError, validateConfig } from '../../src/node/config.ts'
import { DEVNET_PORTS, devnetPortOffsetProblem } from '../../src/node/devnet.ts'
import { DEFAULT_CHAIN_PORT } from '../../src/ton/chain/constants.ts'
import { randomPortOffset } from '../helpers/procs.ts'

/** True when Node's fetch refuses the port itself, before connecting. */
async function fetchRefuses(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) })
    return false
  } catch (err) {
    return /bad port/i.test(String((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message))
  }
}

test("the list is exactly the ports Node's fetch refuses (all of them, and not their neighbours)", async () => {
  for (const port of FETCH_BAD_PORTS) assert.ok(await fetchRefuses(port), `fetch accepts ${port}, which the list blocks`)
  const neighbours = [...FETCH_BAD_PORTS].flatMap((p) => [p - 1, p + 1]).filter((p) => p > 0 && !FETCH_BAD_PORTS.has(p))
  for (const port of neighbours) assert.equal(await fetchRefuses(port), false, `fetch refuses ${port}, which the list misses`)
})

test('every default port is one fetch accepts (the chain is on 10090, not 10080)', () => {
  assert.equal(DEFAULT_CHAIN_PORT, 10090)
  assert.equal(DEVNET_PORTS.chain, DEFAULT_CHAIN_PORT, "the devnet runs its chain on cocoon chain's default port")
  for (const port of [DEVNET_PORTS.client, DEVNET_PORTS.proxyStats, DEVNET_PORTS.proxyWorkers, DEVNET_PORTS.proxyClients, DEVNET_PORTS.chain, ...Array.from({ length: 16 }, (_, i) => DEVNET_PORTS.worker(i))]) {
    assert.equal(portProblem(port), undefined, `default port ${port}`)
  }
  for (let workers = 1; workers <= 16; workers++) assert.equal(devnetPortOffsetProblem(0, workers), undefined)
})

test('--port-offset is refused when it lands a devnet port on a blocked one, naming the role and the port', () => {
  assert.match(devnetPortOffsetProblem(80, 1)!, /puts the client on port 10080: port 10080 is on the Fetch standard's list of blocked ports/)
  // 6000 - 12000 < 0: a worker would need a negative offset; the chain at 10090 + K never reaches a blocked port, the client at 10000 + 80 does.
  assert.equal(devnetPortOffsetProblem(100, 1), undefined)
  assert.match(devnetPortOffsetProblem(60_000, 1)!, /out of range/)
  // The tests' own offsets go through the same check.
  for (let i = 0; i < 200; i++) assert.equal(devnetPortOffsetProblem(randomPortOffset(), 2), undefined)
})

test('a config naming a blocked port, to bind or to dial, is refused with the field and the port', () => {
  const policy = { acceptKinds: ['simulated'], imageHashes: {} }
  const refuses = (raw: object, field: RegExp) =>
    assert.throws(
      () => validateConfig(raw, 'c.json'),
      (e: Error) => e instanceof ConfigError && field.test(e.message) && /blocked ports/.test(e.message),
    )
  refuses({ role: 'client', policy, listen: '127.0.0.1:10080', proxies: ['127.0.0.1:11002'] }, /c\.json\.listen: port 10080/)
  refuses({ role: 'client', policy, proxies: ['127.0.0.1:6667'] }, /c\.json\.proxies\[0\]: port 6667/)
  refuses({ role: 'proxy', policy, workerListen: '0.0.0.0:5060' }, /c\.json\.workerListen: port 5060/)
  refuses({ role: 'worker', policy, stats: '127.0.0.1:2049', proxies: ['127.0.0.1:11001'], backend: { model: 'm.gguf' } }, /c\.json\.stats: port 2049/)
  refuses({ role: 'worker', policy, proxies: ['127.0.0.1:11001'], backend: { kind: 'openai', model: 'm', baseUrl: 'http://127.0.0.1:6000/v1' } }, /c\.json\.backend\.baseUrl: port 6000/)
  refuses({ role: 'client', policy, proxies: ['127.0.0.1:11002'], chain: { endpoint: 'http://127.0.0.1:10080', root: 'EQA0xU8nYqEpMw6pMXcYR7dXgu0Q-vZ23anqinxfW_9jOrBi' } }, /c\.json\.chain\.endpoint: port 10080/)
  // Port 0 (any free port) and ordinary ports pass.
  assert.doesNotThrow(() => validateConfig({ role: 'client', policy, listen: '127.0.0.1:0', proxies: ['127.0.0.1:11002'], chain: { endpoint: 'http://127.0.0.1:10090', root: 'EQA0xU8nYqEpMw6pMXcYR7dXgu0Q-vZ23anqinxfW_9jOrBi' } }))
})
