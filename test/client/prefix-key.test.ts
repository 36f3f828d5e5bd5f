// The client's prefix key for proxy-side cache affinity: stable for a repeated prefix, different for another
// prefix or another client secret, and never the prompt itself.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { prefixKey } from '../../src/client/prefix-key.ts'

const secret = Buffer.alloc(32, 1)
const SYS = 'You are a careful assistant. '.repeat(12)
const chat = (...contents: string[]) => ({ model: 'm', messages: contents.map((content, i) => ({ role: i % 2 ? 'assistant' : 'user', content })) })
const P = 'p'.repeat(300)

describe('prefix key', () => {
  it('is the same for the same conversation so far, whatever the newest message', () => {
    assert.equal(prefixKey(secret, chat(SYS, 'hi', 'question A')), prefixKey(secret, chat(SYS, 'hi', 'question B')))
    assert.notEqual(prefixKey(secret, chat(SYS, 'hi', 'q')), prefixKey(secret, chat(SYS + 'x', 'hi', 'q')))
  })

  it('keys a lone prompt by its start, and depends on the model and the secret', () => {
    const long = 'x'.repeat(2000)
    assert.equal(prefixKey(secret, { model: 'm', prompt: long + 'a' }), prefixKey(secret, { model: 'm', prompt: long + 'b' }))
    assert.notEqual(prefixKey(secret, { model: 'm', prompt: P }), prefixKey(secret, { model: 'n', prompt: P }))
    assert.notEqual(prefixKey(secret, { model: 'm', prompt: P }), prefixKey(Buffer.alloc(32, 2), { model: 'm', prompt: P }))
    assert.match(prefixKey(secret, { model: 'm', prompt: P })!, /^[0-9a-f]{32}$/)
    assert.equal(prefixKey(secret, { model: 'm' }), undefined)
    assert.equal(prefixKey(secret, { model: 'm', prompt: 'short' }), undefined, 'a short prefix is not worth a key')
  })
})
