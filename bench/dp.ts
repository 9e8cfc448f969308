/**
 * `npm run bench:dp`: what record-level differential privacy costs on WDBC. A real coordinator and 5 real site agents
 * (in this process, over loopback sockets) train the same study twice or more: without DP (the baseline, same
 * run), then with DP-SGD at every site at epsilon <= 2, delta 1e-5 (cli/demo.ts WDBC_DP), repeated because DP
 * noise makes every run differ. Prints epsilon spent per site (each site's own accountant) and pooled hold-out
 * accuracy and AUC.
 *
 * Options: --repeats N (default 3), --rounds N (default 20), --json (one JSON line at the end).
 */
import { parseArgs } from 'node:util';
import { demoManifest, WDBC_DP } from '../cli/demo.ts';
import { runStudy, startCoordinator, startSites, type StudyStatusBody } from '../tests/helpers/cluster.ts';
import type { StudyManifestInput } from '../protocol/messages.ts';

const { values } = parseArgs({ options: { repeats: { type: 'string', default: '3' }, rounds: { type: 'string', default: '20' }, json: { type: 'boolean', default: false } } });
const repeats = Number(values.repeats);
const rounds = Number(values.rounds);
const SITES = 5;

interface Run { label: string; accuracy: number; auc: number | undefined; epsilon: Record<string, number>; seconds: number }

const { coordinator, url } = await startCoordinator();
const sites = await startSites(url, SITES);
const runs: Run[] = [];
try {
  const dpManifest = demoManifest(rounds, SITES, false, true);
  const plain: StudyManifestInput = { ...dpManifest, name: 'WDBC without DP (baseline)', privacy: { secureAggregation: false } };
  const one = async (label: string, m: StudyManifestInput): Promise<Run> => {
    const t0 = Date.now();
    const end = await runStudy(url, { ...m, participation: { minSites: SITES, roundDeadlineMs: 120_000, waitForSitesMs: 60_000, maxRoundAttempts: 2 } }, 30 * 60_000) as StudyStatusBody & { study: { privacy?: { perSite: Record<string, { record?: number }> } } };
    if (end.study.status !== 'completed') throw new Error(`${label}: study ${end.study.status} ${JSON.stringify(end.study.error)}`);
    const last = end.rounds.at(-1)!;
    const epsilon = Object.fromEntries(Object.entries(end.study.privacy?.perSite ?? {}).map(([s, e]) => [s, e.record ?? NaN]));
    const r: Run = { label, accuracy: last.pooled.accuracy, auc: last.pooled.auc, epsilon, seconds: (Date.now() - t0) / 1000 };
    const eps = Object.values(epsilon);
    console.log(`${label.padEnd(22)} accuracy ${r.accuracy.toFixed(4)}  AUC ${r.auc?.toFixed(4) ?? '-'}  ${eps.length ? `epsilon per site ${eps.map((e) => e.toFixed(3)).join(', ')} (delta ${WDBC_DP.dp.delta})` : 'no DP (epsilon unbounded)'}  ${r.seconds.toFixed(1)} s`);
    return r;
  };
  console.log(`WDBC over ${SITES} sites, ${rounds} rounds, pooled hold-out of every site; record-level DP target epsilon ${WDBC_DP.dp.targetEpsilon}, delta ${WDBC_DP.dp.delta}`);
  runs.push(await one('baseline (no DP)', plain));
  for (let i = 1; i <= repeats; i++) runs.push(await one(`DP-SGD run ${i}`, dpManifest));
  const dp = runs.slice(1);
  const mean = dp.reduce((s, r) => s + r.accuracy, 0) / dp.length;
  const maxEps = Math.max(...dp.flatMap((r) => Object.values(r.epsilon)));
  console.log(`\nDP mean accuracy ${mean.toFixed(4)} (min ${Math.min(...dp.map((r) => r.accuracy)).toFixed(4)}, max ${Math.max(...dp.map((r) => r.accuracy)).toFixed(4)}) at epsilon <= ${maxEps.toFixed(3)}; baseline ${runs[0]!.accuracy.toFixed(4)}; ratio DP/baseline ${(mean / runs[0]!.accuracy).toFixed(4)}`);
  if (values.json) console.log(JSON.stringify({ rounds, sites: SITES, baseline: runs[0], dp, meanAccuracy: mean, maxEpsilon: maxEps }));
} finally {
  await Promise.all(sites.map((s) => s.agent.stop()));
  await coordinator.close();
}
