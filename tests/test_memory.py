"""The memory estimate against measured peaks, and runs that cannot fit refused before any allocation.

Peaks are measured in fresh subprocesses as the growth of peak resident memory (VmHWM, reset just before the
``sample_video`` call through /proc/self/clear_refs, so loading's own transient peak does not count) over the
resident memory before the call (the loaded model and libraries excluded, as the estimate excludes them):
tracemalloc does not see torch's allocations.
"""

import json
import subprocess
import sys

import pytest

import zs2_kernels
from zs2_kernels.sampling.memory import estimate_memory

MEASURE = """
import json, re, sys
import zs2_kernels
def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
frames, chunk = int(sys.argv[1]), (int(sys.argv[2]) or None)
pipe = zs2_kernels.load_pipeline()
zs2_kernels.sample_video(pipe, "the number 3", num_frames=2, num_inference_steps=1, progress=False, seed=0)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets the peak (VmHWM) to the current resident set
before = status("VmRSS")
zs2_kernels.sample_video(pipe, "the number 3", num_frames=frames, frame_chunk=chunk, num_inference_steps=1,
                         guidance_scale=4.0, progress=False, seed=0)
print(json.dumps(status("VmHWM") - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("frames, chunk", [(64, None), (192, None), (512, 48)])
def test_estimate_is_within_2x_of_the_measured_peak(frames, chunk):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(frames), str(chunk or 0)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    config = zs2_kernels.load_pipeline()
    estimate = estimate_memory(config.unet.config, config.vae.config, videos=1, frames=frames, height=32, width=32,
                               chunk=chunk).total
    assert measured / 2 <= estimate <= measured * 2, (frames, chunk, estimate, measured)


def test_a_run_that_cannot_fit_is_refused_naming_frames_and_chunk(monkeypatch):
    """10^7 frames would need terabytes: refused at once (no allocation, no minutes of silence)."""
    pipe = zs2_kernels.load_pipeline()
    with pytest.raises(MemoryError, match=r"num_frames.*GiB|GiB.*num_frames") as error:
        zs2_kernels.sample_video(pipe, "the number 3", num_frames=10**7, num_inference_steps=1, progress=False)
    assert "frame_chunk" in str(error.value)
    monkeypatch.setattr("zs2_kernels.sampling.memory.available_memory", lambda device: 2**30)
    with pytest.raises(MemoryError, match="set frame_chunk"):
        zs2_kernels.sample_video(pipe, "the number 3", num_frames=5000, num_inference_steps=1, progress=False)


def test_too_many_videos_are_told_to_make_fewer_videos_not_fewer_frames():
    """num_videos_per_prompt=10**6 of one frame was told to 'lower num_frames'."""
    pipe = zs2_kernels.load_pipeline()
    with pytest.raises(MemoryError) as error:
        zs2_kernels.sample_video(pipe, "the number 3", num_frames=1, num_videos_per_prompt=10**6,
                                 num_inference_steps=1, progress=False)
    message = str(error.value)
    assert message.endswith("; make fewer videos per call (1000000 now: the prompts times num_videos_per_prompt)")
    assert "num_frames" not in message
    with pytest.raises(MemoryError, match=r"lower num_frames \(even frame_chunk 1 would not fit\), or make fewer "
                                          r"videos per call \(2000 now"):
        zs2_kernels.sample_video(pipe, ["3", "4"], num_frames=10**4, num_videos_per_prompt=1000,
                                 num_inference_steps=1, progress=False)


def test_a_resolution_too_large_is_named_and_latent_output_needs_no_decoder(monkeypatch):
    """The attack found 65536 x 65536 blamed on --frames, and latent output refused for its decoding memory."""
    from zs2_kernels.sampling import memory

    unet = {"block_out_channels": [32, 64], "layers_per_block": 1, "in_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"]}
    vae = {"block_out_channels": [32, 64]}
    monkeypatch.setattr(memory, "available_memory", lambda device: 2 * 2**30)
    huge = memory.estimate_memory(unet, vae, videos=1, frames=4, height=65536, width=65536)
    with pytest.raises(MemoryError, match=r"lower height/width \(one frame of one video does not fit"):
        memory.check_fits(huge, "cpu", "num_frames", "frame_chunk")
    decoded = memory.estimate_memory(unet, vae, videos=1, frames=400, height=256, width=256, chunk=1)
    latent = memory.estimate_memory(unet, vae, videos=1, frames=400, height=256, width=256, chunk=1, decodes=False)
    assert latent.images == latent.decode == 0 < decoded.decode and latent.total < decoded.total
