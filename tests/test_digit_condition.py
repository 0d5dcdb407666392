"""digit_condition, the embedded ControlNet's condition: shapes and range, blank frames, motion, bad input."""

import pytest
import torch

from zs2_kernels.embedded import digit_condition


def square(shift: int = 0) -> torch.Tensor:
    """A 32x32 frame [1, 32, 32] in [0, 1]: a bright 10x10 square, moved right by ``shift`` pixels."""
    frame = torch.zeros(1, 32, 32)
    frame[:, 11:21, 8 + shift:18 + shift] = 0.8
    return frame


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 32, 32), (2, 32, 32), (1, 3, 16, 24)])
def test_shape_range_and_dtype(shape):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    edges = digit_condition(images)
    assert edges.shape == (shape[0], 3, *shape[-2:]) and edges.dtype == images.dtype
    assert edges.min() >= 0 and edges.max() <= 1
    assert torch.equal(edges[:, 0], edges[:, 1]) and torch.equal(edges[:, 0], edges[:, 2])
    half = digit_condition(images.to(torch.float16))
    assert half.dtype == torch.float16


def test_rgb_is_read_as_grey():
    grey = square()
    assert torch.equal(digit_condition(grey.expand(3, -1, -1).unsqueeze(0)), digit_condition(grey.unsqueeze(0)))


def test_blank_and_uniform_frames_have_no_edges():
    for value in (0.0, 0.5, 1.0):
        assert digit_condition(torch.full((2, 3, 32, 32), value)).abs().max() == 0
    faint = torch.full((1, 32, 32), 0.5) + 0.002 * torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert digit_condition(faint.clamp(0, 1)).max() < 0.1


def test_edges_outline_the_digit_and_move_with_it():
    edges = digit_condition(torch.stack([square(0), square(6)]))[:, 0]
    assert edges.amax(dim=(1, 2)).tolist() == [1.0, 1.0]  # contrast normalised
    assert edges[0, 15, 12] < 1e-6 and edges[0, 5, 5] == 0  # inside the square and background: no edge
    assert edges[0, 15, 7:9].min() > 0.5 and edges[1, 15, 13:15].min() > 0.5  # the left side moved by 6
    torch.testing.assert_close(edges[1, :, 6:], edges[0, :, :-6])


def test_contrast_does_not_change_the_map():
    assert torch.allclose(digit_condition(square().unsqueeze(0)), digit_condition(0.5 * square().unsqueeze(0)))


@pytest.mark.parametrize("images, error, match", [
    ([[0.0]], TypeError, "images must be a torch.Tensor"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), TypeError, "images must be a floating tensor.*images / 255"),
    (torch.zeros(1, 2, 4, 4), ValueError, r"images must have shape .*\[1, 2, 4, 4\]"),
    (torch.zeros(4, 4), ValueError, r"images must have shape .*\[4, 4\]"),
    (torch.zeros(1, 1, 0, 4), ValueError, "images must have at least one pixel"),
    (torch.zeros(0, 1, 4, 4), ValueError, "images must hold at least one frame"),
    (torch.full((1, 1, 4, 4), -1.0), ValueError, r"images must be finite values in \[0, 1\].*\(images \+ 1\) / 2"),
    (torch.full((1, 1, 4, 4), 2.0), ValueError, r"images must be finite values in \[0, 1\]"),
    (torch.full((1, 1, 4, 4), float("nan")), ValueError, r"images must be finite values in \[0, 1\]"),
])
def test_bad_input_is_refused_naming_the_argument(images, error, match):
    with pytest.raises(error, match=match):
        digit_condition(images)
