// Embedding vectors: normalization and the OpenAI base64 encoding (little-endian float32).

/** Scales `v` to unit length (a zero vector stays zero). */
export function normalize(v: number[]): number[] {
  let sum = 0
  for (const x of v) sum += x * x
  const n = Math.sqrt(sum)
  return n > 0 ? v.map((x) => x / n) : v
}

/** OpenAI's `encoding_format: "base64"`: the vector as little-endian float32, base64. */
export function vectorToBase64(v: readonly number[]): string {
  const buf = Buffer.alloc(v.length * 4)
  v.forEach((x, i) => buf.writeFloatLE(x, i * 4))
  return buf.toString('base64')
}
