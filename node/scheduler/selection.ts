/**
 * Which stage a vehicle with room should host next (pure): the one the swarm
 * serves worst, i.e. the fewest eligible providers, then the slowest
 * measured service (mean ms per item), then the lowest index.
 */
export interface StageSupply { stage: number, providers: number, meanMsPerItem: number }

export function chooseStageToHost (supply: StageSupply[], held: Set<number>): number | undefined {
  const options = supply.filter(s => !held.has(s.stage))
  if (options.length === 0) return undefined
  options.sort((a, b) => a.providers - b.providers || b.meanMsPerItem - a.meanMsPerItem || a.stage - b.stage)
  return options[0].stage
}
