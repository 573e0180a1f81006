"""Command line: `ulsad train | predict | eval | push | resave | benchmark | download | export`.

User errors print one line (`error: ...`) and exit with code 2; nothing is left half-written.
Every argument is checked before any work starts. Heavy imports (torch) happen inside `main`, so
that Ctrl-C at any time ends with one line, not a traceback. This is the only module that knows
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


def cmd_train(args: argparse.Namespace) -> int:
    check_category(args.category)
    check_out_folder(args.out)
    from ulsad import ULSAD

    overrides = _parse_overrides(args.set)
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.steps is not None:
        overrides.update(steps=args.steps, epochs=None)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs  # recorded in config.json
        overrides.setdefault("lr_milestones", [args.epochs])  # the paper's: the last epoch
    model = ULSAD.from_preset(args.preset, **overrides)
    try:
        model.fit(
            args.data,
            category=args.category,
            dataset=args.dataset,
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


def _scores_csv(rows: list[tuple[str, float, str]], maps: bool) -> str:
    from ulsad.files import csv_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "map"] if maps else ["path", "score"])
    for path, score, rel in rows:
        writer.writerow([csv_cell(path), f"{score:.6f}", *([csv_cell(rel)] if maps else [])])
    return buffer.getvalue()


def cmd_predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out_folder(out)
    check_out_file(out / "scores.csv", "--out")
    if args.save_maps:
        check_out_folder(out / "maps", "--out")
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
    for start in range(0, len(items), args.batch_size):
        chunk = items[start : start + args.batch_size]
        images = []
        for path, rel in chunk:
            try:
                images.append((path, rel, load_image(path)))
            except ULSADError as error:
                print(f"skipped: {error}", file=sys.stderr)
                failed.append(path)
        if not images:
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
    if not rows:  # nothing scored: an earlier scores.csv stays as it was
        raise ULSADError(
            f"none of the {len(items)} image(s) could be read (listed above); {out} is unchanged."
        )
    target = out / "scores.csv"
    try:
        if target.is_file():  # the previous run's scores are kept, not lost
            target.replace(out / "scores.previous.csv")
        write_text_atomic(target, _scores_csv(rows, args.save_maps))
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

    path = download(args.dataset, args.dest, accept_licence=args.accept_licence)
    print(f"{args.dataset} is in {path}: pass --root {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        raise ULSADError(f"Unknown export format {args.format!r}: choose onnx.")
    check_out_file(args.out)
    from ulsad.export import export_verified

    out, difference, scale = export_verified(args.checkpoint, args.out, opset=args.opset)
    size = out.stat().st_size / 2**20
    print(f"Wrote {out} ({size:.1f} MiB); max |ONNX Runtime - PyTorch| = {difference:.1e} "
          f"on maps up to {scale:.2g}.")  # fmt: skip
    return 0


def add_benchmark_parsers(sub: Any) -> None:
    """Add `ulsad benchmark` and `ulsad download` to the subparsers `sub` of `build_parser`."""
    from ulsad.config import PRESETS
    from ulsad.data import DATASETS
    from ulsad.data.download import SOURCES
    from ulsad.experiments import ABLATIONS, EXECUTORS

    p = sub.add_parser("benchmark", help="train + evaluate every category; JSONs + summary tables")
    p.add_argument("--dataset", choices=list(DATASETS), help="on-disk layout of --root")
    p.add_argument("--root", help="dataset root (the folder holding the category folders)")
    p.add_argument("--categories", nargs="+", help="default: every category found under --root")
    p.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    p.add_argument("--ablation", nargs="+", default=["full"], metavar="NAME",
                   help=f"variant(s): {', '.join(ABLATIONS)}, or all (default: full)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="default: the preset's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set image_size=128")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="evaluation batch size")
    p.add_argument("--out", help="results folder (re-use it to resume)")
    p.add_argument("--executor", choices=list(EXECUTORS), default="local",
                   help="local: categories one after another; ray: one Ray task each")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--summarize", metavar="RESULTS_DIR",
                   help="only rebuild the summary tables from RESULTS_DIR's JSONs")  # fmt: skip
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("download", help="download and extract a benchmark dataset")
    p.add_argument("dataset", choices=list(SOURCES))
    p.add_argument("--dest", help="parent folder (default: $ULSAD_DATA or ~/.cache/ulsad/datasets)")
    p.add_argument("--accept-licence", action="store_true",
                   help="accept the dataset's licence (MVTec datasets ask for it)")  # fmt: skip
    p.set_defaults(func=cmd_download)


def add_export_parser(sub: Any) -> None:
    """Add `ulsad export` to the subparsers `sub` of `build_parser`."""
    from ulsad.export import DEFAULT_OPSET

    p = sub.add_parser("export", help="export a checkpoint to ONNX (image -> score and maps)")
    p.add_argument("--checkpoint", required=True, help="folder, embedded name or Hub repo id")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset version")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    from ulsad.config import PRESETS

    parser = Parser(prog="ulsad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    datasets = ["mvtec_ad", "mvtec_loco", "visa", "mpdd", "btad", "folder"]

    p = sub.add_parser("train", help="train on the good images of one category")
    p.add_argument("--data", required=True, help="dataset root (e.g. .../mvtec_ad)")
    p.add_argument("--category", help="category folder under --data (omit: --data holds images)")
    p.add_argument("--dataset", default="mvtec_ad", choices=datasets, help="on-disk layout")
    p.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    p.add_argument("--steps", type=positive_int,
                   help="optimiser steps, rounded up to whole epochs and to at least the "
                        "preset's min_epochs (default: the preset's)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int,
                   help="train this many epochs instead of a step budget")  # fmt: skip
    p.add_argument("--batch-size", type=training_batch_size, help="at least 2 (BatchNorm)")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--out", required=True, help="checkpoint folder (also holds the resume state)")
    p.add_argument("--save-every", type=positive_int, default=5, help="epochs per resume state")
    p.add_argument("--restart", action="store_true", help="ignore a saved state in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set channels=128")  # fmt: skip
    p.set_defaults(func=cmd_train, flags={"root": "--data"})  # the dataset root is --data here

    p = sub.add_parser("predict", help="score images; write scores.csv (and maps)")
    p.add_argument("--checkpoint", required=True, help="folder, embedded name or Hub repo id")
    p.add_argument("--out", required=True)
    p.add_argument("--save-maps", action="store_true", help="also write .npy maps + PNG overlays")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="onnx: ONNX Runtime (faster on CPU; takes .onnx files)")  # fmt: skip
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="image/pixel AUROC and AUPRO on a test split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--dataset", default="mvtec_ad", choices=datasets)
    p.add_argument("--out", help="JSON path (default: eval_CATEGORY.json in the checkpoint folder)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device")
    p.set_defaults(func=cmd_eval, flags={"root": "--data"})  # the dataset root is --data here

    p = sub.add_parser("push", help="upload a checkpoint folder and its model card to the Hub")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--repo", required=True, help="Hub repo id owner/name (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--license", help="model card licence (default: the training data's)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("resave", help="re-write a checkpoint in the compact format")
    p.add_argument("--checkpoint", required=True, help="folder, embedded name or Hub repo id")
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
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # `ulsad train` records its exact command in the model card
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


if __name__ == "__main__":
    sys.exit(main())
