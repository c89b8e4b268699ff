#!/usr/bin/env python3
"""Checks a Kubernetes manifest of upload-gateway (conf/kubernetes.yaml); run by
deploy/check-kubernetes.sh, which installs what this needs (PyYAML, kubernetes-validate).

Three groups, each printed as it runs; the exit status is 1 when any check fails:

  schema   every document against the Kubernetes OpenAPI schemas bundled in the
           kubernetes-validate package (strict: unknown fields are errors; an unknown
           kind/apiVersion is an error too), for each --kubernetes-version;
  pss      the Pod Security Standards "restricted" profile (which includes "baseline"), for
           every pod template, rule by rule as the Kubernetes documentation states them;
  gateway  this project's own rules: the ConfigMap's gateway.toml (known keys only, listeners
           on the container ports), checksum/config, probes, preStop/drain timing, and that
           the Service, PodDisruptionBudget and volumes point at the right things.

--self-test additionally breaks in-memory copies of the manifest and requires each group to
reject them, so a checker that passes everything is caught.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import tomllib
from pathlib import Path

import yaml

# ---------------------------------------------------------------------------------------------
# Loading


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (the API server's strict decoding does;
    PyYAML would silently keep the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise SystemExit(f"{path}: document {i + 1} is not a mapping")
    return docs


def name_of(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


# ---------------------------------------------------------------------------------------------
# Reporting


class Report:
    def __init__(self, quiet: bool = False):
        self.passed = 0
        self.failed = 0
        self.quiet = quiet

    def section(self, title: str) -> None:
        if not self.quiet:
            print(f"\n== {title}")

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            self.passed += 1
            if not self.quiet:
                print(f"  ok    {what}")
        else:
            self.failed += 1
            if not self.quiet:
                print(f"  FAIL  {what}" + (f": {why}" if why else ""))
        return ok


# ---------------------------------------------------------------------------------------------
# schema: kubernetes-validate's bundled JSON schemas


def check_schema(docs: list[dict], versions: list[str], report: Report) -> None:
    import kubernetes_validate as kv

    report.section(f"schema (kubernetes-validate {kv.__version__}, strict, bundled schemas)")
    for version in versions:
        for doc in docs:
            what = f"{name_of(doc)} against Kubernetes {version}"
            try:
                used = kv.validate(doc, version, strict=True)
                report.check(True, f"{what} (schema v{used})")
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(document)"
                report.check(False, what, f"{path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                report.check(False, what, e.message)
            except Exception as e:  # VersionNotSupportedError and friends
                report.check(False, what, getattr(e, "message", None) or repr(e))


# ---------------------------------------------------------------------------------------------
# pss: Pod Security Standards, "restricted" (baseline + restricted rules)

# Controls as listed in https://kubernetes.io/docs/concepts/security/pod-security-standards/
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
RESTRICTED_ADD_CAPABILITIES = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t",
                 "container_engine_t"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}
SECCOMP_RESTRICTED = {"RuntimeDefault", "Localhost"}
APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}


def pod_templates(doc: dict) -> list[tuple[str, dict, dict]]:
    """(label, pod metadata, pod spec) for every pod a document describes."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [(name_of(doc), doc.get("metadata") or {}, spec)]
    if kind in {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job",
                "ReplicationController"}:
        t = spec.get("template") or {}
        return [(name_of(doc), t.get("metadata") or {}, t.get("spec") or {})]
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return [(name_of(doc), t.get("metadata") or {}, t.get("spec") or {})]
    return []


def all_containers(spec: dict) -> list[dict]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers")
            for c in (spec.get(key) or [])]


