"""The demo web app, ``zs2-demo``: one Gradio tab per sampling mode, all on one loaded pipeline.

One module per job:

* ``settings.py`` — the knobs every tab shares, the field labels errors name, the README's examples as presets;
* ``inputs.py`` — uploads read within limits (bytes, frames, decoded size), the prompt-travel text form;
* ``outputs.py`` — the result files (MP4 for the page, GIF to download) in a private temporary folder, and the
  stats panel's table and per-pair curves;
* ``jobs.py`` — :class:`~zs2_kernels.demo.jobs.Demo`: the generation functions, plain Python (no Gradio), one run at a
  time, a cancel flag per browser session checked after every denoising step;
* ``app.py`` — the Gradio page (the only module that imports gradio): tabs, controls, presets, progress, cancel,
  one concurrency slot for every generating event;
* ``cli.py`` — the ``zs2-demo`` command: arguments, loading the model, launching on 127.0.0.1.

Gradio is the ``demo`` extra (``pip install -e ".[demo]"``): only ``app.py`` imports it, and only the command and
the tests import ``app.py``, so the core package never needs it.
"""
