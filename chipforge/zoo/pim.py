"""The bundled ``resnet-digits-pim`` models: a 4-bit ResNet and its PIM-aware copies.

Stored as named float32 arrays in ``resnet-digits-pim.npz`` (torch state dicts, no
pickle); rebuilt by :func:`chipforge.mappings.pim_qat.train_pim_models`
(``chipforge zoo train resnet-digits-pim``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_FILE = Path(__file__).resolve().parent / "resnet-digits-pim.npz"


def load_arrays(path: str | Path = MODEL_FILE) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: run `chipforge zoo train "
                         "resnet-digits-pim`") from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"model file {path} is corrupt or truncated: {e}") from None
