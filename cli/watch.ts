import { api } from './http.ts';
import { formatLosoTable, formatRow, formatSiteTable, progressBar, TABLE_HEADER, type MetricsReportLike, type RoundRow } from './render.ts';

export interface StatusResponse {
  study: { id: string; name: string; status: string; completedRounds: number; rounds: number; error?: { code: string; message: string }; refusals?: Record<string, { code: string; message: string }> };
  rounds: RoundRow[];
}

export async function watchStudy(base: string, id: string, o: { watch: boolean; json: boolean; token?: string | undefined; onRound?: (r: RoundRow) => void }): Promise<StatusResponse> {
  let printed = 0;
  let headerShown = false;
  const tty = process.stdout.isTTY;
  for (;;) {
    const s = await api<StatusResponse>(base, `/api/studies/${encodeURIComponent(id)}`, { token: o.token });
    if (o.json) {
      console.log(JSON.stringify(s, null, 2));
      return s;
    }
    if (!headerShown) {
      console.log(`study ${s.study.id} "${s.study.name}"`);
      console.log(TABLE_HEADER);
      headerShown = true;
    }
    if (tty && printed > 0 && o.watch) process.stdout.write('\x1b[1A\x1b[2K');
    for (const r of s.rounds.slice(printed)) {
      console.log(formatRow(r));
      o.onRound?.(r);
    }
    printed = s.rounds.length;
    const ended = !['running', 'created'].includes(s.study.status) || (!o.watch);
    if (o.watch && (tty || ended)) console.log(`${progressBar(s.study.completedRounds, s.study.rounds)}  ${s.study.status}`);
    if (ended || !o.watch) {
      if (!o.watch) console.log(`${progressBar(s.study.completedRounds, s.study.rounds)}  ${s.study.status}`);
      if (s.study.error) console.log(`error: ${s.study.error.code}: ${s.study.error.message}`);
      if (s.rounds.length > 0) {
        const report = await api<MetricsReportLike>(base, `/api/studies/${encodeURIComponent(id)}/metrics`, { token: o.token });
        for (const line of [...formatSiteTable(report), ...formatLosoTable(report)]) console.log(line);
      }
      for (const [site, r] of Object.entries(s.study.refusals ?? {})) console.log(`  ${site}: ${r.code} ${r.message}`);
      return s;
    }
    await new Promise((r) => setTimeout(r, 400));
  }
}

