/**
 * Micro-batches: several items run as one along the batch (first) dimension.
 * Row-major tensors make this a byte concatenation and a byte split.
 */
import type { Tensor } from '../../protocols/tensor.ts'
import type { Offer } from '../../protocols/offer.ts'
import { MICRO_BATCH } from '../../protocols/capacity.ts'
import { TEXT_OUTPUT } from '../models/output-modes.ts'

/** Concatenates items (each a list of named tensors) along dimension 0. */
export function concatBatch (items: Tensor[][]): Tensor[] {
  const first = items[0]
  return first.map(t => {
    const parts = items.map(item => {
      const p = item.find(x => x.name === t.name)
      if (p === undefined || p.dtype !== t.dtype || p.dims.length !== t.dims.length || p.dims.slice(1).join() !== t.dims.slice(1).join()) {
        throw new TypeError(`items differ in tensor ${t.name}: cannot batch [${p?.dims}] with [${t.dims}]`)
      }
      return p
    })
    const data = new Uint8Array(parts.reduce((s, p) => s + p.data.byteLength, 0))
    let o = 0
    for (const p of parts) { data.set(p.data, o); o += p.data.byteLength }
    return { name: t.name, dtype: t.dtype, dims: [parts.reduce((s, p) => s + p.dims[0], 0), ...t.dims.slice(1)], data }
  })
}

/** Splits batched outputs back into items with the given batch sizes. */
export function splitBatch (outputs: Tensor[], sizes: number[]): Tensor[][] {
  const total = sizes.reduce((a, b) => a + b, 0)
  const items: Tensor[][] = sizes.map(() => [])
  for (const t of outputs) {
    if (t.dims[0] !== total) throw new TypeError(`output ${t.name} has ${t.dims[0]} rows, expected ${total}`)
    const rowBytes = t.data.byteLength / total
    let row = 0
    sizes.forEach((n, i) => {
      items[i].push({ name: t.name, dtype: t.dtype, dims: [n, ...t.dims.slice(1)], data: t.data.slice(row * rowBytes, (row + n) * rowBytes) })
      row += n
    })
  }
  return items
}

/** A text result's row as a job of its own would have it: no padding past its own text. */
export function trimText (outputs: Tensor[]): Tensor[] {
  return outputs.map(t => {
    if (t.name !== TEXT_OUTPUT || t.dtype !== 'uint8' || t.dims.length !== 2) return t
    let end = t.data.byteLength
    while (end > 0 && t.data[end - 1] === 0) end--
    return { ...t, dims: [1, end], data: t.data.slice(0, end) }
  })
}

/**
 * Micro-batch size from offers: MICRO_BATCH when, stage by stage with the best
 * offer for each, an item batched costs at most `threshold` of one run singly.
 * `meshMs` is what a job costs beside its stages' compute (its request,
 * transfers, receipts, stream turns: BatchRunner measures it on its first
 * jobs), paid once for a whole micro-batch: pp-ocrv4-rec runs no cheaper per
 * item batched (35.7 ms an item at 4 against 31.5 alone), but with the mesh's
 * 10-13 ms a job its groups of 4 moved 7-26% more items a second.
 */
export function chooseMicroBatch (offers: Offer[], stages: number, threshold = 0.9, meshMs = 0): number {
  let single = 0; let batched = 0
  for (let s = 0; s < stages; s++) {
    const os = offers.flatMap(o => o.stages.filter(x => x.stage === s))
    if (os.length === 0 || os.some(o => o.batchMsPerItem === undefined)) return 1
    single += Math.min(...os.map(o => o.msPerItem))
    batched += Math.min(...os.map(o => o.batchMsPerItem!))
  }
  return single > 0 && batched + meshMs / MICRO_BATCH <= threshold * (single + meshMs) ? MICRO_BATCH : 1
}
