/**
 * `npm run bench:large`: one round of a 50M-parameter MLP with 5 sites under secure aggregation (the default), each
 * site its own `cohort site run` process, the coordinator in this process. Baseline measured in the same run: the
 * same round at 1M parameters. Prints round latency and where it went, the coordinator's memory against what
 * holding every site's update would take, each site's peak memory, and bytes on the wire against the payloads.
 *
 * COHORT_LARGE_HIDDEN (4096,4096,4096,4096: 50.5M parameters), COHORT_BASELINE_HIDDEN (1000,1000: 1.03M),
 * COHORT_LARGE_SITES (5), COHORT_LARGE_PLAIN=1 (secure aggregation off), COHORT_LARGE_LOGS=<dir> (keep the sites' logs).
 */
import { cpus } from 'node:os';
import { mlpParams, runLargeRound, type LargeRoundResult } from '../tests/helpers/large-round.ts';

const hidden = (v: string | undefined, d: number[]) => (v ? v.split(',').map(Number) : d);
const large = hidden(process.env.COHORT_LARGE_HIDDEN, [4096, 4096, 4096, 4096]);
const base = hidden(process.env.COHORT_BASELINE_HIDDEN, [1000, 1000]);
const sites = Number(process.env.COHORT_LARGE_SITES ?? 5);
const secureAggregation = process.env.COHORT_LARGE_PLAIN !== '1';

const say = (m: string) => console.log(`  ${m}`);
const M = (n: number) => `${(n / 1e6).toFixed(2)}M`;
console.log(`# large model: ${M(mlpParams(base))} parameters (baseline), then ${M(mlpParams(large))}; ${sites} sites, one round, secure aggregation ${secureAggregation ? 'on' : 'off'}, ${cpus().length} cores`);
const runs: LargeRoundResult[] = [];
for (const h of [base, large]) {
  const r = await runLargeRound({ hidden: h, sites, processes: true, secureAggregation, log: say, ...(process.env.COHORT_LARGE_LOGS ? { logDir: process.env.COHORT_LARGE_LOGS } : {}) });
  say(`${M(r.params)}: ${r.status}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}, round ${(r.roundMs / 1000).toFixed(1)} s`);
  runs.push(r);
}
const [b, l] = runs as [LargeRoundResult, LargeRoundResult];
const modelMB = (r: LargeRoundResult) => r.modelBytes / 2 ** 20;
const grew = (r: LargeRoundResult) => r.coordinator.peakRssMB - r.coordinator.rssBeforeMB;
const sitePeak = (r: LargeRoundResult) => Math.max(...r.sitePeakRssMB);
/** The payloads alone: each site pulls the model for training and for evaluation and pushes one update. */
const payload = (r: LargeRoundResult) => r.sites * (2 * r.modelBytes + (secureAggregation ? (r.params + 2) * 4 : r.modelBytes));
const s1 = (n: number) => (Number.isFinite(n) ? (n / 1000).toFixed(1) : 'n/a');

const row = (r: LargeRoundResult) => [
  M(r.params).padStart(7), `${modelMB(r).toFixed(0)} MB`.padStart(8), r.status.padEnd(9), s1(r.roundMs).padStart(7),
  s1(r.phases.download).padStart(8), s1(r.phases.trainTask).padStart(8), s1(r.phases.upload).padStart(7), s1(r.phases.evaluateTask).padStart(7), s1(r.phases.unmask).padStart(7),
  `${grew(r).toFixed(0)} MB`.padStart(9), `${(grew(r) / modelMB(r)).toFixed(2)}`.padStart(6), `${r.coordinator.peakArrayBuffersMB.toFixed(0)}`.padStart(7),
  `${sitePeak(r).toFixed(0)} MB`.padStart(9), `${(r.wireBytes / 2 ** 20).toFixed(0)} MB`.padStart(9), (r.wireBytes / payload(r)).toFixed(3).padStart(6),
].join('  ');
console.log('\n params     model  status     round s  down s  train s  up s  eval s  unmask s  coord +RSS  models  buffers MB  site peak  on wire   /payload');
console.log(row(b));
console.log(row(l));
const ratio = (x: number, y: number) => (y > 0 ? (x / y).toFixed(1) : 'n/a');
console.log(`\n(down: one model download; train: the whole training task at a site, download, local training and masking included;
 up: the masked upload; unmask: the coordinator rebuilding and removing masks. Medians over sites. "coord +RSS" is the
 coordinator's peak resident memory above its level before the study, "models" the same in model sizes.)`);
console.log(`\n${M(l.params)} vs ${M(b.params)} (x${ratio(l.params, b.params)} the parameters): round latency x${ratio(l.roundMs, b.roundMs)}, coordinator growth x${ratio(grew(l), grew(b))}, site peak x${ratio(sitePeak(l), sitePeak(b))}, bytes on the wire x${ratio(l.wireBytes, b.wireBytes)}`);
const copies = sites * modelMB(l);
console.log(`coordinator: grew ${grew(l).toFixed(0)} MB = ${(grew(l) / modelMB(l)).toFixed(2)} model sizes at its peak; holding the ${sites} sites' updates alone would take ${copies.toFixed(0)} MB (${sites} model sizes) on top of its own working set; updates reassembled at any time: ${(l.transfer.peakBufferedBytes / 2 ** 20).toFixed(0)} MB`);
console.log(`no message larger than a chunk: ${l.transfer.chunksIn + l.transfer.chunksOut} chunks moved ${((l.transfer.bytesIn + l.transfer.bytesOut) / 2 ** 20).toFixed(0)} MB; transfers resumed: ${l.transfer.resumes}`);
console.log(`\nRESULT large params=${l.params} sites=${sites} secure_aggregation=${secureAggregation} status=${l.status} round_s=${s1(l.roundMs)} coordinator_peak_rss_mb=${l.coordinator.peakRssMB.toFixed(0)} coordinator_growth_model_sizes=${(grew(l) / modelMB(l)).toFixed(2)} vs_n_copies=${sites} site_peak_rss_mb=${sitePeak(l).toFixed(0)} wire_mb=${(l.wireBytes / 2 ** 20).toFixed(0)} wire_per_payload=${(l.wireBytes / payload(l)).toFixed(3)} round_ratio_vs_${M(b.params)}=${ratio(l.roundMs, b.roundMs)}`);
if (l.status !== 'completed' || b.status !== 'completed') process.exitCode = 1;
