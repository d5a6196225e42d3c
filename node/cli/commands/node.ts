import { VehicleAgent } from '../../agent.ts'
import type { AgentEvent } from '../../agent.ts'
import { FleetClient } from '../../client/client.ts'
import { Gateway } from '../../gateway/server.ts'
import { LIE_MODES, isLieMode } from '../../runtime/liar.ts'
import { DEFAULT_POLICY } from '../../vehicle/policy.ts'
import type { PolicyConfig } from '../../vehicle/policy.ts'
import { InvalidScheduleError, SimSource, UsageSourceError, sourceFromSpec } from '../../vehicle/sources.ts'
import { ACCESS_OPTIONS, BOOTSTRAP_OPTION, CLIENT_CHECK_OPTIONS, GATEWAY_OPTIONS, cellsOption, clientChecks, compressOption, UsageError, fleetAccess, gatewayTls, intOption, shortPeer, STAGE_PRIORITY_OPTION, stagePriorityOption, untilSignal } from '../command.ts'
import type { Command } from '../command.ts'
import { DEFAULT_CELL } from '../../../protocols/ids.ts'
import type { HostInit } from '../../host.ts'
import { LISTEN_ALL } from '../../network.ts'
import { eventLogger, parseLogOptions } from '../log.ts'

function describe (e: AgentEvent): string {
  switch (e.type) {
    case 'listening': return `vehicle ${e.peer} listening on ${e.addrs.join(' ')}`
    case 'shard': return `stage ${e.stage} shard ${e.cid.slice(-10)} (${(e.bytes / 1e6).toFixed(1)} MB) ${e.source === 'peer' ? 'fetched from the mesh, hash verified' : 'loaded from the local store'} in ${e.ms.toFixed(0)} ms`
    case 'serving': return `serving ${e.name} stage ${e.stage}${e.priority !== undefined ? ` (its thread: ${e.priority})` : ''}`
    case 'announced': return `heard of ${e.name}@${e.version} (${e.manifest.slice(-10)})`
    case 'chose': return `chose stage ${e.stage} (served by ${e.providers} other vehicle${e.providers === 1 ? '' : 's'}: the worst served)`
    case 'error': return `${e.slow === true ? 'slow' : 'error'}: ${e.message}`
    case 'eligible': return `eligible: taking work (${e.maxSessions} session${e.maxSessions === 1 ? '' : 's'} at once, ${Math.round(e.powerBudgetW)} W budget)`
    case 'ineligible': return `not eligible: ${e.reasons.join('; ')}; no new work, withdrawal published`
    case 'waiting': return `not eligible: ${e.reasons.join('; ')}`
    case 'departed': return `drained in ${Math.round(e.ms)} ms: ${e.finished} finished, ${e.handedOff} handed back${e.drained ? '' : ', some did not close in time'}`
  }
}

/** Parses `--policy key=value,...` options into policy overrides. */
export function parsePolicy (specs: string[]): Partial<PolicyConfig> {
  const out: Record<string, unknown> = {}
  for (const spec of specs.flatMap(s => s.split(','))) {
    const m = /^\s*(\w+)\s*=\s*(.+?)\s*$/.exec(spec)
    if (m === null || !(m[1] in DEFAULT_POLICY)) throw new UsageError(`--policy ${spec}: use key=value with a key from ${Object.keys(DEFAULT_POLICY).join(', ')}`)
    const [, key, value] = m
    if (key === 'allowedNetworks') {
      out[key] = value.split('+').map(v => v.trim())
    } else {
      const n = Number(value)
      if (!Number.isFinite(n) || n < 0) throw new UsageError(`--policy ${key} must be a non-negative number, got ${value}`)
      out[key] = n
    }
  }
  return out as Partial<PolicyConfig>
}

