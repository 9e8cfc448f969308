/**
 * Builds the layers of a checked `layers` topology (protocol/model-topology.ts) with the tfjs factories, one
 * field at a time: nothing in the JSON is ever resolved as a class name or evaluated. Initializer seeds come from
 * the caller (the study seed), never from the JSON, so both sides build identical weights.
 */
import * as tf from '@tensorflow/tfjs';
import { CohortError } from './errors.ts';
import type { LayersTopology, TopologyLayer } from './model-topology.ts';

type Init = NonNullable<Extract<TopologyLayer, { class_name: 'Dense' }>['config']['kernel_initializer']>;
type Initializer = ReturnType<typeof tf.initializers.zeros>;

const MODES = { fan_in: 'fanIn', fan_out: 'fanOut', fan_avg: 'fanAvg' } as const;
const DISTRIBUTIONS = { normal: 'normal', uniform: 'uniform', truncated_normal: 'truncatedNormal' } as const;

function initializerOf(spec: Init | null | undefined, fallback: 'glorot' | 'zeros' | 'ones', seed: () => number): Initializer {
  if (!spec) {
    if (fallback === 'zeros') return tf.initializers.zeros();
    if (fallback === 'ones') return tf.initializers.ones();
    return tf.initializers.glorotUniform({ seed: seed() });
  }
  switch (spec.class_name) {
    case 'Zeros':
      return tf.initializers.zeros();
    case 'Ones':
      return tf.initializers.ones();
    case 'VarianceScaling':
      return tf.initializers.varianceScaling({
        scale: spec.config.scale, mode: MODES[spec.config.mode], distribution: DISTRIBUTIONS[spec.config.distribution], seed: seed(),
      });
  }
}

function regularizerOf(spec: { config: { l1: number; l2: number } } | null | undefined): { kernelRegularizer?: ReturnType<typeof tf.regularizers.l1l2> } {
  if (!spec || (spec.config.l1 === 0 && spec.config.l2 === 0)) return {};
  return { kernelRegularizer: tf.regularizers.l1l2({ l1: spec.config.l1, l2: spec.config.l2 }) };
}

function layerOf(layer: Exclude<TopologyLayer, { class_name: 'InputLayer' }>, seed: () => number): tf.layers.Layer {
  switch (layer.class_name) {
    case 'Dense': {
      const c = layer.config;
      return tf.layers.dense({
        units: c.units, activation: c.activation, useBias: c.use_bias,
        kernelInitializer: initializerOf(c.kernel_initializer, 'glorot', seed), biasInitializer: initializerOf(c.bias_initializer, 'zeros', seed),
        ...regularizerOf(c.kernel_regularizer),
      });
    }
    case 'Conv2D': {
      const c = layer.config;
      return tf.layers.conv2d({
        filters: c.filters, kernelSize: c.kernel_size, strides: c.strides, padding: c.padding, activation: c.activation, useBias: c.use_bias,
        kernelInitializer: initializerOf(c.kernel_initializer, 'glorot', seed), biasInitializer: initializerOf(c.bias_initializer, 'zeros', seed),
        ...regularizerOf(c.kernel_regularizer),
      });
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const c = layer.config;
      const args = { poolSize: c.pool_size, padding: c.padding, ...(c.strides ? { strides: c.strides } : {}) };
      return layer.class_name === 'MaxPooling2D' ? tf.layers.maxPooling2d(args) : tf.layers.averagePooling2d(args);
    }
    case 'GlobalAveragePooling2D':
      return tf.layers.globalAveragePooling2d({});
    case 'GlobalMaxPooling2D':
      return tf.layers.globalMaxPooling2d({});
    case 'Flatten':
      return tf.layers.flatten();
    case 'Dropout':
      return tf.layers.dropout({ rate: layer.config.rate, seed: seed() });
    case 'BatchNormalization': {
      const c = layer.config;
      return tf.layers.batchNormalization({
        axis: -1, momentum: c.momentum, epsilon: c.epsilon, center: c.center, scale: c.scale,
        betaInitializer: initializerOf(c.beta_initializer, 'zeros', seed), gammaInitializer: initializerOf(c.gamma_initializer, 'ones', seed),
        movingMeanInitializer: initializerOf(c.moving_mean_initializer, 'zeros', seed),
        movingVarianceInitializer: initializerOf(c.moving_variance_initializer, 'ones', seed),
      });
    }
    case 'Activation':
      return tf.layers.activation({ activation: layer.config.activation });
  }
}

/** Adds the topology's layers to `model`, the first one taking `inputShape` (which its `batch_input_shape` must match). */
export function addTopologyLayers(model: tf.Sequential, topology: LayersTopology, inputShape: readonly number[], seed: () => number): void {
  topology.config.layers.forEach((spec, i) => {
    const declared = spec.config.batch_input_shape;
    if (declared && (declared.length !== inputShape.length + 1 || declared.slice(1).some((d, j) => d !== inputShape[j]))) {
      throw new CohortError('COHORT_ERR_MODEL_SPEC_INVALID', `topology layer ${i} declares input [${declared.slice(1).join(', ')}]; the data has [${inputShape.join(', ')}]`);
    }
    if (i === 0) model.add(tf.layers.inputLayer({ inputShape: [...inputShape] }));
    if (spec.class_name !== 'InputLayer') model.add(layerOf(spec, seed));
  });
}
