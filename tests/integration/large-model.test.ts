/**
 * Large models: a round with 5 sites under secure aggregation (the default) where the model is far larger than the
 * coordinator's message limit (16 MiB), so it can only complete through chunked transfers, with every masked vector
 * added into the sum chunk by chunk (no upload is ever reassembled at the coordinator). `npm test` runs a
 * 5M-parameter MLP with the agents in this process; `npm run test:large` runs 50M parameters with each site its
 * own process and checks memory: the coordinator's peak stays below what holding every site's update would take.
 * A plain (no secure aggregation) round shows the other path: updates reassembled one at a time and folded into a
 * running mean, never more than one held at once.
 */
import { describe, expect, it } from 'vitest';
import { mlpParams, runLargeRound } from '../helpers/large-round.ts';

const LARGE = process.env.COHORT_LARGE === '1';
const HIDDEN = LARGE ? [4096, 4096, 4096, 4096] : [2240, 2240];
const SITES = 5;
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

describe(`a ${(mlpParams(HIDDEN) / 1e6).toFixed(1)}M-parameter model`, () => {
  it(`should complete a round with ${SITES} sites under secure aggregation, every payload in chunks`, async () => {
    const r = await runLargeRound({ hidden: HIDDEN, sites: SITES, processes: LARGE, ...(LARGE ? { log: (m: string) => console.log(m) } : {}) });
    if (LARGE) console.log(JSON.stringify(r));
    expect(r.error).toBeUndefined();
    expect(r.status).toBe('completed');
    expect(r.params).toBeGreaterThanOrEqual(LARGE ? 50_000_000 : 5_000_000);
    // The model could never travel as one message: the coordinator refuses any larger than 16 MiB.
    expect(r.modelBytes).toBeGreaterThan(MAX_MESSAGE_BYTES);
    expect(r.participants).toHaveLength(SITES);
    expect(r.attempts).toBe(1);
    // Each site pulled the model twice (train, evaluate) and pushed one masked vector of (d + 2) lanes, in chunks.
    expect(r.transfer.downloadsOffered).toBe(2 * SITES);
    expect(r.transfer.bytesOut).toBe(2 * SITES * r.modelBytes);
    expect(r.transfer.uploadsCompleted).toBe(SITES);
    expect(r.transfer.bytesIn).toBe(SITES * (r.params + 2) * 4);
    // Added into the sum as they arrived: no masked vector was ever reassembled here.
    expect(r.transfer.peakBufferedBytes).toBe(0);
    expect(r.wireBytes).toBeGreaterThan(r.transfer.bytesIn + r.transfer.bytesOut);
    if (LARGE) {
      // The coordinator's own working set is at most 7 model-sized buffers (the global model and its frame, the
      // sum, the mean delta, the next model, its frame and the checkpoint's). Holding the 5 sites' updates as well
      // would take it past 8; streaming keeps it below.
      const grewMB = r.coordinator.peakRssMB - r.coordinator.rssBeforeMB;
      const modelMB = r.modelBytes / 2 ** 20;
      console.log(`coordinator grew ${grewMB.toFixed(0)} MB = ${(grewMB / modelMB).toFixed(2)} model sizes; site peaks ${r.sitePeakRssMB.join(', ')} MB`);
      expect(grewMB / modelMB).toBeLessThan(8);
    }
  }, LARGE ? 1_800_000 : 120_000);

  it('should fold plain updates into a running mean one at a time, reassembling at most one', async () => {
    // A smaller model in small chunks: the point is the admission of reassembly buffers, not the size.
    const r = await runLargeRound({ hidden: [512, 512], sites: 4, processes: false, secureAggregation: false, chunkBytes: 64 * 1024 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe('completed');
    expect(r.participants).toHaveLength(4);
    expect(r.transfer.uploadsCompleted).toBe(4);
    expect(r.transfer.peakBufferedBytes).toBeGreaterThan(0);
    expect(r.transfer.peakBufferedBytes).toBeLessThanOrEqual(r.modelBytes);
  }, 120_000);
});
