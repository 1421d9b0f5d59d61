"""Every subcommand's arguments reach the functions it shares: `shoal demo` runs `cmd_train`
with the demo's namespace (which has no --resume flag)."""

from __future__ import annotations

from types import SimpleNamespace

from shoal.deploy import cli


def test_demo_namespace_runs_the_train_step(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(cli, "make_builder", lambda cfg: SimpleNamespace(preflight=lambda: None))

    def fake_run(cfg, progress=True, run_id=None):
        seen.update(run_id=run_id, algorithm=cfg.run.algorithm)
        return {"run_id": "demo-x", "run_dir": "runs/demo-x", "before": {}, "after": {}}

    monkeypatch.setattr(cli, "run", fake_run)
    args = cli.build_parser().parse_args(["demo"])
    cli.cmd_train(args)
    assert seen == {"run_id": None, "algorithm": "ppo"}
    assert "Shoal run demo-x" in capsys.readouterr().out
