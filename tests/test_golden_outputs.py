"""Every sampling mode's latents are bit for bit what they were when tests/data/golden-latents.json was recorded
(see golden_outputs.py): a refactor that changes a single bit of any mode fails here."""

import json

import pytest
import torch

from golden_outputs import GOLDEN, TORCH_BUILD, compute


@pytest.mark.skipif(torch.__version__ != TORCH_BUILD,
                    reason=f"the golden hashes are torch {TORCH_BUILD}'s; other builds round differently")
def test_every_mode_gives_the_recorded_latents():
    recorded = json.loads(GOLDEN.read_text())["hashes"]
    assert compute() == recorded
