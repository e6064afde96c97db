"""The `codecl` command: each subcommand maps to one plain function; the logic lives elsewhere."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from codecl.errors import UserError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def resolve_config(name: str | None) -> Path:
    """A path as given, else `configs/NAME.yaml` here or in the codecl checkout."""
    name = name or "default"
    for candidate in (Path(name), Path("configs") / f"{name}.yaml", REPO_CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return Path(name)


def command_run(args: argparse.Namespace) -> None:
    from codecl.config import load_config, load_run_config
    from codecl.runner import Run, checked_config

    positional = list(args.items)
    config_name = positional.pop(0) if positional and "=" not in positional[0] else None
    # The options are overrides of `run.*`, validated with the rest.
    positional += [f"run.{key}={value}" for key, value in (("executor", args.executor), ("workers", args.workers))
                   if value is not None]
    if args.resume:
        out_dir = args.resume
        if args.out and args.out != out_dir:
            raise UserError(f"--out {args.out}: a resumed run writes into its own folder ({out_dir})")
        if config_name is None:  # the run's own config, any overrides on top
            config_path, config = out_dir / "config.json", load_run_config(out_dir, positional)
        else:
            config_path = resolve_config(config_name)
            config = load_config(config_path, positional)
        checked_config(out_dir, config)  # before anything is printed: a refusal is its one line
    else:
        config_path = resolve_config(config_name)
        config = load_config(config_path, positional)
        out_dir = args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    print(f"codecl run {config_path} -> {out_dir}" + (" (resumed)" if args.resume else ""), file=sys.stderr)
    Run(config, out_dir, config_path, resume=bool(args.resume)).execute()
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'report.md'} and {out_dir / 'predictions'}/")
    print((out_dir / "report.md").read_text().split("## Accuracy matrices")[0].rstrip())
    print(f"\nthe report with its figures: {out_dir / 'report.html'}")


def command_pretrain(args: argparse.Namespace) -> None:
    from codecl.config import load_config
    from codecl.models.store import pretrain_tiny_base

    config_path = resolve_config(args.config)
    print(pretrain_tiny_base(load_config(config_path, args.overrides), config_path, ship=args.ship,
                             snapshot_every=args.snapshot_every))


def command_data_mine(args: argparse.Namespace) -> None:
    from codecl.data.miner import mine_corpus

    summary = mine_corpus(
        args.out,
        python_dirs=args.python_dir,
        javascript_dirs=args.javascript_dir,
        use_stdlib=not args.no_stdlib,
        use_npm=not args.no_npm,
        languages=tuple(args.languages),
    )
    print(summary)


def command_data_stats(args: argparse.Namespace) -> None:
    from codecl.data.csn import format_split_counts, split_counts

    print(format_split_counts(split_counts(args.path)))


def command_report(args: argparse.Namespace) -> None:
    from codecl.report import rebuild_reports

    print("wrote " + " and ".join(map(str, rebuild_reports(args.run_dir))))


def command_compare(args: argparse.Namespace) -> None:
    from codecl.compare import compare_page, compare_runs
    from codecl.results import write_text_atomically

    print(compare_runs(args.run_dirs), end="")
    if args.html:
        write_text_atomically(args.html, compare_page(args.run_dirs))
        print(f"wrote {args.html}", file=sys.stderr)


def command_export(args: argparse.Namespace) -> None:
    from codecl.export import export_run

    print(export_run(args.run_dir, args.method, args.task, args.out, seed=args.seed, check=args.check, order=args.order))


def command_humaneval(args: argparse.Namespace) -> None:
    import json

    from codecl.evaluate.humaneval import load_samples, score_samples

    ks = sorted(set(args.k))
    if ks[0] < 1 or (args.num_samples is not None and args.num_samples < 1):
        raise UserError("--k and --num-samples must be at least 1")
    if args.samples.startswith("model:"):
        from codecl.evaluate.functional import samples_from_run

        num_samples = args.num_samples or (1 if ks == [1] else max(ks))
        if num_samples < max(ks):
            raise UserError(f"--num-samples {num_samples}: pass@{max(ks)} needs at least {max(ks)} samples per problem")
        samples = samples_from_run(args.samples, args.language, num_samples, args.temperature, args.top_p,
                                   args.seed, args.run_seed)
        if args.save_samples:
            args.save_samples.parent.mkdir(parents=True, exist_ok=True)
            with args.save_samples.open("w") as file:
                file.writelines(json.dumps(s) + "\n" for s in samples)
            print(f"wrote {len(samples)} samples to {args.save_samples}", file=sys.stderr)
    else:
        samples = load_samples(args.samples, args.language)
    result = score_samples(samples, language=args.language, k=ks, workers=args.workers, timeout_s=args.timeout)
    print(f"HumanEval-{args.language}, {args.samples}")
    print(result.summary())


def command_methods(args: argparse.Namespace) -> None:
    from codecl.methods import METHODS

    for name, entry in sorted(METHODS.items()):
        print(f"{name:12s} {entry.summary}")
        for field, info in entry.config_class.model_fields.items():
            if field != "method":
                print(f"    {field} = {info.default!r}: {info.description}")


def non_negative_int(text: str) -> int:
    """An argparse `type=`: its ValueError becomes argparse's own one-line usage error."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codecl", description="Continual learning for code models.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment: every method through the task stream")
    run.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                     help="a config file or name (default: configs/default.yaml), then dotted overrides")
    run.add_argument("--out", type=Path, help="the run folder (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="go on with a killed or failed run: keep its finished jobs, restart the others from their "
                          "last checkpoint (its own config unless CONFIG is given; a config that differs is refused)")
    run.add_argument("--executor", metavar="NAME", help="run.executor: inline, local or ray")
    run.add_argument("--workers", metavar="N", help="run.workers: worker processes of the local executor")
    run.set_defaults(handler=command_run)

    pretrain = commands.add_parser("pretrain", help="build the tiny base of a config anew, as `codecl run` would use it")
    pretrain.add_argument("config", metavar="CONFIG", help="a config file or name, e.g. default")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, as for `codecl run`")
    pretrain.add_argument("--ship", action="store_true",
                          help="also copy it into the shipped folder the repository carries (src/codecl/models/shipped/), "
                               "replacing the shipped base of the same key and removing those of another recipe "
                               "version; bases of other configs or corpora stay")
    pretrain.add_argument("--snapshot-every", type=non_negative_int, default=0, metavar="N",
                          help="also save the model every N steps into FOLDER.snapshots/step-N/, to measure score "
                               "against pretraining time (the final weights are the same); 0, the default, saves none")
    pretrain.set_defaults(handler=command_pretrain)

    data = commands.add_parser("data", help="prepare and inspect CodeSearchNet-layout data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    mine = data_commands.add_parser("mine", help="mine a CodeSearchNet-layout corpus from local code")
    mine.add_argument("--out", type=Path, required=True, help="the folder to write")
    mine.add_argument("--python-dir", type=Path, action="append", default=[], help="a folder of Python code (repeatable)")
    mine.add_argument("--javascript-dir", type=Path, action="append", default=[], help="a folder of JavaScript code (repeatable)")
    mine.add_argument("--no-stdlib", action="store_true", help="do not mine the Python standard library")
    mine.add_argument("--no-npm", action="store_true", help="do not fetch the default npm packages")
    mine.add_argument("--languages", nargs="+", default=["python", "javascript"], choices=["python", "javascript"])
    mine.set_defaults(handler=command_data_mine)
    stats = data_commands.add_parser("stats", help="count examples per language and split")
    stats.add_argument("path", type=Path, help="a CodeSearchNet-layout folder")
    stats.set_defaults(handler=command_data_stats)

    report = commands.add_parser("report", help="rebuild report.md and report.html from a run folder's results.json")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(handler=command_report)

    compare = commands.add_parser("compare", help="several runs side by side: headline numbers, differences and config keys")
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                         help="two or more run folders; the first is the reference the others are compared with")
    compare.add_argument("--html", type=Path, metavar="FILE", help="also write the comparison as a self-contained page")
    compare.set_defaults(handler=command_compare)

    export = commands.add_parser("export", help="write one method's model for one task as a plain Hugging Face T5")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--method", required=True, help="a method name of the run")
    export.add_argument("--task", required=True, help="a task name of the run's stream, e.g. python")
    export.add_argument("--out", type=Path, required=True, help="the folder to write")
    export.add_argument("--seed", type=int, help="which seed's run (default: the first)")
    export.add_argument("--order", type=int, default=0, help="which of the run's task orders, an index into `orders` (default: 0)")
    export.add_argument("--check", action="store_true", help="decode the test inputs and compare with the run's predictions")
    export.set_defaults(handler=command_export)

    humaneval = commands.add_parser("humaneval", help="score HumanEval samples by running them in the sandbox: pass@k")
    humaneval.add_argument("--language", required=True, choices=["python", "javascript"])
    humaneval.add_argument("--samples", required=True, metavar="FILE.jsonl|canonical|model:RUN_DIR,METHOD,TASK",
                           help="a samples file ({task_id, completion} per line), the canonical Python solutions, "
                                "or completions generated by a method of a finished run")
    humaneval.add_argument("--k", type=int, nargs="+", default=[1], help="the k of pass@k (default: 1)")
    humaneval.add_argument("--workers", type=int, help="programs run at once (default: one per CPU)")
    humaneval.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds per program (default: 10)")
    sampling = humaneval.add_argument_group("generating with model:RUN_DIR,METHOD,TASK")
    sampling.add_argument("--num-samples", type=int, help="samples per problem (default: 1, greedy, when k is 1; else the largest k)")
    sampling.add_argument("--temperature", type=float, default=0.8, help="sampling temperature when more than one sample (default: 0.8)")
    sampling.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling when more than one sample (default: 0.95)")
    sampling.add_argument("--seed", type=int, default=0, help="the sampling seed (default: 0)")
    sampling.add_argument("--run-seed", type=int, help="which seed's run of the method (default: the first)")
    sampling.add_argument("--save-samples", type=Path, help="also write the generated samples to this .jsonl file")
    humaneval.set_defaults(handler=command_humaneval)

    methods = commands.add_parser("methods", help="list the registered methods and their options")
    methods.set_defaults(handler=command_methods)
    return parser


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter from the libraries would drown codecl's own log lines."""
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "pretrain", "export", "humaneval"):
        quiet_libraries()
    try:
        args.handler(args)
    except UserError as error:
        print(f"codecl: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("codecl: interrupted; finished results were kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
