// Hostile and odd input at the client's OpenAI API: deep nesting, non-finite numbers, fields a backend cannot honour, a
// failing models call. Real RA-TLS and HTTP/2 on loopback; the backends and the upstream server are FAKES.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import http2 from 'node:http2'
import { FakeBackend } from '../helpers/fake-backend.ts'
import { startClient, startProxy, startWorker, waitFor } from '../helpers/network.ts'
import path from 'node:path'
import { OpenAIUpstreamBackend } from '../../src/inference/openai.ts'
import { LlamaBackend } from '../../src/inference/llama.ts'
import { MODELS_DIR } from '../helpers/procs.ts'
import type { InferenceBackend } from '../../src/inference/types.ts'
import { silentLogger } from '../../src/core/log.ts'

const stops: Array<() => Promise<void> | void> = []
after(async () => {
  for (const s of stops.reverse()) await s()
})

async function network(backend: InferenceBackend) {
  const p = await startProxy()
  stops.push(() => p.proxy.stop())
  const w = await startWorker(backend, [p.workerPort])
  stops.push(() => w.stop())
  await waitFor(() => (p.proxy.stats() as any).workers.connected === 1, 'worker')
  const c = await startClient([p.clientPort])
  stops.push(() => c.client.stop())
  await waitFor(() => c.client.health().ok, 'client')
  return { proxy: p.proxy, client: c.client, url: c.url }
}

const post = (url: string, path: string, body: unknown) =>
  fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) })

async function expectError(res: Response, status: number, param?: string | null, message?: RegExp): Promise<any> {
  const j = (await res.json()) as any
  assert.equal(res.status, status, JSON.stringify(j))
  assert.equal(typeof j.error?.message, 'string')
  assert.equal(typeof j.error?.type, 'string')
  if (param !== undefined) assert.equal(j.error.param, param, JSON.stringify(j))
  if (message) assert.match(j.error.message, message)
  return j
}

test('nesting 10,000 deep or more is a 400, not a stack overflow', async () => {
  const net = await network(new FakeBackend())
  for (const depth of [10_000, 100_000]) {
    const nested = '['.repeat(depth) + ']'.repeat(depth)
    await expectError(await post(net.url, '/v1/chat/completions', `{"model":"fake-model","messages":[{"role":"user","content":"x"}],"metadata":${nested}}`), 400, null, /deeper than/)
    const obj = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
    await expectError(await post(net.url, '/v1/completions', `{"model":"fake-model","prompt":"x","x":${obj}}`), 400, null, /deeper than/)
  }
  // Brackets inside strings are text, not nesting.
  const ok = await post(net.url, '/v1/completions', { model: 'fake-model', prompt: '['.repeat(20_000) + '"\\{', max_tokens: 2 })
  assert.equal(ok.status, 200)
  await ok.json()
  assert.equal(net.client.health().ok, true)
})

test('non-finite numbers are a 400 naming the field, never replaced by a default', async () => {
  const net = await network(new FakeBackend())
  const chat = (extra: string) => `{"model":"fake-model","messages":[{"role":"user","content":"x"}],${extra}}`
  await expectError(await post(net.url, '/v1/chat/completions', chat('"max_tokens":1e309')), 400, 'max_tokens', /finite/)
  await expectError(await post(net.url, '/v1/chat/completions', chat('"temperature":1e309')), 400, 'temperature', /finite/)
  await expectError(await post(net.url, '/v1/chat/completions', chat('"top_p":-1e999')), 400, 'top_p', /finite/)
  await expectError(await post(net.url, '/v1/chat/completions', chat('"max_coefficient":1e400')), 400, 'max_coefficient')
  await expectError(await post(net.url, '/v1/chat/completions', chat('"seed":1e309')), 400, 'seed')
  await expectError(await post(net.url, '/v1/chat/completions', `{"model":"fake-model","messages":[{"role":"user","content":"x","weight":1e309}]}`), 400, 'messages[0].weight')
  // NaN and Infinity are not JSON at all.
  for (const lit of ['NaN', 'Infinity', '-Infinity']) await expectError(await post(net.url, '/v1/chat/completions', chat(`"temperature":${lit}`)), 400, null, /not valid JSON/)
})

test('tools, response_format, logit_bias and logprobs are refused with a 400 naming the field by a backend that cannot honour them', async () => {
  const b = new FakeBackend()
  const net = await network(b)
  const msgs = [{ role: 'user', content: 'x' }]
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['/v1/chat/completions', { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] }, 'tools'],
    ['/v1/chat/completions', { tool_choice: 'required' }, 'tool_choice'],
    ['/v1/chat/completions', { response_format: { type: 'json_object' } }, 'response_format'],
    ['/v1/chat/completions', { response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'object' } } } }, 'response_format'],
    ['/v1/chat/completions', { response_format: { type: 'json_schema', json_schema: { name: 's', schema: 7 } } }, 'response_format'],
    ['/v1/chat/completions', { response_format: { type: 'yaml' } }, 'response_format'],
    ['/v1/chat/completions', { logit_bias: { '50256': -100 } }, 'logit_bias'],
    ['/v1/chat/completions', { logprobs: true }, 'logprobs'],
    ['/v1/chat/completions', { top_logprobs: 2 }, 'top_logprobs'],
    ['/v1/completions', { logprobs: 3 }, 'logprobs'],
    ['/v1/completions', { logit_bias: { '1': 5 } }, 'logit_bias'],
  ]
  for (const [path, extra, field] of cases) {
    const base = path === '/v1/completions' ? { model: 'fake-model', prompt: 'x' } : { model: 'fake-model', messages: msgs }
    await expectError(await post(net.url, path, { ...base, ...extra }), 400, field, new RegExp(`'${field}'`))
  }
  assert.equal(b.seen.length, 0, 'nothing reached the backend')
  // Asking for nothing is fine: the defaults of those fields pass.
  const ok = await post(net.url, '/v1/chat/completions', { model: 'fake-model', messages: msgs, tools: [], response_format: { type: 'text' }, logit_bias: {}, logprobs: false, max_tokens: 2 })
  assert.equal(ok.status, 200, JSON.stringify(await ok.clone().json()))
  await ok.json()
})

