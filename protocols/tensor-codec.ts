/**
 * Tensor codec: the binary layout of tensors inside infer frames.
 *
 * A frame is `u8 kind | u32 headerLen | header (UTF-8 JSON) | u16 count | tensor*`
 * and a tensor is `u16 nameLen | name | u8 dtype | u8 rank | u32 dim * rank |
 * u32 byteLength | bytes`, all little-endian. `byteLength` must equal the
 * element count times the dtype's size. Every length is checked against
 * protocols/limits.ts before anything is allocated.
 */
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { MAX_HEADER_BYTES, MAX_INFER_FRAME_BYTES, MAX_NAME_BYTES, MAX_RANK, MAX_TENSORS } from './limits.ts'

export const DTYPES = ['float32', 'uint8', 'int8', 'uint16', 'int16', 'int32', 'int64', 'bool', 'float16', 'float64', 'uint32', 'uint64'] as const
export type DType = typeof DTYPES[number]

const ITEM_SIZE: Record<DType, number> = {
  float32: 4, uint8: 1, int8: 1, uint16: 2, int16: 2, int32: 4, int64: 8, bool: 1, float16: 2, float64: 8, uint32: 4, uint64: 8
}

export function itemSize (dtype: DType): number { return ITEM_SIZE[dtype] }
export function isDType (s: unknown): s is DType { return typeof s === 'string' && (DTYPES as readonly string[]).includes(s) }

/** A named dense tensor; `data` holds the raw little-endian elements. */
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
  const d = t.data.byteOffset % 4 === 0 ? t.data : t.data.slice()
  return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4)
}

export function float32Tensor (name: string, dims: number[], values: Float32Array): Tensor {
  return { name, dtype: 'float32', dims, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) }
}

/** Largest element-wise |a - b| over two float32 tensors of the same shape. */
export function maxAbsDiff (a: Tensor, b: Tensor): number {
  if (a.dims.join() !== b.dims.join()) throw new RangeError(`shape mismatch: [${a.dims}] vs [${b.dims}]`)
  const x = asFloat32(a); const y = asFloat32(b)
  let m = 0
  for (let i = 0; i < x.length; i++) { const d = Math.abs(x[i] - y[i]); if (d > m || Number.isNaN(d)) m = Number.isNaN(d) ? Infinity : d }
  return m
}

export function tensorByteLength (t: Tensor): number {
  return 2 + Buffer.byteLength(t.name) + 2 + 4 * t.dims.length + 4 + t.data.byteLength
}

/** Checks a tensor's own consistency (dtype known, dims sane, bytes match). */
export function validateTensor (t: Tensor, field = `tensor ${t.name}`): void {
  if (typeof t.name !== 'string' || t.name.length === 0) throw new MalformedFrameError(`${field}.name`, 'must be a non-empty string')
  if (Buffer.byteLength(t.name) > MAX_NAME_BYTES) throw new FrameTooLargeError(`${field}.name`, Buffer.byteLength(t.name), MAX_NAME_BYTES)
  if (!isDType(t.dtype)) throw new MalformedFrameError(`${field}.dtype`, `unsupported dtype ${String(t.dtype)}`)
  if (!Array.isArray(t.dims) || t.dims.length > MAX_RANK) throw new MalformedFrameError(`${field}.dims`, `rank must be 0..${MAX_RANK}`)
  for (const d of t.dims) if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new MalformedFrameError(`${field}.dims`, `bad dimension ${d}`)
  const want = elementCount(t.dims) * ITEM_SIZE[t.dtype]
  if (t.data.byteLength !== want) throw new MalformedFrameError(`${field}.data`, `has ${t.data.byteLength} bytes, dims [${t.dims}] of ${t.dtype} need ${want}`)
}

export interface Frame<H = unknown> {
  kind: number
  header: H
  tensors: Tensor[]
}

