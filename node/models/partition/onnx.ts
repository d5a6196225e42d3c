/**
 * ONNX files in TypeScript (onnx-buf): decoding, external data, tensor types
 * and the names a graph reads, including those read by If/Loop/Scan bodies.
 */
import { create, fromBinary } from '@bufbuild/protobuf'
import {
  AttributeProto_AttributeType, ModelProtoSchema, TensorProto_DataLocation, TensorShapeProtoSchema, TensorShapeProto_DimensionSchema,
  TypeProtoSchema, TypeProto_TensorSchema, ValueInfoProtoSchema
} from 'onnx-buf'
import type { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { dtypeCode, dtypeOfCode } from '../../../protocols/tensor.ts'
import type { DType } from '../../../protocols/tensor.ts'
import type { TensorSpec } from '../specs.ts'

export class InvalidModelError extends Error {
  readonly name = 'InvalidModelError'
  readonly code = 'ERR_INVALID_MODEL'
}

/**
 * Moves tensors stored as external data (a `.data` file beside the model)
 * into the model, so the model and every stage cut from it stand alone.
 */
export async function inlineExternalData (model: ModelProto, baseDir: string | undefined): Promise<number> {
  const tensors: TensorProto[] = []
  const visit = (g: GraphProto): void => {
    tensors.push(...g.initializer)
    for (const n of g.node) {
      for (const a of n.attribute) {
        if (a.t !== undefined) tensors.push(a.t)
        if (a.g !== undefined) visit(a.g)
        for (const sub of a.graphs) visit(sub)
      }
    }
  }
  if (model.graph !== undefined) visit(model.graph)
  const files = new Map<string, Uint8Array>()
  let inlined = 0
  for (const t of tensors) {
    if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL) continue
    const entry = (k: string): string | undefined => t.externalData.find(e => e.key === k)?.value
    const location = entry('location')
    if (location === undefined) throw new InvalidModelError(`tensor ${t.name}: external data without a location`)
    if (baseDir === undefined) throw new InvalidModelError(`tensor ${t.name} lives in external file ${location}: give the model as a file path so it can be read`)
    if (location.includes('..') || location.startsWith('/')) throw new InvalidModelError(`tensor ${t.name}: external data location ${location} leaves the model's directory`)
    let data = files.get(location)
    if (data === undefined) {
      try { data = await readFile(join(baseDir, location)) } catch (err) {
        throw new InvalidModelError(`tensor ${t.name}: cannot read external data ${location}: ${(err as Error).message}`)
      }
      files.set(location, data)
    }
    const offset = Number(entry('offset') ?? 0)
    const length = entry('length') !== undefined ? Number(entry('length')) : data.byteLength - offset
    if (offset < 0 || offset + length > data.byteLength) throw new InvalidModelError(`tensor ${t.name}: external data ${location} is too short (needs bytes ${offset}..${offset + length}, has ${data.byteLength})`)
    t.rawData = data.slice(offset, offset + length)
    t.externalData = []
    t.dataLocation = TensorProto_DataLocation.DEFAULT
    inlined++
  }
  return inlined
}

function tensorTypeOf (vi: ValueInfoProto): { elemType: number, shape: Array<number | null> | undefined } | undefined {
  if (vi.type?.value.case !== 'tensorType') return undefined
  const tt = vi.type.value.value
  const shape = tt.shape?.dim.map(d => d.value.case === 'dimValue' ? Number(d.value.value) : null)
  return { elemType: tt.elemType, shape }
}

export function specOf (vi: ValueInfoProto, probe?: { dtype: DType, dims: number[] }): TensorSpec {
  const t = tensorTypeOf(vi)
  const dtype = (t !== undefined ? dtypeOfCode(t.elemType) : undefined) ?? probe?.dtype
  if (dtype === undefined) throw new InvalidModelError(`tensor ${vi.name}: unsupported or missing element type`)
  const shape = t?.shape ?? probe?.dims.map(() => null) ?? []
  return { name: vi.name, dtype, shape }
}

/** Names a graph reads from its enclosing scope (recursively through nested bodies). */
export function outerReads (g: GraphProto): string[] {
  const defined = new Set<string>([...g.input.map(i => i.name), ...g.initializer.map(i => i.name)])
  const reads: string[] = []
  for (const n of g.node) {
    for (const name of [...n.input, ...subgraphReads(n)]) if (name !== '' && !defined.has(name)) reads.push(name)
    for (const o of n.output) defined.add(o)
  }
  return [...new Set(reads)]
}

export function subgraphReads (n: NodeProto): string[] {
  const out: string[] = []
  for (const a of n.attribute) {
    if (a.type === AttributeProto_AttributeType.GRAPH && a.g !== undefined) out.push(...outerReads(a.g))
    if (a.type === AttributeProto_AttributeType.GRAPHS) for (const g of a.graphs) out.push(...outerReads(g))
  }
  return out
}

export function attrInt (n: NodeProto, name: string): number | undefined {
  const a = n.attribute.find(x => x.name === name)
  return a === undefined ? undefined : Number(a.i)
}

export function decodeModel (bytes: Uint8Array): ModelProto {
  let model: ModelProto
  try { model = fromBinary(ModelProtoSchema, bytes) } catch (err) {
    throw new InvalidModelError(`not a valid ONNX model: ${(err as Error).message}`)
  }
  if (model.graph === undefined || model.graph.node.length === 0) throw new InvalidModelError('not a valid ONNX model: it has no graph nodes')
  return model
}

export function valueInfo (spec: TensorSpec, prefix: string): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name: spec.name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType: dtypeCode(spec.dtype),
          shape: create(TensorShapeProtoSchema, {
            dim: spec.shape.map((d, j) => create(TensorShapeProto_DimensionSchema, {
              value: d === null ? { case: 'dimParam', value: `${prefix}_d${j}` } : { case: 'dimValue', value: BigInt(d) }
            }))
          })
        })
      }
    })
  })
}
