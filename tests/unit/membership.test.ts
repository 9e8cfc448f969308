import { describe, expect, it } from 'vitest';
import { WDBC } from '../../cli/demo.ts';
import type { ResolvedModel } from '../../protocol/messages.ts';
import { buildModel, getWeights } from '../../protocol/models.ts';
import { train } from '../../site-agent/training/trainer.ts';
import { attackAuc, exampleLosses, membershipAudit, modelWith, thresholdAttack } from '../../simulations/attacks/membership.ts';
import { loadTable } from '../../simulations/dataset.ts';
import { MatrixSource } from '../../simulations/matrix-source.ts';

describe('loss-threshold membership inference (Yeom et al. 2018)', () => {
  it('should compute the attack AUC by hand-countable pairs, ties counted half', () => {
    // members 0.1, 0.5; non-members 0.3, 0.5, 0.9: pairs where the member has the lower loss:
    // 0.1 beats all 3; 0.5 beats 0.9, ties 0.5 (half), loses to 0.3 -> (3 + 1.5) / 6
    expect(attackAuc([0.1, 0.5], [0.3, 0.5, 0.9])).toBeCloseTo(4.5 / 6, 12);
    expect(attackAuc([1, 1], [1, 1])).toBe(0.5);
    expect(attackAuc([0], [1])).toBe(1);
    expect(attackAuc([], [1])).toBeUndefined();
  });

  it('should report TPR, FPR and the advantage at the mean member loss', () => {
    const t = thresholdAttack([0.1, 0.2, 0.3], [0.15, 0.4, 0.8, 1.0])!;
    expect(t.threshold).toBeCloseTo(0.2, 12);
    expect(t.truePositiveRate).toBeCloseTo(2 / 3, 12);
    expect(t.falsePositiveRate).toBeCloseTo(1 / 4, 12);
    expect(t.advantage).toBeCloseTo(2 / 3 - 1 / 4, 12);
  });

  it('should count a row trained on by any site as a member when sites share rows', () => {
    const r = membershipAudit([
      { memberIds: [1, 2], memberLosses: [0.1, 0.2], nonMemberIds: [3, 4], nonMemberLosses: [0.9, 0.8] },
      { memberIds: [4], memberLosses: [0.05], nonMemberIds: [1, 5], nonMemberLosses: [0.7, 0.6] },
    ]);
    expect(r.members).toBe(3); // rows 1, 2, 4
    expect(r.nonMembers).toBe(2); // rows 3, 5
    expect(r.auc).toBe(1);
  });

  it('should find an overfit model leaky (AUC well above 0.5) and an untrained one not (about 0.5)', async () => {
    // Three weak WDBC features and 24 training rows for a 64x64 MLP: it memorises its members, and the other 96
    // rows (non-members) are where its mistakes are.
    const table = await loadTable({ csv: WDBC, label: 'malignant', features: ['mean_texture', 'mean_symmetry', 'mean_fractal_dimension'], exclude: [], categorical: [] });
    const n = 120;
    const src = new MatrixSource({
      label: 'malignant', features: table.features, classes: table.classes, width: table.width,
      x: table.x.slice(0, n * table.width), y: table.y.slice(0, n), rowIds: Int32Array.from({ length: n }, (_, i) => i),
    }, { holdoutFraction: 0.8, seed: 1 });
    const members = src.loadSync('train');
    const nonMembers = src.loadSync('holdout');
    expect([members.n, nonMembers.n]).toEqual([24, 96]);
    const model: ResolvedModel = { spec: { template: 'mlp', hidden: [64, 64], activation: 'relu', dropout: 0, l2: 0 }, inputShape: [table.width], numClasses: 2 };
    const init = buildModel(model, 7);
    const initial = getWeights(init);
    init.dispose();

    const attack = (weights: typeof initial) => {
      const m = modelWith(model, weights);
      try {
        const [a, b] = [exampleLosses(m, 2, members), exampleLosses(m, 2, nonMembers)];
        return { auc: attackAuc(a, b)!, advantage: thresholdAttack(a, b)!.advantage };
      } finally {
        m.dispose();
      }
    };
    const overfit = await train(model, initial, members, { epochs: 100, batchSize: 64, optimizer: 'adam', learningRate: 0.02, seed: 3 });
    const leaky = attack(overfit.weights);
    const untrained = attack(initial);
    expect(leaky.auc).toBeGreaterThan(0.62);
    expect(leaky.advantage).toBeGreaterThan(0.1);
    expect(Math.abs(untrained.auc - 0.5)).toBeLessThan(0.06);
  }, 60_000);
});
