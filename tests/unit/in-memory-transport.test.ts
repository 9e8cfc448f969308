import { describe, expect, it } from 'vitest';
import type { Reply, Task } from '../../protocol/messages.ts';
import { FaultPlan, FaultsSchema } from '../../simulations/faults.ts';
import { InMemoryTransport } from '../../simulations/in-memory-transport.ts';

const sites = ['a', 'b', 'c'].map((name) => ({ id: `virtual:${name}`, name, connectedAt: new Date(0).toISOString() }));
const task = (round = 1) => ({ kind: 'describe', round }) as unknown as Task;

describe('the in-memory transport', () => {
  it('should deliver replies in the order tasks were sent even when sites finish out of order', async () => {
    const delays: Record<string, number> = { a: 40, b: 0, c: 20 };
    const t = new InMemoryTransport(sites, async (site) => {
      await new Promise((r) => setTimeout(r, delays[site.name]));
      return { ok: true, data: site.name };
    });
    const order: string[] = [];
    await Promise.all(sites.map(async (s) => {
      const r = await t.send(s.id, task(), 1000);
      order.push((r as { data: string }).data);
    }));
    expect(order).toEqual(['a', 'b', 'c']);
  });

  it('should answer a dropout with a disconnect without running the task, and a straggler with a timeout after running it', async () => {
    const ran: string[] = [];
    const plan = new FaultPlan(FaultsSchema.parse({ dropout: { describe: 1 } }), 1);
    const dropped = new InMemoryTransport(sites, async (s) => { ran.push(s.name); return { ok: true, data: 1 }; }, plan);
    expect(await dropped.send('virtual:a', task(), 1000)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED' } });
    expect(ran).toEqual([]);
    const slow = new InMemoryTransport(sites, async (s) => { ran.push(s.name); return { ok: true, data: 1 }; }, new FaultPlan(FaultsSchema.parse({ straggler: { describe: 1 } }), 1));
    expect(await slow.send('virtual:b', task(), 5000)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT' } });
    expect(ran).toEqual(['b']);
    expect([dropped.counts, slow.counts]).toEqual([{ sent: 1, dropout: 1, straggler: 0 }, { sent: 1, dropout: 0, straggler: 1 }]);
  });

  it('should turn a broken simulator into a coded reply, never a throw, and refuse unknown sites', async () => {
    const t = new InMemoryTransport(sites, async (): Promise<Reply<unknown>> => { throw new Error('worker died'); });
    expect(await t.send('virtual:a', task(), 1000)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_SIM_WORKER_FAILED' } });
    expect(await t.send('nope', task(), 1000)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED' } });
    expect(t.onlineSites().map((s) => s.name)).toEqual(['a', 'b', 'c']);
  });
});
