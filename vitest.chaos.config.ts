import { defineConfig } from 'vitest/config';

/** `npm run test:chaos`: many seeded runs of the chaos suite (npm test runs one). */
export default defineConfig({
  test: {
    include: ['tests/chaos/**/*.test.ts'],
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    env: { COHORT_CHAOS_RUNS: process.env.COHORT_CHAOS_RUNS ?? '12' },
  },
});
