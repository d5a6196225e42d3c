/**
 * Tensors: the in-memory form every part of fleetmesh shares, and how they
 * travel. On the wire a tensor is a `TensorDescriptor` (protocols/tensor.proto)
 * in a frame's header and its bytes in the frame's payload; dtypes travel as
 * ONNX TensorProto.DataType numbers, never as a position in a list.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { compressIfItPays, decompressExactly } from './compression.ts'
import { decodeFloat16, encodeFloat16, roundToFloat16 } from './float16.ts'
import { DataType, TensorEncoding } from './gen/tensor_pb.ts'
import { MAX_NAME_BYTES, MAX_RANK, MAX_TENSORS } from './limits.ts'
import { takeShared } from './shared-buffers.ts'

/** Element types fleetmesh carries. */
export type DType = 'float32' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'int32' | 'int64' | 'bool' | 'float16' | 'float64' | 'uint32' | 'uint64'

/** Each dtype's ONNX TensorProto.DataType number (the wire code) and item size. */
const DTYPES: Record<DType, { code: DataType, size: number }> = {
  float32: { code: DataType.FLOAT, size: 4 },
  uint8: { code: DataType.UINT8, size: 1 },
  int8: { code: DataType.INT8, size: 1 },
  uint16: { code: DataType.UINT16, size: 2 },
  int16: { code: DataType.INT16, size: 2 },
  int32: { code: DataType.INT32, size: 4 },
  int64: { code: DataType.INT64, size: 8 },
  bool: { code: DataType.BOOL, size: 1 },
  float16: { code: DataType.FLOAT16, size: 2 },
  float64: { code: DataType.DOUBLE, size: 8 },
  uint32: { code: DataType.UINT32, size: 4 },
  uint64: { code: DataType.UINT64, size: 8 }
}
const BY_CODE = new Map<number, DType>(Object.entries(DTYPES).map(([d, v]) => [v.code, d as DType]))

export function itemSize (dtype: DType): number { return DTYPES[dtype].size }
export function isDType (s: unknown): s is DType { return typeof s === 'string' && Object.hasOwn(DTYPES, s) }
/** The ONNX TensorProto.DataType number of a dtype. */
export function dtypeCode (dtype: DType): DataType { return DTYPES[dtype].code }
/** The dtype of an ONNX TensorProto.DataType number, or undefined when fleetmesh does not carry it. */
export function dtypeOfCode (code: number): DType | undefined { return BY_CODE.get(code) }

/** A named dense tensor; `data` holds the raw little-endian elements, row-major. */
export interface Tensor {
  name: string
  dtype: DType
  dims: number[]
  data: Uint8Array
}

export function elementCount (dims: readonly number[]): number {
  let n = 1
  for (const d of dims) n *= d
  return n
}

/** Float32 view of a float32 tensor (copies only if misaligned). */
export function asFloat32 (t: Tensor): Float32Array {
  if (t.dtype !== 'float32') throw new TypeError(`tensor ${t.name} is ${t.dtype}, not float32`)
  const d = t.data.byteOffset % 4 === 0 ? t.data : new Uint8Array(t.data)
  return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4)
}

export function float32Tensor (name: string, dims: number[], values: Float32Array): Tensor {
  return { name, dtype: 'float32', dims, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) }
}

/** A float32 tensor with its values rounded to the nearest float16 (other dtypes as they are). */
export function roundedToFloat16 (t: Tensor): Tensor {
  return t.dtype === 'float32' ? { ...t, data: roundToFloat16(t.data) } : t
}

/** Largest element-wise |a - b| over two float32 tensors of the same shape (NaN counts as Infinity). */
export function maxAbsDiff (a: Tensor, b: Tensor): number {
  if (a.dims.join() !== b.dims.join()) throw new RangeError(`shape mismatch: [${a.dims}] vs [${b.dims}]`)
  const x = asFloat32(a); const y = asFloat32(b)
  // NaN fails every comparison, so it is looked for only where d > m is false (0.8-1.4 ms for a 1 MB tensor against 2.0-2.2 when each element was tested)
  let m = 0
  let nan = false
  const n = x.length
  for (let i = 0; i < n; i++) { const d = Math.abs(x[i] - y[i]); if (d > m) m = d; else if (Number.isNaN(d)) nan = true }
  return nan ? Infinity : m
}

