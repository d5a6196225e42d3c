import { startBootstrap, DEFAULT_BOOTSTRAP_LISTEN } from '../../../bootstrap/bootstrap.ts'
import { FLEET_OPTION, untilSignal } from '../command.ts'
import type { Command } from '../command.ts'

export const bootstrapCommand: Command = {
  name: 'bootstrap',
  summary: 'Run a bootstrap peer: a DHT server with a stable identity that other peers dial first. It schedules nothing.',
  usage: '[--listen <multiaddr>] [--key <file>] [--fleet <name>] [--json]',
  options: {
    listen: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'address to listen on (repeatable)', default: DEFAULT_BOOTSTRAP_LISTEN[0] },
    key: { type: 'string', arg: '<file>', description: 'identity key file, created on first start', default: '.fleetmesh/bootstrap.key' },
    fleet: FLEET_OPTION,
    json: { type: 'boolean', description: 'print one JSON line with the peer id and addresses' }
  },
  async run (o) {
    const listen = Array.isArray(o.listen) ? o.listen : [String(o.listen)]
    const { host, addrs } = await startBootstrap({ keyFile: String(o.key), listen, fleet: String(o.fleet) })
    const info = { type: 'listening', role: 'bootstrap', peer: host.peerId.toString(), addrs }
    process.send?.(info)
    if (o.json === true) console.log(JSON.stringify(info))
    else console.log(`bootstrap peer ${info.peer} (fleet ${String(o.fleet)}) listening on:\n${addrs.map(a => `  ${a}`).join('\n')}\njoin with: fleetmesh node --bootstrap ${addrs[0]}`)
    await untilSignal()
    await host.stop()
    return 0
  }
}
