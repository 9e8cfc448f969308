/**
 * Model checkpoints, one binary tensor frame per completed round, written atomically (temp file, fsync, rename):
 * a coordinator killed mid-write leaves the previous checkpoint intact and no torn file under the final name.
 */
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { decodeTensors, encodeTensors, type Tensor } from '../protocol/codec.ts';

export class Checkpoints {
  private readonly memory = new Map<string, Uint8Array>();

  /** `dir` null keeps checkpoints in memory (tests and simulations). */
  constructor(private readonly dir: string | null) {}

  private path(studyId: string, round: number): string {
    return join(this.dir!, studyId, `round-${String(round).padStart(5, '0')}.cht`);
  }

  async save(studyId: string, round: number, weights: readonly Tensor[]): Promise<void> {
    const bytes = encodeTensors(weights);
    if (!this.dir) {
      this.memory.set(`${studyId}/${round}`, bytes);
      return;
    }
    const final = this.path(studyId, round);
    await mkdir(join(this.dir, studyId), { recursive: true });
    const tmp = `${final}.${process.pid}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, final);
    // A coordinator killed mid-write before this one left its temp file behind: the round was redone, so the
    // orphan is garbage (for a large model, a large one).
    const prefix = `${basename(final)}.`;
    for (const f of await readdir(join(this.dir, studyId))) {
      if (f.startsWith(prefix) && f.endsWith('.tmp')) await rm(join(this.dir, studyId, f), { force: true });
    }
  }

  async load(studyId: string, round: number): Promise<Tensor[]> {
    const bytes = this.dir ? await readFile(this.path(studyId, round)) : this.memory.get(`${studyId}/${round}`);
    if (!bytes) throw new Error(`no checkpoint for ${studyId} round ${round}`);
    return decodeTensors(bytes);
  }

  async loadBytes(studyId: string, round: number): Promise<Uint8Array> {
    const bytes = this.dir ? await readFile(this.path(studyId, round)) : this.memory.get(`${studyId}/${round}`);
    if (!bytes) throw new Error(`no checkpoint for ${studyId} round ${round}`);
    return new Uint8Array(bytes);
  }

  // ------------------------------------------------------------ strategy state
  // A stateful strategy's server state (FedAvgM velocity, FedAdam moments) after round r lives beside round r's
  // model and is written before it, with the same atomic write, so a resumed round r + 1 starts from exactly the
  // state the uninterrupted run would have had.

  private statePath(studyId: string, round: number): string {
    return join(this.dir!, studyId, `round-${String(round).padStart(5, '0')}.strategy.cht`);
  }

  /** Saves a strategy's server state after `round` (an empty list saves nothing). */
  async saveState(studyId: string, round: number, state: readonly Tensor[]): Promise<void> {
    if (state.length === 0) return;
    const bytes = encodeTensors(state);
    if (!this.dir) {
      this.memory.set(`${studyId}/${round}/strategy`, bytes);
      return;
    }
    const final = this.statePath(studyId, round);
    await mkdir(join(this.dir, studyId), { recursive: true });
    const tmp = `${final}.${process.pid}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, final);
  }

  /** The strategy state saved after `round`, or an empty list when there is none (round 0, stateless strategy). */
  async loadState(studyId: string, round: number): Promise<Tensor[]> {
    let bytes: Uint8Array | undefined;
    if (this.dir) {
      try {
        bytes = await readFile(this.statePath(studyId, round));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    } else {
      bytes = this.memory.get(`${studyId}/${round}/strategy`);
    }
    return bytes ? decodeTensors(bytes) : [];
  }

  async remove(studyId: string): Promise<void> {
    if (this.dir) await rm(join(this.dir, studyId), { recursive: true, force: true });
  }
}
