// Samples a few numbers from a node's stats over time, in memory, for the dashboard's charts.

/** How often a sample is taken, and how many are kept (one day at a minute). */
export const HISTORY_SAMPLE_MS = 60_000
export const HISTORY_MAX_SAMPLES = 1_440

export interface Sample {
  t: number
  [k: string]: number | string
}

export class StatsHistory {
  private readonly samples: Sample[] = []
  private timer?: NodeJS.Timeout

  constructor(
    private readonly take: () => Record<string, number | string>,
    private readonly everyMs = HISTORY_SAMPLE_MS,
  ) {}

  start(): this {
    this.sample()
    this.timer = setInterval(() => this.sample(), this.everyMs)
    this.timer.unref()
    return this
  }

  stop(): void {
    clearInterval(this.timer)
  }

  /** The stored samples plus one taken now, oldest first. */
  series(): Sample[] {
    return [...this.samples, { t: Date.now(), ...this.take() }]
  }

  private sample(): void {
    try {
      this.samples.push({ t: Date.now(), ...this.take() })
      if (this.samples.length > HISTORY_MAX_SAMPLES) this.samples.shift()
    } catch {
      // A stats read that fails now is just a gap in the chart.
    }
  }
}
