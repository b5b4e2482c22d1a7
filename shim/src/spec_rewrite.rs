//! Lossless edits of an OCI runtime spec (`config.json`) and of an exec'd process spec.
//!
//! The spec is edited as a JSON tree, not through typed structs, so fields this crate does not
//! know (newer OCI versions, vendor extensions) survive byte-for-byte in meaning.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use thiserror::Error;

/// Annotation CRI sets on every container it creates: `sandbox` or `container`.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Annotation CRI sets with the container's name in the pod.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// Annotation CRI sets with the pod's sandbox id (the shim groups a pod's containers by it).
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Why a spec could not be read, edited or written.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected spec shape: {0}")]
    Shape(&'static str),
}

/// A bind mount to add to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What a capped container gets: bind mounts (container only) and environment (container and execs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injection {
    pub mounts: Vec<BindMount>,
    /// Variables set, replacing any earlier value; `LD_PRELOAD` is prepended to instead.
    pub env: Vec<(String, String)>,
}

/// Path of a bundle's spec.
pub fn spec_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// Reads a bundle's `config.json`.
pub fn read_spec(bundle: &Path) -> Result<Value, SpecError> {
    let path = spec_path(bundle);
    let text = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| SpecError::Parse { path, source })
}

/// Replaces a bundle's `config.json` atomically (temporary file in the same directory, then rename).
///
/// No fsync: the bundle lives under containerd's state directory, which does not outlive a reboot.
pub fn write_spec(bundle: &Path, spec: &Value) -> Result<(), SpecError> {
    let path = spec_path(bundle);
    let write_err = |source| SpecError::Write {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(bundle).map_err(write_err)?;
    let bytes = serde_json::to_vec(spec).map_err(|e| write_err(e.into()))?;
    tmp.write_all(&bytes).map_err(write_err)?;
    tmp.persist(&path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// The spec's annotations (string values only).
pub fn annotations(spec: &Value) -> BTreeMap<String, String> {
    spec.get("annotations")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the spec is a pod's sandbox (pause) container.
pub fn is_sandbox(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(CRI_CONTAINER_TYPE)
        .is_some_and(|t| t == "sandbox")
}

/// The container's name in its pod, or `fallback` (the container id) outside Kubernetes.
pub fn container_name<'a>(annotations: &'a BTreeMap<String, String>, fallback: &'a str) -> &'a str {
    annotations
        .get(CRI_CONTAINER_NAME)
        .map_or(fallback, String::as_str)
}

/// The value of environment variable `name` in the spec's process.
pub fn process_env(spec: &Value, name: &str) -> Option<String> {
    spec.pointer("/process/env")?
        .as_array()?
        .iter()
        .rev()
        .find_map(|entry| {
            let (key, value) = entry.as_str()?.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

/// Adds the injection's mounts and environment to a container spec.
pub fn inject_into_spec(spec: &mut Value, injection: &Injection) -> Result<(), SpecError> {
    let root = spec
        .as_object_mut()
        .ok_or(SpecError::Shape("spec is not an object"))?;
    let mounts = root.entry("mounts").or_insert_with(|| json!([]));
    let mounts = mounts
        .as_array_mut()
        .ok_or(SpecError::Shape("mounts is not an array"))?;
    for mount in &injection.mounts {
        mounts.retain(|m| m.get("destination").and_then(Value::as_str) != Some(&mount.destination));
        let mode = if mount.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": mount.destination,
            "type": "bind",
            "source": mount.source,
            "options": ["rbind", "nosuid", "nodev", mode],
        }));
    }
    let process = root
        .get_mut("process")
        .ok_or(SpecError::Shape("spec has no process"))?;
    inject_into_process(process, injection)
}

/// Adds the injection's environment to a process spec (`process` of a spec, or an exec request).
pub fn inject_into_process(process: &mut Value, injection: &Injection) -> Result<(), SpecError> {
    let process = process
        .as_object_mut()
        .ok_or(SpecError::Shape("process is not an object"))?;
    let env = process.entry("env").or_insert_with(|| json!([]));
    let env = env
        .as_array_mut()
        .ok_or(SpecError::Shape("process.env is not an array"))?;
    for (name, value) in &injection.env {
        let prefix = format!("{name}=");
        let previous = env.iter().rev().find_map(|e| {
            e.as_str()
                .and_then(|e| e.strip_prefix(&prefix))
                .map(str::to_owned)
        });
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
        let value = match previous {
            Some(previous) if name == "LD_PRELOAD" && !previous.is_empty() => {
                if previous.split([' ', ':']).any(|p| p == value) {
                    previous
                } else {
                    format!("{value}:{previous}")
                }
            }
            _ => value.clone(),
        };
        env.push(Value::String(format!("{name}={value}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {"args": ["/bin/sh"], "env": ["PATH=/bin", "LD_PRELOAD=/lib/other.so", "NVIDIA_VISIBLE_DEVICES=all"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {"hami.io/gpu-memory": "1Gi", CRI_CONTAINER_NAME: "main", "n": 3},
            "linux": {"futureField": {"kept": [1, 2, 3]}},
            "vendorExtension": {"x": true}
        })
    }

    fn injection() -> Injection {
        Injection {
            mounts: vec![
                BindMount {
                    source: "/host/libhami.so".into(),
                    destination: "/usr/local/lib/hami/libhami.so".into(),
                    read_only: true,
                },
                BindMount {
                    source: "/run/hami/containers/c1/usage.ledger".into(),
                    destination: "/run/hami/usage.ledger".into(),
                    read_only: false,
                },
            ],
            env: vec![
                ("LD_PRELOAD".into(), "/usr/local/lib/hami/libhami.so".into()),
                ("NVIDIA_VISIBLE_DEVICES".into(), "GPU-1".into()),
                ("HAMI_LEDGER_USAGE".into(), "/run/hami/usage.ledger".into()),
            ],
        }
    }

    #[test]
    fn injection_adds_mounts_and_env_and_keeps_unknown_fields() {
        let mut spec = sample_spec();
        inject_into_spec(&mut spec, &injection()).unwrap();
        assert_eq!(spec["linux"]["futureField"], json!({"kept": [1, 2, 3]}));
        assert_eq!(spec["vendorExtension"], json!({"x": true}));
        assert_eq!(spec["annotations"]["n"], json!(3));
        let mounts = spec["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1]["source"], "/host/libhami.so");
        assert_eq!(
            mounts[1]["options"],
            json!(["rbind", "nosuid", "nodev", "ro"])
        );
        assert_eq!(
            mounts[2]["options"],
            json!(["rbind", "nosuid", "nodev", "rw"])
        );
        assert_eq!(
            process_env(&spec, "LD_PRELOAD").unwrap(),
            "/usr/local/lib/hami/libhami.so:/lib/other.so"
        );
        assert_eq!(
            process_env(&spec, "NVIDIA_VISIBLE_DEVICES").unwrap(),
            "GPU-1"
        );
        assert_eq!(process_env(&spec, "PATH").unwrap(), "/bin");
        let env = spec["process"]["env"].as_array().unwrap();
        assert_eq!(
            env.iter()
                .filter(|e| e.as_str().unwrap().starts_with("NVIDIA_VISIBLE_DEVICES="))
                .count(),
            1
        );
    }

    #[test]
    fn injecting_twice_changes_nothing_more() {
        let mut once = sample_spec();
        inject_into_spec(&mut once, &injection()).unwrap();
        let mut twice = once.clone();
        inject_into_spec(&mut twice, &injection()).unwrap();
        assert_eq!(
            process_env(&once, "LD_PRELOAD"),
            process_env(&twice, "LD_PRELOAD")
        );
        assert_eq!(
            once["mounts"].as_array().unwrap().len(),
            twice["mounts"].as_array().unwrap().len()
        );
    }

    #[test]
    fn exec_process_without_env_gets_it() {
        let mut process = json!({"args": ["nvidia-smi"], "cwd": "/"});
        inject_into_process(&mut process, &injection()).unwrap();
        assert_eq!(process["env"].as_array().unwrap().len(), 3);
        assert_eq!(process["args"], json!(["nvidia-smi"]));
    }

    #[test]
    fn spec_round_trips_through_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        write_spec(dir.path(), &sample_spec()).unwrap();
        let spec = read_spec(dir.path()).unwrap();
        assert_eq!(spec, sample_spec());
        let notes = annotations(&spec);
        assert_eq!(notes.get("hami.io/gpu-memory").unwrap(), "1Gi");
        assert!(!notes.contains_key("n"));
        assert_eq!(container_name(&notes, "id"), "main");
        assert!(!is_sandbox(&notes));
    }

    #[test]
    fn broken_spec_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_spec(dir.path()), Err(SpecError::Read { .. })));
        std::fs::write(spec_path(dir.path()), "{").unwrap();
        let err = read_spec(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let mut not_object = json!([1]);
        assert!(matches!(
            inject_into_spec(&mut not_object, &injection()),
            Err(SpecError::Shape(_))
        ));
    }
}
