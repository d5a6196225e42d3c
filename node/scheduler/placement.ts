/**
 * Initial placement of stages on a local swarm's vehicles (pure).
 *
 * Every stage gets at least one vehicle, no vehicle gets every stage (when
 * there are at least two stages), and vehicles beyond the first K take one
 * stage (two when K > 2) so stages have replicas and jobs can take several routes.
 */
export function placeStages (vehicles: number, stages: number): number[][] {
  if (!Number.isInteger(vehicles) || vehicles < 1) throw new RangeError(`need at least one vehicle, got ${vehicles}`)
  if (!Number.isInteger(stages) || stages < 1) throw new RangeError(`need at least one stage, got ${stages}`)
  if (stages >= 2 && vehicles < 2) throw new RangeError(`${stages} stages need at least 2 vehicles so that no vehicle holds every stage`)
  const plan: number[][] = Array.from({ length: vehicles }, () => [])
  for (let s = 0; s < stages; s++) plan[s % vehicles].push(s)
  for (let v = stages; v < vehicles; v++) {
    plan[v].push(v % stages)
    if (stages > 2) plan[v].push((v + 1) % stages)
  }
  for (const p of plan) p.sort((a, b) => a - b)
  return plan
}
