/**
 * Tensors in the Open Inference Protocol's JSON form (KServe v2):
 * `{ "name", "shape", "datatype": "FP32", "data": [...] }`. Used for tensor
 * files on the command line.
 */
import { MalformedFrameError } from './errors.ts'
import { elementCount, itemSize } from './tensor.ts'
import type { DType, Tensor } from './tensor.ts'

const OIP_TO_DTYPE: Record<string, DType> = {
  BOOL: 'bool',
  UINT8: 'uint8',
  UINT16: 'uint16',
  UINT32: 'uint32',
  UINT64: 'uint64',
  INT8: 'int8',
  INT16: 'int16',
  INT32: 'int32',
  INT64: 'int64',
  FP16: 'float16',
  FP32: 'float32',
  FP64: 'float64'
}
const DTYPE_TO_OIP = Object.fromEntries(Object.entries(OIP_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>

export function oipDatatype (dtype: DType): string { return DTYPE_TO_OIP[dtype] }

/** The dtype of an OIP datatype name; a MalformedFrameError naming `field` otherwise. */
export function oipToDtype (datatype: unknown, field: string): DType {
  const d = OIP_TO_DTYPE[String(datatype)]
  if (d === undefined) throw new MalformedFrameError(field, `unsupported datatype ${String(datatype)} (use ${Object.keys(OIP_TO_DTYPE).join(', ')})`)
  return d
}

function typedArray (dtype: DType, buf: ArrayBuffer, n: number): ArrayLike<number | bigint> & { [i: number]: number | bigint } {
  switch (dtype) {
    case 'float32': return new Float32Array(buf, 0, n)
    case 'float64': return new Float64Array(buf, 0, n)
    case 'int8': return new Int8Array(buf, 0, n)
    case 'uint8': case 'bool': return new Uint8Array(buf, 0, n)
    case 'int16': return new Int16Array(buf, 0, n)
    case 'uint16': case 'float16': return new Uint16Array(buf, 0, n)
    case 'int32': return new Int32Array(buf, 0, n)
    case 'uint32': return new Uint32Array(buf, 0, n)
    case 'int64': return new BigInt64Array(buf, 0, n)
    case 'uint64': return new BigUint64Array(buf, 0, n)
  }
}

/** Parses one OIP JSON tensor; errors name the field. */
export function tensorFromOip (v: any, field = 'tensor'): Tensor {
  if (v === null || typeof v !== 'object') throw new MalformedFrameError(field, 'must be an object')
  if (typeof v.name !== 'string' || v.name === '') throw new MalformedFrameError(`${field}.name`, 'must be a non-empty string')
  const dtype = OIP_TO_DTYPE[v.datatype]
  if (dtype === undefined) throw new MalformedFrameError(`${field}.datatype`, `unsupported datatype ${String(v.datatype)} (use ${Object.keys(OIP_TO_DTYPE).join(', ')})`)
  if (!Array.isArray(v.shape) || v.shape.some((d: unknown) => !Number.isInteger(d) || (d as number) < 0)) throw new MalformedFrameError(`${field}.shape`, 'must be an array of non-negative integers')
  const flat = Array.isArray(v.data) ? (v.data as unknown[]).flat(Infinity) : undefined
  if (flat === undefined) throw new MalformedFrameError(`${field}.data`, 'must be an array')
  const n = elementCount(v.shape)
  if (flat.length !== n) throw new MalformedFrameError(`${field}.data`, `has ${flat.length} elements, shape [${v.shape}] needs ${n}`)
  const buf = new ArrayBuffer(n * itemSize(dtype))
  const arr = typedArray(dtype, buf, n)
  const big = dtype === 'int64' || dtype === 'uint64'
  for (let i = 0; i < n; i++) {
    const x = flat[i]
    if (dtype === 'bool') { arr[i] = x === true || x === 1 ? 1 : 0; continue }
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new MalformedFrameError(`${field}.data[${i}]`, 'must be a finite number')
    arr[i] = big ? BigInt(Math.trunc(x)) : x
  }
  return { name: v.name, dtype, dims: v.shape, data: new Uint8Array(buf) }
}

/** An OIP JSON tensor (data flattened, row-major). */
export function tensorToOip (t: Tensor): { name: string, datatype: string, shape: number[], data: Array<number | boolean> } {
  const n = elementCount(t.dims)
  const copy = new Uint8Array(t.data) // a real copy at offset 0 (Buffer#slice would be a view)
  const arr = typedArray(t.dtype, copy.buffer, n)
  const data: Array<number | boolean> = []
  for (let i = 0; i < n; i++) data.push(t.dtype === 'bool' ? arr[i] !== 0 : Number(arr[i]))
  return { name: t.name, datatype: DTYPE_TO_OIP[t.dtype], shape: t.dims, data }
}
