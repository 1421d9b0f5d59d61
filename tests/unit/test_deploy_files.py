"""deploy/: what can be validated without a cluster. The cluster launcher YAML against Ray's own
schema (what `ray up` checks); the job's runtime_env as Ray parses it; the GPU config as Shoal
loads it; the KubeRay RayJob against the rules its CRD and Kubernetes enforce (no API server
here for `kubectl --dry-run`); the Dockerfile installing with the README's setup command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Kubernetes resource quantities (k8s.io/apimachinery resource.Quantity): a number with an
# optional binary (Ki..Ei), decimal (n, u, m, k, M, G, T, P, E) or exponent suffix.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(\d+(\.\d*)?|\.\d+)))?$")


def test_cluster_launcher_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # raises jsonschema.ValidationError naming the field
    assert cfg["head_node_type"] in cfg["available_node_types"]
    with pytest.raises(Exception, match="bogus"):  # the check can fail
        bad = {**cfg, "available_node_types": {**cfg["available_node_types"], "head": {"bogus": 1}}}
        validate_config(prepare_config(bad))


def test_runtime_env_is_one_ray_accepts():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    parsed = RuntimeEnv(**env)
    url = parsed["env_vars"]["SHOAL_REDIS_URL"]
    assert url.startswith("redis://") and "@" not in url  # no credentials in a shipped file


def test_gpu_config_loads_with_vllm_workers_on_gpus():
    from shoal.services.config import load_config

    cfg = load_config(DEPLOY / "configs" / "gpu.yaml")
    assert cfg.rollout.engine == "vllm" and cfg.rollout.num_gpus_per_worker == 1 and cfg.run.learner_num_gpus == 1


def _containers(template):
    return template["spec"]["containers"]


def test_rayjob_manifest_is_well_formed():
    job = yaml.safe_load((DEPLOY / "k8s" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])  # a DNS-1123 label
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:2] == ["shoal", "train"]
    assert (ROOT / Path(entry[2]).relative_to("/opt/shoal")).is_file()  # the image's WORKDIR is /opt/shoal
    cluster = spec["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # map[string]string
        pod = group["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in _containers(group["template"]):
            assert c["image"] == _containers(groups[0]["template"])[0]["image"]
            for kind in ("limits", "requests"):
                for name, q in c["resources"][kind].items():
                    assert isinstance(q, str) and QUANTITY.match(q), (c["name"], name, q)
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, c["name"]
    for worker in cluster["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
        assert _containers(worker["template"])[0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_quantity_rule_refuses_what_kubernetes_refuses():
    for good in ("8", "32Gi", "0.5", "500m", "1e3"):
        assert QUANTITY.match(good), good
    for bad in ("8 GB", "32gi", "lots", ""):
        assert not QUANTITY.match(bad), bad


def test_dockerfile_installs_with_the_readmes_setup_command():
    docker = (DEPLOY / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "bash deploy/setup.sh" in first  # the README's first command
    runs = [line for line in docker.splitlines() if line.startswith("RUN if")]
    assert runs and "SHOAL_GPU=1 bash deploy/setup.sh" in runs[0] and "else bash deploy/setup.sh" in runs[0]
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", docker, flags=re.M))
    assert {"base-cpu", "base-cuda"} <= stages and "FROM base-${VARIANT}" in docker
