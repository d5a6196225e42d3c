/**
 * How long a test waits for the swarm to reach a state it must reach (every
 * stage served, a withdrawal heard). Passing waits end as soon as the state
 * holds, so this costs nothing; it is generous because `npm test` runs two
 * files at once on a shared 2-core machine, where loading shards and
 * sessions takes several times as long as alone. Speed is measured in bench/.
 */
export const SETTLE_MS = 60_000

/**
 * Resolves with what `what()` returns once it is neither undefined nor
 * false, checking every 100 ms (`what` may be async); rejects naming `label`
 * after `ms`.
 */
export async function until<T> (what: () => T | undefined | false | Promise<T | undefined | false>, ms: number, label: string): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await what()
    if (v !== undefined && v !== false) return v
    if (Date.now() > end) throw new Error(`${label} not within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
