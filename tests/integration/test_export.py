"""`shoal export` (deploy/export.py) as a user runs it: a short PPO run's policy comes out as a
Hugging Face directory that transformers and vLLM load and generate from, holding the trained
weights (not the SFT policy's), with the Shoal-trained reward model beside it; bad input is
one line and exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import small_config
from tests.integration.test_cli import assert_one_line_error, shoal

pytestmark = pytest.mark.integration

PROMPTS = ["write about ko :", "write about ma :", "write about ti : kofa"]


@pytest.fixture(scope="module")
def trained_run(sft_models, tmp_path_factory):
    """A 4-step local PPO run with checkpoints at steps 2 and 4."""
    from shoal.services.local import run_local

    tmp = tmp_path_factory.mktemp("export")
    cfg = small_config(
        sft_models, tmp, "run.mode=local", "run.total_steps=4", "run.checkpoint_interval=2", "run.eval_prompts=0"
    )
    summary = run_local(cfg, progress=False)
    return {"runs": str(tmp / "runs"), "run_id": summary["run_id"], "models": sft_models, "tmp": tmp}


def _weights(path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


def test_export_writes_the_trained_policy_and_its_reward_model(trained_run):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from shoal.learner.checkpoint import checkpoint_dir

    out = trained_run["tmp"] / "exported"
    r = shoal("export", trained_run["run_id"], str(out), "--runs-dir", trained_run["runs"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "exported run" in r.stdout and "learner step 4 (ppo)" in r.stdout and "reward model ->" in r.stdout
    meta = json.loads((out / "shoal_export.json").read_text())
    assert meta["step"] == 4 and meta["policy_version"] == 4 and meta["run_id"] == trained_run["run_id"]

    exported, sft = _weights(str(out)), _weights(trained_run["models"]["policy"])
    run_dir = f"{trained_run['runs']}/{trained_run['run_id']}"
    saved = _weights(str(checkpoint_dir(run_dir, 4) / "model"))
    assert all(torch.equal(exported[k], saved[k]) for k in saved)  # the step-4 learner's weights
    assert any(not torch.equal(exported[k], sft[k]) for k in sft)  # ... not the SFT policy's

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    gen = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    assert gen.shape[1] > ids.shape[1]

    rm = AutoModelForSequenceClassification.from_pretrained(str(out / "reward_model"), dtype=torch.float32)
    assert rm.config.num_labels == 1 and (out / "reward_model" / "train_rm.json").is_file()

    earlier = trained_run["tmp"] / "step2"
    r = shoal("export", trained_run["run_id"], str(earlier), "--runs-dir", trained_run["runs"], "--step", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((earlier / "shoal_export.json").read_text())["step"] == 2


@pytest.mark.vllm
def test_vllm_generates_from_the_export_what_transformers_does(trained_run):
    from shoal.rollout.engines import vllm_installed

    if not vllm_installed():
        pytest.skip("vllm is not installed")
    from shoal.rollout.hf_engine import HFEngine
    from shoal.rollout.tasks import encode_prompt
    from shoal.rollout.vllm_engine import VLLMEngine
    from shoal.types import Prompt

    out = trained_run["tmp"] / "for_vllm"
    r = shoal("export", "latest", str(out), "--runs-dir", trained_run["runs"])
    assert r.returncode == 0, r.stderr[-2000:]
    hf = HFEngine(str(out), temperature=0.0, max_new_tokens=8)
    vl = VLLMEngine(str(out), temperature=0.0, top_k=0, max_new_tokens=8, seed=0, worker_id="export")
    prompts = [Prompt(f"p{i}", t, encode_prompt(hf.tokenizer, t)) for i, t in enumerate(PROMPTS)]
    a, b = hf.generate(prompts), vl.generate(prompts)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    assert all(len(x.response_ids) > 0 for x in b)


def test_export_bad_input_is_one_line(trained_run, tmp_path):
    runs, run_id = trained_run["runs"], trained_run["run_id"]
    assert_one_line_error(shoal("export", "no-such-run", str(tmp_path / "o"), "--runs-dir", runs), "no-such-run")
    assert_one_line_error(
        shoal("export", run_id, str(tmp_path / "o"), "--runs-dir", runs, "--step", "3"),
        "--step 3",
        "steps 2, 4",
    )
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert_one_line_error(shoal("export", run_id, str(full), "--runs-dir", runs), "not empty", "--force")
    assert (full / "keep.txt").read_text() == "mine"
