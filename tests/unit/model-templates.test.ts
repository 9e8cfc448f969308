import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpecSchema, StudyManifestSchema, type ModelSpec, type ResolvedModel, type StudyManifestInput } from '../../protocol/messages.ts';
import { buildModel, getWeights, layerTypes, weightShapes } from '../../protocol/models.ts';
import { PolicySchema, checkManifest, checkTask } from '../../site-agent/policy.ts';
import type { TrainTask } from '../../protocol/messages.ts';

const resolved = (spec: unknown, inputShape: number[], numClasses = 10): ResolvedModel => ({ spec: ModelSpecSchema.parse(spec), inputShape, numClasses });

/** The body of a tfjs Sequential as `toJSON` prints it, without its output layer. */
function topologyOf(body: tf.layers.Layer[], inputShape: number[]): unknown {
  const m = tf.sequential();
  m.add(tf.layers.inputLayer({ inputShape }));
  for (const l of body) m.add(l);
  const json = m.toJSON(null, false) as { config: { layers: unknown[] } };
  m.dispose();
  return json;
}

function manifest(model: unknown): ReturnType<typeof StudyManifestSchema.parse> {
  return StudyManifestSchema.parse({ name: 'x', task: { dataset: 'd', label: 'y' }, model: model as StudyManifestInput['model'], training: { rounds: 2 } });
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('image model templates', () => {
  it('should build cnn-small as conv16-pool-conv32-dense64-dense10 when the input is an 8x8x1 image', () => {
    expect(weightShapes(resolved({ template: 'cnn-small' }, [8, 8, 1]))).toEqual([
      [3, 3, 1, 16], [16], [3, 3, 16, 32], [32], [2 * 2 * 32, 64], [64], [64, 10], [10],
    ]);
  });

  it('should build the parameterised cnn with blocks, batch norm and dropout when given a 64x64x1 image', () => {
    const spec = { template: 'cnn', blocks: [{ filters: 8 }, { filters: 16, convs: 2 }, { filters: 32, kernel: 5 }], dense: [64], batchNorm: true, dropout: 0.25 };
    const m = buildModel(resolved(spec, [64, 64, 1], 2));
    const classes = m.layers.map((l) => l.getClassName());
    expect(classes.filter((c) => c === 'Conv2D')).toHaveLength(4);
    expect(classes.filter((c) => c === 'BatchNormalization')).toHaveLength(4);
    expect(classes).toContain('Dropout');
    expect(m.outputs[0]!.shape).toEqual([null, 1]);
    // Convolutions carry no bias when batch norm follows them; the first kernel is 3x3x1x8.
    expect(m.getWeights()[0]!.shape).toEqual([3, 3, 1, 8]);
    expect(m.getWeights()[1]!.shape).toEqual([8]);
    m.dispose();
  });

  it('should build identical weights from the same seed and different ones from another seed when building a cnn twice', () => {
    const r = resolved({ template: 'cnn', blocks: [{ filters: 4 }, { filters: 8 }] }, [16, 16, 3], 3);
    const [a, b, c] = [buildModel(r, 7), buildModel(r, 7), buildModel(r, 8)];
    const [wa, wb, wc] = [getWeights(a), getWeights(b), getWeights(c)];
    expect(wa.map((w) => Array.from(w.data))).toEqual(wb.map((w) => Array.from(w.data)));
    expect(Array.from(wa[0]!.data)).not.toEqual(Array.from(wc[0]!.data));
    for (const m of [a, b, c]) m.dispose();
  });

  it('should refuse with COHORT_ERR_MODEL_SPEC_INVALID when a cnn gets tabular input or an image too small for its pools', () => {
    expect(() => buildModel(resolved({ template: 'cnn-small' }, [30]))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_MODEL_SPEC_INVALID' }));
    expect(() => buildModel(resolved({ template: 'cnn', blocks: [{ filters: 4, pool: 4 }, { filters: 4, pool: 4 }, { filters: 4, pool: 4 }] }, [8, 8, 1])))
      .toThrow(expect.objectContaining({ code: 'COHORT_ERR_MODEL_SPEC_INVALID' }));
    expect(() => buildModel(resolved({ template: 'cnn', padding: 'valid', blocks: [{ filters: 4, kernel: 11 }] }, [8, 8, 1])))
      .toThrow(expect.objectContaining({ code: 'COHORT_ERR_MODEL_SPEC_INVALID' }));
  });

  it('should refuse cnn parameters outside their limits when parsing a manifest', () => {
    for (const bad of [{ template: 'cnn', blocks: [] }, { template: 'cnn', blocks: [{ filters: 100_000 }] }, { template: 'cnn', blocks: [{ filters: 8, kernel: 99 }] },
      { template: 'cnn', dropout: 1 }, { template: 'cnn', activation: 'eval' }]) {
      expect(ModelSpecSchema.safeParse(bad).success).toBe(false);
    }
  });
});

describe('layers topology template', () => {
  const body = () => [
    tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: 'heNormal' }),
    tf.layers.batchNormalization({}),
    tf.layers.averagePooling2d({ poolSize: 2 }),
    tf.layers.conv2d({ filters: 6, kernelSize: [3, 2], strides: 2, activation: 'elu' }),
    tf.layers.globalAveragePooling2d({}),
    tf.layers.dropout({ rate: 0.1 }),
    tf.layers.dense({ units: 12, activation: 'tanh', kernelRegularizer: tf.regularizers.l2({ l2: 0.01 }) }),
  ];

  it('should accept a tfjs toJSON topology and build it with the output layer appended when the classes are known', () => {
    const topology = topologyOf(body(), [16, 16, 2]);
    const r = resolved({ template: 'layers', topology }, [16, 16, 2], 3);
    const m = buildModel(r);
    expect(m.layers.map((l) => l.getClassName()).filter((c) => c !== 'InputLayer')).toEqual(['Conv2D', 'BatchNormalization', 'AveragePooling2D', 'Conv2D', 'GlobalAveragePooling2D', 'Dropout', 'Dense', 'Dense']);
    // tfjs lists trainable weights first: batch norm's moving mean and variance come last.
    expect(m.getWeights().map((w) => w.shape)).toEqual([[3, 3, 2, 4], [4], [4], [4], [3, 2, 4, 6], [6], [6, 12], [12], [12, 3], [3], [4], [4]]);
    expect(m.outputs[0]!.shape).toEqual([null, 3]);
    // The JSON's seeds never count: the study seed does.
    expect(getWeights(buildModel(r, 5))[0]!.data).toEqual(getWeights(buildModel(r, 5))[0]!.data);
    m.dispose();
  });

  it('should refuse a topology with an unknown layer class, extra keys, code-like values or out-of-limit parameters when parsing', () => {
    const good = topologyOf(body(), [16, 16, 2]) as { config: { layers: { class_name: string; config: Record<string, unknown> }[] } };
    const mutate = (f: (t: typeof good) => void) => {
      const t = structuredClone(good);
      f(t);
      return { template: 'layers', topology: t };
    };
    for (const bad of [
      mutate((t) => { t.config.layers[0]!.class_name = 'Lambda'; }),
      mutate((t) => { t.config.layers.push({ class_name: 'MyCustomLayer', config: {} }); }),
      mutate((t) => { t.config.layers[0]!.config.function = 'return process.exit()'; }),
      mutate((t) => { t.config.layers[0]!.config.activation = 'gelu_custom'; }),
      mutate((t) => { t.config.layers[0]!.config.filters = 1_000_000; }),
      mutate((t) => { t.config.layers[0]!.config.kernel_initializer = { class_name: 'Custom', config: {} }; }),
      mutate((t) => { t.config.layers[0]!.config.trainable = false; }),
      mutate((t) => { t.config.layers[0]!.config.dilation_rate = [2, 2]; }),
      mutate((t) => { t.config.layers = Array.from({ length: 65 }, () => ({ class_name: 'Flatten', config: {} })); }),
    ]) {
      expect(StudyManifestSchema.safeParse({ name: 'x', task: { dataset: 'd', label: 'y' }, model: bad, training: { rounds: 1 } }).success).toBe(false);
    }
  });

  it('should refuse with COHORT_ERR_MODEL_SPEC_INVALID when the topology declares another input shape or does not end flat', () => {
    const topology = topologyOf(body(), [16, 16, 2]) as { config: { layers: { config: Record<string, unknown> }[] } };
    topology.config.layers[0]!.config.batch_input_shape = [null, 16, 16, 2];
    expect(() => buildModel(resolved({ template: 'layers', topology }, [16, 16, 2], 3))).not.toThrow();
    expect(() => buildModel(resolved({ template: 'layers', topology }, [8, 8, 2], 3))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_MODEL_SPEC_INVALID' }));
    const notFlat = topologyOf([tf.layers.conv2d({ filters: 2, kernelSize: 3 })], [8, 8, 1]);
    expect(() => buildModel(resolved({ template: 'layers', topology: notFlat }, [8, 8, 1], 3))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_MODEL_SPEC_INVALID' }));
  });
});

describe('site policy on layer types', () => {
  const policy = PolicySchema.parse({});
  const cases: [string, ModelSpec | unknown, string[]][] = [
    ['logreg', { template: 'logreg' }, ['dense']],
    ['mlp with dropout', { template: 'mlp', dropout: 0.2 }, ['dense', 'dropout']],
    ['cnn-small', { template: 'cnn-small' }, ['conv2d', 'maxPooling2d', 'flatten', 'dense']],
    ['cnn with batch norm', { template: 'cnn', batchNorm: true, dropout: 0.1 }, ['conv2d', 'batchNormalization', 'activation', 'maxPooling2d', 'flatten', 'dense', 'dropout']],
    ['layers', { template: 'layers', topology: topologyOf([tf.layers.averagePooling2d({ poolSize: 2 }), tf.layers.flatten()], [8, 8, 1]) }, ['averagePooling2d', 'flatten', 'dense']],
  ];

  it.each(cases)('should report the layer types of %s when asked', (_name, spec, types) => {
    expect(layerTypes(ModelSpecSchema.parse(spec)).sort()).toEqual([...types].sort());
  });

  it('should accept cnn-small and refuse batch norm and average pooling under the default allowedLayers when checking a manifest', () => {
    expect(() => checkManifest(policy, manifest({ template: 'cnn-small' }))).not.toThrow();
    for (const [, spec] of cases.slice(3)) {
      expect(() => checkManifest(policy, manifest(spec))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_POLICY_LAYER_NOT_ALLOWED' }));
    }
    const open = PolicySchema.parse({ allowedLayers: ['dense', 'dropout', 'flatten', 'conv2d', 'maxPooling2d', 'batchNormalization', 'activation', 'averagePooling2d'] });
    for (const [, spec] of cases) expect(() => checkManifest(open, manifest(spec))).not.toThrow();
  });

  it('should refuse the Flatten a dense template puts before image input when the site does not allow flatten', () => {
    const strict = PolicySchema.parse({ allowedLayers: ['dense'] });
    const m = manifest({ template: 'mlp' });
    const task = (inputShape: number[]): TrainTask => ({
      kind: 'train', taskId: 't', studyId: 's', round: 1, dataset: 'd', holdoutFraction: m.evaluation.holdoutFraction, seed: m.seed,
      manifest: { raw: {}, hash: '0'.repeat(64) }, model: { spec: m.model, inputShape, numClasses: 2 }, weights: new Uint8Array(),
      localEpochs: m.training.localEpochs, batchSize: m.training.batchSize, optimizer: m.training.optimizer, learningRate: m.training.learningRate,
      participants: 2,
    });
    expect(() => checkManifest(strict, m)).not.toThrow();
    expect(() => checkTask(strict, m, task([30]))).not.toThrow();
    expect(() => checkTask(strict, m, task([8, 8, 1]))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_POLICY_LAYER_NOT_ALLOWED' }));
  });
});
