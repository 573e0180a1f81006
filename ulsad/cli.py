"""Command line: `ulsad train | predict | eval | push | resave | benchmark | download | export`.

User errors print one line (`error: ...`) and exit with code 2; nothing is left half-written.
Every argument is checked before any work starts, a `--checkpoint` too (`ulsad.locate`: a typo
fails in a second, offline as well). Heavy imports (torch) happen inside the commands, after the
checks: Ctrl-C at any time ends with one line, not a traceback, and building the parser
(`--help`, `--version`) imports no torch, numpy or PIL. This is the only module that knows
flag names: library errors name options by placeholder, rendered here with `FLAGS`; the library's
progress lines (logging, INFO) are shown on stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ulsad.errors import ULSADError

EXIT_USAGE = 2
EXIT_FAILED = 1  # `ulsad benchmark`: some categories failed (the others finished)
# How library errors' options are spelled here (see `ulsad.errors`): Python name -> flag.
# A command's own spellings (`set_defaults(flags=...)`) take precedence.
FLAGS = {
    "out_dir": "--out",
    "restart": "--restart",
    "out": "--out",
    "root": "--root",
    "dataset": "--dataset",
    "category": "--category",
    "executor_ray": "--executor ray",
    "backend_onnx": "--backend onnx",
    "device_cpu": "--device cpu",
    "accept_licence": "--accept-licence",
}
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one `error: ...` line (exit code 2), no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse `type=`: an integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)
training_batch_size = int_at_least(2)  # BatchNorm needs two images per training batch


def check_category(category: str | None) -> None:
    """A category is one folder name: no separators, not `.` or `..` (it also names outputs)."""
    if category is None:
        return
    if category in ("", ".", "..") or any(sep in category for sep in ("/", "\\", "\0")):
        raise ULSADError(
            f"--category must be the name of one folder under --data, got {category!r}."
        )


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_folder(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be created (it is a file, or inside one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ULSADError(f"{flag} {path} is a file, not a folder: choose another {flag}.")
    existing = _first_existing(path.absolute())
    if not existing.is_dir():
        raise ULSADError(f"{flag} {path} cannot be created: {existing} is a file.")
    check_writable(existing, f"{flag} {path}", flag)


def check_writable(folder: Path, shown: str, flag: str) -> None:
    """Refuse a folder that cannot be written (read-only disk, no permission) before any work,
    by creating and removing a file in it; `shown` names it in the message."""
    import os
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".ulsad-write-check.", dir=folder)
    except OSError as error:
        raise ULSADError(
            f"{shown} is not writable ({error.strerror or error}): choose another {flag}."
        ) from None
    os.close(fd)
    os.remove(probe)


def write_failed(error: OSError, kept: str) -> ULSADError:
    """An OSError at write time (disk full, read-only, removed folder) as one line that says
    what was kept."""
    where = f" {error.filename}" if error.filename else ""
    return ULSADError(f"could not write{where}: {error.strerror or error}. {kept}")


def check_out_file(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output file that cannot be written (it is a folder, or inside a file)."""
    path = Path(path)
    if path.is_dir():
        raise ULSADError(f"{flag} {path} is a folder: give a file name.")
    check_out_folder(path.parent, flag)


