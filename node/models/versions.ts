/**
 * Model version order, the one rule every part uses: numeric when both
 * versions are numbers, else lexical. A plain model name means its latest version.
 */
export function compareVersions (a: string, b: string): number {
  const x = Number(a); const y = Number(b)
  return Number.isFinite(x) && Number.isFinite(y) ? x - y : a.localeCompare(b)
}

/** The latest of some versions (undefined for none). */
export function latestVersion (versions: Iterable<string>): string | undefined {
  let best: string | undefined
  for (const v of versions) if (best === undefined || compareVersions(v, best) > 0) best = v
  return best
}

/** For `name@version` keys: each name's latest version. */
export function latestVersions (keys: Iterable<string>): Map<string, string> {
  const byName = new Map<string, string[]>()
  for (const k of keys) {
    const at = k.lastIndexOf('@')
    if (at < 0) continue
    const name = k.slice(0, at)
    byName.set(name, [...(byName.get(name) ?? []), k.slice(at + 1)])
  }
  return new Map([...byName].map(([name, versions]) => [name, latestVersion(versions)!]))
}
