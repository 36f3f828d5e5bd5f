// A start that fails, of the devnet or of one role alone, prints one line on stderr (no stack trace), exits 1 and
// leaves no process behind: a port in use (named, with the role), a blocked port, a child that dies during start-up,
// a missing model, an unreachable chain. Real child processes on loopback.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { cocoon, randomPortOffset, tmpDir } from '../helpers/procs.ts'
import { DEVNET_PORTS } from '../../src/node/devnet.ts'

/** One line on stderr besides the structured (JSON) log lines, and no stack trace. */
function assertOneLine(stderr: string, re: RegExp): void {
  const lines = stderr.trimEnd().split('\n').filter((l) => !l.startsWith('{'))
  assert.equal(lines.length, 1, `one line on stderr, got:\n${stderr}`)
  assert.match(lines[0], re)
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace')
}

/** A loopback listener standing in for "something else holds this port". */
async function holdPort(port = 0): Promise<{ port: number; close(): void }> {
  const s = net.createServer().listen(port, '127.0.0.1')
  await new Promise((r) => s.once('listening', r))
  return { port: (s.address() as net.AddressInfo).port, close: () => s.close() }
}

describe('a devnet that cannot start stops what it started and prints one line', () => {
  test('a port already in use: the message names the port and the role, and nothing starts', async () => {
    const offset = randomPortOffset()
    const dir = tmpDir('port-taken')
    const holder = await holdPort(DEVNET_PORTS.proxyWorkers + offset)
    try {
      const devnet = cocoon(['devnet', '--dir', dir, '--port-offset', String(offset)])
      const { code } = await devnet.exited
      assert.equal(code, 1)
      assertOneLine(devnet.stderr(), new RegExp(`^cocoon devnet: port ${DEVNET_PORTS.proxyWorkers + offset} for the proxy \\(worker listener\\) is already in use`))
      assert.doesNotMatch(devnet.output(), /starting the devnet chain/, 'nothing was started')
      assert.equal(fs.existsSync(path.join(dir, 'devnet.json')), false)
    } finally {
      holder.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a child that dies during start-up: the devnet stops the rest and says which child and why', async () => {
    // Another chain already holds the devnet's chain folder, so the devnet's own chain exits at once.
    const dir = tmpDir('child-dies')
    const squatter = cocoon(['chain', '--dir', path.join(dir, 'chain'), '--port', '0'])
    try {
      await squatter.waitForOutput(/listening on/, 60_000)
      const devnet = cocoon(['devnet', '--dir', dir, '--port-offset', String(randomPortOffset())])
      const { code } = await devnet.exited
      assert.equal(code, 1, devnet.output())
      assertOneLine(devnet.stderr(), /^cocoon devnet: the chain exited during start-up \(exit code 1\): .*; see .*chain\.log$/)
      assert.equal(fs.existsSync(path.join(dir, 'devnet.json')), false)
    } finally {
      squatter.proc.kill('SIGTERM')
      await squatter.exited
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a missing model: one line saying what to do', async () => {
    const dir = tmpDir('no-model')
    try {
      const devnet = cocoon(['devnet', '--dir', dir, '--port-offset', String(randomPortOffset()), '--model', 'no-such-model.gguf'])
      const { code } = await devnet.exited
      assert.equal(code, 1)
      assertOneLine(devnet.stderr(), /^cocoon devnet: model file 'no-such-model\.gguf' not found .*; set COCOON_MODELS to a folder that holds the model, or pass --model FILE$/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a --port-offset that lands on a port fetch refuses is refused before anything starts', async () => {
    const devnet = cocoon(['devnet', '--port-offset', String(10_080 - DEVNET_PORTS.client)])
    const { code } = await devnet.exited
    assert.equal(code, 1)
    assertOneLine(devnet.stderr(), /--port-offset: 80 puts the client on port 10080: .*blocked ports/)
  })
})


describe('a node or the chain alone: one line and exit code 1', () => {
  const policy = { acceptKinds: ['simulated'], imageHashes: {} }
  const writeConfig = (dir: string, cfg: object) => {
    const file = path.join(dir, 'node.json')
    fs.writeFileSync(file, JSON.stringify(cfg))
    return file
  }

  test('a port in use names the port and the role', async () => {
    const dir = tmpDir('role-port')
    const held = await holdPort()
    try {
      const p = cocoon(['client', '--config', writeConfig(dir, { role: 'client', dataDir: path.join(dir, 'c'), policy, listen: `127.0.0.1:${held.port}`, proxies: ['127.0.0.1:11002'] })])
      assert.equal((await p.exited).code, 1)
      assertOneLine(p.stderr(), new RegExp(`^cocoon client: port ${held.port} \\(127\\.0\\.0\\.1:${held.port}\\) is already in use, so the client cannot listen on it`))
      const chain = cocoon(['chain', '--dir', path.join(dir, 'chain'), '--port', String(held.port)])
      assert.equal((await chain.exited).code, 1)
      assertOneLine(chain.stderr(), new RegExp(`^cocoon chain: port ${held.port} .* is already in use, so the chain cannot listen on it`))
    } finally {
      held.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a config naming a port fetch refuses is refused at start-up, naming the field', async () => {
    const dir = tmpDir('role-bad-port')
    try {
      const p = cocoon(['proxy', '--config', writeConfig(dir, { role: 'proxy', dataDir: path.join(dir, 'p'), policy, stats: '127.0.0.1:6000' })])
      assert.equal((await p.exited).code, 1)
      assertOneLine(p.stderr(), /^cocoon proxy: .*node\.json\.stats: port 6000 is on the Fetch standard's list of blocked ports/)
      const chain = cocoon(['chain', '--dir', path.join(dir, 'chain'), '--port', '10080'])
      assert.equal((await chain.exited).code, 1)
      assertOneLine(chain.stderr(), /^cocoon chain: --port: port 10080 is on the Fetch standard's list of blocked ports/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test('an unreachable chain names the endpoint and what to check', async () => {
    const dir = tmpDir('role-no-chain')
    const closed = await holdPort()
    closed.close()
    try {
      const cfg = { role: 'client', dataDir: path.join(dir, 'c'), policy, listen: '127.0.0.1:0', proxies: ['127.0.0.1:11002'], chain: { endpoint: `http://127.0.0.1:${closed.port}`, root: 'EQA0xU8nYqEpMw6pMXcYR7dXgu0Q-vZ23anqinxfW_9jOrBi' } }
      const p = cocoon(['client', '--config', writeConfig(dir, cfg)])
      assert.equal((await p.exited).code, 1)
      assertOneLine(p.stderr(), new RegExp(`^cocoon client: cannot read the root contract .* from the chain at http://127\\.0\\.0\\.1:${closed.port}/api/v2/jsonRPC\\b.*ECONNREFUSED.*; is the chain running`))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
