/**
 * onnxruntime-node helpers: session options tuned for small shared machines,
 * and conversion between wire tensors and ORT tensors.
 */
// first: onnxruntime's telemetry stays off unless the operator turned it on (see that module)
import './ort-telemetry.ts'
import * as ort from 'onnxruntime-node'
import type { DType, Tensor } from '../../protocols/tensor.ts'

export interface SessionTuning {
  /** Threads inside one op. Keep threads x concurrent sessions <= cores. @default 1 */
  intraOpThreads?: number
  /** @default 'all' */
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all'
}

export function sessionOptions (t: SessionTuning = {}): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: t.intraOpThreads ?? 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: t.graphOptimization ?? 'all',
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } }
  } as ort.InferenceSession.SessionOptions
}

export async function createSession (model: Uint8Array | string, t: SessionTuning = {}): Promise<ort.InferenceSession> {
  return typeof model === 'string'
    ? await ort.InferenceSession.create(model, sessionOptions(t))
    : await ort.InferenceSession.create(model, sessionOptions(t))
}

export function toOrt (t: Tensor): ort.Tensor {
  const buf = t.data.byteOffset % 8 === 0 ? t.data : new Uint8Array(t.data)
  const ab = buf.buffer as ArrayBuffer
  const o = buf.byteOffset
  const n = t.dims.reduce((a, b) => a * b, 1)
  switch (t.dtype) {
    case 'float32': return new ort.Tensor('float32', new Float32Array(ab, o, n), t.dims)
    case 'float64': return new ort.Tensor('float64', new Float64Array(ab, o, n), t.dims)
    case 'int8': return new ort.Tensor('int8', new Int8Array(ab, o, n), t.dims)
    case 'uint8': return new ort.Tensor('uint8', new Uint8Array(ab, o, n), t.dims)
    case 'int16': return new ort.Tensor('int16', new Int16Array(ab, o, n), t.dims)
    case 'uint16': return new ort.Tensor('uint16', new Uint16Array(ab, o, n), t.dims)
    case 'float16': return new ort.Tensor('float16', new Uint16Array(ab, o, n), t.dims)
    case 'int32': return new ort.Tensor('int32', new Int32Array(ab, o, n), t.dims)
    case 'uint32': return new ort.Tensor('uint32', new Uint32Array(ab, o, n), t.dims)
    case 'int64': return new ort.Tensor('int64', new BigInt64Array(ab, o, n), t.dims)
    case 'uint64': return new ort.Tensor('uint64', new BigUint64Array(ab, o, n), t.dims)
    case 'bool': return new ort.Tensor('bool', new Uint8Array(ab, o, n), t.dims)
  }
}

export function fromOrt (name: string, t: ort.Tensor): Tensor {
  const dtype = t.type as DType
  if (t.type === 'string') throw new TypeError(`tensor ${name}: string tensors are not supported`)
  const d = t.data as ArrayBufferView
  // onnxruntime-node hands each output in a buffer of its own, which later runs do not touch
  // (test/models/ort-outputs.spec.ts): kept as it is, and moved whole to another thread
  if (d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) return { name, dtype, dims: t.dims.map(Number), data: new Uint8Array(d.buffer) }
  const data = new Uint8Array(d.byteLength)
  data.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
  return { name, dtype, dims: t.dims.map(Number), data }
}

/** Runs a session on named tensors and returns all of its outputs. */
export async function runSession (session: ort.InferenceSession, inputs: Tensor[]): Promise<Tensor[]> {
  const feeds: Record<string, ort.Tensor> = {}
  for (const t of inputs) feeds[t.name] = toOrt(t)
  const out = await session.run(feeds)
  return session.outputNames.map(n => fromOrt(n, out[n]))
}

export { ort }