/** Whether two tensors have the same dtype, shape and bytes (a byte comparison: NaNs of the same bits are equal). */
export function sameTensor (a: Tensor, b: Tensor): boolean {
  return a.dtype === b.dtype && a.dims.join() === b.dims.join() &&
    Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(b.data)
}

/** Checks a tensor's own consistency (dtype known, dims sane, bytes match). */
export function validateTensor (t: Tensor, field = `tensor ${t.name}`): void {
  if (typeof t.name !== 'string' || t.name.length === 0) throw new MalformedFrameError(`${field}.name`, 'must be a non-empty string')
  if (Buffer.byteLength(t.name) > MAX_NAME_BYTES) throw new FrameTooLargeError(`${field}.name`, Buffer.byteLength(t.name), MAX_NAME_BYTES)
  if (!isDType(t.dtype)) throw new MalformedFrameError(`${field}.dtype`, `unsupported dtype ${String(t.dtype)}`)
  if (!Array.isArray(t.dims) || t.dims.length > MAX_RANK) throw new MalformedFrameError(`${field}.dims`, `rank must be 0..${MAX_RANK}`)
  for (const d of t.dims) if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new MalformedFrameError(`${field}.dims`, `bad dimension ${d}`)
  const want = elementCount(t.dims) * itemSize(t.dtype)
  if (t.data.byteLength !== want) throw new MalformedFrameError(`${field}.data`, `has ${t.data.byteLength} bytes, dims [${t.dims}] of ${t.dtype} need ${want}`)
}

/** How a tensor is described in a frame header (the generated message's fields). */
export interface TensorDescriptor {
  name: string
  dtype: DataType
  dims: number[]
  encoding: TensorEncoding
  encodedLength: number
}

/** How tensors may be encoded for a frame. */
export interface EncodeOptions {
  /** Carry float32 tensors as binary16 (fp16 hand-offs). */
  float16?: boolean
  /**
   * Compress the other tensors that shrink to this share of their size or
   * less (protocols/compression.ts `compressionFor`); only for a peer that
   * reads TENSOR_ENCODING_ZSTD. Undefined: none.
   */
  compress?: number
}

/**
 * Descriptors for a frame header and the payload parts, in order (no copies,
 * except that `float16` carries float32 tensors as binary16: half the bytes,
 * exact for values already rounded to float16, and `compress` compresses a
 * tensor losslessly where that pays).
 */
export function describeTensors (tensors: Tensor[], opts: EncodeOptions = {}): { descriptors: TensorDescriptor[], parts: Uint8Array[], bytes: number } {
  if (tensors.length > MAX_TENSORS) throw new FrameTooLargeError('tensors.count', tensors.length, MAX_TENSORS)
  let bytes = 0
  const parts: Uint8Array[] = []
  const descriptors = tensors.map((t, i) => {
    validateTensor(t, `tensors[${i}]`)
    const half = opts.float16 === true && t.dtype === 'float32'
    const packed = !half && opts.compress !== undefined ? compressIfItPays(t.data, opts.compress) : undefined
    const data = half ? encodeFloat16(t.data) : packed ?? t.data
    parts.push(data)
    bytes += data.byteLength
    const encoding = half ? TensorEncoding.FLOAT16 : packed !== undefined ? TensorEncoding.ZSTD : TensorEncoding.RAW
    return { name: t.name, dtype: dtypeCode(t.dtype), dims: t.dims, encoding, encodedLength: data.byteLength }
  })
  return { descriptors, parts, bytes }
}

/** Whether every tensor of these descriptors travels as it is in memory (no float16, no compression). */
export function allRaw (descriptors: TensorDescriptor[]): boolean {
  return descriptors.every(d => d.encoding === TensorEncoding.RAW)
}

/** The bytes a checked descriptor's tensor takes once decoded (dims x item size). */
export function decodedLength (d: TensorDescriptor): number {
  return elementCount(d.dims) * itemSize(dtypeOfCode(d.dtype)!)
}

const ENCODINGS = new Set<number>([TensorEncoding.RAW, TensorEncoding.FLOAT16, TensorEncoding.ZSTD])

/**
 * Checks descriptors read from a header and returns the payload length they
 * declare; every error names the tensor and field. The tensors decoded may
 * not exceed `limit` either (float16 doubles, a compressed tensor grows).
 */