def sc(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def check_pss(docs: list[dict], report: Report) -> None:
    report.section("Pod Security Standards: restricted (baseline rules included)")
    pods = [p for d in docs for p in pod_templates(d)]
    report.check(bool(pods), "the manifest has at least one pod template")
    for label, meta, spec in pods:
        containers = all_containers(spec)
        names = [c.get("name", "?") for c in containers]
        psc = sc(spec)

        def bad(pred) -> list[str]:
            return [c.get("name", "?") for c in containers if pred(c)]

        report.check(bool(containers), f"{label}: has containers ({', '.join(names)})")
        # --- baseline
        hp = (psc.get("windowsOptions") or {}).get("hostProcess") is True or bad(
            lambda c: (sc(c).get("windowsOptions") or {}).get("hostProcess") is True)
        report.check(not hp, f"{label}: no Windows HostProcess")
        host_ns = [k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
        report.check(not host_ns, f"{label}: no host namespaces (hostNetwork/hostPID/hostIPC)",
                     ", ".join(host_ns))
        priv = bad(lambda c: sc(c).get("privileged") is True)
        report.check(not priv, f"{label}: no privileged containers", ", ".join(priv))
        caps_base = bad(lambda c: not set((sc(c).get("capabilities") or {}).get("add") or [])
                        <= BASELINE_CAPABILITIES)
        report.check(not caps_base, f"{label}: added capabilities within the baseline set",
                     ", ".join(caps_base))
        host_path = [v.get("name", "?") for v in spec.get("volumes") or [] if "hostPath" in v]
        report.check(not host_path, f"{label}: no hostPath volumes", ", ".join(host_path))
        host_ports = [f"{c.get('name', '?')}:{p.get('hostPort')}" for c in containers
                      for p in c.get("ports") or [] if p.get("hostPort") not in (None, 0)]
        report.check(not host_ports, f"{label}: no hostPorts", ", ".join(host_ports))
        aa_bad = []
        for owner in [("pod", psc)] + [(c.get("name", "?"), sc(c)) for c in containers]:
            t = (owner[1].get("appArmorProfile") or {}).get("type")
            if t is not None and t not in APPARMOR_TYPES:
                aa_bad.append(f"{owner[0]}={t}")
        for k, v in (meta.get("annotations") or {}).items():
            if k.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                    v == "runtime/default" or str(v).startswith("localhost/")):
                aa_bad.append(f"{k}={v}")
        report.check(not aa_bad, f"{label}: AppArmor unset, RuntimeDefault or Localhost",
                     ", ".join(aa_bad))
        se_bad = []
        for owner, ctx in [("pod", psc)] + [(c.get("name", "?"), sc(c)) for c in containers]:
            se = ctx.get("seLinuxOptions") or {}
            if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
                se_bad.append(owner)
        report.check(not se_bad, f"{label}: SELinux type allowed, no user/role",
                     ", ".join(se_bad))
        proc = bad(lambda c: sc(c).get("procMount", "Default") != "Default")
        report.check(not proc, f"{label}: /proc mount Default", ", ".join(proc))
        sysctls = [s.get("name") for s in psc.get("sysctls") or []
                   if s.get("name") not in SAFE_SYSCTLS]
        report.check(not sysctls, f"{label}: only safe sysctls", ", ".join(map(str, sysctls)))
        # --- restricted
        vol_bad = []
        for v in spec.get("volumes") or []:
            types = set(v) - {"name"}
            if not types or not types <= RESTRICTED_VOLUME_TYPES:
                vol_bad.append(f"{v.get('name', '?')}({', '.join(sorted(types)) or 'no type'})")
        report.check(not vol_bad, f"{label}: volume types allowed "
                     f"({', '.join(sorted({t for v in spec.get('volumes') or [] for t in set(v) - {'name'}})) or 'none'})",
                     ", ".join(vol_bad))
        esc = bad(lambda c: sc(c).get("allowPrivilegeEscalation") is not False)
        report.check(not esc, f"{label}: allowPrivilegeEscalation false in every container",
                     ", ".join(esc))
        pod_nonroot = psc.get("runAsNonRoot") is True
        nonroot = bad(lambda c: sc(c).get("runAsNonRoot") is False or (
            not pod_nonroot and sc(c).get("runAsNonRoot") is not True))
        report.check(not nonroot, f"{label}: runAsNonRoot true (pod or every container)",
                     ", ".join(nonroot))
        root_uid = (["pod"] if psc.get("runAsUser") == 0 else []) + bad(
            lambda c: sc(c).get("runAsUser") == 0)
        report.check(not root_uid, f"{label}: runAsUser is not 0", ", ".join(root_uid))
        pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
        seccomp_bad = []
        if pod_seccomp is not None and pod_seccomp not in SECCOMP_RESTRICTED:
            seccomp_bad.append(f"pod={pod_seccomp}")
        for c in containers:
            t = (sc(c).get("seccompProfile") or {}).get("type")
            if (t is None and pod_seccomp is None) or (t is not None and t not in SECCOMP_RESTRICTED):
                seccomp_bad.append(f"{c.get('name', '?')}={t}")
        report.check(not seccomp_bad,
                     f"{label}: seccompProfile RuntimeDefault or Localhost "
                     f"(pod: {pod_seccomp or 'unset'})", ", ".join(seccomp_bad))
        drop = bad(lambda c: "ALL" not in ((sc(c).get("capabilities") or {}).get("drop") or []))
        report.check(not drop, f"{label}: capabilities drop ALL in every container",
                     ", ".join(drop))
        add = bad(lambda c: not set((sc(c).get("capabilities") or {}).get("add") or [])
                  <= RESTRICTED_ADD_CAPABILITIES)
        report.check(not add, f"{label}: capabilities add only NET_BIND_SERVICE", ", ".join(add))


# ---------------------------------------------------------------------------------------------
# gateway: this project's rules


def toml_keys(doc: dict) -> set[str]:
    """section.key for every key of every top-level table (inline-table values are data)."""
    keys = set()
    for section, table in doc.items():
        if isinstance(table, dict):
            keys.update(f"{section}.{k}" for k in table)
        else:
            keys.add(section)
    return keys


def port_of(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def first(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def check_gateway(docs: list[dict], reference: Path, report: Report) -> None:
    report.section("upload-gateway manifest rules")
    for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"):
        report.check(len(first(docs, kind)) == 1, f"exactly one {kind}",
                     f"found {len(first(docs, kind))}")
    cms = [d for d in first(docs, "ConfigMap") if "gateway.toml" in (d.get("data") or {})]
    deps = first(docs, "Deployment")
    if not (cms and deps):
        report.check(False, "a ConfigMap with gateway.toml and a Deployment to check")
        return
    cm, dep = cms[0], deps[0]
    text = cm["data"]["gateway.toml"]
    try:
        conf = tomllib.loads(text)
        report.check(True, "gateway.toml parses as TOML")
    except tomllib.TOMLDecodeError as e:
        report.check(False, "gateway.toml parses as TOML", str(e))
        return
    known = toml_keys(tomllib.loads(reference.read_text(encoding="utf-8")))
    unknown = sorted(toml_keys(conf) - known)
    report.check(not unknown, f"gateway.toml uses only keys that {reference} documents",
                 ", ".join(unknown))
    server, upstream = conf.get("server", {}), conf.get("upstream", {})
    obs = conf.get("observability", {})
    report.check(bool(upstream.get("servers")), "upstream.servers is set",
                 "the gateway refuses an empty list")

    tmpl = dep["spec"]["template"]
    spec = tmpl["spec"]
    gw = list(spec.get("containers") or [])
    report.check(len(gw) == 1, "the Deployment has one container")
    if not gw:
        return
    c = gw[0]
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    listen = [port_of(a) for a in server.get("listen", [])]
    report.check(any(p == ports.get("http") for _, p in listen),
                 f"server.listen includes the container port http ({ports.get('http')})",
                 str(server.get("listen")))
    report.check(all(h not in ("127.0.0.1", "::1", "localhost") for h, _ in listen),
                 "server.listen is not loopback-only (the Service must reach it)")
    admin = obs.get("admin_listen", "")
    admin_host, admin_port = port_of(admin) if admin else ("", None)
    report.check(admin_port == ports.get("admin") and admin_host not in ("127.0.0.1", "::1"),
                 f"observability.admin_listen is the container port admin ({ports.get('admin')}) "
                 "on a non-loopback address", admin or "unset")

    want = hashlib.sha256(text.encode("utf-8")).hexdigest()
    have = (tmpl.get("metadata", {}).get("annotations") or {}).get("checksum/config")
    report.check(have == want, f"checksum/config is the sha256 of gateway.toml ({want[:12]}…)",
                 f"annotation {have}; run deploy/update-config-checksum.sh")

    # The config file the args name lives on the ConfigMap's volume.
    args = c.get("args") or []
    cfg = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    cfg_vol = [n for n, v in vols.items()
               if (v.get("configMap") or {}).get("name") == cm["metadata"]["name"]]
    ok = bool(cfg and cfg_vol and cfg_vol[0] in mounts
              and cfg == mounts[cfg_vol[0]]["mountPath"].rstrip("/") + "/gateway.toml")
    report.check(ok, f"--config {cfg} is gateway.toml on the ConfigMap's volume")

    def probe(name: str, path: str) -> None:
        get = (c.get(name) or {}).get("httpGet") or {}
        report.check(get.get("path") == path and get.get("port") in ("admin", ports.get("admin")),
                     f"{name} is GET {path} on the admin port", str(get) or "missing")

    probe("startupProbe", "/healthz")
    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    rp = c.get("readinessProbe") or {}
    report.check((rp.get("periodSeconds"), rp.get("failureThreshold"), rp.get("successThreshold"))
                 == (5, 3, 1), "readiness rides out blips: period 5 s x 3 failures, 1 success")

    sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    report.check(isinstance(sleep, int) and sleep > 0, f"preStop sleep action ({sleep} s)")
    grace = server.get("shutdown_grace_s", 10)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    need = (sleep or 0) + grace + 1
    report.check(tgps >= need,
                 f"terminationGracePeriodSeconds {tgps} > preStop {sleep} + shutdown_grace_s "
                 f"{grace} (with the 1 s runtime wind-down: >= {need})")

    csc = sc(c)
    report.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem true")
    report.check(spec.get("automountServiceAccountToken") is False,
                 "automountServiceAccountToken false")
    psc = sc(spec)
    report.check((psc.get("runAsUser"), psc.get("runAsGroup")) == (65532, 65532),
                 "pod runs as 65532:65532 (the image's nonroot user)")
    keys = {t.get("topologyKey"): t.get("whenUnsatisfiable")
            for t in spec.get("topologySpreadConstraints") or []}
    report.check("kubernetes.io/hostname" in keys
                 and keys.get("topology.kubernetes.io/zone") == "ScheduleAnyway",
                 "spread over hostname, and over zone with ScheduleAnyway", str(keys))
    env = {e.get("name") for e in c.get("env") or []}
    report.check("RUST_LOG" in env, "RUST_LOG is set")
    res = c.get("resources") or {}
    report.check(bool(res.get("requests")) and bool(res.get("limits")),
                 "resources requests and limits")

    labels = tmpl.get("metadata", {}).get("labels") or {}

    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    report.check(selects(dep["spec"].get("selector", {}).get("matchLabels") or {}),
                 "the Deployment's selector matches its pod labels")
    for svc in first(docs, "Service"):
        s = svc.get("spec") or {}
        report.check(selects(s.get("selector") or {}), f"{name_of(svc)} selects the pods")
        for p in s.get("ports") or []:
            t = p.get("targetPort")
            report.check(t in ports or t in ports.values(),
                         f"{name_of(svc)} port {p.get('name')} targets container port {t}")
    for pdb in first(docs, "PodDisruptionBudget"):
        s = pdb.get("spec") or {}
        report.check(selects((s.get("selector") or {}).get("matchLabels") or {}),
                     f"{name_of(pdb)} selects the pods")
        replicas = dep["spec"].get("replicas", 1)
        ok = ("maxUnavailable" in s) != ("minAvailable" in s) and (
            s.get("maxUnavailable", 1) not in (0, "0%")
            and (not isinstance(s.get("minAvailable"), int) or s["minAvailable"] < replicas))
        report.check(ok, f"{name_of(pdb)} lets one pod at a time go "
                     f"(maxUnavailable {s.get('maxUnavailable')}, minAvailable "
                     f"{s.get('minAvailable')}, replicas {replicas})")


# ---------------------------------------------------------------------------------------------
# Self-test: every group must reject a broken copy


def deployment(docs: list[dict]) -> dict:
    return next(d for d in docs if d.get("kind") == "Deployment")


def broken_for_schema(docs):
    docs = copy.deepcopy(docs)
    d = deployment(docs)
    d["spec"]["replicas"] = "three"
    return docs


def broken_for_schema_unknown_field(docs):
    docs = copy.deepcopy(docs)
    c = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    c["imagePullPolcy"] = c.pop("imagePullPolicy", "IfNotPresent")
    return docs


def broken_for_schema_kind(docs):
    docs = copy.deepcopy(docs)
    for d in docs:
        if d.get("kind") == "PodDisruptionBudget":
            d["apiVersion"] = "policy/v1beta1"  # removed in Kubernetes 1.25
    return docs


def broken_for_pss(docs):
    docs = copy.deepcopy(docs)
    spec = deployment(docs)["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    c = spec["containers"][0]
    c["securityContext"]["privileged"] = True
    c["securityContext"]["allowPrivilegeEscalation"] = True
    c["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    spec["securityContext"].pop("seccompProfile", None)
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    return docs


def broken_for_gateway(docs):
    docs = copy.deepcopy(docs)
    for d in docs:
        if d.get("kind") == "ConfigMap":
            d["data"]["gateway.toml"] += "\n[server2]\nthreds = 4\n"
    spec = deployment(docs)["spec"]["template"]["spec"]
    spec["terminationGracePeriodSeconds"] = 10
    return docs


def self_test(docs, versions, reference) -> bool:
    cases = [
        ("schema: wrong type (replicas: \"three\")",
         lambda r: check_schema(broken_for_schema(docs), versions[:1], r)),
        ("schema: unknown field (imagePullPolcy)",
         lambda r: check_schema(broken_for_schema_unknown_field(docs), versions[:1], r)),
        ("schema: removed apiVersion (policy/v1beta1 PodDisruptionBudget)",
         lambda r: check_schema(broken_for_schema_kind(docs), versions[:1], r)),
        ("pss: hostNetwork, privileged, escalation, NET_ADMIN, no seccomp, hostPath",
         lambda r: check_pss(broken_for_pss(docs), r)),
        ("gateway: unknown config keys, stale checksum, grace period too short",
         lambda r: check_gateway(broken_for_gateway(docs), reference, r)),
    ]
    print("\n== self-test: each check group must reject a deliberately broken copy")
    all_ok = True
    for title, run in cases:
        r = Report(quiet=True)
        run(r)
        ok = r.failed > 0
        all_ok &= ok
        if ok:
            print(f"  ok    rejected: {title} ({r.failed} checks failed)")
        else:
            print(f"  FAIL  NOT rejected: {title}")
    return all_ok


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--reference", type=Path, required=True,
                    help="conf/gateway.toml: the file that lists every gateway key")
    ap.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                    help="Kubernetes version for the schema check (repeatable)")
    ap.add_argument("--only", choices=["schema", "pss", "gateway"], action="append")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    versions = a.versions or ["1.30.0"]
    groups = a.only or ["schema", "pss", "gateway"]
    try:
        docs = load_documents(a.manifest)
    except yaml.YAMLError as e:
        print(f"FAIL  {a.manifest} is not valid YAML: {e}")
        return 1
    print(f"{a.manifest}: {len(docs)} documents: {', '.join(name_of(d) for d in docs)}")
    report = Report()
    if "schema" in groups:
        check_schema(docs, versions, report)
    if "pss" in groups:
        check_pss(docs, report)
    if "gateway" in groups:
        check_gateway(docs, a.reference, report)
    self_ok = self_test(docs, versions, a.reference) if a.self_test else True
    print(f"\nmanifest checks: {report.passed} ok, {report.failed} failing"
          + ("" if self_ok else "; SELF-TEST FAILED"))
    return 0 if report.failed == 0 and self_ok else 1


if __name__ == "__main__":
    sys.exit(main())
