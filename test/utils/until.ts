/** Resolves once `what()` holds, checking every 100 ms; rejects naming `label` after `ms`. */
export async function until (what: () => boolean, ms: number, label: string): Promise<void> {
  const end = Date.now() + ms
  while (!what()) {
    if (Date.now() > end) throw new Error(`${label} not within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
