"""Prompt travel: a video's prompt per keyframe ({frame: text}), embeddings blended per frame in between."""

import pytest
import torch

import zs2_kernels
from zs2_kernels.sampling.prompt_travel import check_travel

from tiny_pipelines import tiny_pipeline

FAST = dict(num_inference_steps=2, progress=False, output_type="latent", seed=0)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


def test_frames_between_keyframes_blend_linearly_and_the_last_keyframe_holds():
    """From the definition: frame f between keyframes a < b weighs b's embedding (f - a)/(b - a)."""
    weights = check_travel({4: "b", 0: "a", 6: "c"}).weights(9)
    expected = torch.tensor([[1, 0, 0], [0.75, 0.25, 0], [0.5, 0.5, 0], [0.25, 0.75, 0], [0, 1, 0], [0, 0.5, 0.5],
                             [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("schedule, error, match", [
    ({3: "a"}, ValueError, "must have keyframe 0"),
    ({}, ValueError, "must have keyframe 0"),
    ({0: "a", -2: "b"}, TypeError, "keyframes must be ints >= 0"),
    ({0: "a", True: "b"}, TypeError, "keyframes must be ints >= 0"),
    ({0: "a", 2.0: "b"}, TypeError, "keyframes must be ints >= 0"),
    ({0: "a", 2: ""}, TypeError, "keyframe 2 must map to a non-empty string"),
    ({0: "a", 2: None}, TypeError, "keyframe 2 must map to a non-empty string"),
])
def test_bad_schedules_are_refused_naming_the_keyframe(schedule, error, match):
    with pytest.raises(error, match=match):
        check_travel(schedule)


def test_a_keyframe_past_the_video_is_refused_before_any_work(pipe, monkeypatch):
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("the UNet ran"))
    with pytest.raises(ValueError, match=r"prompt keyframe 8 is outside the video's frames \[0, 8\)"):
        zs2_kernels.sample_video(pipe, {0: "a cat", 8: "a dog"}, num_frames=8, **FAST)


def test_one_text_on_every_keyframe_is_the_plain_prompt(pipe):
    """Equal up to the text encoder's batch rounding (two keyframe texts are encoded as a batch of two)."""
    plain = zs2_kernels.sample_video(pipe, "a cat", num_frames=5, **FAST).frames
    travel = zs2_kernels.sample_video(pipe, {0: "a cat", 3: "a cat"}, num_frames=5, **FAST).frames
    torch.testing.assert_close(travel, plain, rtol=1e-5, atol=1e-5)


def test_travel_changes_the_later_frames_and_chunked_equals_unchunked(pipe):
    """Conditioning is looked up per frame range: in chunks of 2 the video is the unchunked one."""
    travel = {0: "a cat", 5: "a dog"}
    whole = zs2_kernels.sample_video(pipe, travel, num_frames=6, **FAST).frames
    chunked = zs2_kernels.sample_video(pipe, travel, num_frames=6, frame_chunk=2, **FAST).frames
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    plain = zs2_kernels.sample_video(pipe, "a cat", num_frames=6, **FAST).frames
    assert not torch.allclose(whole[0, -1], plain[0, -1])


def test_several_videos_mix_dicts_and_strings_and_repeat_per_dict(pipe):
    """A list of prompts: each a string or a dict; num_videos_per_prompt repeats each; every video equals its own
    call (the seed rule)."""
    prompts = [{0: "a cat", 3: "a dog"}, "a bird"]
    both = zs2_kernels.sample_video(pipe, prompts, num_frames=4, num_videos_per_prompt=2, **FAST).frames
    assert both.shape[0] == 4
    alone = zs2_kernels.sample_video(pipe, prompts[0], num_frames=4, **FAST).frames
    torch.testing.assert_close(both[0], alone[0], rtol=1e-5, atol=1e-5)


def test_sdxl_pooled_embeddings_travel_too():
    sdxl = tiny_pipeline("sdxl")
    travel = zs2_kernels.sample_video(sdxl, {0: "a cat", 2: "a dog"}, num_frames=3, **FAST).frames
    assert travel.shape[:2] == (1, 3) and torch.isfinite(travel).all()
    negative = zs2_kernels.sample_video(sdxl, "a cat", negative_prompt={0: "blurry", 2: "dark"}, num_frames=3,
                                        guidance_scale=7.5, **FAST).frames
    assert negative.shape[:2] == (1, 3) and torch.isfinite(negative).all()
    arguments = zs2_kernels.prompt_travel_embeddings(sdxl, {0: "a cat", 2: "a dog"}, 3)
    assert arguments["pooled_prompt_embeds"].shape[0] == 3 and arguments["prompt_embeds"].shape[0] == 3


def test_the_video_mode_recipe_gives_one_embedding_row_per_frame(pipe):
    """prompt_travel_embeddings: the keyframes' rows are their own texts' encodings, the rows between the blend."""
    arguments = zs2_kernels.prompt_travel_embeddings(pipe, {0: "a cat", 4: "a dog"}, 5)
    embeds = arguments["prompt_embeds"]
    cat, _ = pipe.encode_prompt("a cat", "cpu", 1, False)
    dog, _ = pipe.encode_prompt("a dog", "cpu", 1, False)
    assert embeds.shape == (5, *cat.shape[1:]) and arguments["negative_prompt_embeds"].shape == embeds.shape
    torch.testing.assert_close(embeds[0], cat[0])
    torch.testing.assert_close(embeds[4], dog[0])
    torch.testing.assert_close(embeds[2], 0.5 * (cat[0] + dog[0]))
    with zs2_kernels.video_mode(pipe, 5, seed=0):
        frames = pipe(**arguments, num_inference_steps=2, output_type="latent").images
    assert frames.shape[0] == 5
    with pytest.raises(TypeError, match="prompt must be a {frame: text} dict"):
        zs2_kernels.prompt_travel_embeddings(pipe, "a cat", 5)


def test_embedded_model_shows_the_first_digit_then_the_second_and_is_smoother_than_a_cut():
    """Keyframes 0 and 47 of 48 (digit 1 to digit 7): the first frames show 1, the last 7, the classifier's answer
    flips near the middle, and the largest frame-to-frame change is smaller than a hard cut's at the middle."""
    from zs2_kernels.evaluation import metrics

    scorer = metrics.DigitScorer()
    pipe = zs2_kernels.load_pipeline(None, progress=False)
    noise = zs2_kernels.initial_latents(pipe, 48, seed=1, dtype=torch.float32)  # the same noise for both videos
    videos = zs2_kernels.sample_video(
        pipe, [{0: "a handwritten digit 1", 47: "a handwritten digit 7"},
               {0: "a handwritten digit 1", 23: "a handwritten digit 1", 24: "a handwritten digit 7"}],
        num_frames=48, num_inference_steps=10, guidance_scale=4.0, latents=torch.cat([noise, noise]), progress=False,
        frame_chunk=16).frames

    def classified(frames):
        video = metrics.to_uint8_chw(frames)
        with torch.no_grad():
            digits = scorer.classifier(scorer._prepare(video)).argmax(-1).tolist()
        unit = torch.nn.functional.normalize(scorer.embed(video), dim=-1)
        return digits, (unit[1:] * unit[:-1]).sum(-1).min().item()

    travel, travel_step = classified(videos[0])
    _, cut_step = classified(videos[1])
    assert travel[:8] == [1] * 8 and travel[-8:] == [7] * 8, travel
    flip = next(i for i in range(48) if all(d == 7 for d in travel[i:]))
    assert abs(flip - 23.5) <= 8, travel
    assert travel_step > cut_step


def test_per_frame_prompt_embeds_are_prompt_travel_from_embeddings(pipe):
    """prompt_embeds [P, F, L, D] (one row per frame): the same video as the {frame: text} prompt whose per-frame
    embeddings they are; the frame count must be the video's."""
    arguments = zs2_kernels.prompt_travel_embeddings(pipe, {0: "a cat", 4: "a dog"}, 5)
    given = {name: value[None] for name, value in arguments.items()}  # [1, F, L, D]: one video
    from_embeddings = zs2_kernels.sample_video(pipe, num_frames=5, guidance_scale=7.5, **given, **FAST).frames
    from_text = zs2_kernels.sample_video(pipe, {0: "a cat", 4: "a dog"}, num_frames=5, guidance_scale=7.5,
                                         negative_prompt="", **FAST).frames
    torch.testing.assert_close(from_embeddings, from_text, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"prompt_embeds has 5 frames per prompt .* but the video has num_frames=6"):
        zs2_kernels.sample_video(pipe, num_frames=6, **given, **FAST)
    with pytest.raises(TypeError, match=r"prompt_embeds must be \[P, L, D\] .* or \[P, F, L, D\]"):
        zs2_kernels.sample_video(pipe, num_frames=5, prompt_embeds=given["prompt_embeds"][0, 0], **FAST)


def test_a_negative_prompt_travels_on_its_own_keyframes(pipe):
    """negative_prompt in the same form: a {frame: text} dict (for every prompt, or one per prompt in a list). One
    text on every keyframe is the plain negative prompt; a travelling one changes the later frames; its keyframes
    are checked like the prompt's."""
    common = dict(num_frames=5, guidance_scale=7.5, **FAST)
    plain = zs2_kernels.sample_video(pipe, {0: "a cat", 4: "a dog"}, negative_prompt="blurry", **common).frames
    same = zs2_kernels.sample_video(pipe, {0: "a cat", 4: "a dog"}, negative_prompt={0: "blurry", 2: "blurry"},
                                    **common).frames
    torch.testing.assert_close(same, plain, rtol=1e-5, atol=1e-5)
    travelling = zs2_kernels.sample_video(pipe, "a cat", negative_prompt=[{0: "blurry", 4: "dark"}], **common).frames
    still = zs2_kernels.sample_video(pipe, "a cat", negative_prompt="blurry", **common).frames
    assert not torch.allclose(travelling[0, -1], still[0, -1])
    torch.testing.assert_close(travelling[0, 0], still[0, 0], rtol=1e-4, atol=1e-4)  # frame 0: "blurry" on both
    with pytest.raises(ValueError, match=r"prompt keyframe 9 is outside the video's frames \[0, 5\)"):
        zs2_kernels.sample_video(pipe, "a cat", negative_prompt={0: "blurry", 9: "dark"}, **common)
    with pytest.raises(ValueError, match="must have keyframe 0"):
        zs2_kernels.sample_video(pipe, "a cat", negative_prompt={2: "dark"}, **common)
