// Builds OpenAI stream chunk JSON for backends that generate text themselves, with the fixed parts serialized once per request.

import type { InferenceKind } from './types.ts'

/**
 * Writes `chat.completion.chunk` or `text_completion` chunks for one request. The id,
 * timestamp and model are serialized once; each content chunk costs one JSON.stringify of
 * the text, since this runs once per generated token.
 */
export class ChunkWriter {
  private readonly head: string
  private readonly kind: InferenceKind

  constructor(kind: InferenceKind, requestId: string, model: string, createdSec = Math.floor(Date.now() / 1000)) {
    this.kind = kind
    const id = (kind === 'chat' ? 'chatcmpl-' : 'cmpl-') + requestId
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'
    this.head = `{"id":${JSON.stringify(id)},"object":"${object}","created":${createdSec},"model":${JSON.stringify(model)},"choices":[{"index":0,`
  }

  /** The chat stream's opening chunk (role, empty content); completions have none. */
  role(): string | undefined {
    if (this.kind !== 'chat') return undefined
    return this.head + '"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
  }

  content(text: string): string {
    return this.kind === 'chat'
      ? this.head + '"delta":{"content":' + JSON.stringify(text) + '},"finish_reason":null}]}'
      : this.head + '"text":' + JSON.stringify(text) + ',"logprobs":null,"finish_reason":null}]}'
  }

  finish(reason: string): string {
    const r = JSON.stringify(reason)
    return this.kind === 'chat'
      ? this.head + '"delta":{},"finish_reason":' + r + '}]}'
      : this.head + '"text":"","logprobs":null,"finish_reason":' + r + '}]}'
  }
}
