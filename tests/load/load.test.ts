/**
 * Load, at the size `npm test` can afford: 50 real agents (their own sockets, keys, data and ledgers) in two worker
 * processes complete FedAvg rounds against one coordinator on loopback. `npm run bench:load` runs 10 and 200.
 */
import { describe, expect, it } from 'vitest';
import { runLoad } from './load-run.ts';

describe('many agents at once', () => {
  it('should complete rounds with 50 concurrent agents, every agent in every round', async () => {
    const r = await runLoad({ agents: 50, workers: 2, rounds: 3 });
    console.log(`load: ${r.agents} agents, coordinator CPU ${Math.round(r.coordinatorCpuShare * 100)}% of wall, round p50 ${r.p50} ms, p95 ${r.p95} ms, coordinator RSS ${r.rssBeforeMB} -> peak ${r.peakRssMB} MB, heap peak ${r.peakHeapMB} MB`);
    expect(r.status).toBe('completed');
    expect(r.participants).toEqual([50, 50, 50]);
    expect(r.roundMs.every((ms) => ms > 0)).toBe(true);
  }, 180_000);
});