/** Encodes a frame; throws FrameTooLargeError past `limit`. */
export function encodeFrame (frame: Frame, limit = MAX_INFER_FRAME_BYTES): Uint8Array {
  const header = Buffer.from(JSON.stringify(frame.header ?? null))
  if (header.byteLength > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', header.byteLength, MAX_HEADER_BYTES)
  if (frame.tensors.length > MAX_TENSORS) throw new FrameTooLargeError('tensors.count', frame.tensors.length, MAX_TENSORS)
  let size = 1 + 4 + header.byteLength + 2
  for (const [i, t] of frame.tensors.entries()) { validateTensor(t, `tensors[${i}]`); size += tensorByteLength(t) }
  if (size > limit) throw new FrameTooLargeError('frame', size, limit)
  const out = Buffer.allocUnsafe(size)
  let o = 0
  out.writeUInt8(frame.kind, o); o += 1
  out.writeUInt32LE(header.byteLength, o); o += 4
  header.copy(out, o); o += header.byteLength
  out.writeUInt16LE(frame.tensors.length, o); o += 2
  for (const t of frame.tensors) {
    const name = Buffer.from(t.name)
    out.writeUInt16LE(name.byteLength, o); o += 2
    name.copy(out, o); o += name.byteLength
    out.writeUInt8(DTYPES.indexOf(t.dtype), o); o += 1
    out.writeUInt8(t.dims.length, o); o += 1
    for (const d of t.dims) { out.writeUInt32LE(d, o); o += 4 }
    out.writeUInt32LE(t.data.byteLength, o); o += 4
    out.set(t.data, o); o += t.data.byteLength
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
}

/** Decodes a frame; every read is bounds-checked and errors name the field. */
export function decodeFrame (bytes: Uint8Array, limit = MAX_INFER_FRAME_BYTES): Frame {
  if (bytes.byteLength > limit) throw new FrameTooLargeError('frame', bytes.byteLength, limit)
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let o = 0
  const need = (n: number, field: string): void => {
    if (o + n > b.byteLength) throw new MalformedFrameError(field, `truncated: needs ${n} bytes at offset ${o}, frame has ${b.byteLength}`)
  }
  need(1, 'kind'); const kind = b.readUInt8(o); o += 1
  need(4, 'header.length'); const hlen = b.readUInt32LE(o); o += 4
  if (hlen > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', hlen, MAX_HEADER_BYTES)
  need(hlen, 'header')
  let header: unknown
  try { header = JSON.parse(b.toString('utf8', o, o + hlen)) } catch (err) {
    throw new MalformedFrameError('header', `not JSON (${(err as Error).message})`)
  }
  o += hlen
  need(2, 'tensors.count'); const count = b.readUInt16LE(o); o += 2
  if (count > MAX_TENSORS) throw new FrameTooLargeError('tensors.count', count, MAX_TENSORS)
  const tensors: Tensor[] = []
  for (let i = 0; i < count; i++) {
    const f = `tensors[${i}]`
    need(2, `${f}.name.length`); const nlen = b.readUInt16LE(o); o += 2
    if (nlen === 0) throw new MalformedFrameError(`${f}.name`, 'empty')
    if (nlen > MAX_NAME_BYTES) throw new FrameTooLargeError(`${f}.name`, nlen, MAX_NAME_BYTES)
    need(nlen, `${f}.name`); const name = b.toString('utf8', o, o + nlen); o += nlen
    need(2, `${f}.dtype`); const code = b.readUInt8(o); o += 1
    const dtype = DTYPES[code]
    if (dtype === undefined) throw new MalformedFrameError(`${f}.dtype`, `unknown dtype code ${code}`)
    const rank = b.readUInt8(o); o += 1
    if (rank > MAX_RANK) throw new MalformedFrameError(`${f}.dims`, `rank ${rank} exceeds ${MAX_RANK}`)
    need(4 * rank, `${f}.dims`)
    const dims: number[] = []
    for (let r = 0; r < rank; r++) { dims.push(b.readUInt32LE(o)); o += 4 }
    need(4, `${f}.data.length`); const len = b.readUInt32LE(o); o += 4
    const want = elementCount(dims) * ITEM_SIZE[dtype]
    if (len !== want) throw new MalformedFrameError(`${f}.data`, `declares ${len} bytes, dims [${dims}] of ${dtype} need ${want}`)
    need(len, `${f}.data`)
    // copy so the data is aligned and does not pin the whole frame
    const data = new Uint8Array(len)
    data.set(bytes.subarray(o, o + len)); o += len
    tensors.push({ name, dtype, dims, data })
  }
  if (o !== b.byteLength) throw new MalformedFrameError('frame', `${b.byteLength - o} trailing bytes`)
  return { kind, header, tensors }
}

/** A frame whose header is decoded and whose tensor section is left as bytes (for relaying). */
export interface RawFrame<H = unknown> {
  kind: number
  header: H
  /** The encoded tensor section: `u16 count | tensor*`. */
  tensorBytes: Uint8Array
}

/** Decodes kind and header only; the tensor section stays encoded. */
export function peekFrame (bytes: Uint8Array, limit = MAX_INFER_FRAME_BYTES): RawFrame {
  if (bytes.byteLength > limit) throw new FrameTooLargeError('frame', bytes.byteLength, limit)
  if (bytes.byteLength < 7) throw new MalformedFrameError('frame', `truncated: ${bytes.byteLength} bytes`)
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const hlen = b.readUInt32LE(1)
  if (hlen > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', hlen, MAX_HEADER_BYTES)
  if (5 + hlen + 2 > b.byteLength) throw new MalformedFrameError('header', 'truncated')
  let header: unknown
  try { header = JSON.parse(b.toString('utf8', 5, 5 + hlen)) } catch (err) {
    throw new MalformedFrameError('header', `not JSON (${(err as Error).message})`)
  }
  return { kind: b.readUInt8(0), header, tensorBytes: bytes.subarray(5 + hlen) }
}

/** Re-frames an encoded tensor section under a new header, without touching the tensors. */
export function reframe (kind: number, header: unknown, tensorBytes: Uint8Array, limit = MAX_INFER_FRAME_BYTES): Uint8Array[] {
  const h = Buffer.from(JSON.stringify(header))
  if (h.byteLength > MAX_HEADER_BYTES) throw new FrameTooLargeError('header', h.byteLength, MAX_HEADER_BYTES)
  if (5 + h.byteLength + tensorBytes.byteLength > limit) throw new FrameTooLargeError('frame', 5 + h.byteLength + tensorBytes.byteLength, limit)
  const prefix = Buffer.allocUnsafe(5 + h.byteLength)
  prefix.writeUInt8(kind, 0)
  prefix.writeUInt32LE(h.byteLength, 1)
  h.copy(prefix, 5)
  return [new Uint8Array(prefix.buffer, prefix.byteOffset, prefix.byteLength), tensorBytes]
}

/** Decodes the tensors of a raw frame. */
export function rawTensors (raw: RawFrame): Tensor[] {
  return decodeFrame(reframeBytes(raw)).tensors
}

function reframeBytes (raw: RawFrame): Uint8Array {
  const parts = reframe(raw.kind, raw.header, raw.tensorBytes, Infinity)
  const out = new Uint8Array(parts[0].byteLength + parts[1].byteLength)
  out.set(parts[0]); out.set(parts[1], parts[0].byteLength)
  return out
}
