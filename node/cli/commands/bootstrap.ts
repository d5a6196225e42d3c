import { startBootstrap, DEFAULT_BOOTSTRAP_LISTEN } from '../../../bootstrap/bootstrap.ts'
import { ACCESS_OPTIONS, fleetAccess, untilSignal } from '../command.ts'
import type { Command } from '../command.ts'

export const bootstrapCommand: Command = {
  name: 'bootstrap',
  summary: 'Run a bootstrap peer: a DHT server with a stable identity that other peers dial first. It schedules nothing; with a delegated issuer certificate it enrolls vehicles.',
  usage: '--credentials <file> [--listen <multiaddr>] [--key <file>] [--json]',
  options: {
    listen: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'address to listen on (repeatable)', default: DEFAULT_BOOTSTRAP_LISTEN[0] },
    key: { type: 'string', arg: '<file>', description: 'identity key file, created on first start (fleetmesh fleet issue --key <file> makes one and its certificate)', default: '.fleetmesh/bootstrap.key' },
    peers: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'other bootstrap peers to join (repeatable)' },
    ...ACCESS_OPTIONS,
    json: { type: 'boolean', description: 'print one JSON line with the peer id and addresses' }
  },
  async run (o) {
    const access = await fleetAccess(o)
    const listen = Array.isArray(o.listen) ? o.listen : [String(o.listen)]
    const boot = await startBootstrap({ keyFile: String(o.key), listen, fleet: access.fleet, peers: (o.peers as string[] | undefined) ?? [], ...(access.credentials !== undefined ? { credentials: access.credentials } : {}) })
    const info = { type: 'listening', role: 'bootstrap', peer: boot.host.peerId.toString(), addrs: boot.addrs, issuer: boot.issuer !== undefined }
    process.send?.(info)
    if (o.json === true) console.log(JSON.stringify(info))
    else console.log(`bootstrap peer ${info.peer} (fleet ${access.fleet}${boot.issuer !== undefined ? ', enrolls vehicles' : ''}) listening on:\n${boot.addrs.map(a => `  ${a}`).join('\n')}\njoin with: fleetmesh node --bootstrap ${boot.addrs[0]} --credentials <file>`)
    await untilSignal()
    await boot.stop()
    return 0
  }
}
