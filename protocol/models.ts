/**
 * Model templates. A study carries a model *spec* (data); both sides build the same tfjs network from it, so the
 * weight list (order and shapes) is part of the protocol.
 */
import * as tf from '@tensorflow/tfjs';
import { CohortError } from './errors.ts';
import { ModelSpecSchema, type ResolvedModel } from './messages.ts';
import type { Tensor } from './codec.ts';

/** Output units: one sigmoid unit for two classes, softmax otherwise. */
export function outputUnits(numClasses: number): number {
  return numClasses === 2 ? 1 : numClasses;
}

export function buildModel(resolved: ResolvedModel, seed = 42): tf.Sequential {
  const parsed = ModelSpecSchema.safeParse(resolved.spec);
  if (!parsed.success) throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', parsed.error.issues[0]?.message);
  const spec = parsed.data;
  const units = outputUnits(resolved.numClasses);
  const activation = units === 1 ? 'sigmoid' : 'softmax';
  const model = tf.sequential();
  let s = seed;
  const init = () => tf.initializers.glorotUniform({ seed: s++ });
  const flat = resolved.inputShape.length > 1;
  if (flat) model.add(tf.layers.flatten({ inputShape: resolved.inputShape }));
  const first = flat ? {} : { inputShape: resolved.inputShape };
  switch (spec.template) {
    case 'logreg':
      model.add(tf.layers.dense({
        ...first, units, activation, kernelInitializer: init(),
        ...(spec.l2 > 0 ? { kernelRegularizer: tf.regularizers.l2({ l2: spec.l2 }) } : {}),
      }));
      break;
    case 'mlp':
      spec.hidden.forEach((h, i) => {
        model.add(tf.layers.dense({
          ...(i === 0 ? first : {}), units: h, activation: spec.activation, kernelInitializer: init(),
          ...(spec.l2 > 0 ? { kernelRegularizer: tf.regularizers.l2({ l2: spec.l2 }) } : {}),
        }));
        if (spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout, seed: s++ }));
      });
      model.add(tf.layers.dense({ units, activation, kernelInitializer: init() }));
      break;
  }
  return model;
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
