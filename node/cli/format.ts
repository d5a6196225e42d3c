/** Text formatting shared by the commands. */
import type { Manifest } from '../models/manifest.ts'
import { defaultMaxDim } from '../models/specs.ts'
import type { TensorSpec } from '../models/specs.ts'
import { asFloat32 } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export function table (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => (r[i] ?? '').length)))
  return rows.map(r => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

import { mb } from '../util/text.ts'
export { mb }

export function specText (s: TensorSpec): string { return `${s.name} ${s.dtype}[${s.shape.map(d => d ?? '?').join(',')}]` }

/** A model input with the largest shape a job may give it, where the model leaves dimensions open. */
export function inputText (s: TensorSpec): string {
  return s.max !== undefined && s.shape.some(d => d === null) ? `${specText(s)}, jobs up to [${s.max.join(',')}]` : specText(s)
}

/**
 * Said under the inputs when a model leaves dimensions open and their caps
 * are the default ones (defaultMaxDim of the probe): where they come from and
 * how to raise them.
 */
export function capHint (m: Pick<Manifest, 'inputs' | 'probeShapes'>): string {
  const byDefault = (i: TensorSpec): boolean => i.shape.every((d, k) => d !== null || i.max?.[k] === defaultMaxDim(m.probeShapes[i.name]?.[k] ?? 0))
  const free = m.inputs.filter(i => i.shape.includes(null) && byDefault(i))
  if (free.length === 0) return ''
  return `(an open dimension is capped at 4x its probe size, here ${free.map(i => `${i.name}=${(m.probeShapes[i.name] ?? []).join(',')}`).join(' ')}: --probe-shape sets another)`
}

export function manifestTable (m: Manifest): string {
  const rows = [['stage', 'cid', 'nodes', 'params', 'GFLOPs', 'share', 'size', 'hands on']]
  for (const s of m.stages) {
    rows.push([String(s.index), `…${s.cid.slice(-10)}`, String(s.nodes), String(s.params), (s.flops / 1e9).toFixed(3), `${(s.share * 100).toFixed(0)}%`, mb(s.bytes),
      `${s.outputs.length} tensor${s.outputs.length === 1 ? '' : 's'}, ${mb(s.handOffBytes)}`])
  }
  return table(rows)
}

/** One line per tensor: dtype, shape and, for floats, min / max / mean. */
export function tensorSummary (t: Tensor): string {
  let stats = ''
  if (t.dtype === 'float32' && t.data.byteLength > 0) {
    const f = asFloat32(t)
    let min = Infinity; let max = -Infinity; let sum = 0
    for (const v of f) { if (v < min) min = v; if (v > max) max = v; sum += v }
    stats = ` min ${min.toPrecision(4)} max ${max.toPrecision(4)} mean ${(sum / f.length).toPrecision(4)}`
  }
  return `${t.name} ${t.dtype}[${t.dims.join(',')}]${stats}`
}

/** Why a node could not listen on an address, by the system's error code. */
const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: 'another process listens there (--listen picks another address or port)',
  EADDRNOTAVAIL: 'this machine has no such address',
  EACCES: 'not allowed (ports below 1024 need privileges)'
}

/** What a failed command prints after `fleetmesh: `: libp2p's listen failures as one line per address and what to do. */
export function failureMessage (err: Error): string {
  if (err.name !== 'UnsupportedListenAddressesError') return err.message
  const failed = [...err.message.matchAll(/^\s+(\/\S+): (?:Error: )?([^\n]*)$/gm)].map(([, addr, why]) => {
    const code = /\b(E[A-Z]+)\b/.exec(why)?.[1] ?? ''
    return `${addr}: ${LISTEN_FAILURES[code] ?? why}`
  })
  return failed.length > 0 ? `cannot listen on ${failed.join('; ')}` : err.message
}
