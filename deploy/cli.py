"""`shoal` command line.

    shoal demo                      init-model + train-rm + train on the built-in task
    shoal init-model [CONFIG]       BPE tokenizer + tiny Llama + SFT warm-up -> model.path
    shoal train-rm [CONFIG]         Bradley-Terry reward model -> reward.reward_model_path
    shoal train CONFIG              PPO through Ray actors (the `ray job submit` entrypoint)
    shoal metrics RUN [--follow]    latest metrics of a run (RUN: id, id prefix, or `latest`);
                                    --follow prints new values until the run ends
    shoal dashboard                 the web dashboard (live charts of every run in the store)
    shoal config [CONFIG]           print the resolved config (`--reference`: field reference)
    shoal collect ENV --policy P[,P] --episodes N --out FILE.jsonl [--seed S]
                                    scripted policies in a text environment -> episodes JSONL
    shoal export RUN OUT [--step N] a run's trained policy (and its reward model) as Hugging
                                    Face model directories that transformers and vLLM load

Every command takes `--set path=value` overrides. Known problems (bad config, missing model,
unreachable Redis, malformed preference file) end with one `shoal: error: ...` line and exit
code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from shoal.builders import ALGORITHMS, make_builder
from shoal.services.config import ConfigError, ShoalConfig, dump_config, load_config
from shoal.utils import RunError


class UserInterrupt(Exception):
    """Ctrl-C / SIGTERM during training, after the checkpoint: one line, exit 130."""


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def default_config_path() -> str:
    return str(resources.files("shoal.deploy") / "configs" / "demo.yaml")


def _load(args: argparse.Namespace) -> ShoalConfig:
    return load_config(args.config or default_config_path(), args.set)


def _load_for_compute(args: argparse.Namespace) -> ShoalConfig:
    """The config, with torch's thread count applied (run.torch_threads): torch's default of one
    thread per core is many times slower on a shared or oversubscribed machine."""
    from shoal.services.run import torch_setup

    cfg = _load(args)
    torch_setup(cfg)
    return cfg


def cmd_init_model(args: argparse.Namespace) -> None:
    from shoal.learner.sft.learning import init_model

    init_model(_load_for_compute(args), progress=not args.quiet)


def cmd_train_rm(args: argparse.Namespace) -> None:
    from shoal.reward.train_rm import train_reward_model

    cfg = _load_for_compute(args)
    if not (Path(cfg.model.path) / "config.json").is_file():
        raise UserError(
            f"model.path: {cfg.model.path!r} has no model (the reward model starts from the SFT policy); run `shoal init-model` first"
        )
    train_reward_model(cfg, progress=not args.quiet)


def cmd_train(args: argparse.Namespace) -> None:
    cfg = _load(args)  # no torch here: the Ray driver never needs it; run_local sets its threads
    run_id = None
    if getattr(args, "resume", None):  # `shoal demo` comes here without the flag
        cfg, run_id = resume_config(cfg, args.resume)
    elif cfg.run.resume_from:
        _checked_checkpoint(cfg.run.resume_from, "run.resume_from")
    make_builder(cfg).preflight()
    print(f"[shoal] resolved config ({args.config or default_config_path()}, {len(args.set)} overrides):", flush=True)
    print(dump_config(cfg), flush=True)
    from shoal.services.run import Interrupted, format_summary

    try:
        summary = run(cfg, progress=not args.quiet, run_id=run_id)
    except Interrupted as e:
        sets = [x for s in args.set for x in ("--set", s)]
        again = shlex.join(["shoal", "train", *([args.config] if args.config else []), *sets])
        hint = f"; continue with: {again} --resume {e.run_id}" if e.checkpoint else ""
        raise UserInterrupt(f"{e}{hint}") from None
    print(format_summary(summary), flush=True)


def resume_config(cfg: ShoalConfig, run: str) -> tuple[ShoalConfig, str]:
    """`--resume RUN`: the run's newest complete checkpoint becomes run.resume_from and the
    run id stays RUN (same directory, charts and record)."""
    from shoal.learner.checkpoint import latest_checkpoint

    if cfg.run.resume_from:
        raise UserError(
            "--resume and run.resume_from: give one (--resume continues a run; run.resume_from starts a new one)"
        )
    runs = Path(cfg.run.runs_dir)
    run_dir = runs / run
    if run == "latest":
        dirs = [d for d in runs.glob("*") if latest_checkpoint(d) is not None] if runs.is_dir() else []
        if not dirs:
            raise UserError(f"--resume latest: no run with a checkpoint in {runs} (run.runs_dir)")
        run_dir = max(dirs, key=lambda d: d.stat().st_mtime)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run}: no run directory {run_dir} (run.runs_dir is {runs})")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"--resume {run}: {run_dir} has no complete checkpoint (checkpoints/step_*/meta.json)")
    meta = _checked_checkpoint(ckpt, f"--resume {run}")
    step = int(meta.get("policy_version", 0))
    if step >= cfg.run.total_steps:
        raise UserError(
            f"--resume {run}: the run already reached learner step {step} of run.total_steps={cfg.run.total_steps}; "
            "raise run.total_steps to train further"
        )
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"resume_from": str(ckpt)})}), run_dir.name


def _checked_checkpoint(path: str | Path, field: str) -> dict[str, Any]:
    from shoal.learner.checkpoint import check_checkpoint

    try:
        return check_checkpoint(path)
    except ValueError as e:
        raise UserError(f"{field}: {e}") from None


def run(cfg: ShoalConfig, progress: bool = True, run_id: str | None = None) -> dict[str, Any]:
    from shoal.services.run import open_run

    ctx = open_run(cfg, run_id, resume=True) if run_id else None
    if cfg.run.mode == "local":
        from shoal.services.local import run_local

        return run_local(cfg, progress, ctx)
    from shoal.services.program import run_ray

    return run_ray(cfg, progress, ctx)


def cmd_demo(args: argparse.Namespace) -> None:
    cfg = _load(args)
    print("[shoal] demo 1/3: init-model (tokenizer, tiny Llama, SFT warm-up)", flush=True)
    cmd_init_model(args)
    k = cfg.reward.rm_ensemble
    what = "Bradley-Terry reward model" if k == 1 else f"an ensemble of {k} Bradley-Terry reward models"
    print(f"[shoal] demo 2/3: train-rm ({what} from gold-labelled pairs)", flush=True)
    cmd_train_rm(args)
    print(f"[shoal] demo 3/3: PPO through Ray actors ({cfg.rollout.num_workers} rollout worker(s))", flush=True)
    cmd_train(args)


def cmd_metrics(args: argparse.Namespace) -> None:
    from shoal.services.metrics import MetricsReader, resolve_redis
    from shoal.services.metrics_table import format_latest_table

    url, embedded = resolve_redis(args.redis_url, args.runs_dir)
    try:
        reader = MetricsReader(url)
        try:
            run_id = reader.resolve_run(args.run)
        except ValueError as e:  # no such run, or an ambiguous prefix: one line, not a traceback
            raise UserError(str(e)) from None
        info = reader.run_info(run_id)
        print(f"run {run_id}  status={info.get('status')}")
        since = _last_id(reader, run_id) if args.follow else None
        print(format_latest_table(reader.latest(run_id), reader.workers(run_id)), flush=True)
        if args.follow:
            _follow(reader, run_id, since, args)
    finally:
        if embedded is not None:
            embedded.close()


def _last_id(reader: Any, run_id: str) -> str:
    from shoal.services.dashboard.follow import last_id

    return last_id(reader, run_id)


def _follow(reader: Any, run_id: str, since: str, args: argparse.Namespace) -> None:
    from shoal.services.dashboard.follow import follow

    only = [p for p in (args.only or "").split(",") if p] or None
    print(f"[shoal] following {run_id} (Ctrl-C to stop)", flush=True)
    try:
        follow(reader, run_id, since, args.interval, only, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("[shoal] stopped following", flush=True)


def cmd_dashboard(args: argparse.Namespace) -> None:
    import signal

    from pydantic import ValidationError

    from shoal.services.config import DashboardSection, format_validation_error
    from shoal.services.dashboard import start_dashboard
    from shoal.services.metrics import resolve_redis

    try:
        d = DashboardSection(host=args.host, port=args.port, token=args.token, poll_interval_s=args.poll_interval)
    except ValidationError as e:
        raise ConfigError("dashboard." + format_validation_error(e)) from None
    url, embedded = resolve_redis(args.redis_url, args.runs_dir)
    server = None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    try:
        server = start_dashboard(url, d.host, d.port, d.token, d.poll_interval_s, background=False)
        moved = f"  (port {server.moved_from} was busy)" if server.moved_from else ""
        print(f"[shoal] dashboard: {server.url}{moved}  (read-only; Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("[shoal] dashboard stopped", flush=True)
    finally:
        if server is not None:
            server.stop()
        if embedded is not None:
            embedded.close()


def cmd_config(args: argparse.Namespace) -> None:
    if args.reference:
        from shoal.deploy.config_reference import config_reference

        print(config_reference())
        return
    print(dump_config(_load(args)), end="")


def cmd_collect(args: argparse.Namespace) -> None:
    from shoal.rollout.envs.collector import build_collection, format_summary, parse_env_args, run_collection

    try:
        env, policies = build_collection(args.env, args.policy, parse_env_args(args.env_arg))
    except ValueError as e:
        raise UserError(str(e)) from None

    def warn(dropped: Any) -> None:
        print(f"shoal: warning: {dropped}", file=sys.stderr, flush=True)

    result = run_collection(env, policies, args.episodes, args.out, args.seed, args.max_turns, on_drop=warn)
    print(format_summary(env, result, args.out), flush=True)


def cmd_export(args: argparse.Namespace) -> None:
    from shoal.deploy.export import ExportError, export_run

    try:
        info = export_run(args.run, args.out, args.step, args.runs_dir, args.force)
    except ExportError as e:
        raise UserError(str(e)) from None
    extra = f"; reward model -> {info['reward_model']}" if "reward_model" in info else ""
    note = f" ({info['note']})" if "note" in info else ""
    print(
        f"[shoal] exported run {info['run_id']} learner step {info['step']} ({info['algorithm']}) -> {info['policy']}"
        f"{extra}{note}; load it with AutoModelForCausalLM.from_pretrained or vllm.LLM",
        flush=True,
    )


def _add_export_parser(sub: Any) -> None:
    se = sub.add_parser("export", help="write a run's trained policy as a Hugging Face model directory")
    se.add_argument("run", help="run id in --runs-dir, `latest`, or a run directory")
    se.add_argument("out", help="output directory (the policy; its reward model in OUT/reward_model)")
    se.add_argument("--step", type=int, default=None, help="the checkpoint of this learner step (default: the newest)")
    se.add_argument("--runs-dir", default="runs", help="where the run directories are (run.runs_dir)")
    se.add_argument("--force", action="store_true", help="replace OUT if it exists")
    se.set_defaults(fn=cmd_export)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_collect_parser(sub: Any) -> None:
    sc = sub.add_parser("collect", help="run scripted policies in a text environment, write episodes as JSONL")
    sc.add_argument("env", help="built-in environment (cue_recall, maze_fo, maze_po, wordle) or module:factory")
    sc.add_argument(
        "--policy", required=True, help="comma-separated policy names (e.g. optimal,mediocre,random) or module:factory"
    )
    sc.add_argument("--episodes", type=_positive_int, required=True, help="number of episodes; policies take turns")
    sc.add_argument("--out", required=True, help="output JSONL file")
    sc.add_argument("--seed", type=int, default=0, help="seed of the episode reset seeds")
    sc.add_argument("--max-turns", type=_positive_int, default=500, help="cut an episode after this many actions")
    sc.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment keyword, e.g. --env-arg corridor_length=15",
    )
    sc.set_defaults(fn=cmd_collect)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal", description="Distributed actor-learner RL for language models.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in [
        ("demo", cmd_demo, "init-model + train-rm + train on the built-in task"),
        ("init-model", cmd_init_model, "build tokenizer + tiny Llama + SFT warm-up"),
        ("train-rm", cmd_train_rm, "train the Bradley-Terry reward model"),
        ("train", cmd_train, f"train with the config's run.algorithm: {', '.join(ALGORITHMS)} (Ray job entrypoint)"),
        ("config", cmd_config, "print the resolved config"),
    ]:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", nargs="?", default=None, help="YAML config (default: the built-in demo config)")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="PATH=VALUE",
            help="override a field, e.g. --set ppo.learning_rate=1e-4",
        )
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "train":
            sp.add_argument(
                "--resume",
                metavar="RUN",
                default=None,
                help="continue run RUN (its id in run.runs_dir, or `latest`) from its newest checkpoint: same run id, charts and step",
            )
        if name == "config":
            sp.add_argument("--reference", action="store_true", help="print every field with its description")
        sp.set_defaults(fn=fn)
    sm = sub.add_parser("metrics", help="print the latest metrics of a run")
    sm.add_argument("run", nargs="?", default="latest", help="run id, unique prefix, or `latest`")
    sm.add_argument(
        "--redis-url",
        default=os.environ.get("SHOAL_REDIS_URL"),
        help="metrics Redis (default: the embedded store in --runs-dir)",
    )
    sm.add_argument("--runs-dir", default="runs", help="runs directory holding the embedded store")
    sm.add_argument(
        "--follow", "-f", action="store_true", help="then print new values until the run ends (Ctrl-C to stop)"
    )
    sm.add_argument("--interval", type=float, default=1.0, help="--follow: seconds between polls")
    sm.add_argument(
        "--only",
        default=None,
        metavar="PREFIXES",
        help="--follow: comma-separated name prefixes, e.g. reward/,learner/kl_ref",
    )
    sm.set_defaults(fn=cmd_metrics)
    sd = sub.add_parser("dashboard", help="serve the web dashboard (read-only)")
    sd.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs --token")
    sd.add_argument("--port", type=int, default=8420, help="TCP port (the next free one if busy)")
    sd.add_argument("--token", default=None, help="access token for the API (default: env SHOAL_DASHBOARD_TOKEN)")
    sd.add_argument("--poll-interval", type=float, default=2.0, help="seconds between the page's polls")
    sd.add_argument(
        "--redis-url",
        default=os.environ.get("SHOAL_REDIS_URL"),
        help="metrics Redis (default: the embedded store in --runs-dir)",
    )
    sd.add_argument("--runs-dir", default="runs", help="runs directory holding the embedded store")
    sd.set_defaults(fn=cmd_dashboard)
    _add_collect_parser(sub)
    _add_export_parser(sub)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [UserError, ConfigError, RunError, FileNotFoundError]
    try:
        from shoal.services.dashboard import DashboardRefused

        errs.append(DashboardRefused)
    except ImportError:
        pass
    try:
        from shoal.services.metrics import RedisUnavailable

        errs.append(RedisUnavailable)
    except ImportError:
        pass
    try:
        from shoal.reward.preferences import PreferenceFileError

        errs.append(PreferenceFileError)
    except ImportError:
        pass
    try:
        from shoal.rollout.envs.jsonl import EpisodeFileError

        errs.append(EpisodeFileError)
    except ImportError:
        pass
    return tuple(errs)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except _known_errors() as e:
        print(f"shoal: error: {e}", file=sys.stderr)
        return 2
    except UserInterrupt as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
