/**
 * Which stage a vehicle with room should host next (pure): the one the swarm
 * serves worst, i.e. the fewest eligible providers, then the slowest
 * measured service (mean ms per item), then the lowest index.
 */
export interface StageSupply { stage: number, providers: number, meanMsPerItem: number }

export function chooseStageToHost (supply: StageSupply[], held: Set<number>, tieBreak: (stage: number) => number = s => s): number | undefined {
  const options = supply.filter(s => !held.has(s.stage))
  if (options.length === 0) return undefined
  options.sort((a, b) => a.providers - b.providers || b.meanMsPerItem - a.meanMsPerItem || tieBreak(a.stage) - tieBreak(b.stage))
  return options[0].stage
}

/** A stable per-vehicle tie-break (FNV-1a of peer id and stage), so vehicles choosing at once spread out. */
export function spreadTieBreak (peer: string): (stage: number) => number {
  return (stage: number) => {
    let h = 0x811c9dc5
    for (const ch of `${peer}/${stage}`) { h ^= ch.charCodeAt(0); h = Math.imul(h, 0x01000193) >>> 0 }
    return h
  }
}
