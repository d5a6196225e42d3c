/**
 * What Triton's and KServe's own clients send beyond the core protocol:
 * compressed request bodies (tritonclient's `request_compression_algorithm`,
 * i.e. `Content-Encoding: gzip` or `deflate`) and the model configuration
 * extension (`GET /v2/models/{name}/config`, read by Triton's tools).
 */
import { gunzip, inflate, inflateRaw } from 'node:zlib'
import type { IncomingHttpHeaders } from 'node:http'
import { promisify } from 'node:util'
import type { DType } from '../../protocols/tensor.ts'
import type { ResolvedModel } from '../client/resolver.ts'
import type { TensorSpec } from '../models/specs.ts'
import { HttpError } from './repository.ts'

const unzip = { gzip: promisify(gunzip), deflate: promisify(inflate), raw: promisify(inflateRaw) }

/** Content encodings the gateway decodes. */
export const ACCEPTED_ENCODINGS = ['gzip', 'deflate', 'identity']

/**
 * The body as sent, decoded per its Content-Encoding, never past `limit`
 * bytes (413: a small compressed body must not inflate without bound).
 * Encodings other than gzip, deflate and identity are 415.
 */
export async function decodeBody (body: Buffer, headers: IncomingHttpHeaders, limit: number): Promise<Buffer> {
  const raw = headers['content-encoding']
  const codings = (raw ?? '').split(',').map(s => s.trim().toLowerCase()).filter(s => s !== '' && s !== 'identity')
  const unknown = codings.find(c => c !== 'gzip' && c !== 'x-gzip' && c !== 'deflate')
  if (unknown !== undefined) throw new HttpError(415, `Content-Encoding "${unknown}" is not supported (use ${ACCEPTED_ENCODINGS.join(', ')})`)
  let out = body
  // codings are listed in the order they were applied: undo them from the last
  for (const c of codings.reverse()) {
    const opts = { maxOutputLength: limit }
    try {
      if (c === 'deflate') {
        // HTTP's deflate is zlib-wrapped (tritonclient sends zlib.compress); some senders use raw deflate
        out = await unzip.deflate(out, opts).catch(async (err: NodeJS.ErrnoException) => { if (err.code === 'ERR_BUFFER_TOO_LARGE') throw err; return await unzip.raw(out, opts) })
      } else {
        out = await unzip.gzip(out, opts)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw new HttpError(413, `request body decompresses to over the limit of ${limit} bytes`)
      throw new HttpError(400, `request body is not valid ${c}: ${(err as Error).message}`)
    }
  }
  return out
}

/** Triton's data_type names (model_config.proto). */
const TRITON_TYPES: Record<DType, string> = {
  float32: 'TYPE_FP32',
  float16: 'TYPE_FP16',
  float64: 'TYPE_FP64',
  uint8: 'TYPE_UINT8',
  uint16: 'TYPE_UINT16',
  uint32: 'TYPE_UINT32',
  uint64: 'TYPE_UINT64',
  int8: 'TYPE_INT8',
  int16: 'TYPE_INT16',
  int32: 'TYPE_INT32',
  int64: 'TYPE_INT64',
  bool: 'TYPE_BOOL'
}

function tritonTensor (s: TensorSpec): { name: string, data_type: string, dims: number[] } {
  return { name: s.name, data_type: TRITON_TYPES[s.dtype], dims: s.shape.map(d => d ?? -1) }
}

/**
 * The model's configuration as Triton answers `GET .../config`: platform,
 * inputs and outputs with Triton's type names and full shapes (-1 where a
 * dimension is free). `max_batch_size` is 0: the shapes include the batch
 * dimension, as the manifest gives them.
 */
export function modelConfig (m: ResolvedModel): Record<string, unknown> {
  return {
    name: m.manifest.name,
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    version_policy: { specific: { versions: [m.manifest.version] } },
    max_batch_size: 0,
    input: m.manifest.inputs.map(tritonTensor),
    output: m.manifest.outputs.map(tritonTensor),
    parameters: {
      manifest: { string_value: m.cid },
      stages: { string_value: String(m.manifest.stages.length) }
    }
  }
}
