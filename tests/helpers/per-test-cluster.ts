/**
 * The coordinator and sites a test starts, stopped after each test of the describe block that calls this: sites
 * first (so they do not reconnect to a closing coordinator), then the coordinator. Kept apart from cluster.ts,
 * which benches import outside vitest.
 */
import { afterEach } from 'vitest';
import type { Coordinator } from '../../coordinator/app.ts';
import type { TestSite } from './cluster.ts';

export interface PerTestCluster {
  coordinator: Coordinator | undefined;
  sites: TestSite[];
}

export function perTestCluster(): PerTestCluster {
  const run: PerTestCluster = { coordinator: undefined, sites: [] };
  afterEach(async () => {
    await Promise.all(run.sites.map((s) => s.agent.stop()));
    run.sites = [];
    await run.coordinator?.close();
    run.coordinator = undefined;
  });
  return run;
}
