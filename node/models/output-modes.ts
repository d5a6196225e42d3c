/**
 * Output modes (opt-in per job): the last hop reduces the last stage's
 * outputs before they travel, so a 1 MB softmax does not cross the network
 * twice. `ctc-text` decodes a CTC text model's probabilities (manifest task
 * ctc-text) greedily into UTF-8 text; `top-k` keeps the k largest entries
 * along the last axis of each float32 output. The last hop's receipt attests
 * the reduced tensors; a client that checks the last stage's run asks for the
 * raw outputs and reduces them itself with the same function.
 */
import { MAX_TOP_K } from '../../protocols/infer.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { asFloat32, elementCount, maxAbsDiff } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { dictionaryPath } from './catalog.ts'
import type { Manifest } from './manifest.ts'
import { ctcDecodeRow, loadDictionary } from './ocr.ts'

/** An output mode that does not fit the model or its outputs. */
export class OutputModeError extends Error {
  readonly name = 'OutputModeError'
  readonly code = 'ERR_OUTPUT_MODE'
}

/** The names a reduced CTC result carries. */
export const TEXT_OUTPUT = 'text'
export const CONFIDENCE_OUTPUT = 'confidence'

/** Parses `raw`, `text` (ctc-text) or `top-k=K` (the CLI's and the gateway's spelling). */
export function parseOutputMode (s: string): OutputMode | undefined {
  if (s === 'raw') return undefined
  if (s === 'text' || s === 'ctc-text') return { kind: 'ctc-text' }
  const m = /^top-?k[=:](\d+)$/.exec(s)
  if (m !== null) {
    const k = Number(m[1])
    if (k < 1 || k > MAX_TOP_K) throw new OutputModeError(`top-k needs k in 1..${MAX_TOP_K}, got ${k}`)
    return { kind: 'top-k', k }
  }
  throw new OutputModeError(`unknown output mode "${s}": use raw, text (CTC text models) or top-k=K`)
}

export function formatOutputMode (o: OutputMode | undefined): string {
  return o === undefined ? 'raw' : o.kind === 'ctc-text' ? 'text' : `top-k=${o.k}`
}

/** Why `mode` cannot be used with this model, or undefined. */
export function outputModeProblem (manifest: Manifest, mode: OutputMode): string | undefined {
  if (mode.kind === 'ctc-text' && manifest.task?.kind !== 'ctc-text') return `output mode text needs a CTC text model; ${manifest.name} has no ctc-text task`
  if (mode.kind === 'top-k' && !manifest.outputs.some(o => o.dtype === 'float32' && o.shape.length > 0)) return `output mode top-k needs a float32 output; ${manifest.name} has none`
  return undefined
}

const dictionaries = new Map<string, string[]>()

/** A manifest's CTC dictionary (blank first), loaded once. */
export function dictionaryOf (manifest: Manifest): string[] {
  if (manifest.task?.kind !== 'ctc-text') throw new OutputModeError(`${manifest.name} has no ctc-text task`)
  const name = manifest.task.dictionary
  let dict = dictionaries.get(name)
  if (dict === undefined) { dict = loadDictionary(dictionaryPath(name)); dictionaries.set(name, dict) }
  return dict
}

/** The last stage's outputs as `mode` reduces them (throws OutputModeError when they do not fit). */
export function applyOutputMode (manifest: Manifest, mode: OutputMode, outputs: Tensor[]): Tensor[] {
  const problem = outputModeProblem(manifest, mode)
  if (problem !== undefined) throw new OutputModeError(problem)
  return mode.kind === 'ctc-text' ? ctcText(outputs[0], dictionaryOf(manifest)) : outputs.map(o => o.dtype === 'float32' && o.dims.length > 0 ? topK(o, mode.k) : [o]).flat()
}

function ctcText (probs: Tensor, dict: string[]): Tensor[] {
  if (probs?.dtype !== 'float32' || probs.dims.length !== 3) throw new OutputModeError(`output mode text needs float32 [N, T, C] probabilities, got ${probs?.dtype} [${probs?.dims.join(', ')}]`)
  const [N] = probs.dims
  const texts: Uint8Array[] = []
  const confidence = new Float32Array(N)
  for (let n = 0; n < N; n++) {
    const r = ctcDecodeRow(probs, dict, n)
    texts.push(Buffer.from(r.text, 'utf8'))
    confidence[n] = r.confidence
  }
  const L = Math.max(0, ...texts.map(t => t.byteLength))
  const text = new Uint8Array(N * L)
  texts.forEach((t, n) => { text.set(t, n * L) })
  return [
    { name: TEXT_OUTPUT, dtype: 'uint8', dims: [N, L], data: text },
    { name: CONFIDENCE_OUTPUT, dtype: 'float32', dims: [N], data: new Uint8Array(confidence.buffer) }
  ]
}

