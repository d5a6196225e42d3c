/**
 * ONNX partitioner: splits any ONNX model into K pipeline stages.
 *
 * The steps live in their own modules: onnx.ts (decoding, types, external
 * data), analysis.ts (probe run), cost.ts (FLOPs and measured times),
 * planner.ts (cuts) and surgery.ts (stage models).
 *
 * 1. `analyzeModel` decodes the model (onnx-buf), treats initializers and
 *    Constant nodes as replicable (each stage gets its own copy), and runs one
 *    probe through onnxruntime with every intermediate tensor added as a graph
 *    output, which gives the dtype and shape of every tensor (there is no shape
 *    inference in JS). Node costs are estimated FLOPs from those shapes.
 * 2. `planCuts` picks K-1 cut positions in topological order: within 30% of
 *    each balanced target it takes the cut with the fewest bytes crossing it.
 * 3. `buildStages` writes one ONNX model per stage. A stage's inputs are the
 *    tensors it reads that earlier stages (or the caller) produce, including
 *    tensors read by If/Loop/Scan bodies; what crosses a cut may be several
 *    tensors (skip connections), and tensors may pass through a stage.
 */
export { InvalidModelError, decodeModel, inlineExternalData } from './onnx.ts'
export { analyzeModel, probeDims } from './analysis.ts'
export type { AnalyzeOptions, ModelAnalysis, NodeInfo } from './analysis.ts'
export { measureNodeTimes, nodeCosts } from './cost.ts'
export { crossingBytesOf, crossingSets, planCuts } from './planner.ts'
export type { CutPlan } from './planner.ts'
export { buildStages } from './surgery.ts'
export type { BuiltStage } from './surgery.ts'
