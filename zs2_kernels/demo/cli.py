"""``zs2-demo`` (also ``python python/demo.py``): the demo web app on this machine.

It binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise, and makes a public link only with
``--share``. The model loads once, before the server starts; the page takes files only through its upload widgets.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import shutil
import socket
import sys
import tempfile

from .._atomic import sigterm_raises
from .._checks import DTYPE_NAMES, SHORT_DTYPE_NAMES, DefaultsHelpFormatter, check_device, dtype_from_name

MISSING_GRADIO = ("zs2-demo needs Gradio, which the core install leaves out: pip install -e \".[demo]\" (from the "
                  "repository's folder; or pip install gradio)")


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs2-demo", description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded digits model)")
    parser.add_argument("--controlnet", default=None,
                        help="ControlNet folder or hub id for the guided tab (default: the model's own, or the "
                             "embedded model's digit ControlNet)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=[*DTYPE_NAMES, *SHORT_DTYPE_NAMES], default=None,
                        help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind: 127.0.0.1 serves this machine only; 0.0.0.0 every network it is on")
    parser.add_argument("--port", type=int, default=7860, help="port (1-65535)")
    parser.add_argument("--share", action="store_true",
                        help="also make a temporary public link through Gradio's share servers")
    return parser


def demo_main(argv=None) -> int:
    args = demo_parser().parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        print(f"zs2-demo: error: {MISSING_GRADIO}", file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535:
        print(f"zs2-demo: error: --port: must be in [1, 65535], got {args.port}", file=sys.stderr)
        return 2
    problem = _unservable(args.host, args.port)
    if problem:
        print(f"zs2-demo: error: cannot serve on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1
    import torch

    try:
        device = check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (ValueError, TypeError) as error:
        print(f"zs2-demo: error: --device: {error}", file=sys.stderr)
        return 2
    dtype = dtype_from_name(args.dtype or ("float16" if device.type == "cuda" else "float32"))

    # Gradio's own cache (uploads, the files it serves) in a folder of this run, removed when it stops: the
    # visitors' uploads are not left in the machine's shared temporary folder.
    cache = tempfile.mkdtemp(prefix="zs2-gradio-cache-")
    os.environ["GRADIO_TEMP_DIR"] = cache
    try:
        return _serve(args, device, dtype)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _unservable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (checked before the model loads), or None."""
    try:
        socket.getaddrinfo(host, port)
        with socket.create_server((host, port)):
            return None
    except OSError as error:
        if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
            return f"--host {host!r} is not an address of this machine ({error.strerror})"
        return f"{error.strerror or error}; choose another --port (or stop what holds it)"


def _serve(args, device, dtype) -> int:
    from .app import build_app, launch_options
    from .jobs import Demo

    print(f"zs2-demo: loading {args.model or 'the embedded digits model'} on {device} "
          f"({str(dtype).replace('torch.', '')})")
    try:
        demo = Demo.load(args.model, controlnet=args.controlnet, device=device, dtype=dtype)
    except (ValueError, TypeError, OSError, MemoryError) as error:
        print(f"zs2-demo: error: {error}", file=sys.stderr)
        return 1
    print(f"zs2-demo: serving http://{args.host}:{args.port} (Ctrl-C stops it)"
          + ("; a public link follows" if args.share else ""), flush=True)
    try:
        with sigterm_raises():  # SIGTERM too runs the clean-up below
            build_app(demo).launch(**launch_options(args.host, args.port, args.share), quiet=not args.share)
    except OSError as error:  # taken since the check above
        print(f"zs2-demo: error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()  # stops a run within a step, then removes the result files
    return 0


if __name__ == "__main__":
    sys.exit(demo_main())