function topK (t: Tensor, k: number): Tensor[] {
  const C = t.dims[t.dims.length - 1]
  if (k > C) throw new OutputModeError(`top-k=${k} asks for more than the ${C} entries along ${t.name}'s last axis`)
  const rows = C === 0 ? 0 : elementCount(t.dims) / C
  const x = asFloat32(t)
  const values = new Float32Array(rows * k)
  const indices = new BigInt64Array(rows * k)
  const best = new Int32Array(k)
  for (let r = 0; r < rows; r++) {
    const o = r * C
    // insertion into a sorted list of k: k is small against C
    let n = 0
    for (let c = 0; c < C; c++) {
      const v = x[o + c]
      if (n === k && !(v > x[o + best[k - 1]])) continue
      let i = n < k ? n++ : k - 1
      while (i > 0 && v > x[o + best[i - 1]]) { best[i] = best[i - 1]; i-- }
      best[i] = c
    }
    for (let i = 0; i < k; i++) { values[r * k + i] = x[o + best[i]]; indices[r * k + i] = BigInt(best[i]) }
  }
  const dims = [...t.dims.slice(0, -1), k]
  return [
    { name: `${t.name}.values`, dtype: 'float32', dims, data: new Uint8Array(values.buffer) },
    { name: `${t.name}.indices`, dtype: 'int64', dims, data: new Uint8Array(indices.buffer) }
  ]
}

/** Whether `outputs` are the model's own outputs, by name and type (as a vehicle that does not know output modes answers). */
export function isRaw (manifest: Pick<Manifest, 'outputs'>, outputs: Tensor[]): boolean {
  return outputs.length === manifest.outputs.length && outputs.every((t, i) => t.name === manifest.outputs[i].name && t.dtype === manifest.outputs[i].dtype)
}

/**
 * Whether `outputs` have the form `mode` gives (names and types), so a last
 * hop cannot answer another question. The model's raw outputs pass too: a
 * vehicle of an earlier version ignores the mode, and the client reduces them.
 */
export function outputFormProblem (mode: OutputMode, outputs: Tensor[], manifest?: Pick<Manifest, 'outputs'>): string | undefined {
  if (manifest !== undefined && isRaw(manifest, outputs)) return undefined
  if (mode.kind === 'ctc-text') {
    const [text, conf] = outputs
    if (outputs.length !== 2 || text.name !== TEXT_OUTPUT || text.dtype !== 'uint8' || text.dims.length !== 2 || conf.name !== CONFIDENCE_OUTPUT || conf.dtype !== 'float32' || conf.dims.join() !== String(text.dims[0])) return 'the result is not text and confidence'
    return undefined
  }
  // every float32 output became `o.values` followed by `o.indices`, both [..., k]; other outputs pass as they are
  let pairs = 0
  for (let i = 0; i < outputs.length; i++) {
    const v = outputs[i]
    if (v.dtype !== 'float32') continue
    const ix = outputs[i + 1]
    if (!v.name.endsWith('.values') || v.dims.at(-1) !== mode.k || ix?.name !== `${v.name.slice(0, -'.values'.length)}.indices` || ix.dtype !== 'int64' || ix.dims.join() !== v.dims.join()) return `the result is not top-${mode.k}`
    pairs++
    i++
  }
  return pairs > 0 ? undefined : `the result is not top-${mode.k}`
}

/** The texts of a reduced CTC result, one per batch row. */
export function textsOf (outputs: Tensor[]): Array<{ text: string, confidence: number }> | undefined {
  const text = outputs.find(o => o.name === TEXT_OUTPUT && o.dtype === 'uint8' && o.dims.length === 2)
  const conf = outputs.find(o => o.name === CONFIDENCE_OUTPUT && o.dtype === 'float32')
  if (text === undefined || conf === undefined) return undefined
  const [N, L] = text.dims
  const c = asFloat32(conf)
  return Array.from({ length: N }, (_, n) => {
    const row = text.data.subarray(n * L, (n + 1) * L)
    const end = row.indexOf(0)
    return { text: Buffer.from(row.subarray(0, end === -1 ? L : end)).toString('utf8'), confidence: c[n] }
  })
}

/**
 * The texts of a CTC model's top-k result (its first index per time step is
 * the greedy choice), one per batch row; undefined when the outputs are not
 * a top-k of [N, T, C] probabilities.
 */
export function textsOfTopK (outputs: Tensor[], dict: string[]): Array<{ text: string, confidence: number }> | undefined {
  const values = outputs.find(o => o.name.endsWith('.values') && o.dtype === 'float32' && o.dims.length === 3)
  const indices = outputs.find(o => values !== undefined && o.name === `${values.name.slice(0, -'.values'.length)}.indices` && o.dtype === 'int64')
  if (values === undefined || indices === undefined) return undefined
  const [N, T, k] = values.dims
  const v = asFloat32(values)
  const ix = new BigInt64Array(indices.data.buffer.slice(indices.data.byteOffset, indices.data.byteOffset + indices.data.byteLength))
  return Array.from({ length: N }, (_, n) => {
    let text = ''; let prev = -1; let conf = 0; let emitted = 0
    for (let t = 0; t < T; t++) {
      const o = (n * T + t) * k
      const best = Number(ix[o])
      if (best !== 0 && best !== prev && best < dict.length) { text += dict[best]; conf += v[o]; emitted++ }
      prev = best
    }
    return { text: text.trim(), confidence: emitted > 0 ? conf / emitted : 0 }
  })
}

/** Largest difference between two lists of tensors: float32 element-wise, any other type 0 when equal, else Infinity. */
export function outputsDiff (a: Tensor[], b: Tensor[]): number {
  if (a.length !== b.length) return Infinity
  let m = 0
  a.forEach((x, i) => {
    const y = b[i]
    if (x.name !== y.name || x.dtype !== y.dtype || x.dims.join() !== y.dims.join()) m = Infinity
    else if (x.dtype === 'float32') m = Math.max(m, maxAbsDiff(x, y))
    else if (Buffer.compare(x.data, y.data) !== 0) m = Infinity
  })
  return m
}
