/**
 * Model templates. A study carries a model *spec* (data); both sides build the same tfjs network from it, so the
 * weight list (order and shapes) is part of the protocol.
 */
import * as tf from '@tensorflow/tfjs';
import { CohortError } from './errors.ts';
import { ModelSpecSchema, type ModelSpec, type ResolvedModel } from './messages.ts';
import { addTopologyLayers } from './topology-builder.ts';
import { LAYER_TYPE_OF_CLASS } from './model-topology.ts';
import type { Tensor } from './codec.ts';

/** Output units: one sigmoid unit for two classes, softmax otherwise. */
export function outputUnits(numClasses: number): number {
  return numClasses === 2 ? 1 : numClasses;
}

/** Image templates take [height, width, channels]. */
function imageShape(resolved: ResolvedModel): [number, number, number] {
  const [h, w, c, ...rest] = resolved.inputShape;
  if (h === undefined || w === undefined || c === undefined || rest.length) {
    throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', `template ${resolved.spec.template} needs image input [height, width, channels]; the data has [${resolved.inputShape.join(', ')}]`);
  }
  return [h, w, c];
}

/** Keeps a CohortError, wraps anything tfjs threw while wiring layers (shapes that do not fit, mostly). */
function specError(e: unknown, resolved: ResolvedModel): CohortError {
  if (e instanceof CohortError) return e;
  const why = e instanceof Error ? e.message : String(e);
  return new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', `model ${resolved.spec.template} does not fit input [${resolved.inputShape.join(', ')}]: ${why.slice(0, 300)}`);
}

/**
 * Builds the tfjs network for a resolved spec. Every initializer and dropout mask is seeded from `seed` in layer
 * order, so the coordinator and every site build identical weights from the same spec, shape and seed.
 */
export function buildModel(resolved: ResolvedModel, seed = 42): tf.Sequential {
  const parsed = ModelSpecSchema.safeParse(resolved.spec);
  if (!parsed.success) throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', parsed.error.issues[0]?.message);
  const spec = parsed.data;
  const units = outputUnits(resolved.numClasses);
  const activation = units === 1 ? 'sigmoid' : 'softmax';
  const model = tf.sequential();
  let s = seed;
  const init = () => tf.initializers.glorotUniform({ seed: s++ });
  const nextSeed = () => s++;
  const l2 = (v: number) => (v > 0 ? { kernelRegularizer: tf.regularizers.l2({ l2: v }) } : {});
  try {
    switch (spec.template) {
      case 'logreg':
      case 'mlp': {
        const flat = resolved.inputShape.length > 1;
        if (flat) model.add(tf.layers.flatten({ inputShape: resolved.inputShape }));
        const first = flat ? {} : { inputShape: resolved.inputShape };
        if (spec.template === 'logreg') {
          model.add(tf.layers.dense({ ...first, units, activation, kernelInitializer: init(), ...l2(spec.l2) }));
          break;
        }
        spec.hidden.forEach((h, i) => {
          model.add(tf.layers.dense({ ...(i === 0 ? first : {}), units: h, activation: spec.activation, kernelInitializer: init(), ...l2(spec.l2) }));
          if (spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout, seed: s++ }));
        });
        model.add(tf.layers.dense({ units, activation, kernelInitializer: init() }));
        break;
      }
      case 'cnn-small': {
        const inputShape = imageShape(resolved);
        model.add(tf.layers.conv2d({ inputShape, filters: 16, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init() }));
        model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
        model.add(tf.layers.conv2d({ filters: 32, kernelSize: 3, padding: 'valid', activation: 'relu', kernelInitializer: init() }));
        model.add(tf.layers.flatten());
        model.add(tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: init() }));
        model.add(tf.layers.dense({ units, activation, kernelInitializer: init() }));
        break;
      }
      case 'cnn': {
        let first: { inputShape?: number[] } = { inputShape: imageShape(resolved) };
        for (const block of spec.blocks) {
          for (let c = 0; c < block.convs; c++) {
            model.add(tf.layers.conv2d({
              ...first, filters: block.filters, kernelSize: block.kernel, padding: spec.padding,
              activation: spec.batchNorm ? 'linear' : spec.activation, useBias: !spec.batchNorm, kernelInitializer: init(), ...l2(spec.l2),
            }));
            first = {};
            if (spec.batchNorm) {
              model.add(tf.layers.batchNormalization({}));
              model.add(tf.layers.activation({ activation: spec.activation }));
            }
          }
          if (block.pool > 1) model.add(tf.layers.maxPooling2d({ poolSize: block.pool }));
        }
        model.add(tf.layers.flatten());
        for (const h of spec.dense) {
          model.add(tf.layers.dense({ units: h, activation: spec.activation, kernelInitializer: init(), ...l2(spec.l2) }));
          if (spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout, seed: s++ }));
        }
        model.add(tf.layers.dense({ units, activation, kernelInitializer: init() }));
        break;
      }
      case 'layers': {
        addTopologyLayers(model, spec.topology, resolved.inputShape, nextSeed);
        const out = model.outputs[0]!.shape;
        if (out.length !== 2) {
          throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', `the topology must end flat (Flatten, a global pooling or Dense); it ends with shape [${out.join(', ')}]`);
        }
        model.add(tf.layers.dense({ units, activation, kernelInitializer: init() }));
        break;
      }
    }
    for (const layer of model.layers) {
      const shape = layer.outputShape as (number | null)[];
      if (shape.some((d) => d !== null && d < 1)) {
        throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', `layer ${layer.getClassName()} would output shape [${shape.join(', ')}] for input [${resolved.inputShape.join(', ')}]: the image is too small for this network`);
      }
    }
  } catch (e) {
    model.dispose();
    throw specError(e, resolved);
  }
  return model;
}

