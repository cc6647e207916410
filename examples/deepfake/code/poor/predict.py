"""Deepfake detection, poor model: a hand-made rule on half of the features.

Reads the inputs the sandbox mounts read-only ($REFEREE_INPUT, default /data/input) and writes
$REFEREE_OUTPUT/predictions.csv (id,label with label = P(fake)). No network, no writes elsewhere.
"""

import os

import numpy as np

# Hand-picked: the sign of a few features, no fitting (a weak baseline).
WEIGHTS = np.array([0.3, 0.0, 0.0, 0.0, 0.0, -0.3, 0.0, -0.3,
                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
BIAS = 0.0


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
