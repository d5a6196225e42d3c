/**
 * Builds small ONNX models from scratch for tests (onnx-buf), so partitioner
 * tests do not depend only on the shipped models.
 */
import { create, toBinary } from '@bufbuild/protobuf'
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  TensorProtoSchema, TensorProto_DataType, TensorShapeProtoSchema, TensorShapeProto_DimensionSchema, TypeProtoSchema, TypeProto_TensorSchema,
  ValueInfoProtoSchema
} from 'onnx-buf'
import type { NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf'

export function floatTensor (name: string, dims: number[], seed: number): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1)
  const f = new Float32Array(n)
  let s = seed
  for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; f[i] = (s / 2147483648 - 0.5) * 0.5 }
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(f.buffer) })
}

export function input (name: string, dims: Array<number | string>): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType: TensorProto_DataType.FLOAT,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map(d => create(TensorShapeProto_DimensionSchema, { value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d } }))
          })
        })
      }
    })
  })
}

export function node (op: string, inputs: string[], outputs: string[], attrs: Array<{ name: string, t?: TensorProto }> = []): NodeProto {
  return create(NodeProtoSchema, {
    opType: op,
    input: inputs,
    output: outputs,
    name: `${op}_${outputs[0]}`,
    attribute: attrs.map(a => create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.TENSOR, ...(a.t !== undefined ? { t: a.t } : {}) }))
  })
}

/**
 * An MLP with the hard cases: a skip connection (cuts carry two tensors), an
 * initializer read by two far-apart nodes, a weight in a Constant node, and
 * the graph input read again near the end (it passes through stages).
 * Input x: float32 [batch, 8]; output y: float32 [batch, 4].
 */
export function buildTestMlp (): Uint8Array {
  const nodes = [
    node('MatMul', ['x', 'w1'], ['h1']),
    node('Constant', [], ['b1'], [{ name: 'value', t: floatTensor('b1', [16], 7) }]),
    node('Add', ['h1', 'b1'], ['h2']),
    node('Relu', ['h2'], ['h3']),
    node('MatMul', ['h3', 'w2'], ['h4']),
    node('Add', ['h4', 'h2'], ['h5']),
    node('Tanh', ['h5'], ['h6']),
    node('MatMul', ['h6', 'w2'], ['h7']),
    node('Sigmoid', ['h7'], ['h8']),
    node('MatMul', ['x', 'w3'], ['h9']),
    node('Add', ['h8', 'h9'], ['h10']),
    node('Mul', ['h10', 'h5'], ['h11']),
    node('MatMul', ['h11', 'w4'], ['y'])
  ]
  const graph = create(GraphProtoSchema, {
    name: 'test_mlp',
    node: nodes,
    initializer: [floatTensor('w1', [8, 16], 1), floatTensor('w2', [16, 16], 2), floatTensor('w3', [8, 16], 3), floatTensor('w4', [16, 4], 4)],
    input: [input('x', ['batch', 8])],
    output: [input('y', ['batch', 4])]
  })
  return toBinary(ModelProtoSchema, create(ModelProtoSchema, {
    irVersion: 8n,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 13n })],
    producerName: 'fleetmesh-test',
    graph
  }))
}