test('an upstream (openai) backend passes tools and logprobs through, and a non-streamed answer keeps the tool calls', async () => {
  // FAKE upstream: answers any request that has tools with one tool call, its arguments split over two chunks.
  const seen: any[] = []
  const upstream = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const j = JSON.parse(body)
      seen.push(j)
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const chunk = (delta: object, extra: object = {}) => `data: ${JSON.stringify({ id: 'up', object: 'chat.completion.chunk', created: 1, model: j.model, choices: [{ index: 0, delta, finish_reason: null, ...extra }] })}\n\n`
      const lp = { content: [{ token: 'a', logprob: -0.5, top_logprobs: [] }] }
      res.write(chunk({ role: 'assistant', tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] }, { logprobs: lp }))
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }, { logprobs: lp }))
      res.write(`data: ${JSON.stringify({ id: 'up', object: 'chat.completion.chunk', created: 1, model: j.model, choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] })}\n\n`)
      res.write(`data: ${JSON.stringify({ id: 'up', object: 'chat.completion.chunk', created: 1, model: j.model, choices: [], usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 } })}\n\n`)
      res.end('data: [DONE]\n\n')
    })
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()))
  stops.push(() => new Promise<void>((r) => upstream.close(() => r())))
  const backend = new OpenAIUpstreamBackend({ baseUrl: `http://127.0.0.1:${(upstream.address() as any).port}`, modelId: 'up-model' }, { log: silentLogger })
  const net = await network(backend)
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }]
  const res = await post(net.url, '/v1/chat/completions', { model: 'up-model', messages: [{ role: 'user', content: 'weather?' }], tools, tool_choice: 'auto', logprobs: true, response_format: { type: 'json_object' }, logit_bias: { '7': 1 } })
  const j = (await res.json()) as any
  assert.equal(res.status, 200, JSON.stringify(j))
  assert.deepEqual(seen[0].tools, tools)
  assert.equal(seen[0].tool_choice, 'auto')
  assert.equal(seen[0].logprobs, true)
  assert.deepEqual(seen[0].response_format, { type: 'json_object' })
  assert.deepEqual(seen[0].logit_bias, { '7': 1 })
  assert.deepEqual(j.choices[0].message.tool_calls, [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }])
  assert.equal(j.choices[0].message.content, null)
  assert.equal(j.choices[0].finish_reason, 'tool_calls')
  assert.equal(j.choices[0].logprobs.content.length, 2)
})

test('when the models call to the proxy fails, GET /v1/models is a 502 with the reason', async () => {
  const net = await network(new FakeBackend())
  // FAULT INJECTION at the proxy: reset every models stream before the proxy's own handler answers it.
  ;(net.proxy as any).clientH2.prependListener('stream', (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => {
    if (h[':path'] === '/v1/models') s.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
  })
  const res = await fetch(net.url + '/v1/models')
  const j = await expectError(res, 502, null, /could not list models/)
  assert.equal(j.error.code, 'upstream_error')
  // With no proxy at all there is no worker either: an empty list, not an error (issue 9: /v1/models during start-up).
  await net.proxy.stop()
  await waitFor(() => !net.client.health().ok, 'the client to see the proxy gone')
  const none = await fetch(net.url + '/v1/models')
  assert.equal(none.status, 200)
  assert.deepEqual(await none.json(), { object: 'list', data: [] })
})

test('the llama backend honours response_format: json_object and json_schema answers are JSON (the schema\'s shape), tools are still refused', async () => {
  const backend = await LlamaBackend.create({ modelPath: path.join(MODELS_DIR, 'stories260K.gguf'), modelId: 'stories260K', modelHash: 'ab'.repeat(32), threads: 1, parallel: 1 })
  stops.push(() => backend.close())
  const net = await network(backend)
  const ask = (extra: object, stream = false) =>
    post(net.url, '/v1/chat/completions', { model: 'stories260K', messages: [{ role: 'user', content: 'Tell me about a cat.' }], temperature: 0, max_tokens: 200, stream, ...extra })
  const obj = await ask({ response_format: { type: 'json_object' } })
  const j = (await obj.json()) as any
  assert.equal(obj.status, 200, JSON.stringify(j))
  // The tiny model may ramble inside a free-form JSON string until max_tokens; a finished answer is whole JSON.
  const content: string = j.choices[0].message.content
  assert.match(content, /^\s*[{[]/)
  if (j.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(content), 'object')
  const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'] }
  const typed = await ask({ response_format: { type: 'json_schema', json_schema: { name: 'pet', schema } } }, true)
  assert.equal(typed.status, 200)
  const events = (await typed.text()).split('\n\n').map((e) => e.trim()).filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)))
  const text = events.map((e) => e.choices?.[0]?.delta?.content ?? '').join('')
  const pet = JSON.parse(text)
  assert.deepEqual(Object.keys(pet).sort(), ['age', 'name'])
  assert.equal(typeof pet.name, 'string')
  assert.ok(Number.isInteger(pet.age))
  assert.ok(events.at(-1).usage, 'the stream ends with its usage')
  // What it cannot honour, it still refuses.
  await expectError(await ask({ tools: [{ type: 'function', function: { name: 'f' } }] }), 400, 'tools')
  await expectError(await ask({ logprobs: true }), 400, 'logprobs')
})

