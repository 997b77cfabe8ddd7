"""Command line: ``python -m emoprobe <command> ...`` (also installed as ``emoprobe``).

Commands live in :data:`COMMANDS`, a registry ``name -> (add_arguments, func)``: ``add_arguments(parser)``
declares the options, ``func(args) -> int`` runs it (its docstring's first line is the help text). Either
element may be a string ``"module:function"``, imported only when that command runs, so a new command costs
nothing to the others: another module adds its command with one line here, or calls :func:`register`.

    python -m emoprobe run --model openai:Qwen/Qwen2.5-VL-7B-Instruct@http://localhost:8000/v1 \\
        --dataset mafw:/data/MAFW --experiment classify --fps 1 5 10 --shard 0/4 --store runs-0.sqlite
    python -m emoprobe report --store runs-0.sqlite
    python -m emoprobe merge runs.sqlite runs-0.sqlite runs-1.sqlite runs-2.sqlite runs-3.sqlite
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Callable

log = logging.getLogger("emoprobe.cli")


# ------------------------------------------------------------------------------------------------ parsing helpers
def parse_model(text: str, api_key_env: str | None = None) -> dict:
    """``--model`` value -> backend spec.

    * a JSON object: ``'{"backend": "hf", "model": "data/models/microvlm", "name": "MicroVLM"}'``
    * ``openai:MODEL@BASE_URL``: an OpenAI-compatible server (key from ``--api-key-env``, default
      ``OPENAI_API_KEY``)
    * ``hf:ID_OR_PATH`` / ``vision:PATH``: that backend
    * anything else: an HF model id or path
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"--model: invalid JSON spec ({e.msg} at {e.pos})") from None
        if not isinstance(spec, dict) or "model" not in spec:
            raise argparse.ArgumentTypeError("--model: a JSON spec must be an object with a 'model' field")
        if "api_key" in spec:
            raise argparse.ArgumentTypeError("--model: never put an API key in a spec; set an environment "
                                             "variable and name it with api_key_env / --api-key-env")
    elif text.startswith("openai:"):
        model, sep, url = text[len("openai:"):].partition("@")
        if not sep or not model or not url:
            raise argparse.ArgumentTypeError(f"--model {text!r}: expected openai:MODEL@BASE_URL")
        spec = {"backend": "openai", "model": model, "base_url": url}
    elif text.startswith(("hf:", "vision:")):
        kind, _, model = text.partition(":")
        spec = {"backend": kind, "model": model}
    else:
        spec = {"backend": "hf", "model": text}
    if api_key_env and spec.get("backend") == "openai":
        spec.setdefault("api_key_env", api_key_env)
    return spec


def parse_dataset(text: str | None, profile_dataset: dict | None = None, fold: int | None = None,
                  label_set: str | None = None) -> dict:
    """``--dataset`` value -> a ``data.from_spec`` spec (the profile's dataset entry supplies defaults such as
    ``n_per_class`` when it names the same dataset).

    ``synthfer[:LABEL_SET[:SPLIT]]``, ``dfew:/root``, ``mafw:/root``, ``manifest:/file.csv``; None -> the
    profile's dataset. Returns ``(spec, split)`` packed as ``{"spec": ..., "split": ...}``. ``label_set`` names
    the label set of a manifest that has no ``label_set`` column (``--label-set``).
    """
    base = dict(profile_dataset or {})
    if text is None:
        if not base:
            raise argparse.ArgumentTypeError("--dataset is required (the profile names no dataset)")
        return {"spec": base, "split": "test"}
    name, _, rest = text.partition(":")
    name = name.lower()
    inherit = base if str(base.get("name", "")).lower() == name else {}
    split = "test"
    if name == "synthfer":
        parts = [p for p in rest.split(":") if p] if rest else []
        spec = {**inherit, "name": "synthfer"}
        if parts:
            spec["label_set"] = parts[0].lower()
        if len(parts) > 1:
            split = parts[1].lower()
        if len(parts) > 2:
            raise argparse.ArgumentTypeError(f"--dataset {text!r}: expected synthfer[:LABEL_SET[:SPLIT]]")
    elif name in ("dfew", "mafw"):
        if not rest:
            raise argparse.ArgumentTypeError(f"--dataset {text!r}: expected {name}:/path/to/{name.upper()}")
        spec = {**inherit, "name": name, "root": rest}
        if fold is not None:
            spec["fold"] = fold
    elif name == "manifest":
        if not rest:
            raise argparse.ArgumentTypeError(f"--dataset {text!r}: expected manifest:/path/to/file.csv")
        spec = {"name": "manifest", "csv": rest}
        if label_set:
            spec["label_set"] = label_set.lower()
    else:
        raise argparse.ArgumentTypeError(f"--dataset {text!r}: unknown dataset {name!r} "
                                         "(synthfer:mafw:test, dfew:/root, mafw:/root, manifest:/file.csv)")
    if split not in ("train", "test"):
        raise argparse.ArgumentTypeError(f"--dataset {text!r}: split must be train or test")
    return {"spec": spec, "split": split}


