"""Reading images and videos: every PIL mode through one conversion, compared with the pixels it was made from."""

import numpy as np
import PIL
import pytest
import torch
from PIL import Image

from zs2_kernels.video_io import frames_tensor, read_video

PILLOW_12 = int(PIL.__version__.split(".")[0]) < 13
RNG = np.random.default_rng(0)
SOURCE = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)  # an RGB image, height 12, width 10
GREY = SOURCE[..., 0]


def greyscale(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float32)[..., None], 3, axis=-1) / 255


# (file name, the image to save, the expected float RGB [H, W, 3], tolerance: JPEG is lossy, colour spaces round)
CASES = [
    ("cmyk.jpg", Image.fromarray(SOURCE).convert("CMYK"), SOURCE / 255, 0.12),  # was read with C, M, Y as R, G, B
    ("cmyk.tiff", Image.fromarray(SOURCE).convert("CMYK"), SOURCE / 255, 1e-6),
    pytest.param("ycbcr.tiff", Image.fromarray(SOURCE).convert("YCbCr"), SOURCE / 255, 0.03, marks=pytest.mark.xfail(
        PILLOW_12, reason="Pillow < 13 cannot read back the YCbCr TIFF it writes ('image file is truncated'); gradio, "
                          "in the test extra, pins pillow < 13. test_ycbcr_images_read_as_their_rgb_pixels covers the "
                          "mode there", strict=True)),
    ("lab.tiff", Image.fromarray(SOURCE).convert("LAB"), SOURCE / 255, 0.05),
    ("palette.png", Image.fromarray(SOURCE).convert("P"), np.asarray(Image.fromarray(SOURCE).convert("P").convert(
        "RGB")) / 255, 1e-6),
    ("rgba.png", Image.fromarray(np.dstack([SOURCE, np.full(GREY.shape, 7, np.uint8)])), SOURCE / 255, 1e-6),
    ("la.png", Image.fromarray(np.dstack([GREY, GREY]), "LA"), greyscale(GREY), 1e-6),
    ("bilevel.png", Image.fromarray(GREY > 127), greyscale((GREY > 127) * 255), 1e-6),
    ("grey16.png", Image.fromarray(GREY.astype(np.uint16) * 257), greyscale(GREY), 1e-6),
    ("grey32.tiff", Image.fromarray(GREY.astype(np.int32) * 257), greyscale(GREY), 1e-6),
    ("float01.tiff", Image.fromarray(GREY.astype(np.float32) / 255), greyscale(GREY), 1e-6),  # was refused
    ("float255.tiff", Image.fromarray(GREY.astype(np.float32)), greyscale(GREY), 1e-6),
]


@pytest.mark.parametrize("name, image, expected, tolerance", CASES,
                         ids=[getattr(case, "values", case)[0] for case in CASES])
def test_every_mode_reads_as_its_rgb_pixels(tmp_path, name, image, expected, tolerance):
    image.save(tmp_path / name)
    frames = read_video(tmp_path / name, (12, 10), "image")
    assert frames.shape == (1, 12, 10, 3) and frames.dtype == np.float32
    assert np.abs(frames[0] - expected).mean() <= tolerance
    # images given to sample_video as PIL objects take the same conversion
    given = frames_tensor(Image.open(tmp_path / name), "image")
    assert torch.equal(given[0].movedim(0, -1), torch.from_numpy(frames[0]))

def test_ycbcr_images_read_as_their_rgb_pixels():
    """A YCbCr image (a PIL object, as sample_video takes one) converts to its RGB pixels with every Pillow."""
    frames = frames_tensor(Image.fromarray(SOURCE).convert("YCbCr"), "image")
    assert frames.shape == (1, 3, 12, 10)
    assert np.abs(frames[0].movedim(0, -1).numpy() - SOURCE / 255).mean() <= 0.03


def test_png_folders_match_the_extension_in_any_case(tmp_path):
    for index in range(3):
        Image.fromarray(np.full((4, 4, 3), 60 * index, np.uint8)).save(tmp_path / f"F{index}.PNG")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = read_video(tmp_path, (4, 4))
    assert frames.shape == (3, 4, 4, 3) and np.allclose(frames[:, 0, 0, 0], [0, 60 / 255, 120 / 255])


@pytest.mark.parametrize("write, message", [
    (lambda path: Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(path.with_suffix(".tiff")),
     "NaN or infinite pixel values"),
    (lambda path: path.with_suffix(".tiff").write_bytes(b"II*\x00" + bytes(20)), "cannot read image"),
    (lambda path: path.with_suffix(".tiff").write_bytes(b""), "it is empty"),
    (lambda path: path.with_suffix(".tiff").write_text("hello"), "its contents are not an image or video"),
    (lambda path: path.with_suffix(".tiff").write_bytes(b"II*\x00" + bytes(20)), "its pixel data cannot be decoded"),
    (lambda path: path.with_suffix(".xyz").write_text("hello"), "its contents are not an image or video"),
])
def test_unreadable_images_are_refused_naming_the_input(tmp_path, write, message):
    write(tmp_path / "bad")
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=message) as error:
        read_video(path, (4, 4), "image")
    assert f"cannot read image {path}: " in str(error.value)


def test_a_text_file_named_like_an_image_is_said_not_to_be_one(tmp_path):
    """The attack found a text file given as x.png blamed on undecodable pixel data (a float TIFF's message)."""
    fake = tmp_path / "x.png"
    fake.write_text("hello")
    with pytest.raises(ValueError, match="its contents are not an image or video .*, whatever its name"):
        read_video(fake, (32, 32), "image")
