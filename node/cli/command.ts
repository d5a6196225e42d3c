/**
 * A tiny command framework: each command declares its options once (with
 * descriptions and defaults), and gets parsing, `--help` and usage errors.
 * Exit codes: 0 ok, 1 failure, 2 usage error.
 */
import { parseArgs } from 'node:util'

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
  const all: Record<string, OptionSpec> = { ...c.options, help: { type: 'boolean', short: 'h', description: 'show this help' } }
  for (const [name, o] of Object.entries(all)) {
    const flag = `${o.short !== undefined ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.arg ?? '<value>'}` : ''}`
    const def = o.default !== undefined && o.default !== false ? ` (default: ${String(o.default)})` : ''
    lines.push(`  ${flag.padEnd(30)} ${o.description}${def}`)
  }
  if (c.details !== undefined) lines.push('', c.details)
  return lines.join('\n')
}

export async function runCommand (c: Command, argv: string[]): Promise<number> {
  const options: Record<string, { type: 'string' | 'boolean', short?: string, multiple?: boolean }> = { help: { type: 'boolean', short: 'h' } }
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
  const values: Record<string, string | boolean | string[] | undefined> = {}
  for (const [name, o] of Object.entries(c.options)) values[name] = (parsed.values as Record<string, string | boolean | string[] | undefined>)[name] ?? o.default
  return await c.run(values, parsed.positionals)
}

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

/** Shortens a peer id for display: the last 6 characters. */
export function shortPeer (peer: string): string { return peer.slice(-6) }

/** Resolves on SIGINT or SIGTERM (or IPC disconnect when spawned by a swarm). */
export async function untilSignal (): Promise<string> {
  return await new Promise(resolve => {
    process.once('SIGINT', () => { resolve('SIGINT') })
    process.once('SIGTERM', () => { resolve('SIGTERM') })
    if (process.send !== undefined) process.once('disconnect', () => { resolve('disconnect') })
  })
}
