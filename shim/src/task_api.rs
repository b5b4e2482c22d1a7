//! The two generations of containerd's shim Task API, and how each side says which it speaks.
//!
//! containerd 1.6 and 1.7 call `containerd.task.v2.Task`; containerd 2.x calls
//! `containerd.task.v3.Task` when a shim's `start` reply says `"version": 3`, and its runc shim
//! serves only v3. The messages of the two are the same on the wire (same fields, same numbers;
//! v3 only adds an optional `Events` stream), so one set of handlers serves both names, and one
//! client speaks either, given the service name.
//!
//! A shim's `start` reply (its bootstrap) is a plain ttrpc address (task API v2, what 1.6
//! understands) or JSON `{"version":3,"address":"unix://...","protocol":"ttrpc"}` (2.x).

use std::collections::HashMap;
use std::fmt;

use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::MethodHandler;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A version of the shim Task API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    /// `containerd.task.v2.Task`: containerd 1.6 and 1.7 and their runc shims.
    V2,
    /// `containerd.task.v3.Task`: containerd 2.x and its runc shim.
    V3,
}

impl TaskApi {
    /// Every version this shim serves and speaks.
    pub const ALL: [TaskApi; 2] = [TaskApi::V2, TaskApi::V3];

    /// The ttrpc service name.
    pub fn service(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }

    /// The number containerd uses for it (`"version"` of a bootstrap reply).
    pub fn number(self) -> u32 {
        match self {
            TaskApi::V2 => 2,
            TaskApi::V3 => 3,
        }
    }

    fn from_number(number: u32) -> Option<TaskApi> {
        TaskApi::ALL.into_iter().find(|api| api.number() == number)
    }
}

impl fmt::Display for TaskApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.service())
    }
}

/// Where a shim listens and which Task API it serves: what its `start` reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///run/containerd/s/<hash>`.
    pub address: String,
    pub api: TaskApi,
}

/// The JSON form of a bootstrap reply (containerd's `BootstrapParams`).
#[derive(Debug, Serialize, Deserialize)]
struct BootstrapParams {
    version: u32,
    address: String,
    protocol: String,
}

/// Why a shim's `start` reply cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootstrapError {
    #[error("start reply {reply:?} is not an address nor containerd bootstrap JSON: {reason}")]
    Malformed { reply: String, reason: String },
    #[error(
        "it speaks shim task API version {version}; containerd-shim-hami-v2 speaks versions 2 \
         (containerd 1.6, 1.7) and 3 (containerd 2.x)"
    )]
    UnsupportedVersion { version: u32 },
    #[error(
        "it speaks protocol {protocol:?}; containerd-shim-hami-v2 speaks ttrpc only \
         (the runc shim of containerd 1.6, 1.7 or 2.x)"
    )]
    UnsupportedProtocol { protocol: String },
}

impl Endpoint {
    /// Reads a shim's `start` reply.
    pub fn parse(reply: &str) -> Result<Endpoint, BootstrapError> {
        let reply = reply.trim();
        if !reply.starts_with('{') {
            if reply.is_empty() || reply.contains(char::is_whitespace) {
                return Err(BootstrapError::Malformed {
                    reply: reply.to_owned(),
                    reason: "no address".to_owned(),
                });
            }
            return Ok(Endpoint {
                address: reply.to_owned(),
                api: TaskApi::V2,
            });
        }
        let params: BootstrapParams =
            serde_json::from_str(reply).map_err(|e| BootstrapError::Malformed {
                reply: reply.to_owned(),
                reason: e.to_string(),
            })?;
        if !params.protocol.eq_ignore_ascii_case("ttrpc") {
            return Err(BootstrapError::UnsupportedProtocol {
                protocol: params.protocol,
            });
        }
        let api =
            TaskApi::from_number(params.version).ok_or(BootstrapError::UnsupportedVersion {
                version: params.version,
            })?;
        Ok(Endpoint {
            address: params.address,
            api,
        })
    }

    /// The `start` reply announcing this endpoint: the plain address for v2 (containerd 1.6
    /// cannot read JSON), containerd's bootstrap JSON for v3.
    pub fn reply(&self) -> String {
        match self.api {
            TaskApi::V2 => self.address.clone(),
            TaskApi::V3 => {
                let params = BootstrapParams {
                    version: self.api.number(),
                    address: self.address.clone(),
                    protocol: "ttrpc".to_owned(),
                };
                // Serializing a struct of a number and two strings cannot fail.
                serde_json::to_string(&params).unwrap_or_default()
            }
        }
    }
}

/// The ttrpc method table of `task` under every Task API name: one set of handlers, reached as
/// `/containerd.task.v2.Task/Create` and as `/containerd.task.v3.Task/Create` alike.
pub fn services<T>(task: T) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>>
where
    T: containerd_shim::Task + Send + Sync + 'static,
{
    let task: std::sync::Arc<dyn containerd_shim::Task + Send + Sync> = std::sync::Arc::new(task);
    let v2 = format!("/{}/", TaskApi::V2.service());
    let mut methods = HashMap::new();
    for api in TaskApi::ALL {
        let prefix = format!("/{}/", api.service());
        for (path, handler) in create_task(task.clone()) {
            let method = path.strip_prefix(&v2).unwrap_or(&path);
            methods.insert(format!("{prefix}{method}"), handler);
        }
    }
    methods
}

