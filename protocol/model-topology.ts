/**
 * A tfjs layers topology carried in a manifest (the `layers` model template). It is data, never code: this schema
 * accepts only an allow-list of layer classes, with bounded parameters and nothing that names a custom class or a
 * function, and `addTopologyLayers` rebuilds each layer itself from the checked fields (it never hands the JSON to
 * tfjs's deserializer, which would resolve class names from a registry).
 *
 * The accepted shape is what `model.toJSON(null, false)` of a tfjs `Sequential` prints, minus the output layer:
 * Cohort appends the output layer (its units and activation follow from the class count) as for every template.
 */
import { z } from 'zod';

/** Limits on any one layer and on the whole topology; the site's `maxModelParameters` bounds the total size. */
export const TOPOLOGY_LIMITS = {
  maxLayers: 64,
  maxUnits: 8192,
  maxFilters: 1024,
  maxKernel: 15,
  maxStride: 8,
  maxPool: 8,
} as const;

/** Activations whose gradients every backend Cohort uses is tested for (tests/unit/wasm-kernels.test.ts). */
export const TOPOLOGY_ACTIVATIONS = ['linear', 'relu', 'relu6', 'elu', 'selu', 'sigmoid', 'tanh', 'softmax', 'softplus', 'softsign'] as const;

const activation = z.enum(TOPOLOGY_ACTIVATIONS);
const pair = (max: number) => z.union([z.number().int().min(1).max(max), z.tuple([z.number().int().min(1).max(max), z.number().int().min(1).max(max)])]);
const padding = z.enum(['valid', 'same']);
const dataFormat = z.literal('channels_last');
const one = z.union([z.literal(1), z.tuple([z.literal(1), z.literal(1)])]);

/** Initializers: only the closed-form families; the seed is always Cohort's own (the study seed). */
const initializer = z.union([
  z.object({
    class_name: z.literal('VarianceScaling'),
    config: z.object({
      scale: z.number().positive().max(100).default(1),
      mode: z.enum(['fan_in', 'fan_out', 'fan_avg']).default('fan_avg'),
      distribution: z.enum(['normal', 'uniform', 'truncated_normal']).default('uniform'),
      seed: z.number().int().nullable().optional(),
    }).strict(),
  }).strict(),
  z.object({ class_name: z.enum(['Zeros', 'Ones']), config: z.object({}).strict().default({}) }).strict(),
]);
const l1l2 = z.object({
  class_name: z.literal('L1L2'),
  config: z.object({ l1: z.number().min(0).max(1).default(0), l2: z.number().min(0).max(1).default(0) }).strict(),
}).strict();

/** Keys tfjs prints on every layer that do not change the computation. `trainable: false` is refused (not supported). */
const common = {
  name: z.string().max(128).regex(/^[A-Za-z0-9_./-]+$/).optional(),
  trainable: z.literal(true).optional(),
  dtype: z.literal('float32').optional(),
  batch_input_shape: z.array(z.number().int().min(1).max(1 << 20).nullable()).min(2).max(5).optional(),
};
const weighted = {
  use_bias: z.boolean().default(true),
  kernel_initializer: initializer.nullable().optional(),
  bias_initializer: initializer.nullable().optional(),
  kernel_regularizer: l1l2.nullable().optional(),
  bias_regularizer: z.null().optional(),
  activity_regularizer: z.null().optional(),
  kernel_constraint: z.null().optional(),
  bias_constraint: z.null().optional(),
};

const pooling = (name: 'MaxPooling2D' | 'AveragePooling2D') => z.object({
  class_name: z.literal(name),
  config: z.object({
    ...common,
    pool_size: pair(TOPOLOGY_LIMITS.maxPool).default(2),
    strides: pair(TOPOLOGY_LIMITS.maxPool).nullable().optional(),
    padding: padding.default('valid'),
    data_format: dataFormat.optional(),
  }).strict(),
}).strict();

const globalPooling = (name: 'GlobalAveragePooling2D' | 'GlobalMaxPooling2D') => z.object({
  class_name: z.literal(name),
  config: z.object({ ...common, data_format: dataFormat.optional() }).strict(),
}).strict();

