"""``python -m lmgnn_fast.serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--stage K]
[--graph NAME_OR_DIR] [--full-neighbourhood] [--threads N] [--key value ...]``

Serves a finished run's model over HTTP: loads it once (:func:`lmgnn_fast.inference.load_run`,
no trainer), then answers JSON requests -- predictions of new and known nodes, pair scores,
top-k link candidates, embeddings -- with health and metadata routes
(:mod:`lmgnn_fast.inference.app`; docs/predict.md). Needs the ``serve`` extra
(``pip install 'lmgnn-fast[serve]'``: FastAPI and uvicorn). ``--port 0`` takes a free port;
the line ``serving <run> (stage K) on http://HOST:PORT`` tells which, once the server
accepts requests. Errors are one line (``lmgnn_fast.cli``); Ctrl-C or SIGTERM stops it.
"""
from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """``python -m lmgnn_fast.serve``: see the module docstring. Returns the exit status."""
    from lmgnn_fast.cli import run_cli
    from lmgnn_fast.inference import PredictError
    from lmgnn_fast.lm.model import LMLoadError
    from lmgnn_fast.train.config import ConfigError
    from lmgnn_fast.train.errors import DataError, TrainingError

    return run_cli(_main, argv, user_errors=(ConfigError, DataError, TrainingError, LMLoadError, PredictError))


def _main(argv: list[str]) -> int:
    from lmgnn_fast.cli import ArgumentParser, UsageError

    ap = ArgumentParser(prog="python -m lmgnn_fast.serve", description=__doc__.split("\n\n")[1].split("\n")[0],
                        epilog="Other --section.key value pairs override the run's config (e.g. --run.device cpu). "
                               "Routes and request format: docs/predict.md.")
    ap.add_argument("run_dir", help="a finished run directory")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), help="the stage's model (default: the final one)")
    ap.add_argument("--graph", help="the graph to answer on (default: the run's data.name)")
    ap.add_argument("--full-neighbourhood", action="store_true", help="every neighbour at every layer")
    ap.add_argument("--threads", type=int, help="torch threads (default: the run's run.num_threads)")
    args, rest = ap.parse_known_args(argv)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    try:
        import fastapi  # noqa: F401
        import uvicorn

        from lmgnn_fast.inference.app import create_app
    except ImportError as e:
        raise UsageError(f"serving needs the serve extra ({e.name} is not installed): "
                         "pip install 'lmgnn-fast[serve]'") from None
    from lmgnn_fast.inference import load_run

    if args.graph:
        rest += ["--data.name", args.graph]
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        rest += ["--run.num_threads", str(args.threads)]
    t0 = time.perf_counter()
    run = load_run(args.run_dir, stage=args.stage, full_neighbourhood=args.full_neighbourhood, overrides=rest)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run.warm_up()  # the LM, for requests with new texts: loaded before the first request, not by it
    warm_s = time.perf_counter() - t0
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = sock.getsockname()[:2]
    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:  # accepting on the socket now
                print(f"serving {args.run_dir} (stage {run.stage}; run loaded in {load_s:.1f} s, LM in {warm_s:.1f} s) "
                      f"on http://{host}:{port}", flush=True)

    Server(uvicorn.Config(create_app(run), log_level="warning", access_log=False,
                          timeout_graceful_shutdown=5)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
