/**
 * Open Inference Protocol inference bodies: the request (JSON tensors, or
 * the binary tensor data extension with `Inference-Header-Content-Length`)
 * into tensors, and the result into a response body (JSON or binary, as the
 * request asked).
 */
import type { IncomingHttpHeaders } from 'node:http'
import { oipDatatype, oipToDtype, tensorFromOip, tensorToOip } from '../../protocols/oip.ts'
import { elementCount, itemSize } from '../../protocols/tensor.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import type { InferResult } from '../client/pipeline.ts'
import type { ResolvedModel } from '../client/resolver.ts'
import { HttpError } from './repository.ts'
import type { OutputMode } from '../../protocols/infer.ts'
import { parseOutputMode } from '../models/output-modes.ts'

export interface InferRequestBody {
  inputs: Tensor[]
  id?: unknown
  /** Outputs asked for, and whether each comes back as binary. */
  outputs?: Array<{ name: string, parameters?: { binary_data?: boolean } }>
  binaryAll: boolean
  /** `parameters.output`: what the last vehicle returns (raw, text, top-k=K; see node/models/output-modes.ts). */
  output?: OutputMode
}

/** Parses an infer request body; errors are 400s that name the field. */
export function parseInferBody (body: Buffer, headers: IncomingHttpHeaders): InferRequestBody {
  const headerLen = headers['inference-header-content-length']
  const jsonLen = headerLen !== undefined ? Number(headerLen) : body.byteLength
  if (!Number.isInteger(jsonLen) || jsonLen < 0 || jsonLen > body.byteLength) throw new HttpError(400, `Inference-Header-Content-Length ${String(headerLen)} does not fit a body of ${body.byteLength} bytes`)
  let doc: any
  try { doc = JSON.parse(body.subarray(0, jsonLen).toString('utf8')) } catch (err) {
    throw new HttpError(400, `request is not JSON: ${(err as Error).message}`)
  }
  if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.inputs)) throw new HttpError(400, 'request needs an "inputs" array')
  let offset = jsonLen
  const inputs: Tensor[] = doc.inputs.map((t: any, i: number) => {
    const size = t?.parameters?.binary_data_size
    if (size === undefined) return tensorFromOip(t, `inputs[${i}]`)
    const dtype = oipToDtype(t?.datatype, `inputs[${i}].datatype`)
    if (!Number.isInteger(size) || size < 0 || offset + size > body.byteLength) throw new HttpError(400, `inputs[${i}].parameters.binary_data_size ${String(size)} runs past the body`)
    if (!Array.isArray(t.shape) || t.shape.some((d: unknown) => !Number.isInteger(d) || (d as number) < 0)) throw new HttpError(400, `inputs[${i}].shape must be non-negative integers`)
    if (elementCount(t.shape) * itemSize(dtype) !== size) throw new HttpError(400, `inputs[${i}]: ${size} bytes do not fit shape [${t.shape}] of ${t.datatype}`)
    const data = new Uint8Array(size)
    data.set(body.subarray(offset, offset + size))
    offset += size
    return { name: String(t.name), dtype, dims: t.shape, data }
  })
  return {
    inputs,
    ...(doc.id !== undefined ? { id: doc.id } : {}),
    ...(Array.isArray(doc.outputs) ? { outputs: doc.outputs } : {}),
    binaryAll: doc.parameters?.binary_data_output === true,
    ...outputParameter(doc.parameters?.output)
  }
}

/** `parameters.output` of a request, checked (a 400 naming it when it is not one). */
function outputParameter (v: unknown): { output?: OutputMode } {
  if (v === undefined) return {}
  if (typeof v !== 'string') throw new HttpError(400, 'parameters.output must be a string: raw, text or top-k=K')
  let mode: OutputMode | undefined
  try { mode = parseOutputMode(v) } catch (err) { throw new HttpError(400, `parameters.output: ${(err as Error).message}`) }
  return mode !== undefined ? { output: mode } : {}
}

/** The response body and its headers for a finished job. */
export function inferResponse (m: ResolvedModel, req: InferRequestBody, r: InferResult): { headers: Record<string, string | number>, payload: Buffer } {
  const outputs = req.outputs === undefined
    ? r.outputs
    : req.outputs.map(w => {
      const t = r.outputs.find(o => o.name === w.name)
      if (t === undefined) throw new HttpError(400, `unknown output "${w.name}" (the model has ${r.outputs.map(o => o.name).join(', ')})`)
      return t
    })
  const binaryChunks: Uint8Array[] = []
  const outJson = outputs.map(t => {
    const binary = req.binaryAll || req.outputs?.find(w => w.name === t.name)?.parameters?.binary_data === true
    if (!binary) return tensorToOip(t)
    binaryChunks.push(t.data)
    return { name: t.name, datatype: oipDatatype(t.dtype), shape: t.dims, parameters: { binary_data_size: t.data.byteLength } }
  })
  const json = Buffer.from(JSON.stringify({ model_name: m.manifest.name, model_version: m.manifest.version, ...(req.id !== undefined ? { id: req.id } : {}), outputs: outJson, parameters: { route: r.route.join(','), ms: Math.round(r.ms * 10) / 10 } }))
  const headers: Record<string, string | number> = { 'content-type': binaryChunks.length > 0 ? 'application/octet-stream' : 'application/json' }
  if (binaryChunks.length > 0) headers['inference-header-content-length'] = json.byteLength
  const payload = Buffer.concat([json, ...binaryChunks])
  headers['content-length'] = payload.byteLength
  return { headers, payload }
}
