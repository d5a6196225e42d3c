import { BOOTSTRAP_OPTION, ACCESS_OPTIONS, intOption, withFleetClient } from '../command.ts'
import type { Command } from '../command.ts'
import { table } from '../format.ts'

export const modelsCommand: Command = {
  name: 'models',
  summary: 'List the models the fleet serves (published ones, then manifests vehicles serve that no publisher named): versions, stages and how many vehicles serve each stage.',
  usage: '--bootstrap <multiaddr> [--wait <ms>] [--json]',
  options: {
    bootstrap: BOOTSTRAP_OPTION,
    ...ACCESS_OPTIONS,
    wait: { type: 'string', arg: '<ms>', description: 'how long to listen for vehicles', default: '3000' },
    json: { type: 'boolean', description: 'print one JSON object' }
  },
  async run (o) {
    return await withFleetClient(o, async client => {
      const models = await client.models({ signal: AbortSignal.timeout(intOption(o.wait, 'wait', 100, 120_000)) })
      if (o.json === true) { console.log(JSON.stringify({ models })); return 0 }
      if (models.length === 0) { console.log('no models served by any vehicle heard'); return 0 }
      console.log(table([['model', 'version', 'published', 'stages', 'vehicles per stage', 'ready', 'manifest'],
        ...models.map(m => [m.name, m.version, m.published ? 'yes' : 'no', String(m.stages), m.vehiclesPerStage.join(' / '), m.ready ? 'yes' : 'no', m.manifest])]))
      if (models.some(m => !m.published)) console.log('an unpublished model is reached by its manifest CID (submit --model <manifest>); its name and version are the manifest\'s own')
      return 0
    })
  }
}
