import { FleetClient } from '../../client/client.ts'
import { inputsFromFile, textOf } from '../../client/inputs.ts'
import { DEFAULT_FLEET } from '../../../protocols/ids.ts'
import { tensorToOip } from '../../../protocols/oip.ts'
import { intOption, requireOption, shortPeer, UsageError } from '../command.ts'
import type { Command } from '../command.ts'
import { tensorSummary } from '../format.ts'

export const submitCommand: Command = {
  name: 'submit',
  summary: 'Run one job on the mesh from this peer and print the result.',
  usage: '--model <name|manifest-cid|manifest.json> --input <image.png|tensors.json> --bootstrap <multiaddr> [--json]',
  options: {
    model: { type: 'string', arg: '<model>', description: 'model name (as vehicles announce it), manifest CID or manifest.json' },
    input: { type: 'string', arg: '<file>', description: 'a .png for built-in image models, or Open Inference Protocol JSON tensors ({"inputs":[{"name","shape","datatype","data"}]})' },
    bootstrap: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'bootstrap peer address (repeatable)' },
    fleet: { type: 'string', arg: '<name>', description: 'fleet name', default: DEFAULT_FLEET },
    timeout: { type: 'string', arg: '<ms>', description: 'give up after this long', default: '60000' },
    json: { type: 'boolean', description: 'print the result as one JSON object' }
  },
  async run (o) {
    const bootstrap = (o.bootstrap as string[] | undefined) ?? []
    if (bootstrap.length === 0) throw new UsageError('--bootstrap is required')
    const model = requireOption(o.model, 'model')
    const input = requireOption(o.input, 'input')
    const timeoutMs = intOption(o.timeout, 'timeout', 100, 3_600_000)
    const client = await FleetClient.connect({ bootstrap, fleet: String(o.fleet) })
    try {
      const resolved = await client.resolve(model, Math.min(timeoutMs, 15_000))
      const inputs = await inputsFromFile(resolved.manifest, input)
      const r = await client.infer(resolved, inputs, { timeoutMs })
      const text = textOf(resolved.manifest, r.outputs)
      if (o.json === true) {
        console.log(JSON.stringify({
          model: resolved.manifest.name,
          manifest: resolved.cid,
          ...(text !== undefined ? { text: text.text, confidence: text.confidence } : { outputs: r.outputs.map(tensorToOip) }),
          route: r.route,
          hops: r.hops,
          ms: Math.round(r.ms * 10) / 10,
          attempts: r.attempts
        }))
      } else {
        if (text !== undefined) console.log(`text: ${JSON.stringify(text.text)} (confidence ${text.confidence.toFixed(3)})`)
        else for (const t of r.outputs) console.log(tensorSummary(t))
        console.log(`route: ${r.route.map(shortPeer).join(' -> ')}  ${r.ms.toFixed(1)} ms  (stage ms: ${r.hops.map(h => h.ms.toFixed(1)).join(' / ')})${r.attempts > 1 ? `  after ${r.attempts} attempts` : ''}`)
      }
      return 0
    } finally {
      await client.close()
    }
  }
}
