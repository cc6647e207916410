"""Deepfake detection, a crashing submission: it reads the inputs, then fails on a bug.

referee records it as `exited_nonzero` and shows the team the end of its traceback.
"""

import os

import numpy as np


def main() -> None:
    inp = os.environ.get("REFEREE_INPUT", "/data/input")
    features = np.load(os.path.join(inp, "features.npy"))
    weights = np.ones(features.shape[1] + 1)  # off by one: the bias was appended twice
    print(f"loaded {features.shape[0]} clips")
    features @ weights  # ValueError: shapes do not align


if __name__ == "__main__":
    main()
