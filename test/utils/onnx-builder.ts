/**
 * Builds small ONNX models from scratch for tests (onnx-buf), so partitioner
 * tests do not depend only on the shipped models.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, StringStringEntryProtoSchema, TensorProto_DataLocation, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  TensorProtoSchema, TensorProto_DataType, TensorShapeProtoSchema, TensorShapeProto_DimensionSchema, TypeProtoSchema, TypeProto_TensorSchema,
  ValueInfoProtoSchema
} from 'onnx-buf'
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf'

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

type Attr = { name: string, t?: TensorProto } | { name: string, i: number } | { name: string, f: number } | { name: string, ints: number[] } | { name: string, g: GraphProto }

/** A node with any of tensor, int, float, ints or graph attributes. */
export function op (type: string, inputs: string[], outputs: string[], attrs: Attr[] = []): NodeProto {
  return create(NodeProtoSchema, {
    opType: type,
    input: inputs,
    output: outputs,
    name: `${type}_${outputs[0]}`,
    attribute: attrs.map(a => {
      if ('g' in a) return create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.GRAPH, g: a.g })
      if ('i' in a) return create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.INT, i: BigInt(a.i) })
      if ('f' in a) return create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.FLOAT, f: a.f })
      if ('ints' in a) return create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.INTS, ints: a.ints.map(BigInt) })
      return create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.TENSOR, ...(a.t !== undefined ? { t: a.t } : {}) })
    })
  })
}

function model (graph: GraphProto, opset: number): Uint8Array {
  return toBinary(ModelProtoSchema, create(ModelProtoSchema, {
    irVersion: 8n,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opset) })],
    producerName: 'fleetmesh-test',
    graph
  }))
}

/**
 * A model containing If whose branches read a tensor of the outer graph
 * (`h2`), so a cut before the If must carry it. x: [batch, 8] -> y: [batch, 4].
 */
export function buildIfModel (): Uint8Array {
  const branch = (name: string, type: string, out: string): GraphProto => create(GraphProtoSchema, {
    name,
    node: [op(type, ['h2'], [out])],
    output: [input(out, ['batch', 16])]
  })
  return model(create(GraphProtoSchema, {
    name: 'if_model',
    node: [
      op('MatMul', ['x', 'w1'], ['h']),
      op('Tanh', ['h'], ['h2']),
      op('ReduceSum', ['h'], ['s'], [{ name: 'keepdims', i: 0 }]),
      op('Greater', ['s', 'zero'], ['cond']),
      op('Sigmoid', ['h'], ['h3']),
      op('If', ['cond'], ['z'], [{ name: 'then_branch', g: branch('then', 'Relu', 't_out') }, { name: 'else_branch', g: branch('else', 'Neg', 'e_out') }]),
      op('Add', ['z', 'h3'], ['z2']),
      op('MatMul', ['z2', 'w2'], ['y'])
    ],
    initializer: [floatTensor('w1', [8, 16], 5), floatTensor('w2', [16, 4], 6), create(TensorProtoSchema, { name: 'zero', dims: [], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(4) })],
    input: [input('x', ['batch', 8])],
    output: [input('y', ['batch', 4])]
  }), 13)
}