def _parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs (values parsed as JSON where possible) -> config overrides."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ULSADError(f"--set expects key=value, got {pair!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def check_checkpoint(spec: str) -> None:
    """Refuse, before torch loads and in a second or two, a checkpoint that is neither a folder,
    an embedded name nor a Hub repo that exists (`ulsad.locate`); `.onnx` files pass (the
    backends decide about them)."""
    if str(spec).endswith(".onnx"):
        return
    from ulsad import locate

    _, repo_id = locate.resolve_checkpoint(spec)
    if repo_id is not None:
        maybe_folder = str(spec) not in locate.read_manifest()["checkpoints"]
        locate.check_hub_repo(repo_id, maybe_folder=maybe_folder)


def cmd_train(args: argparse.Namespace) -> int:
    check_category(args.category)
    check_out_folder(args.out)
    from ulsad.presets import preset

    overrides = _parse_overrides(args.set)
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.steps is not None:
        overrides.update(steps=args.steps, epochs=None)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs  # recorded in training.json
        overrides.setdefault("lr_milestones", [args.epochs])  # the paper's: the last epoch
    preset(args.preset, **overrides)  # every field checked (config or recipe) before any work
    from ulsad.data import training_images

    images, heldout = training_images(args.data, args.category, args.dataset)  # never test/
    from ulsad import ULSAD

    model = ULSAD.from_preset(args.preset, **overrides)
    try:
        model.fit(
            images,
            heldout=heldout,
            device=args.device,
            out_dir=args.out,
            save_every=args.save_every,
            resume=not args.restart,
        )
        from ulsad.card import record_run, write_model_card

        command = shlex.join(["ulsad", *args.argv])
        record_run(args.out, command=command, dataset=args.dataset, category=args.category)
        write_model_card(args.out)
    except OSError as error:
        raise write_failed(
            error,
            f"{args.out} keeps its last complete files (the resume state of the last saved "
            "epoch, if any): free some space or fix the folder, then run the same command "
            "again to resume.",
        ) from None
    print(f"Saved checkpoint to {args.out} (threshold {float(model.threshold):.4f}).")
    return 0


def _collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(image, path of its outputs relative to OUT/maps, without suffix) for files and folders.

    An image given twice is scored once; images that would share an output name (`a/x.png` and
    `b/x.png`, `x.png` and `x.jpg`, `X.png` and `x.png` on a case-insensitive disk) get `-2`, `-3`
    ... appended, so every input keeps its own map."""
    from ulsad.images import IMAGE_EXTENSIONS, find_images

    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = find_images(path)
            if not images:
                raise ULSADError(f"No images (.png/.jpg/.jpeg/.bmp/.tif) found under {path}.")
            found += [(p, p.relative_to(path).parent / map_stem(p)) for p in images]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ULSADError(f"{path} is not an image file ({', '.join(IMAGE_EXTENSIONS)}).")
            found.append((path, Path(map_stem(path))))
        else:
            raise ULSADError(f"No such file or folder: {path}")
    seen_paths, taken, unique = set(), set(), []
    for path, rel in found:
        key = path.resolve()
        if key in seen_paths:
            continue
        seen_paths.add(key)
        name, n = rel, 1
        while name.as_posix().lower() in taken:
            n += 1
            name = rel.with_name(f"{rel.name}-{n}")
        taken.add(name.as_posix().lower())
        unique.append((path, name))
    return unique


def map_stem(path: Path) -> str:
    """The name of an image's maps without their suffix: the file name less its own suffix only
    (`frame.0001.png` -> `frame.0001`); names of dots alone (`..png`) get `_` for each dot, so
    that no map lands outside `maps/`."""
    stem = path.name[: len(path.name) - len(path.suffix)]
    return stem if stem.strip(".") else "_" * max(1, len(stem))


def with_extension(path: Path, extension: str) -> Path:
    """`path` with `extension` appended (not replacing a suffix: `frame.0001` keeps its `.0001`)."""
    return path.with_name(path.name + extension)


SCORE_COLUMNS = ["path", "score", "verdict", "threshold"]  # scores.csv, then "map" with maps


def verdict(score: float, threshold: float | None) -> str:
    """scores.csv's verdict: `anomalous` above the threshold, else `good`; empty without one."""
    if threshold is None:
        return ""
    return "anomalous" if score > threshold else "good"


def _scores_csv(rows: list[tuple[str, float, str]], maps: bool, threshold: float | None) -> str:
    """scores.csv: one row per image; the verdict and the threshold it was judged by (the
    checkpoint's default, empty when it has none) beside each score."""
    from ulsad.files import csv_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SCORE_COLUMNS + (["map"] if maps else []))
    limit = "" if threshold is None else f"{threshold:.6f}"
    for path, score, rel in rows:
        writer.writerow([csv_cell(path), f"{score:.6f}", verdict(score, threshold), limit,
                         *([csv_cell(rel)] if maps else [])])  # fmt: skip
    return buffer.getvalue()