/// Who asked containerd for the container: what an error text passes through on its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The CRI plugin (kubelet, crictl): the container's spec carries `io.kubernetes.cri.*`.
    Cri,
    /// A client of containerd's tasks service (`ctr`, nerdctl, docker).
    Tasks,
}

/// Text that reaches users through containerd, written so that they read it as it is.
///
/// containerd 1.6 and 1.7 turn an error into a gRPC status with `status.Errorf(code,
/// err.Error())`, so the text is a format string there: `100% of` arrives as
/// `100%!o(MISSING)f`. It is formatted once on the way to a tasks client (`ctr`), twice on the
/// way to a CRI client (the CRI plugin reaches the tasks service through gRPC, then answers
/// kubelet through gRPC again). Doubling every `%` once per formatting gives the text back.
/// containerd 2.x copies the text (`status.New`) and needs nothing.
pub fn for_containerd(text: &str, api: TaskApi, caller: Caller) -> String {
    let formattings = match (api, caller) {
        (TaskApi::V3, _) => 0,
        (TaskApi::V2, Caller::Tasks) => 1,
        (TaskApi::V2, Caller::Cri) => 2,
    };
    let percent = "%".repeat(1 << formattings);
    text.replace('%', &percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_reply_is_a_v2_address() {
        assert_eq!(
            Endpoint::parse("unix:///run/containerd/s/ab\n").unwrap(),
            Endpoint {
                address: "unix:///run/containerd/s/ab".into(),
                api: TaskApi::V2
            }
        );
    }

    #[test]
    fn a_json_reply_gives_its_version() {
        let json = r#"{"version":3,"address":"unix:///run/containerd/s/cd","protocol":"ttrpc"}"#;
        let endpoint = Endpoint::parse(json).unwrap();
        assert_eq!(endpoint.address, "unix:///run/containerd/s/cd");
        assert_eq!(endpoint.api, TaskApi::V3);
        let json = r#"{"version":2,"address":"unix:///s/x","protocol":"TTRPC"}"#;
        assert_eq!(Endpoint::parse(json).unwrap().api, TaskApi::V2);
    }

    #[test]
    fn other_versions_protocols_and_garbage_are_refused_with_the_reason() {
        let v4 = r#"{"version":4,"address":"unix:///s/x","protocol":"ttrpc"}"#;
        let err = Endpoint::parse(v4).unwrap_err();
        assert_eq!(err, BootstrapError::UnsupportedVersion { version: 4 });
        assert_eq!(
            err.to_string(),
            "it speaks shim task API version 4; containerd-shim-hami-v2 speaks versions 2 \
             (containerd 1.6, 1.7) and 3 (containerd 2.x)"
        );
        let grpc = r#"{"version":3,"address":"unix:///s/x","protocol":"grpc"}"#;
        assert!(matches!(
            Endpoint::parse(grpc),
            Err(BootstrapError::UnsupportedProtocol { .. })
        ));
        for garbage in ["{oops", r#"{"protocol":"ttrpc"}"#, "", "two words"] {
            assert!(
                matches!(
                    Endpoint::parse(garbage),
                    Err(BootstrapError::Malformed { .. })
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn replies_round_trip_in_the_form_each_containerd_reads() {
        for api in TaskApi::ALL {
            let endpoint = Endpoint {
                address: "unix:///run/containerd/s/ef".into(),
                api,
            };
            assert_eq!(Endpoint::parse(&endpoint.reply()).unwrap(), endpoint);
        }
        let v2 = Endpoint {
            address: "unix:///s/x".into(),
            api: TaskApi::V2,
        };
        assert_eq!(v2.reply(), "unix:///s/x");
        let v3 = Endpoint {
            api: TaskApi::V3,
            ..v2
        };
        assert_eq!(
            v3.reply(),
            r#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#
        );
    }

    struct Nop;
    impl containerd_shim::Task for Nop {}

    #[test]
    fn one_handler_set_is_reachable_under_both_service_names() {
        let methods = services(Nop);
        for api in TaskApi::ALL {
            for method in ["Create", "Start", "Delete", "Wait", "Shutdown", "Connect"] {
                let path = format!("/{}/{method}", api.service());
                assert!(methods.contains_key(&path), "{path}");
            }
        }
        assert_eq!(methods.len() % 2, 0);
        assert!(methods.len() >= 34, "{}", methods.len());
    }

    #[test]
    fn percent_signs_are_doubled_once_per_formatting_on_the_way() {
        let text = "GPU-1 needs 100% of compute, 70% uncommitted";
        assert_eq!(
            for_containerd(text, TaskApi::V2, Caller::Tasks),
            "GPU-1 needs 100%% of compute, 70%% uncommitted"
        );
        assert_eq!(
            for_containerd(text, TaskApi::V2, Caller::Cri),
            "GPU-1 needs 100%%%% of compute, 70%%%% uncommitted"
        );
        for caller in [Caller::Tasks, Caller::Cri] {
            assert_eq!(for_containerd(text, TaskApi::V3, caller), text);
        }
        assert_eq!(
            for_containerd("no sign", TaskApi::V2, Caller::Cri),
            "no sign"
        );
    }
}