/**
 * The layer types (site-policy names, the `tf.layers` factory names) a spec builds; `allowedLayers` is checked
 * against this. With the input shape it also reports the Flatten that dense templates put before image input.
 */
export function layerTypes(spec: ModelSpec, inputShape?: readonly number[]): string[] {
  const types = new Set<string>();
  switch (spec.template) {
    case 'logreg':
      if (inputShape && inputShape.length > 1) types.add('flatten');
      types.add('dense');
      break;
    case 'mlp':
      if (inputShape && inputShape.length > 1) types.add('flatten');
      types.add('dense');
      if (spec.dropout > 0) types.add('dropout');
      break;
    case 'cnn-small':
      for (const t of ['conv2d', 'maxPooling2d', 'flatten', 'dense']) types.add(t);
      break;
    case 'cnn':
      types.add('conv2d');
      if (spec.batchNorm) { types.add('batchNormalization'); types.add('activation'); }
      if (spec.blocks.some((b) => b.pool > 1)) types.add('maxPooling2d');
      types.add('flatten');
      types.add('dense');
      if (spec.dropout > 0 && spec.dense.length > 0) types.add('dropout');
      break;
    case 'layers':
      for (const l of spec.topology.config.layers) if (l.class_name !== 'InputLayer') types.add(LAYER_TYPE_OF_CLASS[l.class_name]);
      types.add('dense');
      break;
  }
  return [...types];
}

export function lossName(numClasses: number): string {
  return numClasses === 2 ? 'binaryCrossentropy' : 'sparseCategoricalCrossentropy';
}

export function getWeights(model: tf.LayersModel): Tensor[] {
  return model.getWeights().map((w) => ({ shape: [...w.shape], data: w.dataSync() as Float32Array }));
}

export function setWeights(model: tf.LayersModel, weights: readonly Tensor[]): void {
  const current = model.getWeights();
  if (current.length !== weights.length) {
    throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `model has ${current.length} weight tensors, got ${weights.length}`);
  }
  const tensors = weights.map((w, i) => {
    const want = current[i]!.shape;
    if (want.length !== w.shape.length || want.some((d, j) => d !== w.shape[j])) {
      throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `weight ${i}: expected [${want.join(', ')}], got [${w.shape.join(', ')}]`);
    }
    return tf.tensor(w.data, w.shape, 'float32');
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
}

/** The weight shapes a resolved model has, without keeping the model. */
export function weightShapes(resolved: ResolvedModel): number[][] {
  const model = buildModel(resolved);
  const shapes = model.getWeights().map((w) => [...w.shape]);
  model.dispose();
  return shapes;
}

export function countParameters(shapes: readonly (readonly number[])[]): number {
  return shapes.reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
}