def progress_bar(total: int, quiet: bool, unit: str) -> Any:
    """A tqdm bar on stderr, shown only on a terminal and without --quiet."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=quiet or not sys.stderr.isatty(), file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out_folder(out)
    check_out_file(out / "scores.csv", "--out")
    if args.save_maps:
        check_out_folder(out / "maps", "--out")
    check_checkpoint(args.checkpoint)  # before the inputs: a typo fails before torch loads
    items = _collect_inputs(args.inputs)

    import numpy as np

    from ulsad.export import load_predictor
    from ulsad.files import atomic_path, remove_stale_temporaries, write_text_atomic
    from ulsad.images import load_image
    from ulsad.visualize import overlay

    model = load_predictor(args.checkpoint, backend=args.backend, device=args.device)
    threshold = float(model.threshold) if model.calibrated else None
    remove_stale_temporaries(out, ["scores.csv", "scores.previous.csv"])
    if args.save_maps:  # left by runs killed mid-write (SIGKILL, power loss): never complete
        folders: dict[Path, list[str]] = {}
        for _, rel in items:
            folders.setdefault(out / "maps" / rel.parent, []).extend(
                [f"{rel.name}.npy", f"{rel.name}.png"]
            )
        for folder, names in folders.items():
            remove_stale_temporaries(folder, names)
    rows, failed = [], []
    kept = (
        f"{out / 'scores.csv'} is unchanged; the maps written before this one are in "
        f"{out / 'maps'}: free some space or choose another --out, then run the command again."
    )
    bar = progress_bar(len(items), args.quiet, "image")
    for start in range(0, len(items), args.batch_size):
        chunk = items[start : start + args.batch_size]
        images = []
        for path, rel in chunk:
            try:
                images.append((path, rel, load_image(path)))
            except ULSADError as error:
                bar.write(f"skipped: {error}", file=sys.stderr)
                failed.append(path)
        if not images:
            bar.update(len(chunk))
            continue
        predictions = model.predict([im for _, _, im in images], batch_size=args.batch_size)
        for (path, rel, image), prediction in zip(images, predictions, strict=True):
            rows.append((str(path.resolve()), prediction.score, f"maps/{rel.as_posix()}.npy"))
            if args.save_maps:
                target = out / "maps" / rel
                try:
                    with atomic_path(with_extension(target, ".npy")) as tmp, open(tmp, "wb") as f:
                        np.save(f, np.asarray(prediction.anomaly_map, dtype=np.float32))
                    with atomic_path(with_extension(target, ".png")) as tmp:
                        overlay(image, prediction.anomaly_map, threshold).save(tmp, format="PNG")
                except OSError as error:
                    raise write_failed(error, kept) from None
            del image, prediction
        del images, predictions
        bar.update(len(chunk))
    bar.close()
    if not rows:  # nothing scored: an earlier scores.csv stays as it was
        raise ULSADError(
            f"none of the {len(items)} image(s) could be read (listed above); {out} is unchanged."
        )
    target = out / "scores.csv"
    try:
        if target.is_file():  # the previous run's scores are kept, not lost
            target.replace(out / "scores.previous.csv")
        write_text_atomic(target, _scores_csv(rows, args.save_maps, threshold))
    except OSError as error:
        raise write_failed(
            error,
            f"No new scores.csv was written (an earlier one is kept, as scores.csv or "
            f"scores.previous.csv); the maps are in {out / 'maps'}.",
        ) from None
    print(f"Scored {len(rows)} image(s) -> {target}")
    if failed:
        print(
            f"error: {len(failed)} of {len(items)} image(s) could not be read (skipped above); "
            f"the other {len(rows)} are in {target}.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ulsad import ULSAD
    from ulsad.data import load_mask, load_split
    from ulsad.evaluate import evaluate
    from ulsad.files import write_text_atomic

    check_category(args.category)
    out = Path(args.out or f"eval_{args.category}.json")
    if not args.out and Path(args.checkpoint).is_dir():
        out = Path(args.checkpoint) / out
    check_out_file(out)
    check_checkpoint(args.checkpoint)
    samples = load_split(args.dataset, args.data, args.category, "test")
    if not samples:
        raise ULSADError(f"No test images for {args.category!r} under {args.data}.")
    model = ULSAD.from_pretrained(args.checkpoint, device=args.device or "cpu")
    results = evaluate(model, samples, batch_size=args.batch_size, load_mask=load_mask)
    results = {"checkpoint": str(args.checkpoint), "dataset": args.dataset,
               "category": args.category, **results}  # fmt: skip
    write_text_atomic(out, json.dumps(results, indent=2) + "\n")
    folder = Path(args.checkpoint)
    if out.parent.resolve() == folder.resolve() and (folder / "README.md").is_file():
        from ulsad.card import write_model_card

        write_model_card(folder)  # the card's model-index now has these metrics
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"):
        if key in results:
            print(f"{key:>13}: {results[key]:.4f}")
    print(f"Wrote {out}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ulsad.hub import push_folder

    url = push_folder(
        args.checkpoint, args.repo, token=args.token, private=args.private, license=args.license
    )
    print(f"Pushed {args.checkpoint} to {url}")
    print(f"Load it with ULSAD.from_pretrained({args.repo!r}, revision={url.rsplit('/', 1)[-1]!r})")
    return 0


def cmd_resave(args: argparse.Namespace) -> int:
    check_checkpoint(args.checkpoint)
    import torch

    from ulsad.checkpoint import WEIGHTS_NAME
    from ulsad.hub import resave

    storage = {"dtype": torch.float32, "store_backbone": True} if args.full else {}
    out = resave(args.checkpoint, args.out, **storage)
    size = (out / WEIGHTS_NAME).stat().st_size
    print(f"Wrote {out / WEIGHTS_NAME} ({size / 1e6:.1f} MB)")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from ulsad.experiments import make_jobs, run_benchmark, summarize

    if args.summarize:
        for path in summarize(args.summarize):
            if path.suffix == ".md":
                print(path.read_text(encoding="utf-8"))
        return 0
    missing = [f"--{n}" for n in ("dataset", "root", "out") if getattr(args, n) is None]
    if missing:
        raise ULSADError(f"benchmark needs {', '.join(missing)} (or --summarize RESULTS_DIR).")
    jobs = make_jobs(args.dataset, args.root, args.out, args.categories, preset=args.preset,
                     variants=args.ablation, overrides=_parse_overrides(args.set),
                     epochs=args.epochs, device=args.device, eval_batch_size=args.batch_size,
                     progress=args.executor == "local")  # fmt: skip
    report = run_benchmark(jobs, args.executor, args.address)
    for path in report.summaries:
        if path.suffix == ".md" and path.parent.name in {j.variant for j in jobs}:
            print(f"\n{path}:\n{path.read_text(encoding='utf-8')}")
    if report.failed:
        print(f"error: {len(report.failed)} category run(s) failed:", file=sys.stderr)
        for category, variant, error in report.failed:
            print(f"  {variant}/{category}: {error}", file=sys.stderr)
        print("Fix the cause and run the same command again (finished ones are skipped).",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ulsad.data.download import download

    progress = not args.quiet and sys.stderr.isatty()
    path = download(args.dataset, args.dest, accept_licence=args.accept_licence, progress=progress)
    print(f"{args.dataset} is in {path}: pass --root {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        raise ULSADError(f"Unknown export format {args.format!r}: choose onnx.")
    check_out_file(args.out)
    check_checkpoint(args.checkpoint)
    from ulsad.export import export_verified

    out, difference, scale = export_verified(args.checkpoint, args.out, opset=args.opset)
    size = out.stat().st_size / 2**20
    print(f"Wrote {out} ({size:.1f} MiB); max |ONNX Runtime - PyTorch| = {difference:.1e} "
          f"on maps up to {scale:.2g}.")  # fmt: skip
    return 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help texts with their default appended (`(default: 8)`) where there is one to show, and
    epilogs (the examples) printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, [], argparse.SUPPRESS)
        if shown and "default" not in text and action.option_strings:
            value = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            return f"{text} (default: {value.replace('%', '%%')})"
        return text


def examples(*lines: str) -> str:
    """An epilog: `examples:` and the command lines, indented."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# Names the parser offers, written out so that `ulsad --help` imports nothing heavy (the library's
