// `cocoon client keys create|list|revoke` as a real child process: the key is printed once, stored only hashed, listed and revoked.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { cocoon, tmpDir } from '../helpers/procs.ts'
import { hashApiKey } from '../../src/client/apps.ts'

test('cocoon client keys creates a key shown once and stored hashed, lists it and revokes it', async () => {
  const dir = tmpDir('keys-cli')
  const config = path.join(dir, 'client.json')
  fs.writeFileSync(config, JSON.stringify({ role: 'client', dataDir: path.join(dir, 'client'), policy: { acceptKinds: ['simulated'], imageHashes: { proxy: '*' } }, proxies: ['127.0.0.1:11002'] }))
  const run = async (args: string[]) => {
    const p = cocoon(['client', 'keys', ...args, '--config', config])
    const { code } = await p.exited
    return { code, out: p.output() }
  }
  const created = await run(['create', '--name', 'my-bot', '--limit', '1.5', '--period', 'day', '--models', 'stories260K', '--json'])
  assert.equal(created.code, 0, created.out)
  const k = JSON.parse(created.out.trim().split('\n').pop()!)
  assert.match(k.key, /^sk-cocoon-/)
  assert.equal(k.limitNano, '1500000000')
  assert.deepEqual(k.models, ['stories260K'])
  const db = new Database(path.join(dir, 'client', 'apps.sqlite'), { readonly: true })
  const rows = db.prepare('SELECT * FROM api_keys').all() as Array<Record<string, unknown>>
  db.close()
  assert.equal(rows[0].hash, hashApiKey(k.key))
  assert.ok(!JSON.stringify(rows).includes(k.key), 'the key itself is not stored')

  assert.equal((await run(['create', '--name', 'my-bot'])).code, 2, 'a second active key with the same name is refused')
  const list = await run(['list'])
  assert.match(list.out, /my-bot\s+sk-cocoon-\S+…\s+active\s+spent 0 of 1\.5 TON this day/)
  assert.equal((await run(['revoke', '--name', 'my-bot'])).code, 0)
  assert.match((await run(['list'])).out, /my-bot.*revoked/)
  fs.rmSync(dir, { recursive: true, force: true })
})
