/** `cohort study model`: the global model in tfjs layers format, and its model card as JSON and Markdown. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelCard } from '../coordinator/model-card.ts';
import { api, apiBytes } from './http.ts';
import { renderModelCard } from './model-card-markdown.ts';

export interface DownloadedModel {
  files: string[];
  card: ModelCard;
  weightBytes: number;
}

/** Writes model.json, weights.bin (loadable with `tf.loadLayersModel`), model-card.json and MODEL_CARD.md to `out`. */
export async function downloadModel(base: string, studyId: string, out: string, token: string | undefined): Promise<DownloadedModel> {
  const path = `/api/studies/${encodeURIComponent(studyId)}/model`;
  const [modelJson, weights, card] = await Promise.all([
    api<Record<string, unknown>>(base, `${path}/model.json`, { token }),
    apiBytes(base, `${path}/weights.bin`, token),
    api<ModelCard>(base, `${path}/card`, { token }),
  ]);
  mkdirSync(out, { recursive: true });
  const files = ['model.json', 'weights.bin', 'model-card.json', 'MODEL_CARD.md'].map((f) => join(out, f));
  writeFileSync(files[0]!, JSON.stringify(modelJson, null, 2));
  writeFileSync(files[1]!, weights);
  writeFileSync(files[2]!, `${JSON.stringify(card, null, 2)}\n`);
  writeFileSync(files[3]!, renderModelCard(card));
  return { files, card, weightBytes: weights.byteLength };
}
