"""The served endpoint: a loaded run behind an ASGI app (FastAPI), JSON in and out.

Requests use the request folder's vocabulary (``docs/predict.md``): new nodes as rows
``{"id", "text"}`` per node type, new edges as rows ``{"src", "dst"}`` per relation
``"<src_type>__<relation>__<dst_type>"``, known nodes by raw id.

=========================  ====================================================================
``GET /health``            ``{"status": "ok", "stage": K}``
``GET /metadata``          the run: task, classes, node types, relations, sizes
``POST /predict``          ``{"nodes", "edges", "ids", "embeddings": false}`` -> per node type
                           ``id``, ``pred``, ``prob``, ``pred_names`` (``embedding``)
``POST /embed``            ``{"nodes", "edges", "ids"}`` -> per node type ``id``, ``embedding``
``POST /pairs``            ``{"nodes", "edges", "pairs": [{"src", "dst"}]}`` -> per pair
                           ``pred``/``prob``/``pred_names`` (edge classification) or ``score``
``POST /top_k``            ``{"nodes", "edges", "src": [ids], "k": 10, "filter_known": true}``
                           -> per source its best destinations and their scores
=========================  ====================================================================

A bad request is answered ``400`` with one line, ``{"error": "<field>: <what>"}``; an
unknown route ``404``, a wrong method ``405``, a failure of the server itself ``500``, all
in the same form. Requests run one at a time on the model (a lock; torch uses its threads
within each), in a worker thread, so ``/health`` answers while a request computes.
"""
# (no ``from __future__ import annotations``: FastAPI reads the routes' annotations, which
# name classes imported inside :func:`create_app`)
import json

from lmgnn_fast.inference.view import PredictError

__all__ = ["create_app", "parse_request"]


def _rows(value, where: str, cols: tuple[str, ...]) -> dict[str, list]:
    """A list of row objects as columns (``cols`` required in every row)."""
    if not isinstance(value, list):
        raise PredictError(f"{where}: expected a list of rows {{{', '.join(repr(c) for c in cols)}}}, "
                           f"got {type(value).__name__}")
    out = {c: [] for c in cols}
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise PredictError(f"{where}, row {i}: expected an object, got {type(row).__name__}")
        for c in cols:
            if row.get(c) is None:
                raise PredictError(f"{where}, row {i}: missing {c!r}")
            out[c].append(row[c])
    return out


def _mapping(body: dict, key: str) -> dict:
    v = body.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PredictError(f"{key}: expected an object keyed by {'relation' if key == 'edges' else 'node type'}, "
                           f"got {type(v).__name__}")
    return v


def parse_request(body) -> tuple[dict, dict, dict]:
    """``(nodes, edges, ids)`` of a JSON request, as :class:`~lmgnn_fast.inference.LoadedRun`
    takes them.

    Raises:
        PredictError: a field of the wrong shape (named).
    """
    if not isinstance(body, dict):
        raise PredictError(f"request body: expected a JSON object, got {type(body).__name__}")
    nodes = {t: {**_rows(v, f"nodes[{t!r}]", ("id", "text")), "source": f"nodes[{t!r}]"}
             for t, v in _mapping(body, "nodes").items()}
    edges = {k: {**_rows(v, f"edges[{k!r}]", ("src", "dst")), "source": f"edges[{k!r}]"}
             for k, v in _mapping(body, "edges").items()}
    ids = {}
    for t, v in _mapping(body, "ids").items():
        if not isinstance(v, list):
            raise PredictError(f"ids[{t!r}]: expected a list of ids, got {type(v).__name__}")
        ids[t] = v
    return nodes, edges, ids


def _flag(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if not isinstance(v, bool):
        raise PredictError(f"{key}: expected true or false, got {v!r}")
    return v


def _predict(run, body) -> dict:
    nodes, edges, ids = parse_request(body)
    if not nodes and not ids:
        raise PredictError("nothing to predict: give 'nodes' (new nodes) or 'ids' (known nodes)")
    emb = _flag(body, "embeddings", False)
    res = run.predict(nodes, edges, ids)
    return {"stage": run.stage, "nodes": {t: r.to_json(embeddings=emb) for t, r in res.items()}}


def _embed(run, body) -> dict:
    nodes, edges, ids = parse_request(body)
    want = {t: list(v["id"]) for t, v in nodes.items()}
    for t, v in ids.items():
        want.setdefault(t, []).extend(v)
    if not want:
        raise PredictError("nothing to embed: give 'nodes' (new nodes) or 'ids' (known nodes)")
    rows = run.embed(want, nodes, edges)
    return {"stage": run.stage, "embeddings": {t: {"id": want[t], "embedding": r.tolist()} for t, r in rows.items()}}


def _pairs(run, body) -> dict:
    nodes, edges, _ = parse_request(body)
    if "pairs" not in body:
        raise PredictError("pairs: missing (a list of rows {'src', 'dst'})")
    p = _rows(body["pairs"], "pairs", ("src", "dst"))
    res = run.score_pairs(p["src"], p["dst"], nodes, edges, edge_type=body.get("edge_type"))
    return {"stage": run.stage, "pairs": res.to_json()}


def _top_k(run, body) -> dict:
    nodes, edges, _ = parse_request(body)
    src = body.get("src")
    if not isinstance(src, list) or not src:
        raise PredictError("src: expected a non-empty list of source node ids")
    res = run.top_k(src, body.get("k", 10), nodes, edges, filter_known=_flag(body, "filter_known", True))
    return {"stage": run.stage, "top_k": res.to_json()}


def create_app(run):
    """The ASGI app serving ``run`` (a :class:`~lmgnn_fast.inference.LoadedRun`).

    Raises:
        ImportError: FastAPI is not installed (``pip install 'lmgnn-fast[serve]'``).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="lmgnn_fast", description="A finished lmgnn_fast run's model", docs_url=None,
                  redoc_url=None, openapi_url=None)

    def error(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(msg).split())}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error(404, f"no route {request.method} {request.url.path}; routes: GET /health, GET /metadata, "
                              "POST /predict, /embed, /pairs, /top_k")
        if exc.status_code == 405:
            return error(405, f"{request.method} {request.url.path}: method not allowed")
        return error(exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    def locked(fn, body):
        with run.lock:
            return fn(run, body)

    async def answer(request: Request, fn):
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return error(400, f"request body is not JSON: {e}")
        try:
            return JSONResponse(await run_in_threadpool(locked, fn, body))
        except PredictError as e:
            return error(400, str(e))

    @app.get("/health")
    async def health():
        return {"status": "ok", "stage": run.stage}

    @app.get("/metadata")
    async def metadata():
        return run.metadata()

    @app.post("/predict")
    async def predict(request: Request):
        return await answer(request, _predict)

    @app.post("/embed")
    async def embed(request: Request):
        return await answer(request, _embed)

    @app.post("/pairs")
    async def pairs(request: Request):
        return await answer(request, _pairs)

    @app.post("/top_k")
    async def top_k(request: Request):
        return await answer(request, _top_k)

    return app
