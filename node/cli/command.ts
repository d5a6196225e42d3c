/**
 * A tiny command framework: each command declares its options once (with
 * descriptions and defaults), and gets parsing, `--help` and usage errors.
 * Exit codes: 0 ok, 1 failure, 2 usage error.
 */
import type { Tensor } from '../../protocols/tensor.ts'
import { sampleInputs } from '../models/catalog.ts'
import type { ModelSource } from '../models/catalog.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { parseOutputMode } from '../models/output-modes.ts'
import { existsSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { FleetClient } from '../client/client.ts'
import { parseLocalStages } from '../client/local-stages.ts'
import { VERIFY_MODES, isVerifyMode } from '../client/verifier.ts'
import type { VerifyMode } from '../client/verifier.ts'
import { DEFAULT_FLEET, checkCellName, checkFleetName } from '../../protocols/ids.ts'
import { COMPRESS_MODES } from '../../protocols/compression.ts'
import type { CompressMode } from '../../protocols/compression.ts'
import { loadCredentials } from '../membership/credentials.ts'
import type { Credentials } from '../membership/credentials.ts'
import { parseArgs } from 'node:util'
import { cellsNear } from '../capacity/geohash.ts'
import { DEFAULT_STAGE_PRIORITY, STAGE_PRIORITIES, isStagePriority } from '../runtime/thread-priority.ts'
import type { StagePriority } from '../runtime/thread-priority.ts'

export class UsageError extends Error {
  readonly name = 'UsageError'
}

export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  description: string
  default?: string | boolean
  multiple?: boolean
  /** Placeholder shown in help, e.g. <multiaddr>. */
  arg?: string
}

export interface Command {
  name: string
  summary: string
  usage: string
  options: Record<string, OptionSpec>
  /** Extra help text after the options. */
  details?: string
  run: (opts: Record<string, string | boolean | string[] | undefined>, positionals: string[]) => Promise<number>
}

