// The pure stream-text pieces: SSE parsing across arbitrary read boundaries, and stop-string matching across token boundaries.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SseParser } from '../../src/inference/sse.ts'
import { StopMatcher } from '../../src/inference/stop.ts'

/** Feeds `text` to a fresh parser cut at every position into two reads, and in single characters. */
function parseAllSplits(text: string): string[][] {
  const results: string[][] = []
  for (let cut = 0; cut <= text.length; cut++) {
    const p = new SseParser()
    results.push([...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))])
  }
  const p = new SseParser()
  results.push([...text].flatMap((c) => p.push(c)))
  return results
}

describe('SseParser', () => {
  it('yields the same events however the stream is split into reads', () => {
    const stream = 'data: {"a":1}\n\n: comment\r\ndata: {"b":\r\ndata: 2}\r\n\r\nevent: x\nid: 7\ndata:[DONE]\r\r'
    for (const events of parseAllSplits(stream)) assert.deepEqual(events, ['{"a":1}', '{"b":\n2}', '[DONE]'])
  })

  it('ignores events with no data and drops an unterminated last event', () => {
    const p = new SseParser()
    assert.deepEqual(p.push(': ping\n\nretry: 10\n\ndata: x'), [])
    p.end()
    assert.deepEqual(p.push('data: y\n\n'), ['y'])
  })

  it('keeps a data value without the optional space, and an empty data line', () => {
    const p = new SseParser()
    assert.deepEqual(p.push('data:x\n\ndata\n\n'), ['x', ''])
  })
})

describe('StopMatcher', () => {
  /** Pushes pieces; returns the emitted text and whether it stopped. */
  function run(stops: string[], pieces: string[]): { text: string; stopped: boolean } {
    const m = new StopMatcher(stops)
    let text = ''
    for (const piece of pieces) {
      const r = m.push(piece)
      text += r.emit
      if (r.stopped) return { text, stopped: true }
    }
    return { text: text + m.flush(), stopped: false }
  }

  it('cuts before a stop string inside one piece', () => {
    assert.deepEqual(run(['END'], ['abcENDdef']), { text: 'abc', stopped: true })
  })

  it('cuts before a stop string split across pieces and never emits its start', () => {
    const m = new StopMatcher(['\nUser:'])
    assert.deepEqual(m.push('Hello\nUs'), { emit: 'Hello', stopped: false })
    assert.deepEqual(m.push('er: hi'), { emit: '', stopped: true })
  })

  it('releases held-back text when it turns out not to be a stop string', () => {
    assert.deepEqual(run(['\nUser:'], ['a\nU', 'nder']), { text: 'a\nUnder', stopped: false })
    assert.deepEqual(run(['STOP'], ['xx', 'ST']), { text: 'xxST', stopped: false })
  })

  it('picks the earliest match among several stop strings', () => {
    assert.deepEqual(run(['cd', 'b'], ['abcd']), { text: 'a', stopped: true })
    assert.deepEqual(run(['bcd', 'cx'], ['ab', 'c', 'x']), { text: 'ab', stopped: true })
  })

  it('passes text straight through without stop strings, and ignores empty ones', () => {
    assert.deepEqual(run([], ['a', 'b']), { text: 'ab', stopped: false })
    assert.deepEqual(run([''], ['a', 'b']), { text: 'ab', stopped: false })
  })
})