export const TopologyLayerSchema = z.discriminatedUnion('class_name', [
  /** Declares the input shape only (tfjs prints it when the model was built with `tf.layers.inputLayer`). */
  z.object({
    class_name: z.literal('InputLayer'),
    config: z.object({
      batch_input_shape: common.batch_input_shape.unwrap(),
      name: common.name,
      dtype: common.dtype,
      sparse: z.literal(false).optional(),
    }).strict(),
  }).strict(),
  z.object({
    class_name: z.literal('Dense'),
    config: z.object({
      ...common, ...weighted,
      units: z.number().int().min(1).max(TOPOLOGY_LIMITS.maxUnits),
      activation: activation.default('linear'),
    }).strict(),
  }).strict(),
  z.object({
    class_name: z.literal('Conv2D'),
    config: z.object({
      ...common, ...weighted,
      filters: z.number().int().min(1).max(TOPOLOGY_LIMITS.maxFilters),
      kernel_size: pair(TOPOLOGY_LIMITS.maxKernel),
      strides: pair(TOPOLOGY_LIMITS.maxStride).default(1),
      padding: padding.default('valid'),
      data_format: dataFormat.optional(),
      dilation_rate: one.optional(),
      activation: activation.default('linear'),
    }).strict(),
  }).strict(),
  pooling('MaxPooling2D'),
  pooling('AveragePooling2D'),
  globalPooling('GlobalAveragePooling2D'),
  globalPooling('GlobalMaxPooling2D'),
  z.object({ class_name: z.literal('Flatten'), config: z.object({ ...common, data_format: dataFormat.optional() }).strict().default({}) }).strict(),
  z.object({
    class_name: z.literal('Dropout'),
    config: z.object({
      ...common,
      rate: z.number().min(0).max(0.95),
      noise_shape: z.null().optional(),
      seed: z.number().int().nullable().optional(),
    }).strict(),
  }).strict(),
  z.object({
    class_name: z.literal('BatchNormalization'),
    config: z.object({
      ...common,
      axis: z.literal(-1).default(-1),
      momentum: z.number().min(0).max(1).default(0.99),
      epsilon: z.number().positive().max(1).default(0.001),
      center: z.boolean().default(true),
      scale: z.boolean().default(true),
      beta_initializer: initializer.optional(),
      gamma_initializer: initializer.optional(),
      moving_mean_initializer: initializer.optional(),
      moving_variance_initializer: initializer.optional(),
      beta_regularizer: z.null().optional(),
      gamma_regularizer: z.null().optional(),
      beta_constraint: z.null().optional(),
      gamma_constraint: z.null().optional(),
    }).strict(),
  }).strict(),
  z.object({ class_name: z.literal('Activation'), config: z.object({ ...common, activation }).strict() }).strict(),
]);
export type TopologyLayer = z.infer<typeof TopologyLayerSchema>;

/** `model.toJSON(null, false)` of a tfjs Sequential (without its output layer). */
export const LayersTopologySchema = z.object({
  class_name: z.literal('Sequential'),
  config: z.object({
    name: z.string().max(128).optional(),
    layers: z.array(TopologyLayerSchema).min(1).max(TOPOLOGY_LIMITS.maxLayers)
      .refine((ls) => ls.every((l, i) => i === 0 || l.class_name !== 'InputLayer'), 'InputLayer may only come first'),
  }).strict(),
  keras_version: z.string().max(64).optional(),
  backend: z.string().max(64).optional(),
}).strict();
export type LayersTopology = z.infer<typeof LayersTopologySchema>;

/** Site-policy names (`allowedLayers`) of tfjs layer classes: the `tf.layers` factory names. */
export const LAYER_TYPE_OF_CLASS: Record<Exclude<TopologyLayer['class_name'], 'InputLayer'>, string> = {
  Dense: 'dense',
  Conv2D: 'conv2d',
  MaxPooling2D: 'maxPooling2d',
  AveragePooling2D: 'averagePooling2d',
  GlobalAveragePooling2D: 'globalAveragePooling2d',
  GlobalMaxPooling2D: 'globalMaxPooling2d',
  Flatten: 'flatten',
  Dropout: 'dropout',
  BatchNormalization: 'batchNormalization',
  Activation: 'activation',
};
