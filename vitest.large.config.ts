import { defineConfig } from 'vitest/config';

/** `npm run test:large`: the large-model round at 50M parameters, each site its own process (minutes, GBs). */
export default defineConfig({
  test: {
    include: ['tests/integration/large-model.test.ts'],
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    env: { COHORT_LARGE: '1' },
  },
});
