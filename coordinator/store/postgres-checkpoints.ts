/**
 * Checkpoints in PostgreSQL, so that any replica can resume a study another one ran. A checkpoint is stored as
 * chunks of at most 8 MiB (bytea values stay small; a 50M-parameter model is 25 chunks) and replaced in one
 * transaction, so a reader sees the old checkpoint or the new one, never a mix.
 *
 * It extends the file-based `Checkpoints` only so that every consumer typed against that class takes it as is.
 */
import type pg from 'pg';
import { decodeTensors, encodeTensors, type Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import { Checkpoints } from '../checkpoints.ts';

const CHUNK = 8 * 1024 * 1024;

export class PostgresCheckpoints extends Checkpoints {
  constructor(private readonly pool: pg.Pool) {
    super(null);
  }

  override async save(studyId: string, round: number, weights: readonly Tensor[]): Promise<void> {
    const bytes = encodeTensors(weights);
    const client = await this.pool.connect().catch((err: Error) => {
      throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', err.message);
    });
    try {
      await client.query('BEGIN');
      await client.query('DELETE FROM cohort_checkpoints WHERE study_id = $1 AND round = $2', [studyId, round]);
      for (let i = 0, chunk = 0; i < Math.max(bytes.byteLength, 1); i += CHUNK, chunk++) {
        const part = Buffer.from(bytes.buffer, bytes.byteOffset + i, Math.min(CHUNK, bytes.byteLength - i));
        await client.query('INSERT INTO cohort_checkpoints (study_id, round, chunk, bytes) VALUES ($1, $2, $3, $4)', [studyId, round, chunk, part]);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', `cannot save checkpoint ${studyId}/${round}: ${(err as Error).message}`);
    } finally {
      client.release();
    }
  }

  override async loadBytes(studyId: string, round: number): Promise<Uint8Array> {
    const { rows } = await this.pool.query<{ bytes: Buffer }>('SELECT bytes FROM cohort_checkpoints WHERE study_id = $1 AND round = $2 ORDER BY chunk', [studyId, round]);
    if (rows.length === 0) throw new Error(`no checkpoint for ${studyId} round ${round}`);
    return new Uint8Array(Buffer.concat(rows.map((r) => r.bytes)));
  }

  override async load(studyId: string, round: number): Promise<Tensor[]> {
    return decodeTensors(await this.loadBytes(studyId, round));
  }

  override async remove(studyId: string): Promise<void> {
    await this.pool.query('DELETE FROM cohort_checkpoints WHERE study_id = $1', [studyId]);
  }

  /** Rounds that have a checkpoint, for consistency checks. */
  async rounds(studyId: string): Promise<number[]> {
    const { rows } = await this.pool.query<{ round: number }>('SELECT DISTINCT round FROM cohort_checkpoints WHERE study_id = $1 ORDER BY round', [studyId]);
    return rows.map((r) => r.round);
  }
}