export function checkDescriptors (descriptors: TensorDescriptor[], limit: number): number {
  if (descriptors.length > MAX_TENSORS) throw new FrameTooLargeError('tensors.count', descriptors.length, MAX_TENSORS)
  let total = 0
  let decoded = 0
  descriptors.forEach((d, i) => {
    const f = `tensors[${i}]`
    if (d.name.length === 0) throw new MalformedFrameError(`${f}.name`, 'empty')
    if (Buffer.byteLength(d.name) > MAX_NAME_BYTES) throw new FrameTooLargeError(`${f}.name`, Buffer.byteLength(d.name), MAX_NAME_BYTES)
    const dtype = dtypeOfCode(d.dtype)
    if (dtype === undefined) throw new MalformedFrameError(`${f}.dtype`, `unknown data type ${d.dtype}`)
    if (d.dims.length > MAX_RANK) throw new MalformedFrameError(`${f}.dims`, `rank ${d.dims.length} exceeds ${MAX_RANK}`)
    if (!ENCODINGS.has(d.encoding)) throw new MalformedFrameError(`${f}.encoding`, `unknown encoding ${d.encoding}`)
    if (d.encoding === TensorEncoding.FLOAT16 && dtype !== 'float32') throw new MalformedFrameError(`${f}.encoding`, `float16 carries float32 tensors only, not ${dtype}`)
    const raw = elementCount(d.dims) * itemSize(dtype)
    if (d.encoding === TensorEncoding.ZSTD) {
      if (d.encodedLength <= 0 || d.encodedLength >= raw) throw new MalformedFrameError(`${f}.data`, `declares ${d.encodedLength} compressed bytes; dims [${d.dims}] of ${dtype} take ${raw} raw, and compressed must be fewer`)
    } else {
      const want = d.encoding === TensorEncoding.FLOAT16 ? raw / 2 : raw
      if (d.encodedLength !== want) throw new MalformedFrameError(`${f}.data`, `declares ${d.encodedLength} bytes, dims [${d.dims}] of ${dtype} need ${want}`)
    }
    total += d.encodedLength
    if (total > limit) throw new FrameTooLargeError('payload', total, limit)
    decoded += raw
    if (decoded > limit) throw new FrameTooLargeError('tensors decoded', decoded, limit)
  })
  return total
}

/**
 * Tensors from checked descriptors and their payload. Each tensor's bytes are
 * 8-byte aligned (copied if needed). With `shared`, a tensor that travelled
 * as it is gets its bytes copied once into memory of its own that threads
 * share (a SharedArrayBuffer), so a stage session on a worker thread reads
 * them where they are instead of from a second copy (session-worker.ts);
 * whoever runs them gives that memory back for reuse (shared-buffers.ts).
 */
export function tensorsFromPayload (descriptors: TensorDescriptor[], payload: Uint8ArrayList | Uint8Array, opts: { shared?: boolean } = {}): Tensor[] {
  const list = payload instanceof Uint8ArrayList ? payload : new Uint8ArrayList(payload)
  let o = 0
  return descriptors.map(d => {
    let data = opts.shared === true && d.encoding === TensorEncoding.RAW ? sharedCopy(list, o, o + d.encodedLength) : list.subarray(o, o + d.encodedLength)
    if (d.encoding === TensorEncoding.FLOAT16) data = decodeFloat16(data)
    else if (d.encoding === TensorEncoding.ZSTD) data = decompressExactly(data, decodedLength(d), `tensor ${d.name}`)
    // a copy (not Buffer#slice, which is a view) when misaligned for typed-array views
    else if (data.byteOffset % 8 !== 0) data = new Uint8Array(data)
    o += d.encodedLength
    return { name: d.name, dtype: dtypeOfCode(d.dtype)!, dims: [...d.dims], data }
  })
}

/** Bytes `start`..`end` of `list`, copied into a SharedArrayBuffer of their own (one given back before, overwritten whole). */
function sharedCopy (list: Uint8ArrayList, start: number, end: number): Uint8Array {
  const out = new Uint8Array(takeShared(end - start))
  let at = 0
  let pos = 0
  for (const buf of list) {
    const next = at + buf.byteLength
    if (next > start && at < end) {
      const part = buf.subarray(Math.max(start, at) - at, Math.min(end, next) - at)
      out.set(part, pos)
      pos += part.byteLength
    }
    at = next
    if (at >= end) break
  }
  return out
}