# ------------------------------------------------------------------------------------------------ run
def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, metavar="SPEC",
                   help="HF id/path, openai:MODEL@BASE_URL, hf:/vision: prefix, or a JSON spec (repeatable)")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the API key (openai)")
    p.add_argument("--dataset", default=None,
                   help="synthfer[:mafw|dfew[:test|train]], dfew:/root, mafw:/root, manifest:/file.csv "
                        "(default: the profile's dataset)")
    p.add_argument("--fold", type=int, default=None, help="MAFW/DFEW fold (default 1)")
    p.add_argument("--label-set", default=None, choices=("mafw", "dfew"),
                   help="label set of a manifest CSV without a label_set column")
    p.add_argument("--strict", action="store_true",
                   help="abort before any model call if a clip is invalid (missing, empty, unknown label, ...), "
                        "listing every one; default: invalid clips become failed rows with their reason")
    p.add_argument("--experiment", choices=("classify", "shuffle", "msce"), default="classify")
    p.add_argument("--fps", type=float, nargs="+", default=[5.0],
                   help="frame rates (classify/shuffle); MSCE keyframe rate (first value)")
    p.add_argument("--m", type=int, default=4, help="MSCE: in-between frames per gap")
    p.add_argument("--prompt", default=None, help="prompt template name (default: paper; msce for MSCE)")
    p.add_argument("--transform", default="none")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the profile's, else 0)")
    p.add_argument("--shuffle-seeds", type=int, nargs="+", default=None,
                   help="shuffle experiment: shuffle seeds (default: the seed)")
    p.add_argument("--shard", default=None, help="i/n: only the clips of shard i of n")
    p.add_argument("--store", default=None, help="run store (default data/cache/runs.sqlite)")
    p.add_argument("--profile", default="default", help="profile in chapters/profiles.yml for defaults")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips of the manifest")
    p.add_argument("--score", action="store_true", help="also record label probabilities (HF backends)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--retry-failed", action="store_true", help="ask again for answers stored as failed")
    p.add_argument("--run-name", default=None, help="run name (default: derived from model and settings)")
    p.add_argument("--no-progress", action="store_true")


def _profile(name: str) -> dict:
    from emoprobe import config

    try:
        return config.load("cli", name)
    except FileNotFoundError:
        return {}


def cmd_run(args) -> int:
    """Run an experiment (classify / shuffle / msce) over a dataset, storing every answer."""
    from emoprobe import data, run, store

    prof = _profile(args.profile)
    seed = args.seed if args.seed is not None else int(prof.get("seed", 0))
    ds = parse_dataset(args.dataset, prof.get("dataset"), args.fold, getattr(args, "label_set", None))
    models = [parse_model(m, args.api_key_env) for m in args.model]
    try:
        manifest = data.from_spec(ds["spec"], split=ds["split"], strict=bool(getattr(args, "strict", False)))
    except data.DataError as e:
        hint = " (name it with --label-set mafw|dfew)" if "no label_set" in str(e) else ""
        print(f"emoprobe run: {e}{hint}", file=sys.stderr)
        return 2
    if args.limit is not None:
        if args.limit < 1:
            raise SystemExit("--limit must be >= 1")
        manifest = manifest.head(args.limit).reset_index(drop=True)
    st = store.open_store(args.store)
    common = dict(store=st, batch_size=args.batch_size, shard=args.shard, progress=not args.no_progress,
                  seed=seed, retry_failed=args.retry_failed)
    n_invalid = int(manifest["invalid"].notna().sum()) if "invalid" in manifest.columns else 0
    print(f"{len(manifest)} clips from {ds['spec']} ({ds['split']}); store {st.path}"
          + (f"; {n_invalid} invalid clip(s) recorded as failed rows (--strict aborts instead)" if n_invalid else ""),
          file=sys.stderr)
    results = []
    for spec in models:
        name = spec.get("name") or spec["model"]
        if args.experiment == "msce":
            df = run.msce(spec, manifest, key_fps=args.fps[0], m=args.m, prompt=args.prompt or "msce",
                          score=args.score, run_name=args.run_name, **common)
            results.append((name, f"msce key_fps={args.fps[0]:g} m={args.m}", df))
            continue
        for fps in args.fps:
            seeds = [None] if args.experiment == "classify" else [None, *(args.shuffle_seeds or [seed])]
            for sh in seeds:
                df = run.classify(spec, manifest, sampling={"strategy": "fps", "fps": fps},
                                  transform=args.transform, prompt=args.prompt or "paper", shuffle_seed=sh,
                                  score=args.score, run_name=args.run_name, **common)
                results.append((name, f"fps={fps:g}" + ("" if sh is None else f" shuffle={sh}"), df))
    for name, what, df in results:
        s = df.attrs["summary"]
        acc = (df["pred"] == df["label"]).mean() if len(df) else float("nan")
        inv = int(df["error"].fillna("").str.contains("invalid clip:").sum())
        print(f"{name} {what} [{df.attrs['run']}]: n={s['n']} ok={s['ok']} unparsed={s['unparsed']} "
              f"failed={s['failed']} (invalid clips {inv}) cached={s['cached']} accuracy={acc:.3f}")
    st.close()
    return 0


