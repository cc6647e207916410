"""Deepfake detection, good model: a logistic regression with weights fitted offline.

Reads the inputs the sandbox mounts read-only ($REFEREE_INPUT, default /data/input) and writes
$REFEREE_OUTPUT/predictions.csv (id,label with label = P(fake)). No network, no writes elsewhere.
"""

import os

import numpy as np

# Fitted offline on labelled clips from the same distribution (16 features; 4 carry no signal).
WEIGHTS = np.array([0.38, 0.0, 0.0, -0.06, 0.0, -0.86, 0.0, -0.25,
                    0.90, 1.07, 0.99, -0.15, 0.44, 0.65, 0.03, -0.56])
BIAS = -0.25


def main() -> None:
    inp = os.environ.get("REFEREE_INPUT", "/data/input")
    out = os.environ.get("REFEREE_OUTPUT", "/data/output")
    features = np.load(os.path.join(inp, "features.npy")).astype(np.float64)
    with open(os.path.join(inp, "ids.csv"), encoding="utf-8") as f:
        ids = [line.strip() for line in f.readlines()[1:] if line.strip()]
    prob = 1.0 / (1.0 + np.exp(-(features @ WEIGHTS + BIAS)))
    with open(os.path.join(out, os.environ.get("REFEREE_OUTPUT_FILE", "predictions.csv")), "w",
              encoding="utf-8") as f:
        f.write("id,label\n")
        f.writelines(f"{i},{p:.6f}\n" for i, p in zip(ids, prob))
    print(f"wrote {len(ids)} predictions, mean P(fake) = {prob.mean():.3f}")


if __name__ == "__main__":
    main()
