// Models whose workers have all left a short while ago. A request for one gets 503 with Retry-After (a worker
// restarting, or a network blip: the openai SDK and the client node retry a 503) rather than 404 model_not_found,
// which tells an app the model does not exist and counts against the client's error budget like a bad request.

/** How long after its last worker left a model still counts as served: longer than any restart of a worker. */
export const RECENT_MODEL_MS = 10 * 60_000
/** Models remembered at most; the stalest go first. Names are workers' model ids, so this bounds a worker's churn too. */
export const MAX_RECENT_MODELS = 1000
/** Retry-After of a request for a model none of whose workers is connected right now. */
export const MODEL_GONE_RETRY_AFTER_SEC = 2

export class RecentModels {
  private readonly leftAt = new Map<string, number>()

  constructor(private readonly now: () => number = Date.now) {}

  /** The last connected worker of `model` is gone (or one of them is: that is enough). */
  workerLeft(model: string): void {
    this.leftAt.delete(model)
    this.leftAt.set(model, this.now())
    while (this.leftAt.size > MAX_RECENT_MODELS) this.leftAt.delete(this.leftAt.keys().next().value!)
  }

  /** Forgets `model`: its workers were refused (distrusted, or the root revoked it), so it is not coming back soon. */
  forget(model: string): void {
    this.leftAt.delete(model)
  }

  /** Seconds since a worker of `model` left, if within RECENT_MODEL_MS; else undefined. */
  secondsSinceLeft(model: string): number | undefined {
    const at = this.leftAt.get(model)
    if (at === undefined) return undefined
    const ago = this.now() - at
    if (ago > RECENT_MODEL_MS) {
      this.leftAt.delete(model)
      return undefined
    }
    return Math.max(0, Math.round(ago / 1000))
  }
}
