"""Offline validation of infra/: KubeRay CRD schemas (unknown fields rejected), basic Kubernetes
checks for the other kinds, cross-references (Secrets, ConfigMaps, Services, RBAC), the compose
stack, the Dockerfile, and the job entrypoints against the real command-line parsers.

No cluster, no Docker daemon: everything here reads files.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from star_cli.cli import COMMANDS, build_parser
from star_cli.options import load

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
COMPOSE = REPO / "infra" / "compose.yaml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
NAMESPACE = "star"
CONTRACT_JOBS = ("extract", "train", "detect")  # `star <name>`: the commands the RayJobs run
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STAR_IMAGE = re.compile(r"^registry\.example\.com/star:(?P<version>[0-9][^-]*)-(?P<variant>cpu|cu128)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "ServiceAccount": "v1",
    "PersistentVolumeClaim": "v1", "Deployment": "apps/v1", "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1", "RayJob": "ray.io/v1", "RayCluster": "ray.io/v1",
}


# ----- loading ---------------------------------------------------------------------------------
def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = _docs()


def _of_kind(*kinds: str) -> list[tuple[str, dict]]:
    return [(f, d) for f, d in DOCS if d["kind"] in kinds]


def _named(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in _of_kind(kind)}


def _configmap_names() -> set[str]:
    names = set(_named("ConfigMap"))
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    names |= {g["name"] for g in kustomization.get("configMapGenerator", [])}
    return names


def _secret_keys() -> dict[str, set[str]]:
    return {name: set(d.get("stringData", {})) | set(d.get("data", {})) for name, d in _named("Secret").items()}


def _base_job_template() -> dict:
    return json.loads((K8S / "prefect-base-job-template.json").read_text())


def _ray_pod_specs(doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    pods = [("head", spec["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return pods


def _pod_templates() -> list[tuple[str, dict]]:
    """Every pod template in infra/k8s, named for messages."""
    out = []
    for f, d in _of_kind("Deployment"):
        out.append((f"{f}:{d['metadata']['name']}", d["spec"]["template"]))
    for f, d in _of_kind("RayJob", "RayCluster"):
        out += [(f"{f}:{group}", tpl) for group, tpl in _ray_pod_specs(d)]
    out.append(("prefect-base-job-template.json", _rendered_job_manifest()["spec"]["template"]))
    return out


def _rendered_job_manifest() -> dict:
    """The flow-run Job of the base job template with each ``{{ variable }}`` set to its default."""
    template = _base_job_template()
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}

    def render(node):
        if isinstance(node, dict):
            return {k: render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(v) for v in node]
        m = re.fullmatch(r"\{\{\s*([a-z_]+)\s*\}\}", node) if isinstance(node, str) else None
        return defaults[m[1]] if m else node

    return render(template["job_configuration"]["job_manifest"])


# ----- KubeRay CRD schemas, strict ----------------------------------------------------------------
def _strict(schema: dict) -> dict:
    """Reject unknown fields: additionalProperties: false wherever an object lists its properties.

    Kubernetes prunes unknown fields silently, so a misspelled key would pass unnoticed; objects
    marked x-kubernetes-preserve-unknown-fields stay open, as the API server treats them.
    """
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def crd_validators(data_dir) -> dict[str, jsonschema.Draft7Validator]:
    out = {}
    for kind, name in (("RayJob", "ray.io_rayjobs.yaml"), ("RayCluster", "ray.io_rayclusters.yaml")):
        crd = yaml.load((data_dir / "kuberay_crds" / name).read_text(), Loader=_LOADER)  # 2 MB: libyaml when present
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = jsonschema.Draft7Validator(_strict(v1["schema"]["openAPIV3Schema"]))
    return out


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


KUBERAY = _of_kind("RayJob", "RayCluster")


def test_every_kind_of_manifest_is_present():
    kinds = {d["kind"] for _, d in DOCS}
    assert {
        "RayJob",
        "RayCluster",
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Namespace",
    } <= kinds
    jobs = {d["spec"]["entrypoint"].split()[1] for _, d in _of_kind("RayJob")}
    assert jobs == set(CONTRACT_JOBS)


@pytest.mark.parametrize("name,doc", KUBERAY, ids=[f"{f}:{d['kind']}" for f, d in KUBERAY])
def test_kuberay_manifests_validate_against_the_crds(name, doc, crd_validators):
    assert _errors(crd_validators[doc["kind"]], doc) == []


def test_misspelled_or_mistyped_keys_are_rejected(crd_validators):
    (_, job) = next(iter(_of_kind("RayJob")))
    bad = copy.deepcopy(job)
    bad["spec"]["shutdownAfterJobFinish"] = bad["spec"].pop("shutdownAfterJobFinishes")
    errors = _errors(crd_validators["RayJob"], bad)
    assert any("shutdownAfterJobFinish' was unexpected" in e for e in errors), errors
    nested = copy.deepcopy(job)  # deep inside the embedded pod spec
    container = nested["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert any("volumeMount' was unexpected" in e for e in _errors(crd_validators["RayJob"], nested))
    typed = copy.deepcopy(job)
    typed["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    assert any("is not of type 'integer'" in e for e in _errors(crd_validators["RayJob"], typed))
    missing = copy.deepcopy(job)
    del missing["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"]
    assert any("'minReplicas' is a required property" in e for e in _errors(crd_validators["RayJob"], missing))
    (_, cluster) = next(iter(_of_kind("RayCluster")))
    auth = copy.deepcopy(cluster)
    auth["spec"]["authOptions"]["mode"] = "tokens"
    assert any("is not one of ['disabled', 'token']" in e for e in _errors(crd_validators["RayCluster"], auth))


def _ray_pin() -> str:
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")]
    return pin.split("==")[1]


@pytest.mark.parametrize("name,doc", KUBERAY, ids=[f"{f}:{d['kind']}" for f, d in KUBERAY])
def test_ray_clusters_are_complete(name, doc):
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    assert spec["rayVersion"] == _ray_pin() == "2.60.0"
    assert spec["authOptions"]["mode"] in ("token", "disabled")  # decided explicitly
    if spec["authOptions"]["mode"] == "token":
        assert "auth_token" in _secret_keys()[spec["authOptions"]["secretName"]]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert "gpu" in groups
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    gpu = groups["gpu"]["template"]["spec"]
    for container in gpu["containers"]:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu.get("tolerations", []))
    for group, template in _ray_pod_specs(doc):
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert STAR_IMAGE.match(container["image"]).group("variant") == "cu128", (group, container["image"])
            shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            assert shm and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", f"{name}:{group}: no /dev/shm"
            refs = {next(iter(r.values()))["name"] for r in container.get("envFrom", [])}
            assert {"star-object-store", "star-env"} <= refs, f"{name}:{group}: credentials/config not attached"


def _parse_star(argv: list[str], where: str) -> argparse.Namespace:
    """``star <command> ARGS`` parsed by the real parser of ``star <command>`` (as ``star <command> --help`` shows it)."""
    if argv[:3] == ["python", "-m", "star_cli"]:  # the same CLI, importing the working copy (ray job submit --working-dir)
        argv = ["star", *argv[3:]]
    assert argv[0] == "star" and argv[1] in COMMANDS, f"{where}: {argv[:2]} is not a star command"
    parser = build_parser(argv[1])
    def refuse(status=0, message=None):
        pytest.fail(f"{where}: star {argv[1]} rejects {argv[2:]}: {message}")

    parser.exit = refuse  # type: ignore[method-assign]
    return parser.parse_args(argv[2:])


RAYJOBS = _of_kind("RayJob")


@pytest.mark.parametrize("name,doc", RAYJOBS, ids=[f for f, _ in RAYJOBS])
def test_rayjob_entrypoints_are_real_commands(name, doc):
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "star" and argv[1] in CONTRACT_JOBS, f"{name}: the entrypoint must be `star <command>`, got {argv[:2]}"
    cfg = load(_parse_star(argv, name))
    star_env = _named("ConfigMap")["star-env"]["data"]
    assert cfg.storage.lake_uri == star_env["STAR_LAKE_URI"]
    assert cfg.resources.gpu, f"{name}: the GPU worker group is there, the job should use it"
    if argv[1] == "extract":
        assert cfg.extract.ray, f"{name}: extraction on a Ray cluster must be distributed (--ray)"


def _ray_job_submits() -> list[tuple[str, list[str]]]:
    """``ray job submit ... -- COMMAND`` lines of the manifests, compose file and docs: (file, COMMAND argv)."""
    found = []
    for path in [*K8S.glob("*.yaml"), COMPOSE, *(REPO / "docs").glob("*.md"), REPO / "README.md"]:
        for line in path.read_text().replace("\\\n", " ").splitlines():
            if "ray job submit" in line and " -- " in line:
                command = line.split(" -- ", 1)[1].strip().strip("`")
                found.append((path.name, shlex.split(command)))
    return found


def test_ray_job_submit_commands_are_star_commands():
    submits = _ray_job_submits()
    assert submits, "the manifests and docs show how to submit a job"
    for where, argv in submits:
        _parse_star(argv, where)


# ----- basic Kubernetes checks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,doc", DOCS, ids=[f"{f}:{d['kind']}:{d['metadata'].get('name') or d['metadata'].get('generateName')}" for f, d in DOCS]
)
def test_kubernetes_basics(name, doc):
    assert doc["apiVersion"] == API_VERSIONS[doc["kind"]]
    meta = doc["metadata"]
    ident = meta.get("name") or (meta.get("generateName") if doc["kind"] == "RayJob" else None)
    assert ident and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-?$", ident), f"{name}: bad name {ident!r}"
    if doc["kind"] != "Namespace":
        assert meta["namespace"] == NAMESPACE
    assert doc["kind"] != "Secret" or "EXAMPLE" in (K8S / name).read_text()  # only example secrets in git


@pytest.mark.parametrize("where,template", _pod_templates(), ids=[w for w, _ in _pod_templates()])
def test_pod_templates(where, template):
    pod = template["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps, secrets = _configmap_names(), _secret_keys()
    pvcs, accounts = set(_named("PersistentVolumeClaim")), set(_named("ServiceAccount"))
    names = [c["name"] for c in pod["containers"]]
    assert len(names) == len(set(names))
    if "serviceAccountName" in pod:
        assert pod["serviceAccountName"] in accounts
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in pvcs
        if "configMap" in v:
            assert v["configMap"]["name"] in configmaps
    for c in pod["containers"]:
        image = c["image"]
        assert ":" in image and not image.endswith(":latest"), f"{where}: pin the image tag ({image})"
        if image.startswith("registry.example.com/star"):
            assert STAR_IMAGE.match(image).group("version") == PYPROJECT["project"]["version"]
        ports = c.get("ports", [])
        assert all(1 <= p["containerPort"] <= 65535 and isinstance(p["containerPort"], int) for p in ports)
        port_names = [p["name"] for p in ports if "name" in p]
        assert len(port_names) == len(set(port_names)) and all(len(n) <= 15 for n in port_names)
        for e in c.get("env", []):
            assert ENV_NAME.match(e["name"]), f"{where}: env name {e['name']!r}"
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], f"{where}: secret {ref['name']} has no key {ref['key']}"
        for ref in c.get("envFrom", []):
            if "secretRef" in ref:
                assert ref["secretRef"]["name"] in secrets
            if "configMapRef" in ref:
                assert ref["configMapRef"]["name"] in configmaps
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}: mount of undeclared volume {m['name']}"
        for kind in ("requests", "limits"):
            for resource, qty in c.get("resources", {}).get(kind, {}).items():
                if qty is not None:
                    assert QUANTITY.match(str(qty)), f"{where}: {resource}={qty!r}"
        for probe in ("readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str):
                assert port in port_names, f"{where}: {probe} on unknown port {port}"


def test_deployments_select_their_pods_and_services_reach_them():
    deployments = _named("Deployment")
    for name, d in deployments.items():
        selector, labels = d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"Deployment {name}: selector does not match its pod labels"
    for name, svc in _named("Service").items():
        matched = [
            d for d in deployments.values() if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"Service {name} selects no Deployment"
        containers = [c for d in matched for c in d["spec"]["template"]["spec"]["containers"]]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            known = {p.get("name") for c in containers for p in c.get("ports", [])} | {
                p["containerPort"] for c in containers for p in c.get("ports", [])
            }
            assert target in known, f"Service {name}: targetPort {target} is no container port"


def test_rbac_references_and_rayjob_permissions():
    roles, accounts = _named("Role"), set(_named("ServiceAccount"))
    for name, binding in _named("RoleBinding").items():
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles, name
        assert all(s["kind"] == "ServiceAccount" and s["name"] in accounts for s in binding["subjects"]), name
    runner = _base_job_template()["variables"]["properties"]["service_account_name"]["default"]
    (binding,) = [b for b in _named("RoleBinding").values() if any(s["name"] == runner for s in b["subjects"])]
    rules = roles[binding["roleRef"]["name"]]["rules"]
    assert any(
        "ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and {"create", "get", "watch", "delete"} <= set(r["verbs"])
        for r in rules
    )
    worker = _named("Deployment")["prefect-worker"]["spec"]["template"]["spec"]
    (wbinding,) = [b for b in _named("RoleBinding").values() if any(s["name"] == worker["serviceAccountName"] for s in b["subjects"])]
    wrules = roles[wbinding["roleRef"]["name"]]["rules"]
    assert any("batch" in r["apiGroups"] and "jobs" in r["resources"] and "create" in r["verbs"] for r in wrules)


def test_service_urls_in_config_point_at_services():
    env = _named("ConfigMap")["star-env"]["data"]
    services = _named("Service")
    for key, value in env.items():
        m = re.match(r"^https?://(?P<host>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)", value)
        if m:
            assert m["ns"] == NAMESPACE and m["host"] in services, f"{key}={value}"
            assert int(m["port"]) in {p["port"] for p in services[m["host"]]["spec"]["ports"]}, f"{key}={value}"
    assert {"STAR_LAKE_URI", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"} <= env.keys()


def test_prefect_worker_and_base_job_template():
    template = _base_job_template()
    props = template["variables"]["properties"]
    assert props["namespace"]["default"] == NAMESPACE
    assert STAR_IMAGE.match(props["image"]["default"])
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["kind"] == "Job" and manifest["spec"]["template"]["spec"]["serviceAccountName"] == "{{ service_account_name }}"
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    head_svc = f"{_named('RayCluster')['star']['metadata']['name']}-head-svc"  # KubeRay's head Service name
    assert env["RAY_ADDRESS"]["value"] == f"ray://{head_svc}.{NAMESPACE}.svc.cluster.local:10001"
    client_ports = {
        p["containerPort"] for p in _named("RayCluster")["star"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert 10001 in client_ports
    assert env["RAY_AUTH_MODE"]["value"] == _named("RayCluster")["star"]["spec"]["authOptions"]["mode"]
    # placeholders name declared variables
    placeholders = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(props), placeholders - set(props)
    worker = _named("Deployment")["prefect-worker"]["spec"]["template"]["spec"]["containers"][0]
    script = " ".join(worker["args"])
    assert "--pool star-k8s --type kubernetes" in script and "/etc/prefect/base-job-template.json" in script
    assert worker["image"].startswith("prefecthq/prefect:" + PYPROJECT_PREFECT())


def PYPROJECT_PREFECT() -> str:  # noqa: N802 - reads like the constant it is
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("prefect==")]
    return pin.split("==")[1]


def test_base_job_template_renders_with_prefect_kubernetes():
    """Where prefect-kubernetes is installed (the worker image has it), the template must render."""
    worker = pytest.importorskip("prefect_kubernetes.worker")
    from prefect.utilities.templating import apply_values

    template = _base_job_template()
    values = {k: v.get("default") for k, v in template["variables"]["properties"].items() if "default" in v}
    config = worker.KubernetesWorkerJobConfiguration(
        **apply_values(template["job_configuration"], {**values, "env": {}, "labels": {}, "annotations": {}})
    )
    assert config.job_manifest["metadata"]["namespace"] == NAMESPACE


def test_kustomization_lists_the_standing_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=")[-1]).is_file(), entry
    on_demand = {f for f, d in DOCS if d["kind"] in ("RayJob", "Secret")}
    standing = {f for f, _ in DOCS} - on_demand
    assert standing == set(kustomization["resources"]), standing ^ set(kustomization["resources"])
    assert all(STAR_IMAGE.pattern.startswith("^" + re.escape(i["name"])) for i in kustomization["images"])


# ----- compose -------------------------------------------------------------------------------------
def _load_compose() -> dict:
    """compose.yaml with ``${VAR:-default}`` interpolated the way `docker compose` does without VAR set."""
    text = re.sub(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", r"\1", COMPOSE.read_text())
    assert "${" not in text, "a variable without a default in compose.yaml"
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


def _container_ports(service: dict) -> set[int]:
    ports = {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}
    return ports | {int(str(p).split("/")[0]) for p in service.get("expose", [])}


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_compose_services_images_and_ports(compose):
    services = compose["services"]
    assert {"minio", "mlflow", "prefect-server", "ray-head", "ray-worker", "star-worker"} <= services.keys()
    for name, svc in services.items():
        assert "image" in svc, f"{name}: no image"
        assert not svc["image"].endswith(":latest")
        if "build" in svc:
            build = svc["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == REPO and (context / build["dockerfile"]) == DOCKERFILE, name
            assert build["args"]["TORCH_VARIANT"] in ("cpu", "cu128")
            assert svc["image"].rsplit("-", 1)[-1] == build["args"]["TORCH_VARIANT"], f"{name}: image tag and torch variant disagree"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            assert volume.split(":")[0] in compose.get("volumes", {}), f"{name}: undeclared volume {volume}"
    star_images = {svc["image"] for svc in services.values() if "build" in svc and svc["build"]["args"]["TORCH_VARIANT"] == "cpu"}
    assert len(star_images) == 1, f"one CPU star image for all services, got {star_images}"


def test_compose_urls_point_at_declared_services_and_ports(compose):
    services = compose["services"]
    checked = 0
    for name, svc in services.items():
        for text in _strings({k: svc.get(k) for k in ("environment", "command", "entrypoint")}):
            for host, port in re.findall(r"(?:[a-z0-9+]+://|--address=)([a-z][a-z0-9-]*):(\d+)", text):
                if host in ("localhost",):
                    continue
                assert host in services, f"{name}: {text!r} names unknown service {host}"
                assert int(port) in _container_ports(services[host]), f"{name}: {text!r}: {host} does not listen on {port}"
                checked += 1
    assert checked >= 8
    for name in ("ray-head", "ray-worker", "star-worker"):
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "disabled"  # decided explicitly


def test_compose_buckets_match_the_stack(compose):
    services = compose["services"]
    script = services["create-buckets"]["command"][0]
    buckets = set(re.findall(r'"(star-[a-z-]+)"', script))
    lake_bucket = services["star-worker"]["environment"]["STAR_LAKE_URI"].split("/")[2]
    artifacts = next(a for a in services["mlflow"]["command"] if a.startswith("--artifacts-destination=")).split("//")[1]
    assert {lake_bucket, artifacts} <= buckets
    k8s_env = _named("ConfigMap")["star-env"]["data"]
    assert services["star-worker"]["environment"]["STAR_LAKE_URI"] == k8s_env["STAR_LAKE_URI"]


# ----- Dockerfile ----------------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _dockerignore() -> list[str]:
    return [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]


def _ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pat) or path.startswith(pat.rstrip("/") + "/") or path == pat for pat in _dockerignore())


def test_dockerfile_copies_only_existing_unignored_files():
    copies = [rest for op, rest in _instructions() if op in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert not _ignored(source), f"COPY source {source} is excluded by .dockerignore"
    for must in ("pyproject.toml", "star_core", "jobs", "flows", "star_cli"):
        assert any(must in rest.split() for rest in copies), f"{must} not copied"


def test_dockerfile_torch_variant_and_entrypoint():
    ops = _instructions()
    args = dict(rest.split("=", 1) for op, rest in ops if op == "ARG" and "=" in rest)
    assert args["TORCH_VARIANT"] == "cpu"
    (torch_pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert args["TORCH_VERSION"] == torch_pin.split("==")[1] == "2.13.0"
    runs = " ".join(rest for op, rest in ops if op == "RUN")
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in runs and '"torch==${TORCH_VERSION}"' in runs
    assert "cpu|cu128" in runs  # other values are refused
    (entrypoint,) = [json.loads(rest) for op, rest in ops if op == "ENTRYPOINT"]
    assert entrypoint[-1] == "star" and "star" in PYPROJECT["project"]["scripts"]
    assert PYPROJECT["project"]["scripts"]["star"] == "star_cli.cli:main"
    assert ops[1][0] == "FROM" and "python:3.11" in args["PYTHON_IMAGE"]


# ----- commands named in manifests and docs exist ---------------------------------------------------
def test_commands_in_manifests_and_docs_exist():
    executables = {"mlflow", "prefect", "ray", "python", "star", "/bin/sh"}
    for _, template in _pod_templates():
        for c in template["spec"]["containers"]:
            if "command" in c:
                assert c["command"][0] in executables, c["command"]
    for name, svc in _load_compose()["services"].items():
        if "entrypoint" in svc and svc["image"].startswith("star:"):
            assert svc["entrypoint"][0] in executables, name
    texts = [p.read_text() for p in [K8S / "raycluster.yaml", REPO / "docs" / "deploy_kubernetes.md", COMPOSE] if p.exists()]
    for text in texts:
        assert not re.findall(r"python -m jobs\.([a-z_]+)", text), "jobs are run as `star <command>`, not `python -m jobs.<name>`"
        for command in re.findall(r"(?m)(?:^\s*(?:\$\s+)?|`|&&\s+)star ([a-z][a-z0-9-]*)", text):
            assert command in COMMANDS, f"`star {command}` is not a star command"
