import { startBootstrap, DEFAULT_BOOTSTRAP_LISTEN } from '../../../bootstrap/bootstrap.ts'
import { DEFAULT_RELAY_LIMITS } from '../../host.ts'
import { MiB } from '../../../protocols/limits.ts'
import { ACCESS_OPTIONS, UsageError, cellsOption, fleetAccess, untilSignal } from '../command.ts'
import type { Command } from '../command.ts'

export const bootstrapCommand: Command = {
  name: 'bootstrap',
  summary: 'Run a bootstrap peer: a DHT server with a stable identity that other peers dial first. It schedules nothing; with a delegated issuer certificate it enrolls vehicles.',
  usage: '--credentials <file> [--listen <multiaddr>] [--key <file>] [--relay-reservations 128] [--relay-minutes 10] [--relay-mib 256] [--json]',
  details: 'It also relays for members behind NAT (circuit relay v2): control traffic always, activations and shards within the --relay-* limits per relayed connection (a connection that reaches one is closed and dialled again). By default it listens on every interface, IPv4 and IPv6, port 4001.',
  options: {
    listen: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'address to listen on (repeatable)', default: DEFAULT_BOOTSTRAP_LISTEN.join(',') },
    'relay-reservations': { type: 'string', arg: '<n>', description: 'members behind NAT it holds relay reservations for at once', default: String(DEFAULT_RELAY_LIMITS.maxReservations) },
    'relay-minutes': { type: 'string', arg: '<m>', description: 'longest life of one relayed connection', default: String(DEFAULT_RELAY_LIMITS.durationMs / 60_000) },
    'relay-mib': { type: 'string', arg: '<MiB>', description: 'most data one relayed connection carries', default: String(DEFAULT_RELAY_LIMITS.dataBytes / MiB) },
    key: { type: 'string', arg: '<file>', description: 'identity key file, created on first start (fleetmesh fleet issue --key <file> makes one and its certificate)', default: '.fleetmesh/bootstrap.key' },
    peers: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'other bootstrap peers to join (repeatable)' },
    cells: { type: 'string', arg: '<list>', description: 'locality cells whose capacity gossip it carries (default: default)' },
    ...ACCESS_OPTIONS,
    json: { type: 'boolean', description: 'print one JSON line with the peer id and addresses' }
  },
  async run (o) {
    const access = await fleetAccess(o)
    const listen = Array.isArray(o.listen) ? o.listen : [String(o.listen)]
    const relay = {
      maxReservations: positiveNumber(o['relay-reservations'], '--relay-reservations'),
      durationMs: Math.round(positiveNumber(o['relay-minutes'], '--relay-minutes') * 60_000),
      dataBytes: Math.round(positiveNumber(o['relay-mib'], '--relay-mib') * MiB)
    }
    const boot = await startBootstrap({ keyFile: String(o.key), listen, relay, fleet: access.fleet, peers: (o.peers as string[] | undefined) ?? [], ...(cellsOption(o) !== undefined ? { cells: cellsOption(o) } : {}), ...(access.credentials !== undefined ? { credentials: access.credentials } : {}) })
    const info = { type: 'listening', role: 'bootstrap', peer: boot.host.peerId.toString(), addrs: boot.addrs, issuer: boot.issuer !== undefined }
    process.send?.(info)
    if (o.json === true) console.log(JSON.stringify(info))
    else console.log(`bootstrap peer ${info.peer} (fleet ${access.fleet}${boot.issuer !== undefined ? ', enrolls vehicles' : ''}) listening on:\n${boot.addrs.map(a => `  ${a}`).join('\n')}\njoin with: fleetmesh node --bootstrap ${boot.addrs[0]} --credentials <file>`)
    await untilSignal()
    await boot.stop()
    return 0
  }
}

function positiveNumber (v: unknown, flag: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number, not "${String(v)}"`)
  return n
}