export function helpText (c: Command): string {
  const lines = [`${c.summary}`, '', `usage: fleetmesh ${c.name} ${c.usage}`, '', 'options:']
  const all: Record<string, OptionSpec> = { ...c.options, config: { type: 'string', arg: '<file>', description: 'config file (default: $FLEETMESH_CONFIG, else ./fleetmesh.json if present)' }, help: { type: 'boolean', short: 'h', description: 'show this help' } }
  for (const [name, o] of Object.entries(all)) {
    const flag = `${o.short !== undefined ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.arg ?? '<value>'}` : ''}`
    const def = o.default !== undefined && o.default !== false ? ` (default: ${String(o.default)})` : ''
    lines.push(`  ${flag.padEnd(30)} ${o.description}${def}`)
  }
  if (c.details !== undefined) lines.push('', c.details)
  lines.push('', 'Settings: a flag wins over $FLEETMESH_<OPTION> (e.g. FLEETMESH_BOOTSTRAP, comma-separated lists), which wins over the config file ("' + c.name + '" section, then top level), which wins over the default.')
  return lines.join('\n')
}

/** Where a command's settings may come from, highest precedence first. */
export interface ConfigSources {
  env?: NodeJS.ProcessEnv
  /** Parsed config file: top-level keys for every command, `{ "<command>": { ... } }` for one. */
  file?: Record<string, unknown>
}

/** `FLEETMESH_DRAIN_MS` for option `drain-ms`. */
export function envName (option: string): string { return `FLEETMESH_${option.toUpperCase().replace(/-/g, '_')}` }

/** Loads the config file: `--config`, else $FLEETMESH_CONFIG, else ./fleetmesh.json when it exists. */
export function loadConfigFile (explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> | undefined {
  const path = explicit ?? env.FLEETMESH_CONFIG ?? (existsSync('fleetmesh.json') ? 'fleetmesh.json' : undefined)
  if (path === undefined) return undefined
  let doc: unknown
  try { doc = JSON.parse(readFileSync(path, 'utf8')) } catch (err) {
    throw new UsageError(`config file ${path}: ${(err as Error).message}`)
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`config file ${path}: must be a JSON object`)
  return doc as Record<string, unknown>
}

/**
 * One option's value: the flag, else `FLEETMESH_<NAME>`, else the config
 * file's command section, else its top level, else the default.
 */
export function resolveOption (command: string, name: string, o: OptionSpec, flag: string | boolean | string[] | undefined, src: ConfigSources): string | boolean | string[] | undefined {
  if (flag !== undefined) return flag
  const fromEnv = src.env?.[envName(name)]
  const section = src.file?.[command]
  const fromFile = (section !== null && typeof section === 'object' ? (section as Record<string, unknown>)[name] : undefined) ?? src.file?.[name]
  const raw = fromEnv ?? fromFile ?? o.default
  if (raw === undefined) return undefined
  if (o.type === 'boolean') return raw === true || raw === '1' || raw === 'true'
  if (o.multiple === true) return Array.isArray(raw) ? raw.map(String) : String(raw).split(',').map(x => x.trim()).filter(x => x !== '')
  if (typeof raw === 'object') throw new UsageError(`setting ${name} must be a single value`)
  return String(raw)
}

export async function runCommand (c: Command, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const options: Record<string, { type: 'string' | 'boolean', short?: string, multiple?: boolean }> = { help: { type: 'boolean', short: 'h' }, config: { type: 'string' } }
  for (const [name, o] of Object.entries(c.options)) {
    options[name] = { type: o.type, ...(o.short !== undefined ? { short: o.short } : {}), ...(o.multiple === true ? { multiple: true } : {}) }
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(`${(err as Error).message.replace(/\. To specify a positional.*$/s, '')}\n\n${helpText(c)}`)
  }
  if (parsed.values.help === true) { console.log(helpText(c)); return 0 }
  const flags = parsed.values as Record<string, string | boolean | string[] | undefined>
  const file = loadConfigFile(typeof flags.config === 'string' ? flags.config : undefined, env)
  const values: Record<string, string | boolean | string[] | undefined> = {}
  for (const [name, o] of Object.entries(c.options)) values[name] = resolveOption(c.name, name, o, flags[name], { env, ...(file !== undefined ? { file } : {}) })
  return await c.run(values, parsed.positionals)
}

/** Options several commands share, declared once so their help reads the same everywhere. */
export const FLEET_OPTION: OptionSpec = { type: 'string', arg: '<name>', description: `fleet name (default: the credentials' fleet, else ${DEFAULT_FLEET})` }
export const CREDENTIALS_OPTION: OptionSpec = { type: 'string', arg: '<file>', description: 'fleet credentials: a certificate (fleetmesh fleet issue) or, for a vehicle, an enrollment grant (fleetmesh fleet grant)' }
export const OPEN_OPTION: OptionSpec = { type: 'boolean', description: 'take part in an open fleet: no membership, anyone may join (development only)' }

/** `--fleet`, `--credentials` and `--open`, for every command that joins a fleet. */
export const ACCESS_OPTIONS: Record<string, OptionSpec> = { fleet: FLEET_OPTION, credentials: CREDENTIALS_OPTION, open: OPEN_OPTION }

/** The fleet and credentials a command joins with: `--credentials`, or `--open` said explicitly. */
export async function fleetAccess (o: Record<string, unknown>): Promise<{ fleet: string, credentials?: Credentials }> {
  const flag = typeof o.fleet === 'string' ? checkName(o.fleet) : undefined
  if (typeof o.credentials === 'string') {
    if (o.open === true) throw new UsageError('use --credentials or --open, not both')
    let credentials: Credentials
    try { credentials = await loadCredentials(o.credentials) } catch (err) { throw new UsageError((err as Error).message) }
    if (flag !== undefined && flag !== credentials.trust.fleet) throw new UsageError(`--fleet ${flag} does not match the credentials (fleet ${credentials.trust.fleet})`)
    return { fleet: credentials.trust.fleet, credentials }
  }
  if (o.open === true) return { fleet: flag ?? DEFAULT_FLEET }
  throw new UsageError('this fleet needs credentials: pass --credentials <file> (made by `fleetmesh fleet issue` or `fleetmesh fleet grant`), or --open for an open development fleet')
}

/** A fleet name from the command line, or a UsageError naming what is wrong with it. */
export function checkName (fleet: string): string {
  try { return checkFleetName(fleet) } catch (err) { throw new UsageError((err as Error).message) }
}
/** Options of an HTTP gateway (node --http, swarm --http). */
export const GATEWAY_OPTIONS: Record<string, OptionSpec> = {
  'tls-cert': { type: 'string', arg: '<file>', description: 'with --http: serve HTTPS with this certificate (PEM)' },
  'tls-key': { type: 'string', arg: '<file>', description: 'with --http: the certificate\'s private key (PEM)' }
}

/** The gateway's TLS files from `--tls-cert` / `--tls-key` (both or neither). */
export async function gatewayTls (o: Record<string, unknown>): Promise<{ cert: Buffer, key: Buffer } | undefined> {
  const cert = o['tls-cert']; const key = o['tls-key']
  if (cert === undefined && key === undefined) return undefined
  if (typeof cert !== 'string' || typeof key !== 'string') throw new UsageError('--tls-cert and --tls-key go together')
  try { return { cert: await readFile(cert), key: await readFile(key) } } catch (err) {
    throw new UsageError(`TLS: ${(err as Error).message}`)
  }
}

export const BOOTSTRAP_OPTION: OptionSpec = { type: 'string', multiple: true, arg: '<multiaddr>', description: 'bootstrap peer address with /p2p/<id> (repeatable)' }
export const HAND_OFF_OPTION: OptionSpec = { type: 'string', arg: '<lossless|fp16>', description: 'how stages hand on float32 activations: lossless, or fp16 (rounded to float16, half the bytes; the error it makes is measured and stated in the manifest)', default: 'lossless' }

/** `--hand-off`: 'fp16', or undefined for lossless. */
export function handOffOption (o: Record<string, unknown>): 'fp16' | undefined {
  const v = o['hand-off'] ?? 'lossless'
  if (v === 'fp16') return 'fp16'
  if (v === 'lossless') return undefined
  throw new UsageError(`--hand-off must be lossless or fp16, got ${String(v)}`)
}

export const STAGE_PRIORITY_OPTION: OptionSpec = { type: 'string', arg: '<idle|low|normal>', description: 'CPU priority of the vehicles\' stage session threads: idle (SCHED_IDLE) lends only the CPU nothing else on the car wants, low is nice 19, normal leaves it', default: DEFAULT_STAGE_PRIORITY }

/** `--stage-priority`. */
export function stagePriorityOption (o: Record<string, unknown>): StagePriority {
  const v = o['stage-priority'] ?? DEFAULT_STAGE_PRIORITY
  if (isStagePriority(v)) return v
  throw new UsageError(`--stage-priority must be one of ${STAGE_PRIORITIES.join(', ')}, got "${String(v)}"`)
}

/** shardModel's hand-off settings for `--hand-off` (fp16 measured on the model's sample inputs too, where it has them). */
export function handOffSettings (o: Record<string, unknown>, src: ModelSource): { handOff?: 'fp16', handOffInputs?: Tensor[][] } {
  return handOffOption(o) === 'fp16' ? { handOff: 'fp16', handOffInputs: sampleInputs(src, Object.keys(src.probeShapes)[0] ?? 'x') } : {}
}

export const PROBE_SHAPE_OPTION: OptionSpec = { type: 'string', multiple: true, arg: '<in=dims>', description: 'input shape to plan and measure the cuts at (free dims default to 1, then 64)' }

/** Parses a positive integer option or throws a UsageError naming it. */
export function intOption (v: unknown, name: string, min = 1, max = 1_000_000): number {
  const n = Number(v)
  if (typeof v !== 'string' || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got ${String(v)}`)
  return n
}

export function requireOption (v: unknown, name: string): string {
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`)
  return v
}

export { shortPeer } from '../util/text.ts'

/** Resolves on SIGINT or SIGTERM (or IPC disconnect when spawned by a swarm). */
export async function untilSignal (): Promise<string> {
  return await new Promise(resolve => {
    process.once('SIGINT', () => { resolve('SIGINT') })
    process.once('SIGTERM', () => { resolve('SIGTERM') })
    if (process.send !== undefined) process.once('disconnect', () => { resolve('disconnect') })
  })
}

/** How a client checks results and whether it runs first stages itself (submit, node --http, swarm). */
export const CLIENT_CHECK_OPTIONS: Record<string, OptionSpec> = {
  verify: { type: 'string', arg: '<mode>', description: 'result checks: off, sample (re-run a share of stage runs on another vehicle, more for new vehicles) or strict (every stage twice)', default: 'sample' },
  'local-stages': { type: 'string', arg: '<stages>', description: 'run these first stages here (e.g. 0, or 0-1), so vehicles never see the inputs; loads onnxruntime' },
  cells: { type: 'string', arg: '<list>', description: 'locality cells to route in, nearest first, e.g. u33db,u33dc (default: default; see README, "A million cars")' },
  near: { type: 'string', arg: '<geohash>', description: 'route near this geohash cell: in it, else in its 8 neighbours (instead of --cells)' },
  output: { type: 'string', arg: '<mode>', description: 'what the last vehicle returns: raw (the model\'s outputs), text (CTC text models: the decoded text, not the 1 MB of probabilities) or top-k=K (the K largest entries of each row, for classifiers)', default: 'raw' },
  coalesce: { type: 'string', arg: '<n>', description: 'jobs of one model that wait for room in the mesh go together, up to n as one job along the batch dimension (their results split back); 1 turns this off', default: '4' },
  compress: { type: 'string', arg: '<mode>', description: 'tensors sent to vehicles (inputs, hand-offs), losslessly with Zstandard: auto where the link makes it pay (not on this host; inputs made from images shrink 20-70x), always (on every link), off', default: 'auto' }
}

/** `--compress auto|always|off`: where tensors sent to vehicles are compressed. */
export function compressOption (o: Record<string, unknown>): CompressMode {
  const mode = o.compress ?? 'auto'
  if (!COMPRESS_MODES.includes(mode as CompressMode)) throw new UsageError(`--compress must be one of ${COMPRESS_MODES.join(', ')}, got ${String(mode)}`)
  return mode as CompressMode
}

/** `--cells a,b` (checked names), or undefined. */
export function cellsOption (o: Record<string, unknown>, flag = 'cells'): string[] | undefined {
  if (typeof o[flag] !== 'string') return undefined
  try { return o[flag].split(',').map(c => checkCellName(c.trim())) } catch (err) { throw new UsageError(`--${flag}: ${(err as Error).message}`) }
}

/** The client settings of CLIENT_CHECK_OPTIONS. */
export function clientChecks (o: Record<string, unknown>): { verify?: VerifyMode, localStages?: number, cells?: string[], output?: OutputMode, coalesce?: number, compress: CompressMode } {
  const out: { verify?: VerifyMode, localStages?: number, cells?: string[], output?: OutputMode, coalesce?: number, compress: CompressMode } = { compress: compressOption(o) }
  if (o.coalesce !== undefined) out.coalesce = intOption(o.coalesce, 'coalesce', 1, 16)
  if (typeof o.output === 'string') {
    try { const mode = parseOutputMode(o.output); if (mode !== undefined) out.output = mode } catch (err) { throw new UsageError(`--output: ${(err as Error).message}`) }
  }
  const cells = cellsOption(o)
  if (cells !== undefined) out.cells = cells
  if (typeof o.near === 'string') {
    if (cells !== undefined) throw new UsageError('give --cells or --near, not both')
    try { out.cells = cellsNear(o.near) } catch (err) { throw new UsageError(`--near: ${(err as Error).message}`) }
  }
  if (o.verify !== undefined) {
    if (!isVerifyMode(o.verify)) throw new UsageError(`--verify must be one of ${VERIFY_MODES.join(', ')}, got ${String(o.verify)}`)
    out.verify = o.verify
  }
  if (typeof o['local-stages'] === 'string') {
    try { out.localStages = parseLocalStages(o['local-stages']) } catch (err) { throw new UsageError(`--local-stages: ${(err as Error).message}`) }
  }
  return out
}

/** How long a command waits for a bootstrap peer to let it into the fleet. */
export const JOIN_TIMEOUT_MS = 10_000

/** Joins the fleet as a client for a command (`--bootstrap` required), runs `fn`, always leaves. */
export async function withFleetClient<T> (o: Record<string, unknown>, fn: (client: FleetClient) => Promise<T>): Promise<T> {
  const bootstrap = (o.bootstrap as string[] | undefined) ?? []
  if (bootstrap.length === 0) throw new UsageError('--bootstrap is required (the address `fleetmesh bootstrap` printed)')
  const access = await fleetAccess(o)
  const client = await FleetClient.connect({ bootstrap, fleet: access.fleet, ...(access.credentials !== undefined ? { credentials: access.credentials } : {}), ...clientChecks(o) })
  try {
    // a wrong address, a bootstrap peer that is down or another fleet's credentials: said now, not as an empty answer later
    await client.joined({ signal: AbortSignal.timeout(JOIN_TIMEOUT_MS) })
    return await fn(client)
  } finally { await client.close() }
}
