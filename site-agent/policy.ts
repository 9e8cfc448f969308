/**
 * The hospital's policy, from site.json, enforced here at the site and never delegated to the coordinator.
 * Every refusal is a coded reason that the researcher sees.
 */
import { z } from 'zod';
import { CohortError } from '../protocol/errors.ts';
import type { StudyManifest, Task } from '../protocol/messages.ts';
import { countParameters, layerTypes, weightShapes } from '../protocol/models.ts';

export const PolicySchema = z.object({
  /** Refuse studies that do not use secure aggregation. */
  requireSecureAggregation: z.boolean().default(false),
  /** Refuse a round whose aggregate combines fewer sites than this. */
  minSitesPerAggregate: z.number().int().min(1).default(2),
  /** Largest privacy loss (epsilon at `delta`) this site spends on one study; null: no limit. */
  maxEpsilonPerStudy: z.number().positive().nullable().default(null),
  delta: z.number().positive().max(0.1).default(1e-5),
  /** Counts or metrics computed from fewer cases than this never leave the site. */
  minCellCount: z.number().int().min(1).default(10),
  maxRounds: z.number().int().min(1).default(1000),
  maxLocalEpochs: z.number().int().min(1).default(50),
  maxModelParameters: z.number().int().min(1).default(10_000_000),
  /** Layer types a study's model may use. */
  allowedLayers: z.array(z.string()).default(['dense', 'dropout', 'flatten', 'conv2d', 'maxPooling2d']),
  /** Refuse manifests that are not signed by a researcher key. */
  requireSignedManifests: z.boolean().default(true),
  /** Researchers whose signed studies this site approves without asking (by public key, base64). */
  autoApprove: z.array(z.object({ name: z.string(), publicKey: z.string() })).default([]),
});
export type Policy = z.infer<typeof PolicySchema>;

/** Refuses a model that uses a layer type missing from the site's `allowedLayers`. */
function checkLayers(policy: Policy, types: readonly string[]): void {
  const banned = types.filter((l) => !policy.allowedLayers.includes(l));
  if (banned.length) throw new CohortError('COHORT_ERR_POLICY_LAYER_NOT_ALLOWED', `layer types not allowed here: ${banned.join(', ')}`);
}

/** Checks a study manifest against the policy; throws the first breach as a coded error. */
export function checkManifest(policy: Policy, manifest: StudyManifest): void {
  if (policy.requireSecureAggregation && !manifest.privacy.secureAggregation) {
    throw new CohortError('COHORT_ERR_POLICY_SECAGG_REQUIRED', 'this site only joins studies with secure aggregation');
  }
  if (manifest.training.rounds > policy.maxRounds) {
    throw new CohortError('COHORT_ERR_POLICY_MAX_ROUNDS', `study asks for ${manifest.training.rounds} rounds; site allows ${policy.maxRounds}`);
  }
  if (manifest.training.localEpochs > policy.maxLocalEpochs) {
    throw new CohortError('COHORT_ERR_POLICY_MAX_EPOCHS', `study asks for ${manifest.training.localEpochs} local epochs; site allows ${policy.maxLocalEpochs}`);
  }
  checkLayers(policy, layerTypes(manifest.model));
  if (manifest.participation.minSites < policy.minSitesPerAggregate) {
    throw new CohortError('COHORT_ERR_POLICY_TOO_FEW_SITES', `study allows aggregates of ${manifest.participation.minSites} sites; site requires at least ${policy.minSitesPerAggregate}`);
  }
}

/**
 * Checks a task against the approved manifest and the policy: a coordinator cannot change training parameters,
 * the model or the dataset after approval, nor aggregate fewer sites than the policy allows.
 */
export function checkTask(policy: Policy, manifest: StudyManifest, task: Task): void {
  const mismatch = (what: string) => new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', `task ${what} differs from the approved manifest`);
  if (task.dataset !== manifest.task.dataset) throw mismatch('dataset');
  if (task.seed !== manifest.seed) throw mismatch('seed');
  if (task.holdoutFraction !== manifest.evaluation.holdoutFraction) throw mismatch('hold-out fraction');
  if (task.round > manifest.training.rounds) throw mismatch('round number');
  if (task.kind === 'describe' || task.kind === 'stats') return;
  if (JSON.stringify(task.model.spec) !== JSON.stringify(manifest.model)) throw mismatch('model');
  // Again with the data's shape: dense templates add a Flatten before image input.
  checkLayers(policy, layerTypes(task.model.spec, task.model.inputShape));
  const params = countParameters(weightShapes(task.model));
  if (params > policy.maxModelParameters) {
    throw new CohortError('COHORT_ERR_POLICY_MODEL_TOO_LARGE', `model has ${params} parameters; site allows ${policy.maxModelParameters}`);
  }
  if (task.kind === 'train') {
    const t = manifest.training;
    if (task.localEpochs !== t.localEpochs || task.batchSize !== t.batchSize || task.optimizer !== t.optimizer || task.learningRate !== t.learningRate) {
      throw mismatch('training parameters');
    }
    // FedProx's proximal term is part of the approved training: exactly the manifest's mu, or none.
    const mu = manifest.strategy.name === 'fedprox' && manifest.strategy.mu > 0 ? manifest.strategy.mu : undefined;
    if ((task.proximalMu || undefined) !== mu) throw mismatch('proximal term (FedProx mu)');
    if (task.participants < policy.minSitesPerAggregate) {
      throw new CohortError('COHORT_ERR_POLICY_TOO_FEW_SITES', `this round aggregates ${task.participants} sites; site requires at least ${policy.minSitesPerAggregate}`);
    }
  }
}