# registries import numpy, PIL and torch); tests/test_cli.py checks them against the library.
DATASETS = ("mvtec_ad", "mvtec_loco", "visa", "mpdd", "btad", "folder")  # ulsad.data.DATASETS
DOWNLOADS = ("mvtec_ad", "mvtec_loco", "visa", "btad", "mpdd")  # ulsad.data.download.SOURCES
DEFAULT_OPSET = 17  # ulsad.export.DEFAULT_OPSET
DEVICE_HELP = "cpu, cuda, cuda:1, mps (default: the best available)"


def add_parser(sub: Any, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    """One verb's parser: its help line, its examples, defaults shown."""
    return sub.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
        formatter_class=HelpFormatter,
    )  # fmt: skip


def add_benchmark_parsers(sub: Any) -> None:
    """Add `ulsad benchmark` and `ulsad download` to the subparsers `sub` of `build_parser`."""
    from ulsad.experiments import ABLATIONS, EXECUTORS
    from ulsad.presets import PRESETS

    p = add_parser(sub, "benchmark", "train + evaluate every category; JSONs + summary tables",
                   examples("ulsad benchmark --dataset mvtec_ad --root data/mvtec_ad --out results",
                            "ulsad benchmark --dataset mvtec_ad --root data/mvtec_ad --out results "
                            "--categories bottle screw --ablation all",
                            "ulsad benchmark --summarize results"))  # fmt: skip
    p.add_argument("--dataset", choices=DATASETS, help="on-disk layout of --root")
    p.add_argument("--root", help="dataset root (the folder holding the category folders)")
    p.add_argument("--categories", nargs="+", metavar="NAME",
                   help="categories to run (default: every category found under --root)")  # fmt: skip
    p.add_argument("--preset", default="lite", choices=sorted(PRESETS),
                   help="configuration to train")  # fmt: skip
    p.add_argument("--ablation", nargs="+", default=["full"], metavar="NAME",
                   help=f"variant(s): {', '.join(ABLATIONS)}, or all")  # fmt: skip
    p.add_argument(
        "--epochs", type=positive_int, help="epochs per category (default: the preset's)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set image_size=128 (repeatable)")  # fmt: skip
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=positive_int, default=8, help="evaluation batch size")
    p.add_argument("--out", help="results folder (re-use it to resume)")
    p.add_argument("--executor", choices=list(EXECUTORS), default="local",
                   help="local: categories one after another; ray: one Ray task each")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--summarize", metavar="RESULTS_DIR",
                   help="only rebuild the summary tables from RESULTS_DIR's JSONs")  # fmt: skip
    p.set_defaults(func=cmd_benchmark)

    p = add_parser(sub, "download", "download and extract a benchmark dataset",
                   examples("ulsad download visa",
                            "ulsad download mvtec_ad --accept-licence --dest data"))  # fmt: skip
    p.add_argument("dataset", choices=DOWNLOADS, help="which dataset")
    p.add_argument("--dest", help="parent folder (default: $ULSAD_DATA or ~/.cache/ulsad/datasets)")
    p.add_argument("--accept-licence", action="store_true",
                   help="accept the dataset's licence (MVTec datasets ask for it)")  # fmt: skip
    add_quiet(p)
    p.set_defaults(func=cmd_download)