# ------------------------------------------------------------------------------------------------ report
def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="run store (default data/cache/runs.sqlite)")
    p.add_argument("--run", default=None, help="only this run")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")


def report_table(df) -> "pd.DataFrame":  # noqa: F821
    """Per model and setting: n, ok, unparsed, failed, accuracy, macro-F1 (sklearn; unparsed/failed count as
    wrong: their prediction is a class outside the label set)."""
    import pandas as pd
    from .metrics import macro_f1_score

    rows = []
    df = df[df["task"] != "describe"]
    for (model, setting), g in df.groupby(["model", "setting"], sort=True, dropna=False):
        st = json.loads(setting) if isinstance(setting, str) else {}
        labs = st.get("labels") or sorted(g["label"].dropna().unique())
        y = g["label"].astype(str).tolist()
        p = [x if isinstance(x, str) else "<unparsed/failed>" for x in g["pred"]]
        samp = st.get("sampling") or {}
        samp_txt = " ".join(f"{k}={v}" for k, v in samp.items() if k not in ("version",)
                            and not (k == "folder_fps" and v == 25.0))
        rows.append({
            "model": model, "task": st.get("task"), "sampling": samp_txt, "prompt": st.get("prompt"),
            "transform": st.get("transform"), "shuffle_seed": st.get("shuffle_seed"),
            "n": len(g), "ok": int((g["status"] == "ok").sum()), "unparsed": int((g["status"] == "unparsed").sum()),
            "failed": int((g["status"] == "failed").sum()),
            "invalid": int(g["error"].fillna("").astype(str).str.contains("invalid clip:").sum()),
            "accuracy": float(sum(a == b for a, b in zip(y, p)) / len(g)) if len(g) else float("nan"),
            "macro_f1": macro_f1_score(y, p, labs),
        })
    return pd.DataFrame(rows)


def cmd_report(args) -> int:
    """Print n / ok / unparsed / failed / accuracy / macro-F1 per model and setting of a run store."""
    import pandas as pd

    from emoprobe import store

    path = args.store or store.default_path()
    if not str(path) == ":memory:" and not __import__("pathlib").Path(path).is_file():
        raise SystemExit(f"{path}: no such run store")
    st = store.RunStore(path)
    table = report_table(st.to_frame(args.run))
    st.close()
    if table.empty:
        print(f"{path}: no classification answers" + (f" in run {args.run!r}" if args.run else ""))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


# ------------------------------------------------------------------------------------------------ merge
def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the merged store (created if missing)")
    p.add_argument("stores", nargs="+", help="stores to merge into OUT")


def cmd_merge(args) -> int:
    """Merge run stores (e.g. one per machine/shard) into one, without duplicates."""
    from emoprobe import store

    st = store.RunStore(args.out)
    stats = st.merge(args.stores)
    print(f"{args.out}: " + " ".join(f"{k}={v}" for k, v in stats.items()) + f" total={len(st)}")
    st.close()
    return 0


# ------------------------------------------------------------------------------------------------ registry
COMMANDS: dict[str, tuple[Callable | str, Callable | str]] = {
    "run": (add_run_arguments, cmd_run),
    "report": (add_report_arguments, cmd_report),
    "merge": (add_merge_arguments, cmd_merge),
    "book": ("emoprobe.book:add_arguments", "emoprobe.book:cli"),
}


def register(name: str, add_arguments: Callable | str, func: Callable | str) -> None:
    """Add a subcommand (``add_arguments(parser)``, ``func(args) -> int``; "module:function" strings allowed)."""
    COMMANDS[name] = (add_arguments, func)


def _resolve(obj):
    if isinstance(obj, str):
        mod, _, attr = obj.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return obj


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="emoprobe", description="emoprobe: run, report and merge experiments.",
                                  epilog="commands: " + ", ".join(COMMANDS) + " (emoprobe COMMAND --help)")
    top.add_argument("command", choices=sorted(COMMANDS), help="command")
    top.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    ns = top.parse_args(argv[:1])
    add_arguments, func = (_resolve(x) for x in COMMANDS[ns.command])
    doc = (func.__doc__ or "").strip().splitlines()
    sub = argparse.ArgumentParser(prog=f"emoprobe {ns.command}", description=doc[0] if doc else None)
    add_arguments(sub)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(func(args) or 0)
    except argparse.ArgumentTypeError as e:
        sub.error(str(e))  # exits with status 2 and the usage line


if __name__ == "__main__":
    sys.exit(main())
