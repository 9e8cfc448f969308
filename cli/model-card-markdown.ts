/** MODEL_CARD.md: the JSON model card (coordinator/model-card.ts) as a page a person reads. */
import type { ModelCard } from '../coordinator/model-card.ts';
import type { SiteMetrics } from '../coordinator/study-metrics.ts';
import type { ClinicalMetrics, Estimate } from '../protocol/metrics.ts';

const f3 = (v: number | null | undefined) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : '—');
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

function withCi(e: Estimate | undefined, fmt: (v: number) => string, withheld: boolean, min: number): string {
  if (e) return `${fmt(e.value)} (${fmt(e.lower)}–${fmt(e.upper)})`;
  return withheld ? `withheld (<${min} cases)` : '—';
}

function row(label: string, m: ClinicalMetrics | SiteMetrics): string {
  const w = (k: string) => m.suppressed.includes(k) || Boolean((m as SiteMetrics).unverifiable?.includes(k));
  const n = m.n >= m.minCellCount ? String(m.n) : `<${m.minCellCount}`;
  return `| ${label} | ${n} | ${withCi(m.auc, f3, w('auc'), m.minCellCount)} | ${withCi(m.accuracy, pct, w('accuracy'), m.minCellCount)} | ${withCi(m.sensitivity, pct, w('sensitivity'), m.minCellCount)} | ${withCi(m.specificity, pct, w('specificity'), m.minCellCount)} | ${f3(m.calibration?.ece)} |`;
}

const HEAD = '| | hold-out n | AUC (95% CI) | accuracy (95% CI) | sensitivity (95% CI) | specificity (95% CI) | ECE |\n|---|---:|---:|---:|---:|---:|---:|';

export function renderModelCard(card: ModelCard): string {
  const out: string[] = [];
  const t = card.training;
  out.push(`# Model card: ${card.study.name}`, '');
  if (card.study.description) out.push(card.study.description, '');
  out.push(
    `- Study: \`${card.study.id}\` (${card.study.status})`,
    `- Manifest SHA-256: \`${card.manifestHash ?? 'unknown'}\` (the hash every site approved)`,
    `- Researcher: ${card.researcher.name ?? 'unknown'}; manifest ${card.researcher.signed ? `signed by key ${card.researcher.keyFingerprint}` : 'not signed'}`,
    `- Model: \`${card.model.spec.template}\`, ${card.model.parameters} parameters, input ${JSON.stringify(card.model.inputShape)}, ${card.model.numClasses} classes; weights of round ${card.model.round} (tfjs layers: ${card.model.files.join(', ')})`,
    `- Data: dataset \`${card.data.dataset}\`, label \`${card.data.label}\`, fixed per-site hold-out of ${pct(card.data.holdoutFraction)} (seed ${card.data.seed})`,
    `- Training: ${t.roundsCompleted} of ${t.roundsPlanned} rounds, ${t.strategy}, ${t.localEpochs} local epochs, batch ${t.batchSize}, ${t.optimizer} at ${t.learningRate}, at least ${t.minSites} sites per round`,
    `- Privacy: secure aggregation ${card.privacy.secureAggregation ? 'on' : 'off'}${Object.keys(card.privacy.settings).length ? `; settings ${JSON.stringify(card.privacy.settings)}` : ''}; epsilon spent ${card.privacy.epsilonSpent ? Object.entries(card.privacy.epsilonSpent).map(([s, e]) => `${s} ${e.toFixed(2)}`).join(', ') : 'none recorded (no differential privacy)'}`,
    `- Dates: created ${card.dates.created}${card.dates.firstRoundStarted ? `, first round ${card.dates.firstRoundStarted}` : ''}${card.dates.lastRoundCompleted ? `, last round ${card.dates.lastRoundCompleted}` : ''}`,
    `- Generated ${card.generatedAt} by Cohort ${card.cohortVersion} (protocol ${card.protocolVersion})`,
    '',
    '## Sites',
    '',
    '| site | rounds contributed | hold-out n |',
    '|---|---|---:|',
    ...card.sites.map((s) => `| ${s.name} | ${s.rounds.join(', ')} | ${s.holdoutN ?? `<${card.evaluation.minCellCount} or unknown`} |`),
    '',
  );
  const fin = card.evaluation.final;
  if (fin) {
    out.push(`## Performance of the final model (round ${fin.round})`, '', 'Pooled over every site\'s hold-out, and on each site\'s own hold-out (cross-site evaluation).', '', HEAD, row('**pooled**', fin.pooled));
    for (const [site, m] of Object.entries(fin.perSite).sort(([a], [b]) => a.localeCompare(b))) out.push(row(site, m));
    out.push('');
  }
  const loso = card.evaluation.leaveOneSiteOut;
  if (loso) {
    out.push('## Leave-one-site-out', '', 'Each site scored by a model trained without it (same rounds), against the final global model on the same hold-out.', '',
      '| held-out site | trained on | AUC without it (95% CI) | AUC of the global model | status |', '|---|---|---:|---:|---|');
    for (const f of loso.folds) {
      const m = f.metrics;
      out.push(`| ${f.heldOut} | ${f.trainedOn.join(', ') || '—'} | ${m ? withCi(m.auc, f3, m.suppressed.includes('auc'), m.minCellCount) : '—'} | ${f.global?.auc ? f3(f.global.auc.value) : '—'} | ${f.status}${f.error ? ` (${f.error.code})` : ''} |`);
    }
    if (loso.pooled) out.push('', HEAD, row('**pooled, each site unseen**', loso.pooled));
    out.push('');
  }
  out.push('## Learning curve', '', '| round | sites | failures | pooled AUC (95% CI) | pooled loss |', '|---:|---:|---:|---:|---:|',
    ...card.evaluation.perRound.map((r) => `| ${r.round} | ${r.sites} | ${r.failures} | ${f3(r.auc)} (${f3(r.aucLower)}–${f3(r.aucUpper)}) | ${f3(r.loss)} |`), '');
  const m = card.evaluation.methods;
  out.push('## Methods', '', `- AUC: ${m.auc}`, `- Proportions: ${m.proportions}`, `- Calibration: ${m.calibration}`,
    `- Small cells: ${m.suppression} (minimum here: ${card.evaluation.minCellCount})`,
    '- Pooled values come from summed per-site counts (score histograms, confusion counts); no per-patient score left a site.', '');
  return out.join('\n');
}