def add_export_parser(sub: Any) -> None:
    """Add `ulsad export` to the subparsers `sub` of `build_parser`."""
    p = add_parser(sub, "export", "export a checkpoint to ONNX (image -> score and maps)",
                   examples("ulsad export --checkpoint bottle --out bottle.onnx",
                            "ulsad predict --backend onnx --checkpoint bottle.onnx --out scores "
                            "images/"))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset version")
    p.set_defaults(func=cmd_export)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """`-q/--quiet`: no progress bar and no progress lines (errors and the result still print)."""
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar or progress lines (a bar shows only on a terminal)")  # fmt: skip


CHECKPOINT_HELP = (
    "checkpoint folder, embedded name (bottle, metal_plate, layout) or Hub repo id owner/name"
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. Imports nothing heavy (no torch, numpy or PIL): `--help` and
    `--version` answer at once."""
    from ulsad.presets import PRESETS
    from ulsad.version import __version__

    parser = Parser(
        prog="ulsad", description=__doc__.splitlines()[0], formatter_class=HelpFormatter,
        epilog=examples("ulsad predict --checkpoint bottle --out scores images/",
                        "ulsad train --data data/mvtec_ad --category bottle --out runs/bottle",
                        "ulsad <command> --help"),
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"ulsad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = add_parser(sub, "train", "train on the good images of one category",
                   examples("ulsad train --data data/mvtec_ad --category bottle --out runs/bottle",
                            "ulsad train --data folder_of_good_images --out runs/mine",
                            "ulsad train --data data/visa --dataset visa --category pcb1 "
                            "--preset paper --out runs/pcb1"))  # fmt: skip
    p.add_argument("--data", required=True,
                   help="dataset root (e.g. data/mvtec_ad), or a folder of good images")  # fmt: skip
    p.add_argument("--category", help="category folder under --data (omit: --data holds images)")
    p.add_argument("--dataset", default="mvtec_ad", choices=DATASETS, help="on-disk layout")
    p.add_argument("--preset", default="lite", choices=sorted(PRESETS),
                   help="configuration: lite (CPU-sized) or paper (the paper's)")  # fmt: skip
    p.add_argument("--steps", type=positive_int,
                   help="optimiser steps, rounded up to whole epochs and to at least the "
                        "preset's min_epochs (default: the preset's)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int,
                   help="train this many epochs instead of a step budget")  # fmt: skip
    p.add_argument("--batch-size", type=training_batch_size,
                   help="images per step, at least 2 for BatchNorm (default: the preset's)")  # fmt: skip
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="checkpoint folder (also holds the resume state)")
    p.add_argument("--save-every", type=positive_int, default=5, help="epochs per resume state")
    p.add_argument("--restart", action="store_true", help="ignore a saved state in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set channels=128 (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_train, flags={"root": "--data"})  # the dataset root is --data here

    p = add_parser(sub, "predict", "score images; write scores.csv (and maps)",
                   examples("ulsad predict --checkpoint bottle --out scores images/",
                            "ulsad predict --checkpoint runs/bottle --out scores --save-maps a.png "
                            "b.png",
                            "ulsad predict --checkpoint owner/name --out scores --device cuda "
                            "images/"))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True,
                   help="output folder: scores.csv (path, score, verdict, threshold), maps/")  # fmt: skip
    p.add_argument("--save-maps", action="store_true", help="also write .npy maps + PNG overlays")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    p.add_argument("--device", help=DEVICE_HELP.replace("the best available", "cpu"))
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="onnx: ONNX Runtime (faster on CPU; takes .onnx files)")  # fmt: skip
    add_quiet(p)
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.set_defaults(func=cmd_predict)

    p = add_parser(sub, "eval", "image/pixel AUROC and AUPRO on a test split",
                   examples("ulsad eval --checkpoint runs/bottle --data data/mvtec_ad "
                            "--category bottle",
                            "ulsad eval --checkpoint bottle --data data/mvtec_ad --category bottle "
                            "--out bottle.json"))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--data", required=True, help="dataset root (e.g. data/mvtec_ad)")
    p.add_argument("--category", required=True, help="category folder under --data")
    p.add_argument("--dataset", default="mvtec_ad", choices=DATASETS, help="on-disk layout")
    p.add_argument("--out", help="JSON path (default: eval_CATEGORY.json in the checkpoint folder)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    p.add_argument("--device", help=DEVICE_HELP.replace("the best available", "cpu"))
    p.set_defaults(func=cmd_eval, flags={"root": "--data"})  # the dataset root is --data here

    p = add_parser(sub, "push", "upload a checkpoint folder and its model card to the Hub",
                   examples("ulsad push --checkpoint runs/bottle --repo me/ulsad-bottle",
                            "ulsad push --checkpoint runs/bottle --repo me/ulsad-bottle "
                            "--private"))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--repo", required=True, help="Hub repo id owner/name (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--license", help="model card licence (default: the training data's)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    p.set_defaults(func=cmd_push)

    p = add_parser(sub, "resave", "re-write a checkpoint in the compact format",
                   examples("ulsad resave --checkpoint runs/old",
                            "ulsad resave --checkpoint owner/name --out runs/copy --full"))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", help="folder to write (default: --checkpoint itself)")
    p.add_argument("--full", action="store_true",
                   help="float32 with the backbone copied (the format of ulsad 0.1)")  # fmt: skip
    p.set_defaults(func=cmd_resave)
    add_benchmark_parsers(sub)
    add_export_parser(sub)
    return parser


def configure_logging() -> None:
    """Show ulsad's progress lines (INFO) and everyone's warnings on stderr, message only; a
    program that configured logging itself (the root logger has handlers) keeps its own setup."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
        logging.getLogger("ulsad").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0, 2: bad input, 130: interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    args = argparse.Namespace()
    library_log = logging.getLogger("ulsad")
    level = library_log.level
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # `ulsad train` records its exact command in the model card
        if getattr(args, "quiet", False):  # progress lines off; warnings and errors still show
            library_log.setLevel(logging.WARNING)
        return args.func(args)
    except ULSADError as error:
        print(f"error: {error.render({**FLAGS, **getattr(args, 'flags', {})})}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a file-system error no command turned into a clearer line
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}: files written before it are kept; "
              "fix the cause and run the same command again.", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    finally:
        library_log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
