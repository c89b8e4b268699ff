//! The Kubernetes path: `conf/kubernetes.yaml` passes a schema validator (kubernetes-validate,
//! strict, against the bundled schemas of several Kubernetes versions), Pod Security
//! "restricted", the project's own manifest rules (probes, preStop and grace arithmetic, config
//! checksum, PDB, spread) and `upload-gateway check` on its ConfigMap. The script installs its
//! validator into a virtualenv under ~/.cache on first use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::process::Command;

#[test]
fn the_kubernetes_manifest_passes_its_validators() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/deploy/check-kubernetes.sh"))
        .env("UPLOAD_GATEWAY_BIN", common::binary())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // The self-test proves each check group rejects a broken copy.
    assert!(stdout.contains("rejected: pss:"), "{stdout}");
}

#[test]
fn the_dockerfile_builds_the_image_the_manifest_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(format!("{root}/conf/kubernetes.yaml")).unwrap();
    assert!(dockerfile.contains("docker build -t upload-gateway:0.1.0 ."));
    assert!(
        manifest.contains("image: upload-gateway:0.1.0"),
        "{manifest}"
    );
    // Non-root, on a distroless runtime, as the manifest's securityContext expects.
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("FROM gcr.io/distroless/"));
    assert!(manifest.contains("runAsUser: 65532"));
}
