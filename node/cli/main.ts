#!/usr/bin/env node
/**
 * The `fleetmesh` command.
 *
 * @example
 * ```sh
 * fleetmesh swarm                      # a local mesh: bootstrap + 4 vehicles, PP-OCRv4 rec in 3 stages
 * fleetmesh bootstrap --listen /ip4/127.0.0.1/tcp/4001
 * fleetmesh node --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3... --model out/manifest.json --stages 0
 * fleetmesh submit --model pp-ocrv4-rec --input samples/text-lines/01.png --bootstrap /ip4/...
 * ```
 */
import { bootstrapCommand } from './commands/bootstrap.ts'
import { nodeCommand } from './commands/node.ts'
import { shardCommand } from './commands/shard.ts'
import { submitCommand } from './commands/submit.ts'
import { statusCommand } from './commands/status.ts'
import { inspectCommand } from './commands/inspect.ts'
import { modelsCommand } from './commands/models.ts'
import { publishCommand } from './commands/publish.ts'
import { swarmCommand } from './commands/swarm.ts'
import { fleetCommand } from './commands/fleet.ts'
import { simCommand } from './commands/sim.ts'
import { runCommand, UsageError } from './command.ts'
import { failureMessage } from './format.ts'
import type { Command } from './command.ts'
import { setFlagsFromString } from 'node:v8'

// V8 grows the old generation's limit by little over a small live heap, and a peer that takes in
// a megabyte per job then spends a third of its CPU marking the same 37 MB again every 8 jobs
// (`--trace-gc`: 62-70 full collections in a 400-job swarm, 17-18 with this). The limit is
// computed at each collection, so setting the factor here, before any work, takes effect.
// Measured: the client's CPU per raw job 18.7-21.3 ms -> 12.3-13.4 (`fleetmesh swarm --json`,
// cpuMsPerJob); peak RSS of every process unchanged.
setFlagsFromString('--heap-growing-percent=200')

const COMMANDS: Command[] = [swarmCommand, fleetCommand, bootstrapCommand, nodeCommand, shardCommand, inspectCommand, publishCommand, submitCommand, statusCommand, modelsCommand, simCommand]

function usage (): string {
  return [
    'fleetmesh: a peer-to-peer inference mesh of parked, charging vehicles',
    '',
    'usage: fleetmesh <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map(c => `  ${c.name.padEnd(10)} ${c.summary}`),
    '',
    'Run `fleetmesh <command> --help` for its options. Exit codes: 0 ok, 1 failure, 2 usage error.'
  ].join('\n')
}

async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const c = COMMANDS.find(x => x.name === rest[0])
    console.log(c !== undefined ? (await import('./command.ts')).helpText(c) : usage())
    return 0
  }
  const command = COMMANDS.find(c => c.name === name)
  if (command === undefined) throw new UsageError(`unknown command "${name}"\n\n${usage()}`)
  return await runCommand(command, rest)
}

main(process.argv.slice(2)).then(code => {
  process.exitCode = code
  // libp2p and onnxruntime may keep handles open; the work is done
  setTimeout(() => process.exit(code), 200).unref()
}, (err: Error) => {
  if (err instanceof UsageError) {
    console.error(`fleetmesh: ${err.message}`)
    process.exit(2)
  }
  console.error(`fleetmesh: ${failureMessage(err)}`)
  if (process.env.DEBUG !== undefined) console.error(err.stack)
  process.exit(1)
})