/** Two pre-norm transformer blocks (attention + MLP, residuals). x: [batch, tokens, 16] -> y: same. */
export function buildTransformer (): Uint8Array {
  const D = 16
  const nodes: NodeProto[] = []
  const inits: TensorProto[] = [create(TensorProtoSchema, { name: 'scale', dims: [], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(new Float32Array([1 / Math.sqrt(D)]).buffer) })]
  let x = 'x'
  for (let b = 0; b < 2; b++) {
    const p = (n: string): string => `b${b}_${n}`
    inits.push(floatTensor(p('g1'), [D], 10 + b), floatTensor(p('b1'), [D], 20 + b), floatTensor(p('wq'), [D, D], 30 + b), floatTensor(p('wk'), [D, D], 40 + b), floatTensor(p('wv'), [D, D], 50 + b),
      floatTensor(p('wo'), [D, D], 60 + b), floatTensor(p('g2'), [D], 70 + b), floatTensor(p('b2'), [D], 80 + b), floatTensor(p('w1'), [D, 4 * D], 90 + b), floatTensor(p('w2'), [4 * D, D], 100 + b))
    nodes.push(
      op('LayerNormalization', [x, p('g1'), p('b1')], [p('n1')], [{ name: 'axis', i: -1 }, { name: 'epsilon', f: 1e-5 }]),
      op('MatMul', [p('n1'), p('wq')], [p('q')]),
      op('MatMul', [p('n1'), p('wk')], [p('k')]),
      op('MatMul', [p('n1'), p('wv')], [p('v')]),
      op('Transpose', [p('k')], [p('kt')], [{ name: 'perm', ints: [0, 2, 1] }]),
      op('MatMul', [p('q'), p('kt')], [p('att')]),
      op('Mul', [p('att'), 'scale'], [p('att_s')]),
      op('Softmax', [p('att_s')], [p('att_p')], [{ name: 'axis', i: -1 }]),
      op('MatMul', [p('att_p'), p('v')], [p('ctx')]),
      op('MatMul', [p('ctx'), p('wo')], [p('o')]),
      op('Add', [x, p('o')], [p('r1')]),
      op('LayerNormalization', [p('r1'), p('g2'), p('b2')], [p('n2')], [{ name: 'axis', i: -1 }, { name: 'epsilon', f: 1e-5 }]),
      op('MatMul', [p('n2'), p('w1')], [p('m1')]),
      op('Relu', [p('m1')], [p('m2')]),
      op('MatMul', [p('m2'), p('w2')], [p('m3')]),
      op('Add', [p('r1'), p('m3')], [b === 1 ? 'y' : p('out')])
    )
    x = p('out')
  }
  return model(create(GraphProtoSchema, { name: 'transformer', node: nodes, initializer: inits, input: [input('x', ['batch', 'tokens', D])], output: [input('y', ['batch', 'tokens', D])] }), 17)
}

/** A model with an operator onnxruntime does not know. */
export function buildUnsupportedOpModel (): Uint8Array {
  return model(create(GraphProtoSchema, {
    name: 'bogus',
    node: [op('MatMul', ['x', 'w'], ['h']), op('FleetmeshTeleport', ['h'], ['y'])],
    initializer: [floatTensor('w', [8, 8], 1)],
    input: [input('x', ['batch', 8])],
    output: [input('y', ['batch', 8])]
  }), 13)
}

/**
 * y = Shape(x), x float32 [n]: the run costs next to nothing whatever x's
 * size, where handing x to another thread costs a copy of it.
 */
export function buildShapeModel (n: number): Uint8Array {
  const y = create(ValueInfoProtoSchema, { name: 'y', type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType: TensorProto_DataType.INT64 }) } }) })
  return model(create(GraphProtoSchema, { name: 'shape', node: [op('Shape', ['x'], ['y'])], input: [input('x', [n])], output: [y] }), 13)
}

/**
 * The test MLP with its initializers moved to an external data file:
 * returns the model bytes and the data file's bytes (to be written as `dataName` beside it).
 */
export function buildExternalDataMlp (dataName: string): { model: Uint8Array, data: Uint8Array } {
  const m = fromBinary(ModelProtoSchema, buildTestMlp())
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const t of m.graph!.initializer) {
    chunks.push(t.rawData)
    t.externalData = [
      create(StringStringEntryProtoSchema, { key: 'location', value: dataName }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(t.rawData.byteLength) })
    ]
    t.dataLocation = TensorProto_DataLocation.EXTERNAL
    offset += t.rawData.byteLength
    t.rawData = new Uint8Array(0)
  }
  const data = new Uint8Array(offset)
  let o = 0
  for (const c of chunks) { data.set(c, o); o += c.byteLength }
  return { model: toBinary(ModelProtoSchema, m), data }
}
