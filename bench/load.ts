/**
 * `npm run bench:load`: 200 concurrent real site agents (4 worker processes) against one coordinator on loopback,
 * a few FedAvg rounds of logistic regression, and the same at 10 agents as the baseline measured in this run.
 * Prints round latency (p50/p95) and the coordinator's memory (RSS, heap) and their ratios to the baseline.
 *
 * COHORT_LOAD_AGENTS (200), COHORT_LOAD_BASELINE (10), COHORT_LOAD_ROUNDS (5), COHORT_LOAD_WORKERS (4).
 */
import { cpus } from 'node:os';
import { runLoad, type LoadResult } from '../tests/load/load-run.ts';

const coreCount = () => cpus().length;

const agents = Number(process.env.COHORT_LOAD_AGENTS ?? 200);
const baselineAgents = Number(process.env.COHORT_LOAD_BASELINE ?? 10);
const rounds = Number(process.env.COHORT_LOAD_ROUNDS ?? 5);
const workers = Number(process.env.COHORT_LOAD_WORKERS ?? 4);

const say = (m: string) => console.log(`  ${m}`);
console.log(`# load: ${baselineAgents} agents (baseline), then ${agents} agents; ${rounds} rounds each`);
const base = await runLoad({ agents: baselineAgents, workers: Math.min(workers, baselineAgents), rounds, onProgress: say });
const big = await runLoad({ agents, workers, rounds, onProgress: say });

const row = (r: LoadResult) => `${String(r.agents).padStart(6)}  ${r.status.padEnd(9)}  ${String(r.p50).padStart(8)}  ${String(r.p95).padStart(8)}  ${String(r.rssBeforeMB).padStart(9)}  ${String(r.peakRssMB).padStart(9)}  ${String(r.peakHeapMB).padStart(9)}  ${String(r.retainedHeapMB).padStart(13)}  ${String(r.connectMs).padStart(9)}  ${String(Math.min(...r.participants)).padStart(16)}  ${Math.round(r.coordinatorCpuShare * 100)}%`;
console.log('\nagents  status     p50 (ms)  p95 (ms)  RSS0 (MB)  peak RSS   peak heap  heap after GC  connect ms  min participants  coordinator CPU');
console.log(row(base));
console.log(row(big));
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
console.log(`\n${agents} vs ${baselineAgents} agents: round latency p50 x${ratio(big.p50, base.p50)}, p95 x${ratio(big.p95, base.p95)}; coordinator peak RSS x${ratio(big.peakRssMB, base.peakRssMB)}, peak heap x${ratio(big.peakHeapMB, base.peakHeapMB)}, heap after GC x${ratio(big.retainedHeapMB, base.retainedHeapMB)} (${agents / baselineAgents}x the agents)`);
const bar = (ms: number, max: number) => '#'.repeat(Math.max(1, Math.round((ms / max) * 40)));
const max = Math.max(...big.roundMs, ...base.roundMs);
console.log('\nround latency per round (each # is', Math.round(max / 40), 'ms):');
base.roundMs.forEach((ms, i) => console.log(`  ${String(baselineAgents).padStart(3)} agents r${i + 1} ${bar(ms, max)} ${ms}`));
big.roundMs.forEach((ms, i) => console.log(`  ${String(agents).padStart(3)} agents r${i + 1} ${bar(ms, max)} ${ms}`));
console.log(`(coordinator CPU: its CPU time over the study's wall time; the rest of the round is the agents training on the same ${coreCount()} cores)`);
console.log(`\nRESULT load agents=${agents} status=${big.status} p50_ms=${big.p50} p95_ms=${big.p95} peak_rss_mb=${big.peakRssMB} peak_heap_mb=${big.peakHeapMB} heap_after_gc_mb=${big.retainedHeapMB} coordinator_cpu=${Math.round(big.coordinatorCpuShare * 100)}% p50_ratio_vs_${baselineAgents}=${ratio(big.p50, base.p50)}`);
if (big.status !== 'completed' || base.status !== 'completed') process.exitCode = 1;
