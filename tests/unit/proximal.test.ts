import { describe, expect, it } from 'vitest';
import type { Tensor } from '../../protocol/codec.ts';
import { StudyManifestSchema, type ResolvedModel, type StudyManifest, type Task } from '../../protocol/messages.ts';
import { PolicySchema, checkTask } from '../../site-agent/policy.ts';
import { train } from '../../site-agent/training/trainer.ts';

// Logistic regression, 3 features, full-batch SGD: small enough to differentiate by hand.
const model: ResolvedModel = { spec: { template: 'logreg', l2: 0 }, inputShape: [3], numClasses: 2 };
const rows = [
  [0.5, -1.2, 0.3, 1], [1.5, 0.2, -0.7, 1], [-0.3, 0.8, 1.1, 0], [-1.4, -0.5, 0.4, 0],
  [0.9, 1.3, -0.2, 1], [-0.8, -0.9, -1.0, 0], [0.1, 0.4, 0.6, 1], [-0.2, -1.5, 0.9, 0],
];
const data = {
  x: Float32Array.from(rows.flatMap((r) => r.slice(0, 3))), y: Int32Array.from(rows.map((r) => r[3]!)),
  n: rows.length, inputShape: [3], classes: ['0', '1'],
};
const globalW = [0.2, -0.1, 0.4];
const globalB = 0.05;
const global: Tensor[] = [{ shape: [3, 1], data: Float32Array.from(globalW) }, { shape: [1], data: Float32Array.from([globalB]) }];

/** Full-batch gradient descent on mean binary cross-entropy + (mu / 2) ||w - w_global||^2, in float64. */
function byHand(mu: number, lr: number, steps: number): number[] {
  let w = [...globalW];
  let b = globalB;
  for (let s = 0; s < steps; s++) {
    const gw = [0, 0, 0];
    let gb = 0;
    for (const r of rows) {
      const p = 1 / (1 + Math.exp(-(w[0]! * r[0]! + w[1]! * r[1]! + w[2]! * r[2]! + b)));
      const e = (p - r[3]!) / rows.length;
      for (let j = 0; j < 3; j++) gw[j]! += e * r[j]!;
      gb += e;
    }
    w = w.map((wj, j) => wj - lr * (gw[j]! + mu * (wj - globalW[j]!)));
    b -= lr * (gb + mu * (b - globalB));
  }
  return [...w, b];
}

describe('FedProx proximal term in local training', () => {
  it('should follow the gradient of loss + (mu / 2) ||w - w_global||^2 when proximalMu is set', async () => {
    const lr = 0.5;
    const mu = 2;
    const out = await train(model, global, data, { epochs: 3, batchSize: rows.length, optimizer: 'sgd', learningRate: lr, seed: 1, proximalMu: mu });
    const got = [...out.weights[0]!.data, ...out.weights[1]!.data];
    const want = byHand(mu, lr, 3);
    const plain = byHand(0, lr, 3);
    got.forEach((g, i) => expect(g).toBeCloseTo(want[i]!, 5));
    // and the term matters: the result is measurably different from plain SGD
    expect(Math.max(...want.map((w, i) => Math.abs(w - plain[i]!)))).toBeGreaterThan(1e-3);
  });

  it('should keep local weights nearer the global model as mu grows', async () => {
    const dist = async (mu: number) => {
      const out = await train(model, global, data, { epochs: 20, batchSize: 4, optimizer: 'adam', learningRate: 0.1, seed: 3, ...(mu ? { proximalMu: mu } : {}) });
      const w = [...out.weights[0]!.data, ...out.weights[1]!.data];
      return Math.hypot(...w.map((x, i) => x - [...globalW, globalB][i]!));
    };
    const [d0, d1, d10] = [await dist(0), await dist(1), await dist(10)];
    expect(d1).toBeLessThan(d0 * 0.8);
    expect(d10).toBeLessThan(d1 * 0.5);
  });
});

describe('site policy on the proximal term', () => {
  const manifestOf = (strategy: unknown) => StudyManifestSchema.parse({
    name: 'x', task: { dataset: 'wdbc', label: 'malignant' }, model: { template: 'logreg' }, training: { rounds: 3 }, strategy,
  });
  const taskFor = (m: StudyManifest, proximalMu?: number) => ({
    kind: 'train', taskId: 't', manifest: { raw: {}, hash: '0'.repeat(64) }, studyId: 's', round: 1, dataset: 'wdbc',
    holdoutFraction: m.evaluation.holdoutFraction, seed: m.seed, model: { spec: m.model, inputShape: [3], numClasses: 2 }, weights: new Uint8Array(0),
    localEpochs: m.training.localEpochs, batchSize: m.training.batchSize, optimizer: m.training.optimizer, learningRate: m.training.learningRate,
    participants: 3, ...(proximalMu === undefined ? {} : { proximalMu }),
  }) as Task;
  const policy = PolicySchema.parse({});
  const codeOf = (fn: () => void) => {
    try {
      fn();
      return undefined;
    } catch (err) {
      return (err as { code?: string }).code;
    }
  };

  it('should accept exactly the approved mu and refuse a task that changes, adds or drops it', () => {
    const prox = manifestOf({ name: 'fedprox', mu: 0.1 });
    const avg = manifestOf({ name: 'fedavg' });
    expect(codeOf(() => checkTask(policy, prox, taskFor(prox, 0.1)))).toBeUndefined();
    expect(codeOf(() => checkTask(policy, avg, taskFor(avg)))).toBeUndefined();
    expect(codeOf(() => checkTask(policy, prox, taskFor(prox, 1)))).toBe('COHORT_ERR_SITE_TASK_MISMATCH');
    expect(codeOf(() => checkTask(policy, prox, taskFor(prox)))).toBe('COHORT_ERR_SITE_TASK_MISMATCH');
    expect(codeOf(() => checkTask(policy, avg, taskFor(avg, 0.1)))).toBe('COHORT_ERR_SITE_TASK_MISMATCH');
  });
});
