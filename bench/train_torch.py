"""PyTorch baseline for bench/train.ts: the same reference models, Adam, batch 32, one thread.

Reads a JSON list of jobs on stdin ({"name", "inputShape", "classes", "n", "data", "steps", "warmup", "batchSize",
"learningRate", "repeats"}) and prints one JSON line per job: {"name", "samplesPerSec", "steps", "seconds", "loss"},
samplesPerSec being the best of `repeats` timed runs of `steps` steps after `warmup` steps.
Data files are raw little-endian float32 (x, then y) written by the TypeScript side, so both train on the same rows.
"""
import json
import sys
import time

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
torch.manual_seed(0)


def build(name, input_shape, classes):
    out = 1 if classes == 2 else classes
    if name == "wdbc-mlp":
        return nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, out))
    h, w, c = input_shape
    if name == "digits-cnn":
        # conv 3x3x16 same, maxpool 2, conv 3x3x32 valid, dense 64, output (cnn-small)
        flat = 32 * (h // 2 - 2) * (w // 2 - 2)
        return nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, out))
    if name == "cnn64":
        # three blocks of conv 3x3 same + maxpool 2 (16, 32, 64 filters), dense 64, output
        layers, cin = [], c
        for f in (16, 32, 64):
            layers += [nn.Conv2d(cin, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            cin = f
        layers += [nn.Flatten(), nn.Linear(64 * (h // 8) * (w // 8), 64), nn.ReLU(), nn.Linear(64, out)]
        return nn.Sequential(*layers)
    raise ValueError(name)


def run(job):
    shape, classes, n = job["inputShape"], job["classes"], job["n"]
    width = int(np.prod(shape))
    raw = np.fromfile(job["data"], dtype="<f4")
    x = torch.from_numpy(raw[: n * width].copy()).reshape(n, *shape)
    y = torch.from_numpy(raw[n * width: n * width + n].copy())
    if len(shape) == 3:
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    model = build(job["name"], shape, classes)
    opt = torch.optim.Adam(model.parameters(), lr=job["learningRate"])
    if classes == 2:
        loss_fn, y = nn.BCEWithLogitsLoss(), y.reshape(n, 1)
    else:
        loss_fn, y = nn.CrossEntropyLoss(), y.long()
    batch = job["batchSize"]
    gen = torch.Generator().manual_seed(1)

    def steps(count):
        done, loss = 0, None
        while done < count:
            order = torch.randperm(n, generator=gen)
            for i in range(0, n - batch + 1, batch):
                idx = order[i: i + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                done += 1
                if done == count:
                    break
        return float(loss)

    steps(job["warmup"])
    dt, loss = float("inf"), None
    for _ in range(job.get("repeats", 1)):
        t0 = time.perf_counter()
        loss = steps(job["steps"])
        dt = min(dt, time.perf_counter() - t0)
    return {"name": job["name"], "samplesPerSec": job["steps"] * batch / dt, "steps": job["steps"], "seconds": dt, "loss": loss,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    for job in json.load(sys.stdin):
        print(json.dumps(run(job)), flush=True)
