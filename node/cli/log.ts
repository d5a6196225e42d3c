/**
 * Log lines of a long-running node (`fleetmesh node` under systemd): a level
 * for every event (`--log-level error|warn|info|debug`, default info) and a
 * format (`--log-format text|json`; json lines carry `time` and `level`, as
 * journald and log shippers want them). `debug` also turns on fleetmesh's
 * own debug logging (the `fleetmesh:*` components, on stderr).
 */
import { enable } from '@libp2p/logger'
import type { AgentEvent } from '../agent.ts'
import { UsageError } from './command.ts'

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const
export type LogLevel = typeof LOG_LEVELS[number]
export const LOG_FORMATS = ['text', 'json'] as const
export type LogFormat = typeof LOG_FORMATS[number]

/** How much each event matters to whoever runs the node. */
export function eventLevel (e: AgentEvent): LogLevel {
  switch (e.type) {
    case 'error': return 'error'
    case 'ineligible': return 'warn'
    case 'departed': return e.drained ? 'info' : 'warn'
    case 'announced':
    case 'chose': return 'debug'
    default: return 'info'
  }
}

export function parseLogOptions (o: Record<string, unknown>): { level: LogLevel, format: LogFormat } {
  const level = String(o['log-level'] ?? 'info')
  const format = String(o['log-format'] ?? 'text')
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got ${level}`)
  if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--log-format must be one of ${LOG_FORMATS.join(', ')}, got ${format}`)
  return { level: level as LogLevel, format: format as LogFormat }
}

/** A function printing events at or above `level` in `format` (text lines from `describe`). */
export function eventLogger (level: LogLevel, format: LogFormat, describe: (e: AgentEvent) => string, write: (line: string) => void = console.log): (e: AgentEvent) => void {
  if (level === 'debug') enable('fleetmesh:*')
  const max = LOG_LEVELS.indexOf(level)
  return (e) => {
    const l = eventLevel(e)
    if (LOG_LEVELS.indexOf(l) > max) return
    write(format === 'json' ? JSON.stringify({ time: new Date().toISOString(), level: l, ...e }) : `${l === 'info' ? '' : `${l}: `}${describe(e).replace(/^error: /, '')}`)
  }
}
