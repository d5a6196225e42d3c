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
