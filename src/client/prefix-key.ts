// The prefix key the client node sends with a request, for prefix-cache affinity at the proxy: a keyed hash of
// the prompt's leading part (the conversation before the newest message, or the start of a lone prompt). Keyed
// with the client's own secret, so the proxy never sees the prompt and nobody else can compute or probe the key.
import crypto from 'node:crypto'

/** How much of a lone prompt counts as its prefix, in characters. */
export const PREFIX_CHARS = 1024
/** Shorter prefixes are not worth a warm cache: no key, so routing is by quality alone. */
export const MIN_PREFIX_CHARS = 256

/** Hex key (128 bits) of the request's prompt prefix, or undefined when it has none worth keying. */
export function prefixKey(secret: Buffer, body: Record<string, unknown>): string | undefined {
  let prefix: string | undefined
  const messages = body.messages
  if (Array.isArray(messages) && messages.length > 0) {
    if (messages.length >= 2) prefix = JSON.stringify(messages.slice(0, -1))
    else {
      const content = (messages[0] as { content?: unknown })?.content
      prefix = typeof content === 'string' ? content.slice(0, PREFIX_CHARS) : JSON.stringify(content ?? '').slice(0, PREFIX_CHARS)
    }
  } else if (typeof body.prompt === 'string') prefix = body.prompt.slice(0, PREFIX_CHARS)
  if (!prefix || prefix.length < MIN_PREFIX_CHARS) return undefined
  return crypto.createHmac('sha256', secret).update(String(body.model ?? '')).update('\0').update(prefix).digest('hex').slice(0, 32)
}

/**
 * The prefix key of an app's request (API key `keyId`): the node's key of the prefix, keyed again per app, so the
 * same prefix from two apps of one node lands by affinity independently (workers keep each app's cache apart anyway,
 * docs/e2ee.md), and the proxy cannot tell that two apps sent the same prefix.
 */
export function appPrefixKey(secret: Buffer, keyId: string, nodeKey: string): string {
  return crypto.createHmac('sha256', secret).update('cocoon-prefix-key\n').update(keyId).update('\n').update(nodeKey).digest('hex').slice(0, 32)
}
