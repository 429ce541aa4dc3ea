"""The ``llmlab`` command.

``llmlab assets list|fetch|verify|path|pack|install``, ``llmlab labs build|check``, for
running a workshop ``llmlab doctor`` and ``llmlab progress FOLDER``, and
``llmlab train --config FILE [--set key=value ...]`` (also under ``torchrun``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def _assets_list(args: argparse.Namespace) -> int:
    from llmlab import assets

    print(f"cache: {assets.home()}")
    for row in assets.status():
        mark = "cached" if row["cached"] else "missing"
        print(f"  {row['name']:<18} {mark:<8} {row['size_mb']:>7.1f} MB  {row['source']}"
              f"  [{row['license']}]")
        print(f"  {'':<18} {row['description']}")
    return 0


def _selected(args: argparse.Namespace) -> list[str]:
    from llmlab import assets

    if args.all:
        return assets.names()
    if not args.names:
        raise SystemExit("name one or more assets, or pass --all (see `llmlab assets list`)")
    return [assets.get(name).name for name in args.names]  # unknown names fail before any work


def _assets_fetch(args: argparse.Namespace) -> int:
    from llmlab import assets

    if args.checkpoint:
        from llmlab.training import asset as trained_asset

        if len(args.names) != 1 or args.all:
            raise SystemExit("--checkpoint replaces one trained asset: name it, e.g. `llmlab "
                             "assets fetch shakespeare-gpt --checkpoint runs/x/checkpoint.pt`")
        folder = trained_asset.install_trained(Path(args.checkpoint), args.names[0])
        print(f"  ok: {folder} now holds the model of {args.checkpoint}")
        return 0
    for name in _selected(args):
        print(f"fetching {name} ...", flush=True)
        assets.fetch(name, force=args.force)
        folder = assets.verify(name)
        print(f"  ok: {folder}")
    return 0


def _assets_verify(args: argparse.Namespace) -> int:
    from llmlab import assets

    failures = 0
    for name in _selected(args):
        try:
            assets.verify(name, full=True)
            print(f"  ok       {name}")
        except assets.AssetError as error:
            failures += 1
            print(f"  FAILED   {name}: {error}")
    return 1 if failures else 0


def _assets_path(args: argparse.Namespace) -> int:
    from llmlab import assets

    print(assets.path(args.name, fetch_missing=False))
    return 0


def _assets_pack(args: argparse.Namespace) -> int:
    from llmlab import assets

    index = assets.pack(Path(args.dir), args.names or None)
    for entry in json.loads(index.read_text())["assets"]:
        print(f"  packed {entry['name']:<18} {entry['archive']}")
    print(f"wrote {index}; install elsewhere with `llmlab assets install --from {args.dir}`")
    return 0


def _assets_install(args: argparse.Namespace) -> int:
    from llmlab import assets

    for folder in assets.install(Path(args.source), args.names or None):
        print(f"  ok: {folder}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from llmlab.course import workshop

    rows = workshop.run_doctor()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=1))
    else:
        print(workshop.format_doctor(rows))
    return workshop.doctor_exit_code(rows)


def _progress(args: argparse.Namespace) -> int:
    from llmlab.course import workshop

    try:
        report = workshop.progress(Path(args.folder), timeout=args.timeout, jobs=args.jobs)
    except workshop.WorkshopError as error:
        print(f"llmlab progress: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json
          else workshop.format_progress(report))
    return 0


def _labs_build(args: argparse.Namespace) -> int:
    from llmlab.course import labs

    for written in labs.build_labs(Path(args.solutions), Path(args.labs)):
        print(f"  wrote {written}")
    return 0


def _labs_check(args: argparse.Namespace) -> int:
    from llmlab.course import labs

    stale = labs.stale_labs(Path(args.solutions), Path(args.labs))
    for problem in stale:
        print(f"  out of date: {problem}")
    if stale:
        print("run `llmlab labs build` to regenerate labs/ from solutions/")
        return 1
    print("labs/ is up to date with solutions/")
    return 0


def _train(args: argparse.Namespace) -> int:
    from llmlab.training import Trainer, load_config

    try:
        config = load_config(args.config, args.overrides)
        trainer = Trainer(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"llmlab train: {error}", file=sys.stderr)
        return 2
    trainer.fit()
    if trainer.is_main:
        last = trainer.history[-1]
        steps_per_s = len(trainer.history) / max(sum(r["seconds"] for r in trainer.history),
                                                 1e-9)
        ranks = f" on {trainer.world_size} processes" if trainer.world_size > 1 else ""
        print(f"step {trainer.step}: train loss {last['loss']:.4f}, "
              f"{steps_per_s:.1f} steps/s (this run{ranks})")
        if trainer.evaluations:
            evaluation = trainer.evaluations[-1]
            print(f"validation loss {evaluation['val_loss']:.4f} "
                  f"(perplexity {evaluation['val_ppl']:.2f})")
        print(f"checkpoint: {trainer.out_dir / 'checkpoint.pt'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmlab", description="LLM Lab course tools")
    groups = parser.add_subparsers(dest="group", required=True)

    assets_cmd = groups.add_parser(
        "assets", help="list, fetch, verify, pack and install offline assets")
    actions = assets_cmd.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every asset, its source and whether it is cached"
                       ).set_defaults(run=_assets_list)
    for action, run, text in (("fetch", _assets_fetch, "download, verify and unpack"),
                              ("verify", _assets_verify, "check cached files against checksums")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("names", nargs="*")
        sub.add_argument("--all", action="store_true", help="every registered asset")
        if action == "fetch":
            sub.add_argument("--force", action="store_true", help="rebuild from the archive")
            sub.add_argument("--checkpoint", metavar="FILE",
                             help="make your own training checkpoint the (trained) asset")
        sub.set_defaults(run=run)
    where = actions.add_parser("path", help="print the folder of a cached asset")
    where.add_argument("name")
    where.set_defaults(run=_assets_path)
    packer = actions.add_parser("pack", help="copy the verified archives into DIR, for "
                                "machines with no network (default: every asset)")
    packer.add_argument("dir")
    packer.add_argument("names", nargs="*")
    packer.set_defaults(run=_assets_pack)
    installer = actions.add_parser("install", help="install assets from a pack, offline")
    installer.add_argument("--from", dest="source", required=True, metavar="DIR")
    installer.add_argument("names", nargs="*", help="only these (default: all in the pack)")
    installer.set_defaults(run=_assets_install)

    labs_cmd = groups.add_parser("labs", help="generate labs/ from solutions/")
    lab_actions = labs_cmd.add_subparsers(dest="action", required=True)
    for action, run, text in (("build", _labs_build, "regenerate every lab"),
                              ("check", _labs_check, "fail if labs/ is out of date")):
        sub = lab_actions.add_parser(action, help=text)
        sub.add_argument("--solutions", default="solutions")
        sub.add_argument("--labs", default="labs")
        sub.set_defaults(run=run)

    doctor = groups.add_parser("doctor", help="check this machine is ready for the course")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(run=_doctor)
    room = groups.add_parser("progress", help="run a room's labs and tabulate every check")
    room.add_argument("folder", help="folder holding the learners' lab notebooks")
    room.add_argument("--json", action="store_true", help="machine-readable output")
    room.add_argument("--timeout", type=float, default=600, metavar="S",
                      help="seconds any one cell may run (default 600)")
    room.add_argument("--jobs", type=int, default=1, metavar="N",
                      help="notebooks run at once (default 1)")
    room.set_defaults(run=_progress)
    trainer = groups.add_parser(
        "train", help="pretrain a GPT from a YAML config (runs under torchrun too)")
    trainer.add_argument("--config", required=True, metavar="FILE",
                         help="a YAML file such as configs/shakespeare_char.yaml, or the "
                              "name of a packaged config (shakespeare_char, shakespeare_gpt, ...)")
    trainer.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE",
                         help="override a setting, e.g. --set max_steps=200 --set model.n_layer=2")
    trainer.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from llmlab.assets import AssetError

    try:
        return args.run(args)
    except AssetError as error:
        print(f"llmlab: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