export const nodeCommand: Command = {
  name: 'node',
  summary: 'Run a vehicle node: join the fleet, fetch and serve model stages, advertise capacity.',
  usage: '--bootstrap <multiaddr> [--model <manifest-cid|manifest.json> --stages 0,1] [--vehicle <source>] [--data <dir>] [--json]',
  options: {
    bootstrap: BOOTSTRAP_OPTION,
    model: { type: 'string', multiple: true, arg: '<cid|file>', description: 'model to serve: a manifest CID (fetched from the mesh) or a manifest.json written by `fleetmesh shard`' },
    stages: { type: 'string', arg: '<list>', description: 'stage indexes to serve, e.g. 0,2 (default: all)' },
    'auto-stages': { type: 'string', arg: '<n>', description: 'instead of --stages: host n stages, choosing those the swarm serves worst' },
    room: { type: 'string', arg: '<n>', description: 'stages this vehicle may host across models published to the fleet (fleetmesh publish)', default: '0' },
    data: { type: 'string', arg: '<dir>', description: 'identity and shard store', default: '.fleetmesh/node' },
    listen: { type: 'string', multiple: true, arg: '<multiaddr>', description: 'address to listen on (repeatable; default: every interface, IPv4 and IPv6)', default: LISTEN_ALL.join(',') },
    relay: { type: 'string', arg: '<auto|on|off>', description: 'hold a reservation on a relay (a bootstrap peer) so the fleet can reach this car behind NAT; auto: when the bootstrap peers are on the internet', default: 'auto' },
    upnp: { type: 'boolean', description: 'ask the home router for a port mapping (UPnP), so the car is reachable without a relay' },
    ...ACCESS_OPTIONS,
    threads: { type: 'string', arg: '<n>', description: 'onnxruntime threads per stage session', default: '1' },
    'stage-priority': STAGE_PRIORITY_OPTION,
    vehicle: { type: 'string', arg: '<source>', description: 'vehicle state: always | json:<path|url> | sim:<schedule.json> | sim:random:<seed> | teslamate:mqtt://<broker>/<car id> | evcc:mqtt://<broker>/<loadpoint> | mqtt:mqtt://<broker>/?<field>=<topic>&...', default: 'always' },
    'sim-speed': { type: 'string', arg: '<x>', description: 'simulated seconds per second for sim: sources (default: the schedule\'s own, else 1)' },
    policy: { type: 'string', multiple: true, arg: '<k=v,...>', description: 'eligibility policy overrides, e.g. resumeSocPct=60,allowedNetworks=wifi+cellular' },
    cell: { type: 'string', arg: '<name>', description: 'the locality cell the car is parked in (a depot, a region, a geohash like u33db): it heartbeats there', default: 'default' },
    'drain-ms': { type: 'string', arg: '<ms>', description: 'bound for finishing in-flight work when the car must go', default: '10000' },
    http: { type: 'string', arg: '<host:port>', description: 'open an Open Inference Protocol HTTP gateway here (off by default), e.g. 127.0.0.1:8080; in a fleet with members it takes bearer tokens (fleetmesh fleet token)' },
    ...GATEWAY_OPTIONS,
    ...CLIENT_CHECK_OPTIONS,
    json: { type: 'boolean', description: 'print every event as a JSON line, as it is (for programs; --log-format json for log shippers)' },
    'log-level': { type: 'string', arg: '<level>', description: 'error, warn, info or debug (debug also logs fleetmesh:* internals to stderr)', default: 'info' },
    'log-format': { type: 'string', arg: '<format>', description: 'text, or json: one JSON object a line with time and level (journald, log shippers)', default: 'text' },
    lie: { type: 'string', arg: '<mode>', description: `testing only: lie about stage outputs (${LIE_MODES.join(', ')}) so the fleet's result checks can be tried` }
  },
  async run (o) {
    const bootstrap = (o.bootstrap as string[] | undefined) ?? []
    if (bootstrap.length === 0) throw new UsageError('--bootstrap is required (the address `fleetmesh bootstrap` printed)')
    const stages = typeof o.stages === 'string' ? o.stages.split(',').map(s => intOption(s.trim(), 'stages', 0, 1024)) : undefined
    if (stages !== undefined && o['auto-stages'] !== undefined) throw new UsageError('use --stages or --auto-stages, not both')
    const autoStages = o['auto-stages'] !== undefined ? intOption(o['auto-stages'], 'auto-stages', 1, 1024) : undefined
    const stagePriority = stagePriorityOption(o)
    const models = ((o.model as string[] | undefined) ?? []).map(model => ({ model, ...(stages !== undefined ? { stages } : {}), ...(autoStages !== undefined ? { autoStages } : {}) }))
    const log = parseLogOptions(o)
    const logEvent = eventLogger(log.level, log.format, describe)
    const print = (e: AgentEvent): void => {
      process.send?.(e)
      if (o.json === true) console.log(JSON.stringify(e))
      else logEvent(e)
    }
    const speed = o['sim-speed'] !== undefined ? Number(o['sim-speed']) : undefined
    if (speed !== undefined && !(speed > 0)) throw new UsageError('--sim-speed must be a positive number')
    // a vehicle's gateway shares its node, which validates its own cell's gossip only
    if (o.near !== undefined || o.cells !== undefined) throw new UsageError('a vehicle\'s gateway routes in the vehicle\'s cell (--cell); --near and --cells are for clients (submit, swarm)')
    let vehicle
    try { vehicle = await sourceFromSpec(String(o.vehicle), speed !== undefined ? { speed } : {}) } catch (err) {
      if (err instanceof UsageSourceError || err instanceof InvalidScheduleError) throw new UsageError(err.message)
      throw err
    }
    const policy = parsePolicy((o.policy as string[] | undefined) ?? [])
    // a swarm's parent starts simulated days when its mesh is ready
    if (vehicle instanceof SimSource && process.send !== undefined) {
      process.on('message', (m: any) => { if (m?.type === 'sim-start' && Number.isFinite(m.wallStart)) vehicle.setWallStart(m.wallStart) })
    }
    if (o.lie !== undefined && !isLieMode(o.lie)) throw new UsageError(`--lie must be one of ${LIE_MODES.join(', ')}, got ${String(o.lie)}`)
    const access = await fleetAccess(o)
    const stop = untilSignal()
    const agent = await VehicleAgent.create({
      ...(access.credentials !== undefined ? { credentials: access.credentials } : {}),
      room: intOption(o.room, 'room', 0, 1024),
      vehicle,
      policy,
      drainMs: intOption(o['drain-ms'], 'drain-ms', 0, 600_000),
      bootstrap,
      dataDir: String(o.data),
      fleet: access.fleet,
      listen: Array.isArray(o.listen) ? o.listen : [String(o.listen)],
      network: networkOptions(o),
      models,
      cell: cellsOption(o, 'cell')?.[0] ?? DEFAULT_CELL,
      intraOpThreads: intOption(o.threads, 'threads', 1, 64),
      stagePriority,
      compress: compressOption(o),
      ...(isLieMode(o.lie) ? { lie: o.lie } : {})
    })
    agent.onEvent(print)
    // Ctrl-C while it enrolls leaves at once
    const leaving = new AbortController()
    void stop.then(() => { leaving.abort() })
    try {
      await agent.start({ signal: leaving.signal })
    } catch (err) {
      if (!leaving.signal.aborted) throw err
      if (o.json !== true) console.log('left before it had a certificate')
      return 0
    }
    let gateway: Gateway | undefined
    if (typeof o.http === 'string') {
      const client = await FleetClient.connect({ bootstrap, fleet: access.fleet, shared: agent.node, ...clientChecks(o), cells: [cellsOption(o, 'cell')?.[0] ?? DEFAULT_CELL] })
      const tls = await gatewayTls(o)
      gateway = new Gateway({ client, listen: o.http, ...(tls !== undefined ? { tls } : {}) })
      const url = await gateway.start()
      process.send?.({ type: 'gateway', url })
      console.log(o.json === true ? JSON.stringify({ type: 'gateway', url }) : `Open Inference Protocol gateway on ${url}/v2`)
    }
    if (o.json !== true) console.log(`vehicle ${shortPeer(agent.peerId)} ready; Ctrl-C to leave`)
    await stop
    await gateway?.stop()
    await agent.stop()
    return 0
  }
}

/** `--relay` and `--upnp`: overrides of what the bootstrap addresses imply (node/network.ts). */
function networkOptions (o: Record<string, unknown>): Pick<HostInit, 'relayReservations' | 'upnp'> {
  const relay = String(o.relay)
  if (!['auto', 'on', 'off'].includes(relay)) throw new UsageError(`--relay must be auto, on or off, got ${relay}`)
  return { ...(relay !== 'auto' ? { relayReservations: relay === 'on' } : {}), ...(o.upnp === true ? { upnp: true } : {}) }
}
