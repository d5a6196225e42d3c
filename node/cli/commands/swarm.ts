/**
 * `fleetmesh swarm`: parses the options, runs node/swarm (a whole mesh on
 * this machine) and prints what it reports; Ctrl-C stops it.
 */
import { DEFAULT_MODEL, modelSource } from '../../models/catalog.ts'
import { DEFAULT_FLEET } from '../../../protocols/ids.ts'
import { runSwarm } from '../../swarm/run.ts'
import { PROCESS_LIMIT } from '../../swarm/mesh.ts'
import type { SwarmRunOptions } from '../../swarm/run.ts'
import { CLIENT_CHECK_OPTIONS, FLEET_OPTION, GATEWAY_OPTIONS, HAND_OFF_OPTION, UsageError, checkName, clientChecks, gatewayTls, handOffOption, intOption, STAGE_PRIORITY_OPTION, stagePriorityOption } from '../command.ts'
import { placeStages } from '../../scheduler/placement.ts'
import type { Command } from '../command.ts'
import { manifestTable } from '../format.ts'

export const swarmCommand: Command = {
  name: 'swarm',
  summary: 'Start a local mesh (bootstrap + vehicles as separate processes), shard a model across it, run jobs, show what happened.',
  usage: '[--nodes 4] [--stages 3] [--jobs 10] [--model pp-ocrv4-rec|pp-ocrv4-det|<file.onnx>] [--batch | --chaos] [--scenario day [--duration 60]] [--verify sample] [--liars 0] [--json]',
  options: {
    nodes: { type: 'string', arg: '<n>', description: 'vehicles (default: 4, or 6 with --scenario day, --chaos or --liars, so that every stage has three holders); each a process of its own up to 64, past that 10 to a process (up to 256)' },
    stages: { type: 'string', arg: '<k>', description: 'pipeline stages', default: '3' },
    jobs: { type: 'string', arg: '<n>', description: 'jobs to run (with --scenario day: jobs run until the day ends)', default: '10' },
    batch: { type: 'boolean', description: 'run the jobs as one batch job (announcement, offers, leases, windowed pipelines)' },
    chaos: { type: 'boolean', description: 'run the jobs as one batch (announce, offers, leases) while vehicles are killed with SIGKILL every few seconds and most are restarted' },
    'kill-every': { type: 'string', arg: '<s>', description: 'with --chaos: seconds between kills', default: '3' },
    'micro-batch': { type: 'string', arg: '<n|auto>', description: 'with --batch/--chaos: items run together; auto decides from the vehicles\' batched timings and what the first 8 jobs cost beside their stages', default: 'auto' },
    scenario: { type: 'string', arg: '<name>', description: 'none, or day: vehicles follow simulated commuter days (leave, come back) while jobs keep running', default: 'none' },
    duration: { type: 'string', arg: '<s>', description: 'with --scenario day: wall-clock seconds one simulated day takes', default: '60' },
    concurrency: { type: 'string', arg: '<n>', description: 'jobs in flight at once', default: '2' },
    model: { type: 'string', arg: '<model>', description: 'built-in model name, or a path to an .onnx file', default: DEFAULT_MODEL },
    'hand-off': HAND_OFF_OPTION,
    // no default here: it depends on the scenario (runSwarm)
    'stage-priority': { ...STAGE_PRIORITY_OPTION, default: undefined, description: `${STAGE_PRIORITY_OPTION.description} (default: idle; normal with --chaos, whose restarting vehicles would otherwise take the cores from the others' stages, and when less than half a core is idle at the start, where idle threads would get no CPU)` },
    fleet: FLEET_OPTION,
    http: { type: 'string', arg: '<host:port>', description: 'open an Open Inference Protocol gateway on the client peer, e.g. 127.0.0.1:8080' },
    ...GATEWAY_OPTIONS,
    keep: { type: 'boolean', description: 'keep the swarm running after the jobs, until Ctrl-C (use with --http)' },
    'idle-s': { type: 'string', arg: '<s>', description: 'before the jobs, measure the idle control traffic per vehicle for this long (kernel byte counts of every TCP socket; reported as controlBytesPerNodePerS)', default: '0' },
    ...CLIENT_CHECK_OPTIONS,
    'check-rate': { type: 'string', arg: '<p>', description: 'with --verify sample: the lowest share of a proven vehicle\'s stage runs still checked', default: '0.02' },
    liars: { type: 'string', arg: '<n>', description: 'make the last n vehicles lie about their outputs (zeros, perturbations or forged tensors, varying per job) and report wrongDelivered, caught and verifyOverhead', default: '0' },
    trace: { type: 'boolean', description: 'with --concurrency 1: time each job\'s path through the processes (write, arrival, the session\'s thread, hand-off, result, check) and show the median of each step' },
    json: { type: 'boolean', description: 'progress to stderr; the last line on stdout is the JSON summary' }
  },
  details: 'Every process listens on 127.0.0.1 only. Ctrl-C stops the swarm and every process it started.',
  async run (o) {
    const day = o.scenario === 'day'
    if (o.scenario !== 'none' && !day) throw new UsageError(`--scenario must be none or day, got ${String(o.scenario)}`)
    const chaos = o.chaos === true
    if ((chaos || o.batch === true) && day) throw new UsageError('--batch/--chaos and --scenario day do not combine yet')
    const json = o.json === true
    const checks = clientChecks(o)
    const liars = intOption(o.liars, 'liars', 0, 63)
    const checkRate = Number(o['check-rate'])
    if (!(checkRate >= 0 && checkRate <= 1)) throw new UsageError(`--check-rate must be a number in 0..1, got ${String(o['check-rate'])}`)
    const abort = new AbortController()
    const opts: SwarmRunOptions = {
      model: modelSource(String(o.model)),
      nodes: intOption(o.nodes ?? (day || chaos || liars > 0 ? '6' : '4'), 'nodes', 1, 256),
      stages: intOption(o.stages, 'stages', 1, 32),
      jobs: intOption(o.jobs, 'jobs', 1, 100_000),
      concurrency: intOption(o.concurrency, 'concurrency', 1, 64),
      // the swarm's own authority certifies its peers: a named fleet, else dev (it was the string 'undefined')
      fleet: typeof o.fleet === 'string' ? checkName(o.fleet) : DEFAULT_FLEET,
      scenario: day ? 'day' : chaos ? 'chaos' : o.batch === true ? 'batch' : 'none',
      durationS: intOption(o.duration, 'duration', 5, 24 * 3600),
      killEveryMs: intOption(o['kill-every'], 'kill-every', 1, 3600) * 1000,
      microBatch: o['micro-batch'] === 'auto' ? 'auto' : intOption(o['micro-batch'], 'micro-batch', 1, 64),
      ...(typeof o.http === 'string' ? { http: o.http } : {}),
      ...(await gatewayTls(o).then(tls => tls !== undefined ? { tls } : {})),
      keep: o.keep === true,
      idleS: intOption(o['idle-s'], 'idle-s', 0, 3600),
      verify: checks.verify ?? 'sample',
      ...(checks.localStages !== undefined ? { localStages: checks.localStages } : {}),
      ...(checks.output !== undefined ? { output: checks.output } : {}),
      ...(checks.coalesce !== undefined ? { coalesce: checks.coalesce } : {}),
      ...(checks.compress !== 'auto' ? { compress: checks.compress } : {}),
      ...(handOffOption(o) !== undefined ? { handOff: handOffOption(o) } : {}),
      ...(o['stage-priority'] !== undefined ? { stagePriority: stagePriorityOption(o) } : {}),
      ...(checks.cells !== undefined ? { cells: checks.cells } : {}),
      liars,
      checkRate,
      trace: o.trace === true,
      signal: abort.signal
    }
    if (opts.nodes > PROCESS_LIMIT && (day || chaos || liars > 0)) throw new UsageError(`past ${PROCESS_LIMIT} vehicles they share processes (10 each), which --scenario day, --chaos and --liars do not support yet`)
    if (o.trace === true && (opts.scenario !== 'none' || opts.concurrency !== 1)) throw new UsageError('--trace follows one job at a time through the processes: use it with --concurrency 1, without --batch, --chaos or --scenario')
    if (liars >= opts.nodes) throw new UsageError(`--liars ${liars} needs more than ${liars} vehicles (--nodes ${opts.nodes})`)
    try { placeStages(opts.nodes, opts.stages) } catch (err) { throw new UsageError(`--nodes ${opts.nodes} --stages ${opts.stages}: ${(err as Error).message}`) }
    const T0 = performance.now()
    const out = (line: string): void => { (json ? process.stderr : process.stdout).write(line + '\n') }
    const say = (tag: string, msg: string): void => { out(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(5)}s] ${tag.padEnd(6)} ${msg}`) }
    const onSignal = (): void => { abort.abort(new Error('interrupted')) }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    try {
      const { summary, ok } = await runSwarm(opts, {
        say,
        out,
        onSharded: (sharded) => { if (!json) out(manifestTable(sharded.manifest).split('\n').map(l => `         ${l}`).join('\n')) }
      })
      if (json) console.log(JSON.stringify(summary))
      return ok ? 0 : 1
    } catch (err) {
      // runSwarm said what failed and where the logs are
      if (!abort.signal.aborted) console.error(`fleetmesh: ${(err as Error).message}`)
      return abort.signal.aborted ? 130 : 1
    } finally {
      process.removeListener('SIGINT', onSignal)
      process.removeListener('SIGTERM', onSignal)
    }
  }
}
