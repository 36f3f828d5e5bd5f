// A small seeded pseudo-random generator (mulberry32), so that randomized tests draw the same cases on every run
// and a failing run can be replayed from its seed. Not for anything secret.

export interface Prng {
  /** The next number in [0, 1). */
  next(): number
  /** An integer in [0, n). */
  int(n: number): number
  /** One of `xs`. */
  pick<T>(xs: readonly T[]): T
}

/** The generator for `seed`: the same seed gives the same draws. */
export function prng(seed: number): Prng {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return { next, int: (n) => Math.floor(next() * n), pick: (xs) => xs[Math.floor(next() * xs.length)] }
}
