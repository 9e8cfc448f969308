/**
 * FedProx's proximal term (Li et al., MLSys 2020): `(mu / 2) * ||w - w_global||^2` added to the local loss, so each
 * site's model stays near the round's global model. Attached the way tfjs attaches weight regularizers (a layer
 * loss read inside the gradient tape), so `model.fit` differentiates it with the data loss and any optimizer works.
 */
import * as tf from '@tensorflow/tfjs';
import type { Tensor } from '../../protocol/codec.ts';

/**
 * Adds the proximal term to `model`'s training loss. `global` lists the model's weights in `model.weights` order
 * (the order `getWeights` uses). Returns a function that frees the constants it holds; call it after training.
 */
export function addProximalTerm(model: tf.LayersModel, global: readonly Tensor[], mu: number): () => void {
  const variables = model.weights;
  if (variables.length !== global.length) throw new Error(`proximal term: model has ${variables.length} weights, global has ${global.length}`);
  const anchors = global.map((g) => tf.tensor(g.data, g.shape, 'float32'));
  const trainable = variables.map((v, i) => ({ v, anchor: anchors[i]! })).filter(({ v }) => v.trainable);
  const first = model.layers[0];
  if (!first || trainable.length === 0 || mu === 0) return () => tf.dispose(anchors);
  first.addLoss(() => tf.tidy(() => {
    let sum: tf.Tensor = tf.scalar(0);
    for (const { v, anchor } of trainable) sum = tf.add(sum, tf.sum(tf.square(tf.sub(v.read(), anchor))));
    return tf.mul(tf.scalar(mu / 2), sum) as tf.Scalar;
  }));
  return () => tf.dispose(anchors);
}
